/**
 * The storage contract: typed case tables that every {@linkcode Storage}
 * (memory, SQLite, Redis) passes alike, as one router test table runs
 * against every router. It covers history ranges (`since`, `last`,
 * `before`, `upTo`) and trimming by stored rows, `complete` with gaps,
 * `seq` (and after a restart), tokens with revocation and expiry, offline
 * messages (pages, the `maxWaiting` cap, delivered marks), idempotency keys
 * and failed writes. This file holds what the tables share (the
 * {@linkcode Subject} a storage is, helpers, {@linkcode runContract}); the
 * tables are in `contract_history.ts`, `contract_offline.ts` and
 * `contract_writes.ts`; `contract_test.ts` opens each storage and runs them.
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
 * @module
 */
import assert from "node:assert/strict";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import type {
  HistoryQuery,
  Storage,
  WriteOp,
  WriteResult,
} from "../../src/chat/storage.ts";

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
  /**
   * The order of a user's offline messages: as they were written (memory,
   * Redis's list) or by timestamp, then as written (SQLite). They differ
   * only for messages written out of timestamp order (a clock set back).
   */
  offlineOrder: "written" | "timestamp";
  /**
   * Whether an `undelivered` op keeps the message it carries even when it
   * was never written (memory, Redis: a cluster's node pages a message
   * another node stored) or only marks the stored row (SQLite: on one node
   * the runner always wrote it first, as delivered).
   */
  undeliveredStores: boolean;
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

/** The time the cases' messages are written around. */
export const T0 = 1_700_000_000_000;
/** A `upTo` (or `since`) beyond every seq. */
export const ALL = Number.MAX_SAFE_INTEGER;

/** Why `subject` skips a case with gaps in `seq`, if it does. */
export function noGaps(subject: Subject): string | undefined {
  return subject.assignsSeq
    ? "it gives seqs itself, so a room's seqs have no gap"
    : undefined;
}

/** Why `subject` skips a case that restarts it, if it does. */
export function noRestart(subject: Subject): string | undefined {
  return subject.restarts ? undefined : "nothing survives the process";
}

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
export function groupOps(
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
export async function storeSeqs(
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
export async function write(
  storage: Storage,
  ops: readonly WriteOp[],
): Promise<(WriteResult | undefined)[]> {
  return (await storage.write(ops)).map(local);
}

/** A write that was done. */
export const OK = { ok: true } as const;
/** An offline `PrivateChat` refused: `maxWaiting` messages wait already. */
export const INBOX_FULL = { ok: false, reason: "inbox_full" } as const;
/** An offline `PrivateChat` to a user who never held a token. */
export const UNKNOWN_USER = { ok: false, reason: "unknown_user" } as const;

/** The integers `from` to `to`, both included. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** The seqs and `complete` of a page. */
export async function seqsOf(
  storage: Storage,
  room: string,
  query: HistoryQuery,
): Promise<[number[], boolean]> {
  const page = await storage.history(room, query);
  return [page.messages.map((m) => m.seq), page.complete];
}

/** Gives bob a token, so that messages may wait for him. */
export async function bobHoldsAToken(storage: Storage): Promise<void> {
  await storage.createToken("tok-bob", { username: "bob", expiresAt: ALL }, 1);
}

/** Runs every case of `contract` against `subject`, one step each. */
export async function runContract(
  t: Deno.TestContext,
  contract: readonly ContractCase[],
  subject: Subject,
): Promise<void> {
  for (const c of contract) {
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
