// afunix methods <socket>: what a service offers, from its $describe answer.
import type { ServiceDescription } from '@afunix/rpc';
import { JSON_OPTION, TIMEOUT_OPTION, type Command, parseCommand, printHelp, requirePositionals, timeoutFrom } from '../args.js';
import { describeService, dial, hangUp } from '../dial.js';
import { Exit, oneLine } from '../errors.js';
import { exitStatusHelp } from '../exit-status.js';
import { printResult, table } from '../render.js';
import { summarizeArgs } from '../schema.js';

const help = `Usage: afunix methods <socket> [--json] [--timeout <ms>]

Lists the methods a service offers (name, whether it streams, a summary of
its argument schema where the server has one) and the events it names.

  <socket>          a path, or @name for a Linux abstract socket
  --json            print the service description as JSON:
                    {service, version, protocol, methods: [{name, stream, args?}], events}
                    where args is the JSON Schema of the argument list
  --timeout <ms>    give up after this long (default 5000)

${exitStatusHelp([Exit.OK, Exit.USAGE, Exit.CONNECTION, Exit.INTERRUPTED, Exit.BROKEN_PIPE, Exit.INTERNAL])}`;

function render(d: ServiceDescription): string {
  const title = `${oneLine(String(d.service))}${d.version ? ` ${oneLine(String(d.version))}` : ''} (protocol ${oneLine(String(d.protocol))})\n`;
  const rows = d.methods.map((m) => [m.name, m.stream ? 'stream' : '', summarizeArgs(m.args)]);
  const methods = rows.length > 0 ? table(rows, ['METHOD', 'RESULT', 'ARGS']) : '(no methods)\n';
  const events = `events: ${d.events.length > 0 ? d.events.map((e) => oneLine(String(e))).join(', ') : '(none named)'}\n`;
  return `${title}\n${methods}\n${events}`;
}

export const methods: Command = {
  name: 'methods',
  summary: 'the methods (and events) a service offers; --json for scripts',
  help,
  async run(argv) {
    const { values, positionals, help: wantsHelp } = parseCommand('methods', argv, { ...JSON_OPTION, ...TIMEOUT_OPTION });
    if (wantsHelp) return printHelp(help);
    const [address] = requirePositionals('methods', positionals, ['socket']);
    const timeout = timeoutFrom(values);
    const { client } = await dial(address!, timeout);
    try {
      const description = await describeService(client, address!, timeout);
      if (values.json) printResult(description);
      else process.stdout.write(render(description));
      return Exit.OK;
    } finally {
      await hangUp(client);
    }
  },
};
