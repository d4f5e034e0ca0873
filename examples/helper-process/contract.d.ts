// The contract between the parent (main.mjs) and its helper (helper.mjs):
// plain TypeScript types, used by both through JSDoc.

export interface Settings {
  /** Words that analyze() leaves out. */
  stopWords: string[];
}

export interface Analysis {
  words: number;
  lines: number;
  longest: string;
  /** The helper's pid, to show the work was done over there. */
  by: number;
}

export interface Indexer {
  /** What the helper offers (it serves; the parent calls). */
  methods: {
    analyze(text: string): Analysis;
    /** The words of a text, one at a time, as the helper finds them. */
    words(text: string): AsyncIterable<string>;
  };
  /** Events the helper emits to the parent. */
  events: {
    progress(percent: number): void;
  };
  /** What the parent offers the helper: calls back the other way. */
  clientMethods: {
    settings(): Settings;
  };
}
