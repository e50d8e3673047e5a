/**
 * The storage contract's write tables: idempotency keys (a message's
 * client `id` with its sender, issue 12) and failed writes (they say why,
 * store nothing, take no history slot). It does not open storages
 * (`contract_test.ts` does), nor test the reducer's answer to a resend
 * (`idempotency_test.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type WriteOp,
  type WriteResult,
} from "../../src/chat/storage.ts";
import {
  ALL,
  bobHoldsAToken,
  chat,
  type ContractCase,
  group,
  groupOps,
  INBOX_FULL,
  OK,
  range,
  seqsOf,
  storeSeqs,
  T0,
  write,
} from "./contract.ts";

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
    // One room's seq, as a single node reads it when the room opens again.
    assert.equal(await storage.roomSeq("r"), subject.assignsSeq ? 0 : next);
    assert.equal(await storage.roomSeq("never-used"), 0);
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

/** The write part of the contract. */
export const WRITES_CONTRACT: readonly ContractCase[] = [
  ...idempotency,
  ...failures,
];
