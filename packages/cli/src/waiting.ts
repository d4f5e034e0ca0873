// Steps whose work cannot be cancelled (a connect and its hello, an open(2)
// of a FIFO that waits for a writer) but that the user may interrupt
// (SIGINT/SIGTERM) or --timeout may bound: the CLI stops waiting and exits,
// and whatever the work yields later is disposed of.
export const INTERRUPTED = Symbol('interrupted');
export const TIMED_OUT = Symbol('timed out');

// setTimeout's largest delay: a longer one fires after 1 ms (with a
// TimeoutOverflowWarning), so a longer --timeout is waited for in steps.
const MAX_DELAY = 2 ** 31 - 1;

/** A timer for any number of ms, past setTimeout's range too; `cancel()` stops it. */
export function afterMs(ms: number, fire: () => void): { cancel(): void } {
  let timer: NodeJS.Timeout;
  const arm = (left: number): void => {
    const delay = Math.min(left, MAX_DELAY);
    timer = setTimeout(() => (left > delay ? arm(left - delay) : fire()), delay);
  };
  arm(ms);
  return { cancel: () => clearTimeout(timer) };
}

// Work given up on still holds the event loop (a connect waiting for its
// hello, an open on a libuv thread): the CLI exits at once, not after it.
let abandonedWork = false;

/** Whether work was given up on (main then exits without waiting for the loop to drain). */
export function abandonedAny(): boolean {
  return abandonedWork;
}

/**
 * Runs `start()` and waits for what it returns, unless SIGINT/SIGTERM or
 * `timeout` come first. The signal handlers are in place before the work
 * starts: a peer that reacts to it (a server that sees the connection) may
 * have the CLI signalled at once.
 */
export function untilInterrupted<T>(
  start: () => Promise<T>,
  timeout: number | undefined,
  dispose: (late: T) => void,
): Promise<T | typeof INTERRUPTED | typeof TIMED_OUT> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let timer: { cancel(): void } | undefined;
    const stop = (why: typeof INTERRUPTED | typeof TIMED_OUT) => {
      if (settled) return;
      settled = true;
      done();
      resolve(why);
    };
    const onSignal = () => {
      abandonedWork = true;
      stop(INTERRUPTED);
    };
    const done = () => {
      timer?.cancel();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (timeout !== undefined) {
      timer = afterMs(timeout, () => {
        abandonedWork = true;
        stop(TIMED_OUT);
      });
    }
    let work: Promise<T>;
    try {
      work = start();
    } catch (err) {
      settled = true;
      done();
      return reject(err);
    }
    work.then(
      (value) => {
        if (settled) return dispose(value);
        settled = true;
        done();
        resolve(value);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        done();
        reject(err);
      },
    );
  });
}

// A wait the CLI gave up on but could not call off: exit() would wait for
// its thread for ever. The CLI then ends by a signal of its own instead.
let stuck: 'SIGINT' | 'SIGTERM' | null = null;

/** The CLI stops waiting for work it cannot call off; `signal` is what it will end by. */
export function abandonStuck(signal: 'SIGINT' | 'SIGTERM'): void {
  stuck = signal;
}

/** Ends the process at once by the signal given to abandonStuck(), if any; false if there is none. */
export function endIfStuck(): boolean {
  if (!stuck) return false;
  process.removeAllListeners(stuck);
  process.kill(process.pid, stuck);
  return true;
}
