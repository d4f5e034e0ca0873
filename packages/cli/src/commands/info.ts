// afunix info <socket>: who serves there, and which process that is.
import { JSON_OPTION, TIMEOUT_OPTION, type Command, parseCommand, printHelp, requirePositionals, timeoutFrom } from '../args.js';
import { dial, hangUp } from '../dial.js';
import { Exit } from '../errors.js';
import { type PeerInfo, describePeer, named } from '../peer.js';
import { exitStatusHelp } from '../exit-status.js';
import { printResult, table } from '../render.js';

const help = `Usage: afunix info <socket> [--json] [--timeout <ms>]

Connects, says hello, and prints the service's name, version and protocol,
and the server process's peer credentials from the kernel: pid, uid, gid,
and its executable (/proc/<pid>/exe, when readable).

  <socket>          a path, or @name for a Linux abstract socket
  --json            print one JSON object instead of a table
  --timeout <ms>    give up connecting after this long (default 5000)

${exitStatusHelp([Exit.OK, Exit.USAGE, Exit.CONNECTION, Exit.INTERRUPTED, Exit.BROKEN_PIPE, Exit.INTERNAL])}`;

interface Info {
  address: string;
  type: string;
  service: string | null;
  version: string | null;
  protocol: number;
  peer: PeerInfo | null;
}

function render(info: Info): string {
  const rows: string[][] = [
    ['service', info.service ?? '-'],
    ['version', info.version ?? '-'],
    ['protocol', String(info.protocol)],
    ['socket', `${info.address} (${info.type})`],
  ];
  const peer = info.peer;
  if (peer) {
    rows.push(['pid', String(peer.pid)], ['uid', named(peer.uid, peer.user)], ['gid', named(peer.gid, peer.group)]);
    rows.push(['exe', peer.exe ?? `(not readable: ${peer.exeError ?? 'unknown'})`]);
  } else {
    rows.push(['peer', '(the transport cannot tell)']);
  }
  return table(rows);
}

export const info: Command = {
  name: 'info',
  summary: 'service, version, protocol and the server process (pid, uid, gid, exe)',
  help,
  async run(argv) {
    const { values, positionals, help: wantsHelp } = parseCommand('info', argv, { ...JSON_OPTION, ...TIMEOUT_OPTION });
    if (wantsHelp) return printHelp(help);
    const [address] = requirePositionals('info', positionals, ['socket']);
    const { client, type } = await dial(address!, timeoutFrom(values));
    const hello = client.$server;
    const peer = client.$peer;
    await hangUp(client);
    const result: Info = {
      address: address!,
      type,
      service: hello.service ?? null,
      version: hello.version ?? null,
      protocol: hello.protocol,
      peer: peer ? describePeer(peer) : null,
    };
    if (values.json) printResult(result);
    else process.stdout.write(render(result));
    return Exit.OK;
  },
};
