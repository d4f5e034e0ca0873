// afunix in one file: a server here, a client in a child process, a typed
// call, a stream, and a file descriptor passed over the socket.
// @ts-check
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, openSync, readlinkSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fd, connect, createServer } from '@afunix/rpc';

// `node main.mjs | head -1`: once the reader of stdout is gone, print nothing
// more but finish (and clean up) as usual, then exit 141, the status of a
// process that SIGPIPE ended (what the afunix CLI gives too). Both roles: the
// client shares the server's stdout.
process.stdout.on('error', (err) => {
  if (/** @type {{ code?: string }} */ (err).code !== 'EPIPE') throw err;
  process.once('exit', () => (process.exitCode = 141));
});

/** @typedef {{ methods: { greet(name: string): string; countdown(from: number): AsyncIterable<number>; peek(file: Fd): string } }} Hello */
const [role, socket] = process.argv.slice(2);
const me = `pid ${process.pid}`;

if (role === 'client') {
  /** @type {import('@afunix/rpc').RpcClient<Hello>} */
  const client = await connect(socket ?? '', { service: 'hello' });
  console.log(`client (${me}): ${await client.greet('world')}`);
  const counted = [];
  for await (const n of client.countdown(3)) counted.push(n);
  console.log(`client: streamed ${counted.join(', ')}, liftoff`);
  const file = openSync(process.argv[1] ?? '', 'r'); // this very file
  console.log(`client: passed fd ${file}; the server saw ${await client.peek(Fd.from(file))}`);
  await client.$close();
} else {
  const dir = mkdtempSync(join(tmpdir(), 'hello-fds-'));
  /** @type {import('@afunix/rpc').ServerHandlers<Hello>} */
  const handlers = {
    greet: (ctx, name) => `hello ${name}, from ${me} (you are pid ${ctx.peer?.pid}, uid ${ctx.peer?.uid})`,
    async *countdown(_ctx, from) {
      for (let n = from; n > 0; n--) yield n;
    },
    peek(_ctx, file) {
      const head = Buffer.alloc(32);
      readSync(file.fd, head, 0, head.length, 0);
      return `fd ${file.fd} → ${readlinkSync(`/proc/self/fd/${file.fd}`)}, starting ${JSON.stringify(head.toString())}`;
    },
  };
  const server = createServer({ service: 'hello', handlers });
  const path = join(dir, 'hello.sock');
  await server.listen(path, { mode: 0o600 }); // only our uid can even connect
  console.log(`server (${me}): listening on ${path}`);
  const child = spawn(process.execPath, [process.argv[1] ?? '', 'client', path], { stdio: 'inherit' });
  const [code] = await once(child, 'exit');
  await server.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(`server: client exited with ${code}; done`);
  process.exitCode = code ?? 1;
}
