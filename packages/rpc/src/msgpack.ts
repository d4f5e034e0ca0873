// msgpackr, with its native string extractor loaded only once this process
// has decoded enough for it to pay. msgpackr's node entry ('msgpackr')
// loads the extractor at import, and with it its loader's libc probe
// (detect-libc, which loads child_process): ~22 ms and ~32 ms of CPU at
// every start, which a CLI that asks its daemon one thing never gets back.
// What 'msgpackr/pack' resolves to under node is msgpackr's plain entry: the
// same Packr, Unpackr and extensions (the same modules) without the
// extractor. Importing the node entry later sets the extractor on those
// modules, for every Unpackr in the process.
export { Packr, RESERVE_START_SPACE, RESET_BUFFER_MODE, REUSE_BUFFER_MODE, Unpackr, addExtension } from 'msgpackr/pack';

// msgpackr hands the strings of a source this long or longer to the
// extractor (as of 2.1.4); shorter ones it reads in JavaScript regardless.
export const EXTRACTABLE = 140;
// Bytes of such messages decoded before the extractor is loaded: decoding
// a MiB of string-heavy messages in JavaScript costs about what loading it
// does, and it decodes them 1.7-2.9x faster from then on.
const EXTRACTOR_AFTER = 1024 * 1024;

let extractableBytes = 0;

/** Counts a decoded message of at least EXTRACTABLE bytes; loads the extractor at the threshold. */
export function decodedExtractable(length: number): void {
  if (extractableBytes < 0) return;
  extractableBytes += length;
  if (extractableBytes < EXTRACTOR_AFTER) return;
  extractableBytes = -1;
  // (Optional, as msgpackr itself treats it: without it strings are read in JavaScript.)
  import('msgpackr').catch(() => {});
}
