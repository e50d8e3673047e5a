/**
 * The storage contract: typed case tables that every {@linkcode Storage}
 * (memory, SQLite, Redis) passes alike, as one router test table runs
 * against every router. It covers history ranges (`since`, `last`,
 * `before`, `upTo`) and trimming by stored rows, `complete` with gaps,
 * `seq` (and after a restart), tokens with revocation and expiry, offline
 * messages (pages, the `maxWaiting` cap, delivered marks), idempotency keys
 * and failed writes. `contract_test.ts` opens each storage and runs it.
 *
 * Where storages legitimately differ, a {@linkcode Subject} says so and the
 * case names the difference: Redis gives each `GroupChat` its `seq` itself
 * (ops carry 0, results carry the `seq`), so its rooms have no gap in `seq`
 * and `roomSeqs()` is empty; only SQLite and Redis survive a restart; only
 * they can be made to fail a write; Redis's idempotency window runs on its
 * own clock. This module does not open storages, nor test what one storage
 * alone has (migrations, files, read-only files, Redis reconnects, a
 * cluster's publishing): those stay in the storage's own test file.
 *
 * Why this file is long: it is the tables, and a table is only useful
 * whole; each case is a few lines.
 *
 * @module
 */
import assert from "node:assert/strict";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import {
  hashToken,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  selectHistory,
  type Storage,
  type WriteOp,
  type WriteResult,
} from "../../src/chat/storage.ts";
import { MIN_KEPT } from "../../src/redis/storage.ts";

/** An open storage of a {@linkcode Subject}, for one case. */
export interface Harness extends AsyncDisposable {
  /** The storage; a new object after {@linkcode restart}. */
  storage: Storage;
  /**
   * Closes the storage and opens the same data again, as a server restart
   * does (Redis: the server is killed and started again from its
   * append-only file). Absent: nothing survives the process (memory).
   */
  restart?(): Promise<void>;
  /**
   * Makes writes fail (SQLite: no page more than the file has; Redis:
   * `maxmemory` 1 with `noeviction`) until the returned function is
   * called. Absent: the storage cannot be made to fail (memory).
   */
  breakWrites?(): Promise<() => Promise<void>>;
}

/** A storage the contract runs against. */
export interface Subject {
  name: string;
  /**
   * Whether the storage gives each `GroupChat` its `seq` (Redis): ops then
   * carry `seq` 0, each result carries the `seq` given, rooms have no gap
   * in `seq` and `roomSeqs()` is empty (the seq lives in the storage).
   */
  assignsSeq: boolean;
  /**
   * Whether the idempotency window is measured on the messages' timestamps
   * (memory, SQLite); Redis expires its keys on its own clock.
   */
  windowByMessageTime: boolean;
  /** Whether its data survives a restart ({@linkcode Harness.restart}). */
  restarts: boolean;
  /**
   * What the `error` of a write failed by {@linkcode Harness.breakWrites}
   * says; absent when the storage cannot be made to fail.
   */
  failureText?: RegExp;
  /** A fresh, empty storage keeping the last `historySize` messages of a room. */
  open(options: { historySize: number }): Promise<Harness>;
}

/** One case of the contract. */
export interface ContractCase {
  name: string;
  /** `HISTORY_SIZE` of the storage the case opens (default 100). */
  historySize?: number;
  /** Why `subject` does not run this case (a legitimate difference), if so. */
  skip?(subject: Subject): string | undefined;
  run(subject: Subject, harness: Harness): Promise<void>;
}

const T0 = 1_700_000_000_000;
const ALL = Number.MAX_SAFE_INTEGER;

const noGaps = (subject: Subject) =>
  subject.assignsSeq
    ? "it gives seqs itself, so a room's seqs have no gap"
    : undefined;
const noRestart = (subject: Subject) =>
  subject.restarts ? undefined : "nothing survives the process";

/** A `GroupChat` as stored; the content is as awkward as JSON allows. */
export function group(
  room: string,
  seq: number,
  content = `message ${seq} with "quotes" and "seq":0 inside`,
): StoredGroupChat {
  return {
    id: `${room}-${seq}`,
    seq,
    room,
    sender_username: "alice",
    content,
    timestamp: T0 + seq,
  };
}

/** A `PrivateChat` from alice to `target` at `T0 + at`. */
export function chat(id: string, target: string, at = 0): StoredPrivateChat {
  return {
    id,
    sender_username: "alice",
    target_username: target,
    content: `hello ${id}`,
    timestamp: T0 + at,
  };
}

/** The ops that store `message`s, as `subject` takes them (seq 0 where it gives seqs). */
function groupOps(
  subject: Subject,
  messages: readonly StoredGroupChat[],
): WriteOp[] {
  return messages.map((message) => ({
    kind: "group",
    message: subject.assignsSeq ? { ...message, seq: 0 } : message,
  }));
}

/**
 * Stores `messages` in one batch and checks that each is stored: where the
 * storage gives seqs, the `seq` given is the message's.
 */
export async function store(
  subject: Subject,
  storage: Storage,
  messages: readonly StoredGroupChat[],
): Promise<void> {
  const results = await storage.write(groupOps(subject, messages));
  assert.deepEqual(
    results,
    messages.map((m) => subject.assignsSeq ? { ok: true, seq: m.seq } : OK),
  );
}

/** Stores `seqs` of `room`, in one batch or one batch each. */
async function storeSeqs(
  subject: Subject,
  storage: Storage,
  room: string,
  seqs: readonly number[],
  batches: "one" | "each" = "one",
): Promise<void> {
  const messages = seqs.map((seq) => group(room, seq));
  if (batches === "one") return await store(subject, storage, messages);
  for (const message of messages) await store(subject, storage, [message]);
}

/**
 * A result as one node sees it: `remote: false` is a cluster's way to say
 * nothing (the target has no connection on another node).
 */
function local(result: WriteResult | undefined): WriteResult | undefined {
  if (result?.ok && result.remote === false) {
    const { remote: _, ...rest } = result;
    return rest;
  }
  return result;
}

/** Writes `ops` and returns their results as one node sees them. */
async function write(
  storage: Storage,
  ops: readonly WriteOp[],
): Promise<(WriteResult | undefined)[]> {
  return (await storage.write(ops)).map(local);
}

const OK = { ok: true } as const;
const INBOX_FULL = { ok: false, reason: "inbox_full" } as const;
const UNKNOWN_USER = { ok: false, reason: "unknown_user" } as const;

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** The seqs and `complete` of a page. */
async function seqsOf(
  storage: Storage,
  room: string,
  query: HistoryQuery,
): Promise<[number[], boolean]> {
  const page = await storage.history(room, query);
  return [page.messages.map((m) => m.seq), page.complete];
}

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
    for (const since of new Set([0, 1, 3, 6, 9, 10, 15, n - 3, n - 1, n])) {
      queries.push({ kind: "since", since, upTo });
    }
    for (const count of new Set([0, 1, 3, 4, 10, 50, n + 5])) {
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
      for (const limit of new Set([0, 1, 2, 3, 4, 50, n + 5])) {
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

// ---------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------
// Tokens: "null when unknown, revoked or expired at now"

/** One lookup of a token. */
interface TokenRule {
  name: string;
  /** Revoked before the lookup. */
  revoked: boolean;
  /** The lookup's `now`; the token expires at 2000. */
  now: number;
  /** What is looked up, if not the token as created. */
  lookup?: string;
  valid: boolean;
}

const TOKEN = "Tok-Bob-0123456789abcdef";

const TOKEN_RULES: readonly TokenRule[] = [
  { name: "valid when created", revoked: false, now: 1000, valid: true },
  { name: "valid until just before", revoked: false, now: 1999, valid: true },
  { name: "expired at expiresAt", revoked: false, now: 2000, valid: false },
  { name: "expired after", revoked: false, now: 9000, valid: false },
  { name: "revoked", revoked: true, now: 1000, valid: false },
  { name: "revoked and expired", revoked: true, now: 9000, valid: false },
  {
    name: "compared case-insensitively",
    revoked: false,
    now: 1000,
    lookup: TOKEN.toUpperCase(),
    valid: true,
  },
  {
    name: "unknown",
    revoked: false,
    now: 1000,
    lookup: "tok-unknown",
    valid: false,
  },
];

const tokenRules: ContractCase[] = TOKEN_RULES.map((c) => ({
  name: `token: ${c.name}`,
  async run(_subject, { storage }) {
    const grant = { username: "bob", expiresAt: 2000 };
    await storage.createToken(TOKEN, grant, 500);
    if (c.revoked) assert.equal(await storage.revokeToken(TOKEN), true);
    assert.deepEqual(
      await storage.checkToken(c.lookup ?? TOKEN, c.now),
      c.valid ? grant : null,
    );
  },
}));

const tokens: ContractCase[] = [...tokenRules, {
  name: "tokens: create, refuse a duplicate, revoke once, list newest first",
  async run(_subject, { storage }) {
    await storage.createToken(
      "tok-A",
      { username: "bob", expiresAt: 500 },
      100,
    );
    await storage.createToken(
      "tok-b",
      { username: "carol", expiresAt: 900 },
      200,
    );
    await assert.rejects(
      storage.createToken("tok-b", { username: "eve", expiresAt: 900 }, 300),
    );
    // An expired token can still be revoked (and listed).
    assert.equal(await storage.revokeToken("tok-A"), true);
    assert.equal(await storage.revokeToken("tok-A"), false);
    assert.equal(await storage.revokeToken("tok-unknown"), false);
    assert.deepEqual(await storage.listTokens(), [
      {
        username: "carol",
        expiresAt: 900,
        hashPrefix: (await hashToken("tok-b")).slice(0, 12),
        createdAt: 200,
        revoked: false,
      },
      {
        username: "bob",
        expiresAt: 500,
        hashPrefix: (await hashToken("tok-A")).slice(0, 12),
        createdAt: 100,
        revoked: true,
      },
    ]);
    assert.deepEqual(await storage.checkToken("tok-b", 300), {
      username: "carol",
      expiresAt: 900,
    });
    assert.deepEqual(await storage.roomSeqs(), new Map());
  },
}];

// ---------------------------------------------------------------------------
// Offline messages

/** Who may get an offline `PrivateChat`: a user who holds or held a token. */
interface RecipientCase {
  name: string;
  /** bob's token, if any, and what became of it. */
  token?: "valid" | "revoked" | "expired";
  delivered: boolean;
  result: WriteResult;
  stored: boolean;
}

const RECIPIENTS: readonly RecipientCase[] = [
  {
    name: "no token, offline: unknown_user, not stored",
    delivered: false,
    result: UNKNOWN_USER,
    stored: false,
  },
  {
    name: "no token, delivered live: not kept for later",
    delivered: true,
    result: OK,
    stored: false,
  },
  {
    name: "a token holder, offline: kept for later",
    token: "valid",
    delivered: false,
    result: OK,
    stored: true,
  },
  {
    name: "a revoked token's user, offline: kept for later",
    token: "revoked",
    delivered: false,
    result: OK,
    stored: true,
  },
  {
    name: "an expired token's user, offline: kept for later",
    token: "expired",
    delivered: false,
    result: OK,
    stored: true,
  },
];

const recipients: ContractCase[] = RECIPIENTS.map((c) => ({
  name: `offline: ${c.name}`,
  async run(_subject, { storage }) {
    if (c.token) {
      const expiresAt = c.token === "expired" ? 2 : ALL;
      await storage.createToken("tok-bob", { username: "bob", expiresAt }, 1);
      if (c.token === "revoked") await storage.revokeToken("tok-bob");
    }
    const message = chat("p1", "bob");
    assert.deepEqual(
      await write(storage, [{
        kind: "private",
        message,
        delivered: c.delivered,
      }]),
      [c.result],
    );
    assert.deepEqual(await storage.offline("bob"), c.stored ? [message] : []);
    assert.deepEqual(await storage.offline("alice"), []);
  },
}));

/** One write to bob's inbox under `MAX_OFFLINE_MESSAGES` 3. */
interface CapCase {
  name: string;
  /** Messages already waiting for bob. */
  waiting: number;
  /** A write of the same message before {@linkcode op}, if any. */
  before?: (message: StoredPrivateChat) => WriteOp;
  op: (message: StoredPrivateChat) => WriteOp;
  result: WriteResult;
  /** Messages waiting afterwards. */
  after: number;
}

const capped = (message: StoredPrivateChat): WriteOp => ({
  kind: "private",
  message,
  delivered: false,
  maxWaiting: 3,
});

const CAPS: readonly CapCase[] = [
  {
    name: "below the cap: kept",
    waiting: 2,
    op: capped,
    result: OK,
    after: 3,
  },
  {
    name: "at the cap: inbox_full, not stored",
    waiting: 3,
    op: capped,
    result: INBOX_FULL,
    after: 3,
  },
  {
    name: "no cap given: kept",
    waiting: 3,
    op: (message) => ({ kind: "private", message, delivered: false }),
    result: OK,
    after: 4,
  },
  {
    name: "sent live: not kept, not capped",
    waiting: 3,
    op: (message) => ({ ...capped(message), delivered: true }),
    result: OK,
    after: 3,
  },
  {
    // Written live first, as the runner does (SQLite's `undelivered` marks
    // a stored row; memory and Redis store the message it carries).
    name: "acknowledged, target gone before the commit: kept anyway",
    waiting: 3,
    before: (message) => ({ kind: "private", message, delivered: true }),
    op: (message) => ({ kind: "undelivered", message }),
    result: OK,
    after: 4,
  },
];

/** Gives bob a token, so that messages may wait for him. */
async function bobHoldsAToken(storage: Storage): Promise<void> {
  await storage.createToken("tok-bob", { username: "bob", expiresAt: ALL }, 1);
}

const caps: ContractCase[] = CAPS.map((c) => ({
  name: `offline cap: ${c.name}`,
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const waiting = range(1, c.waiting).map((n) => chat(`w${n}`, "bob", n));
    assert.deepEqual(
      await write(storage, waiting.map((message) => capped(message))),
      waiting.map(() => OK),
    );
    const message = chat("new", "bob", 100);
    if (c.before) {
      assert.deepEqual(await write(storage, [c.before(message)]), [OK]);
    }
    assert.deepEqual(await write(storage, [c.op(message)]), [c.result]);
    const after = await storage.offline("bob");
    assert.equal(after.length, c.after);
    assert.deepEqual(after.slice(0, waiting.length), waiting);
  },
}));

const offline: ContractCase[] = [...recipients, ...caps, {
  name: "offline cap: in one batch, then pages, then room again",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const p = (id: string, at: number) => capped(chat(id, "bob", at));
    assert.deepEqual(
      await write(storage, [
        p("p1", 1),
        p("p2", 2),
        p("p3", 3),
        p("p4", 4),
        // Live: not kept for later, not capped.
        {
          kind: "private",
          message: chat("p5", "bob", 5),
          delivered: true,
          maxWaiting: 3,
        },
        // Sent live, its target gone before the commit: kept whatever the
        // count.
        { kind: "undelivered", message: chat("p5", "bob", 5) },
      ]),
      [OK, OK, OK, INBOX_FULL, OK, OK],
    );
    const ids = async (limit?: number) =>
      (await storage.offline("bob", limit)).map((m) => m.id);
    assert.deepEqual(await ids(), ["p1", "p2", "p3", "p5"]);
    assert.deepEqual(await ids(2), ["p1", "p2"]);
    await storage.write([{ kind: "delivered", ids: ["p1", "p2"] }]);
    assert.deepEqual(await ids(2), ["p3", "p5"]);
    // Room again below the cap.
    assert.deepEqual(await write(storage, [p("p7", 7)]), [OK]);
  },
}, {
  name:
    "offline pages: the oldest first, the same until marked, the next after",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const all = range(1, 5).map((n) => chat(`w${n}`, "bob", n));
    await storage.write(all.map((message): WriteOp => ({
      kind: "private",
      message,
      delivered: false,
    })));
    assert.deepEqual(await storage.offline("bob", 2), all.slice(0, 2));
    assert.deepEqual(await storage.offline("bob", 2), all.slice(0, 2));
    await storage.write([
      { kind: "delivered", ids: ["w1", "w2"], username: "bob" },
    ]);
    assert.deepEqual(await storage.offline("bob", 2), all.slice(2, 4));
    // Ids that wait nowhere are ignored.
    await storage.write([{ kind: "delivered", ids: ["w3", "w4", "nope"] }]);
    assert.deepEqual(await storage.offline("bob", 2), all.slice(4));
    assert.deepEqual(await storage.offline("bob", 0), []);
    assert.deepEqual(await storage.offline("bob"), all.slice(4));
    assert.deepEqual(await storage.offline("nobody"), []);
  },
}, {
  name:
    "offline: written as delivered, then undelivered, it waits; once delivered it is gone",
  async run(_subject, { storage }) {
    const message = chat("p-late", "carol");
    await storage.write([{ kind: "private", message, delivered: true }]);
    assert.deepEqual(await storage.offline("carol"), [], "delivered");
    await storage.write([{ kind: "undelivered", message }]);
    assert.deepEqual(await storage.offline("carol"), [message]);
    await storage.write([{ kind: "delivered", ids: [message.id] }]);
    assert.deepEqual(await storage.offline("carol"), [], "once");
  },
}];

// ---------------------------------------------------------------------------
// Idempotency keys (issue 12): a message's client id, with its sender

/** One run of batches; each op is stored or a resend of an earlier one. */
interface IdempotencyCase {
  name: string;
  /** Batches of writes, in order. */
  batches: WriteOp[][];
  /** For each op of every batch: the `n` of the message it is a resend of, or `null` (stored). */
  expect: (number | null)[];
  /** Depends on the messages' timestamps (not Redis's clock). */
  clocked?: boolean;
}

/** A `GroupChat` number `n`; a resend repeats the content (by default, from the id). */
const g = (
  n: number,
  ref: string | undefined,
  sender = "alice",
  at = T0 + n,
  content = `text ${ref ?? n}`,
  room = "r",
): WriteOp => {
  const message = {
    id: `server-${n}`,
    seq: n,
    room,
    sender_username: sender,
    content,
    timestamp: at,
  };
  return ref === undefined
    ? { kind: "group", message }
    : { kind: "group", message, ref };
};

/** A `PrivateChat` from `sender` to bob, online (nothing kept for later). */
const p = (n: number, ref: string, sender = "alice"): WriteOp => ({
  kind: "private",
  message: {
    id: `server-${n}`,
    sender_username: sender,
    target_username: "bob",
    content: `text ${ref}`,
    timestamp: T0 + n,
  },
  delivered: true,
  ref,
});

const IDEMPOTENCY: readonly IdempotencyCase[] = [
  {
    name: "a resent PrivateChat is not stored again",
    batches: [[p(1, "k")], [p(2, "k")]],
    expect: [null, 1],
  },
  {
    name: "a GroupChat and a PrivateChat are never each other's resend",
    batches: [[g(1, "k")], [p(2, "k")], [p(3, "l")], [g(4, "l")]],
    expect: [null, null, null, null],
  },
  {
    name: "a resend with the same id is not stored; it answers the first",
    batches: [[g(1, "k")], [g(2, "k")]],
    expect: [null, 1],
  },
  {
    name: "in the same batch too",
    batches: [[g(1, "k"), g(2, "k")]],
    expect: [null, 1],
  },
  {
    name: "the key is per sender",
    batches: [[g(1, "k")], [g(2, "k", "bob")]],
    expect: [null, null],
  },
  {
    name: "without an id there is no key",
    batches: [[g(1, undefined)], [g(2, undefined)]],
    expect: [null, null],
  },
  {
    name: "another id is another message",
    batches: [[g(1, "k")], [g(2, "l")], [g(3, "k")]],
    expect: [null, null, 1],
  },
  {
    name: "an id reused for other content is another message, and keys it",
    batches: [[g(1, "k")], [g(2, "k", "alice", T0 + 2, "other")], [
      g(3, "k", "alice", T0 + 3, "other"),
    ]],
    expect: [null, null, 2],
  },
  {
    name: "an id reused in another room is another message",
    batches: [[g(1, "k")], [g(2, "k", "alice", T0 + 2, "text k", "s")]],
    expect: [null, null],
  },
  {
    name: "past the window the id is free again",
    batches: [[g(1, "k")], [
      g(2, "k", "alice", T0 + IDEMPOTENCY_WINDOW_MS + 2),
    ]],
    expect: [null, null],
    clocked: true,
  },
];

const idempotency: ContractCase[] = IDEMPOTENCY.map((c) => ({
  name: `idempotency: ${c.name}`,
  skip: (subject) =>
    c.clocked && !subject.windowByMessageTime
      ? "its keys expire on its own clock"
      : undefined,
  async run(subject, { storage }) {
    const ops: WriteOp[] = [];
    const results: WriteResult[] = [];
    for (const batch of c.batches) {
      const sent = batch.map((op) =>
        op.kind === "group" && subject.assignsSeq
          ? { ...op, message: { ...op.message, seq: 0 } }
          : op
      );
      ops.push(...sent);
      results.push(...await storage.write(sent));
    }
    const outcome = results.map((result, i) => {
      assert.ok(result.ok, JSON.stringify(result));
      if (!result.original) return null;
      if (ops[i]?.kind === "group" && subject.assignsSeq) {
        // The resend is answered with the first one's seq.
        assert.equal(result.seq, result.original.seq);
      }
      return Number(result.original.id.replace("server-", ""));
    });
    assert.deepEqual(outcome, c.expect);
    const page = await storage.history("r", {
      kind: "since",
      since: 0,
      upTo: ALL,
    });
    assert.deepEqual(
      page.messages.map((m) => m.id),
      ops.flatMap((op, i) =>
        op.kind === "group" && op.message.room === "r" && c.expect[i] === null
          ? [op.message.id]
          : []
      ),
      "resends are not stored",
    );
  },
}));

idempotency.push({
  name:
    "idempotency: a PrivateChat refused with inbox_full keeps no key; its resend, once there is room, is stored",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const offline = (n: number, ref: string): WriteOp => ({
      ...p(n, ref),
      delivered: false,
      maxWaiting: 1,
    } as WriteOp);
    assert.deepEqual(await write(storage, [offline(1, "a")]), [OK]);
    assert.deepEqual(await write(storage, [offline(2, "b")]), [INBOX_FULL]);
    // Bob reads his page, and it is marked delivered: the inbox has room.
    const ids = async () => (await storage.offline("bob")).map((m) => m.id);
    assert.deepEqual(await ids(), ["server-1"]);
    await storage.write([
      { kind: "delivered", ids: ["server-1"], username: "bob" },
    ]);
    assert.deepEqual(await write(storage, [offline(3, "b")]), [OK]);
    assert.deepEqual(await ids(), ["server-3"]);
  },
});

// ---------------------------------------------------------------------------
// Failures

const failures: ContractCase[] = [{
  name:
    "failure: failed writes say why, store nothing, take no history slot, and writes work again",
  historySize: 10,
  skip: (subject) =>
    subject.failureText ? undefined : "it cannot be made to fail",
  async run(subject, harness) {
    const { storage } = harness;
    await bobHoldsAToken(storage);
    await storeSeqs(subject, storage, "r", range(1, 5));
    const failing = 200;
    const repair = await harness.breakWrites!();
    try {
      for (let i = 0; i < failing; i++) {
        // A long message, which needs room (pages, memory) to be stored.
        const message = group("r", 6 + i, "x".repeat(4000));
        const results = await storage.write([
          ...groupOps(subject, [message]),
          { kind: "private", message: chat(`p${i}`, "bob"), delivered: false },
        ]);
        for (const result of results) {
          assert.ok(!result.ok && result.reason === "failed");
          assert.match(result.error ?? "", subject.failureText!);
        }
      }
      await assert.rejects(storage.probe!(), (error: Error) => {
        assert.match(error.message, subject.failureText!);
        return true;
      });
    } finally {
      await repair();
    }
    // The probe finds the fault gone, and leaves nothing behind.
    await storage.probe!();
    assert.deepEqual(
      await storage.history("", { kind: "since", since: -1, upTo: ALL }),
      { messages: [], complete: true },
    );
    assert.deepEqual(await storage.offline("bob"), []);
    assert.deepEqual(
      await storage.roomSeqs(),
      subject.assignsSeq ? new Map() : new Map([["r", 5]]),
    );
    // The next write commits: where the writer gives seqs, the failed ones
    // leave a gap; where the storage does, they took none.
    const next = subject.assignsSeq ? 6 : 6 + failing;
    await storeSeqs(subject, storage, "r", [next]);
    for (
      const query of [
        { kind: "since", since: 0, upTo: next },
        { kind: "last", count: 10, upTo: next },
        { kind: "before", before: next + 1, limit: 50, upTo: next },
      ] satisfies HistoryQuery[]
    ) {
      assert.deepEqual(
        await storage.history("r", query),
        {
          messages: [...range(1, 5), next].map((seq) => group("r", seq)),
          complete: true,
        },
        JSON.stringify(query),
      );
    }
    if (!subject.assignsSeq) {
      assert.deepEqual(await storage.roomSeqs(), new Map([["r", next]]));
    }
    // Trimming still keeps exactly the newest 10 stored messages.
    await storeSeqs(subject, storage, "r", range(next + 1, next + 5));
    assert.deepEqual(
      await seqsOf(storage, "r", { kind: "since", since: 0, upTo: ALL }),
      [[2, 3, 4, 5, ...range(next, next + 5)], false],
    );
    assert.equal(
      (await storage.history("r", { kind: "since", since: 1, upTo: ALL }))
        .complete,
      true,
    );
  },
}];

/** The whole contract, in the order it runs. */
export const CONTRACT: readonly ContractCase[] = [
  ...historyScenarios,
  ...pages,
  ...trimming,
  ...restarts,
  ...tokens,
  ...offline,
  ...idempotency,
  ...failures,
];

/** Runs every case of the contract against `subject`, one step each. */
export async function runContract(
  t: Deno.TestContext,
  subject: Subject,
): Promise<void> {
  for (const c of CONTRACT) {
    const why = c.skip?.(subject);
    await t.step({
      name: why ? `${c.name} (not for ${subject.name}: ${why})` : c.name,
      ignore: why !== undefined,
      async fn() {
        await using harness = await subject.open({
          historySize: c.historySize ?? 100,
        });
        await c.run(subject, harness);
      },
    });
  }
}
