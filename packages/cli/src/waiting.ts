// Steps whose work cannot be cancelled (a connect and its hello, an open(2)
// of a FIFO that waits for a writer) but that the user may interrupt
// (SIGINT/SIGTERM) or --timeout may bound: the CLI stops waiting and exits,
// and whatever the work yields later is disposed of.
export const INTERRUPTED = Symbol('interrupted');
export const TIMED_OUT = Symbol('timed out');

// setTimeout's largest delay (a longer one fires at once).
const MAX_DELAY = 2 ** 31 - 1;

export function untilInterrupted<T>(
  work: Promise<T>,
  timeout: number | undefined,
  dispose: (late: T) => void,
): Promise<T | typeof INTERRUPTED | typeof TIMED_OUT> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const stop = (why: typeof INTERRUPTED | typeof TIMED_OUT) => {
      if (settled) return;
      settled = true;
      done();
      resolve(why);
    };
    const onSignal = () => stop(INTERRUPTED);
    const done = () => {
      clearTimeout(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (timeout !== undefined && timeout < MAX_DELAY) timer = setTimeout(() => stop(TIMED_OUT), timeout);
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
