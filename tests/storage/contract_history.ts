/**
 * The storage contract's history tables: every query (`since`, `last`,
 * `before`, `upTo`) agrees with `selectHistory` over the kept rows;
 * pages spelled out, with gaps in `seq` (failed writes) that trim nothing
 * and lose nothing; trimming by stored rows, room by room; `seq` and what
 * survives a restart. It does not open storages (`contract_test.ts` does).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { HistoryQuery } from "../../src/chat/storage.ts";
import { selectHistory } from "../../src/chat/history_rules.ts";
import { MIN_KEPT } from "../../src/redis/storage.ts";
import {
  ALL,
  chat,
  type ContractCase,
  group,
  noGaps,
  noRestart,
  OK,
  range,
  seqsOf,
  store,
  storeSeqs,
  write,
} from "./contract.ts";

// ---------------------------------------------------------------------------
// History: every query agrees with selectHistory over the kept rows

/** Messages written to one room, then read back with many queries. */
interface HistoryScenario {
  name: string;
  historySize: number;
  /** Seqs stored, in one batch; a missing seq is a write that failed. */
  written: number[];
}

const HISTORY_SCENARIOS: readonly HistoryScenario[] = [
  { name: "an empty room", historySize: 100, written: [] },
  { name: "an empty room, historySize 0", historySize: 0, written: [] },
  { name: "all kept", historySize: 100, written: range(1, 10) },
  { name: "trimmed to 4", historySize: 4, written: range(1, 10) },
  { name: "one kept", historySize: 1, written: range(1, 5) },
  { name: "historySize 1, one written", historySize: 1, written: [1] },
  { name: "historySize 0", historySize: 0, written: range(1, 5) },
  {
    name: "more than Redis keeps (MIN_KEPT), small history",
    historySize: 3,
    written: range(1, MIN_KEPT + 20),
  },
  {
    name: "history longer than MIN_KEPT",
    historySize: MIN_KEPT + 10,
    written: range(1, MIN_KEPT + 15),
  },
  { name: "gaps", historySize: 100, written: [1, 2, 4, 7, 9] },
  { name: "gaps, trimmed", historySize: 3, written: [1, 2, 4, 7, 9, 11, 12] },
  { name: "the first seqs failed", historySize: 5, written: [3, 5, 6] },
];

/** Queries around the edges of a room whose highest seq is `n`. */
function queriesFor(n: number): HistoryQuery[] {
  const queries: HistoryQuery[] = [];
  const upTos = new Set([0, 1, 3, 6, 9, 10, 12, Math.max(n - 2, 0), n, n + 3]);
  for (const upTo of upTos) {
    for (
      const since of new Set([0, 1, 3, 6, 9, 10, 15, n - 3, n - 1, n, n + 1])
    ) {
      queries.push({ kind: "since", since, upTo });
    }
    for (const count of new Set([0, 1, 3, 4, 10, 50, n - 5, n + 5])) {
      queries.push({ kind: "last", count, upTo });
    }
    const befores = [
      1,
      2,
      5,
      7,
      10,
      11,
      100,
      Math.ceil(n / 2),
      n,
      n + 1,
      n + 9,
    ];
    for (const before of new Set(befores)) {
      for (const limit of new Set([0, 1, 2, 3, 4, 20, 50, n + 5])) {
        queries.push({ kind: "before", before, limit, upTo });
      }
    }
  }
  return queries;
}

const historyScenarios: ContractCase[] = HISTORY_SCENARIOS.map((s) => ({
  name: `history: ${s.name}: every query agrees with selectHistory`,
  historySize: s.historySize,
  skip: (subject) =>
    s.written.some((seq, i) => seq !== i + 1) ? noGaps(subject) : undefined,
  async run(subject, { storage }) {
    await storeSeqs(subject, storage, "r", s.written);
    // The newest historySize stored rows, whatever their seqs.
    const kept = (s.historySize === 0 ? [] : s.written.slice(-s.historySize))
      .map((seq) => group("r", seq));
    const trimmed = s.written.at(-s.historySize - 1) ?? 0;
    for (const query of queriesFor(s.written.at(-1) ?? 0)) {
      assert.deepEqual(
        await storage.history("r", query),
        selectHistory(kept, query, trimmed),
        JSON.stringify(query),
      );
    }
  },
}));

/** One page, spelled out, so that the comparison above is not vacuous. */
interface PageCase {
  name: string;
  historySize: number;
  /** Seqs stored, one batch each; a missing seq is a write that failed. */
  written: number[];
  query: HistoryQuery;
  seqs: number[];
  complete: boolean;
}

const many = range(1, 300).map((n) => n * 10);

const PAGES: readonly PageCase[] = [
  {
    name: "since 0 past the trimmed",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "since", since: 0, upTo: 10 },
    seqs: [7, 8, 9, 10],
    complete: false,
  },
  {
    name: "since a kept seq, upTo below the newest",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "since", since: 6, upTo: 9 },
    seqs: [7, 8, 9],
    complete: true,
  },
  {
    name: "since beyond upTo",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "since", since: 15, upTo: 10 },
    seqs: [],
    complete: true,
  },
  {
    name: "last 0",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "last", count: 0, upTo: 10 },
    seqs: [],
    complete: true,
  },
  {
    name: "last 2 up to 8",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "last", count: 2, upTo: 8 },
    seqs: [7, 8],
    complete: true,
  },
  {
    name: "before, within the kept",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "before", before: 9, limit: 2, upTo: 10 },
    seqs: [7, 8],
    complete: true,
  },
  {
    name: "before, reaching into the trimmed",
    historySize: 4,
    written: range(1, 10),
    query: { kind: "before", before: 9, limit: 3, upTo: 10 },
    seqs: [7, 8],
    complete: false,
  },
  // Gaps in seq (failed writes) neither trim kept messages nor make pages
  // incomplete: trimming counts stored rows, not seqs.
  {
    name: "gaps: a long gap keeps the older messages",
    historySize: 10,
    written: [...range(1, 5), 1151],
    query: { kind: "since", since: 0, upTo: 1151 },
    seqs: [...range(1, 5), 1151],
    complete: true,
  },
  {
    name: "gaps: the first seqs failed, nothing was trimmed",
    historySize: 10,
    written: [3, 4],
    query: { kind: "last", count: 10, upTo: 4 },
    seqs: [3, 4],
    complete: true,
  },
  {
    name: "gaps: before the oldest, nothing trimmed",
    historySize: 10,
    written: [5, 9],
    query: { kind: "before", before: 9, limit: 5, upTo: 9 },
    seqs: [5],
    complete: true,
  },
  {
    name: "gaps: trimmed by count across gaps",
    historySize: 3,
    written: many,
    query: { kind: "last", count: 5, upTo: 3000 },
    seqs: [2980, 2990, 3000],
    complete: false,
  },
  {
    name: "gaps: since the last trimmed seq is complete",
    historySize: 3,
    written: many,
    query: { kind: "since", since: 2970, upTo: 3000 },
    seqs: [2980, 2990, 3000],
    complete: true,
  },
  {
    name: "gaps: since a trimmed seq is not",
    historySize: 3,
    written: many,
    query: { kind: "since", since: 2969, upTo: 3000 },
    seqs: [2980, 2990, 3000],
    complete: false,
  },
];

const pages: ContractCase[] = PAGES.map((c) => ({
  name: `history page: ${c.name}`,
  historySize: c.historySize,
  skip: (subject) =>
    c.written.some((seq, i) => seq !== i + 1) ? noGaps(subject) : undefined,
  async run(subject, { storage }) {
    await storeSeqs(subject, storage, "r", c.written, "each");
    assert.deepEqual(await seqsOf(storage, "r", c.query), [
      c.seqs,
      c.complete,
    ]);
  },
}));

const trimming: ContractCase[] = [{
  name:
    "trimming: rooms are trimmed to historySize, each on its own, across batches",
  historySize: 3,
  async run(subject, { storage }) {
    await store(subject, storage, [
      ...range(1, 10).map((seq) => group("a", seq)),
      ...[1, 2].map((seq) => group("b", seq)),
    ]);
    await storeSeqs(subject, storage, "a", [11]);
    await storeSeqs(subject, storage, "a", [12]);
    const since0 = { kind: "since", since: 0, upTo: ALL } as const;
    assert.deepEqual(await seqsOf(storage, "a", since0), [[10, 11, 12], false]);
    assert.deepEqual(await seqsOf(storage, "b", since0), [[1, 2], true]);
    assert.deepEqual(
      await storage.roomSeqs(),
      subject.assignsSeq ? new Map() : new Map([["a", 12], ["b", 2]]),
    );
  },
}];

// seq, and what survives a restart

/** What a storage knows after a restart. */
interface RestartCase {
  name: string;
  historySize: number;
  /** Seqs of room "lobby" stored before the restart. */
  written: number[];
  /** `last 10` after the restart. */
  page: [number[], boolean];
  /** `since 0` after one more message. */
  after: number[];
}

const RESTARTS: readonly RestartCase[] = [
  {
    name: "history, seq, tokens and offline messages survive",
    historySize: 3,
    written: range(1, 5),
    page: [[3, 4, 5], false],
    after: [4, 5, 6],
  },
  {
    name: "historySize 0 keeps no message but keeps the room's seq",
    historySize: 0,
    written: range(1, 3),
    page: [[], false],
    after: [],
  },
];

const restarts: ContractCase[] = RESTARTS.map((c) => ({
  name: `restart: ${c.name}`,
  historySize: c.historySize,
  skip: noRestart,
  async run(subject, harness) {
    await harness.storage.createToken(
      "tok-bob",
      { username: "bob", expiresAt: 5000 },
      100,
    );
    await storeSeqs(subject, harness.storage, "lobby", c.written);
    assert.deepEqual(
      await write(harness.storage, [
        { kind: "private", message: chat("p1", "bob", 10), delivered: false },
      ]),
      [OK],
    );
    await harness.restart!();
    const { storage } = harness;
    const last = c.written.at(-1)!;
    // Where the storage gives seqs, the next one tells what it kept.
    assert.deepEqual(
      await storage.roomSeqs(),
      subject.assignsSeq ? new Map() : new Map([["lobby", last]]),
    );
    assert.deepEqual(
      await seqsOf(storage, "lobby", { kind: "last", count: 10, upTo: last }),
      c.page,
    );
    assert.deepEqual(await storage.checkToken("tok-bob", 200), {
      username: "bob",
      expiresAt: 5000,
    });
    assert.deepEqual(await storage.offline("bob"), [chat("p1", "bob", 10)]);
    await storeSeqs(subject, storage, "lobby", [last + 1]);
    if (!subject.assignsSeq) {
      assert.deepEqual(
        await storage.roomSeqs(),
        new Map([["lobby", last + 1]]),
      );
    }
    assert.deepEqual(
      await seqsOf(storage, "lobby", { kind: "since", since: 0, upTo: ALL }),
      [c.after, false],
    );
  },
}));

/** The history part of the contract. */
export const HISTORY_CONTRACT: readonly ContractCase[] = [
  ...historyScenarios,
  ...pages,
  ...trimming,
  ...restarts,
];
