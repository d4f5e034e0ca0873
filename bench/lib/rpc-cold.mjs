// W7 of suites/rpc.mjs, one cold call: what a CLI pays to ask a daemon one
// thing. This process loads a system's adapter (and with it the library),
// connects, makes one echo call, checks the answer, closes and ends on its
// own, as a CLI would. It prints its phases as JSON, in ms since the
// process started. Without arguments it loads nothing: Node's own start
// and exit, to compare against.
//
//   node rpc-cold.mjs [<adapter file> <system> <address>]
import { pathToFileURL } from 'node:url';
import { check, payload } from './rpc-payload.mjs';

const [file, systemName, address] = process.argv.slice(2);
const phases = { started: performance.now() };
if (file) {
  const { systems } = await import(pathToFileURL(file).href);
  phases.loaded = performance.now();
  const system = systems.find((s) => s.name === systemName);
  if (!system) throw new Error(`no system ${systemName} in ${file}`);
  const client = await system.connect(address);
  phases.connected = performance.now();
  check(await client.echo(payload(1)), 1);
  phases.answered = performance.now();
  await client.close();
  phases.closed = performance.now();
}
console.log(JSON.stringify(phases));
