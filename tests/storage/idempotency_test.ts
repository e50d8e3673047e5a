/**
 * Issue 12, resending is safe: a `GroupChat`'s client `id` is, with its
 * sender, its idempotency key. One table run against every storage (memory,
 * SQLite, Redis), and the reducer's answer to a write that was a resend (the
 * first message's `Ack`, nothing delivered again), on one node and in a
 * cluster.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredGroupChat } from "../../src/wire/protocol.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { connectRedis } from "../../src/redis/connection.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import { KEYS } from "../../src/redis/keys.ts";
import {
  type ChatSettings,
  createState,
  type Effect,
  type Event,
  reduce,
} from "../../src/chat/reducer.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import {
  IDEMPOTENCY_WINDOW_MS,
  MEMORY_SENT_MAX,
  MemoryStorage,
  type Storage,
  type WriteOp,
  type WriteResult,
} from "../../src/chat/storage.ts";
import { waitFor } from "../support/helpers.ts";

const T0 = 1_700_000_000_000;

function message(
  n: number,
  sender: string,
  at: number,
  content: string,
  room = "r",
): StoredGroupChat {
  return {
    id: `server-${n}`,
    seq: n,
    room,
    sender_username: sender,
    content,
    timestamp: at,
  };
}

interface Case {
  name: string;
  /** Batches of writes, in order. */
  batches: WriteOp[][];
  /** For each op of every batch: the `n` of the message it is a resend of, or `null` (stored). */
  expect: (number | null)[];
  /** Cases that depend on the messages' clock (not Redis, whose window is its own). */
  clocked?: boolean;
}

/** A `GroupChat`; a resend repeats the content (by default, from the id). */
const g = (
  n: number,
  ref: string | undefined,
  sender = "alice",
  at = T0 + n,
  content = `text ${ref ?? n}`,
  room = "r",
): WriteOp =>
  ref === undefined
    ? { kind: "group", message: message(n, sender, at, content, room) }
    : { kind: "group", message: message(n, sender, at, content, room), ref };

/** A `PrivateChat` from `sender` to bob (online: nothing kept for later). */
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

const CASES: readonly Case[] = [
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

async function run(storage: Storage, batches: WriteOp[][]) {
  const results: WriteResult[] = [];
  for (const batch of batches) results.push(...await storage.write(batch));
  return results;
}

/** What each result says: the stored seq's message `n`, or `null` when stored anew. */
function outcome(results: readonly WriteResult[], ops: readonly WriteOp[]) {
  return results.map((result, i) => {
    assert.ok(result.ok, JSON.stringify(result));
    if (!result.original) return null;
    assert.ok(ops[i]?.kind === "group" || ops[i]?.kind === "private");
    return Number(result.original.id.replace("server-", ""));
  });
}

for (const { name, batches, expect } of CASES) {
  Deno.test(`idempotency, memory: ${name}`, async () => {
    const results = await run(new MemoryStorage(100), batches);
    assert.deepEqual(outcome(results, batches.flat()), expect);
  });
  Deno.test(`idempotency, SQLite: ${name}`, async () => {
    const storage = new SqliteStorage(":memory:", 100);
    using _closing = { [Symbol.dispose]: () => void storage.close() };
    const results = await run(storage, batches);
    assert.deepEqual(outcome(results, batches.flat()), expect);
    const kept = await storage.history("r", {
      kind: "last",
      count: 10,
      upTo: 100,
    });
    assert.equal(
      kept.messages.length,
      batches.flat().filter((op, i) =>
        op.kind === "group" && op.message.room === "r" && expect[i] === null
      )
        .length,
      "resends are not stored",
    );
  });
}

Deno.test("idempotency, Redis: the table, and the key expires after the window", async () => {
  await using redis = await startLocalRedis();
  const connection = connectRedis(redis.url, {
    name: "test",
    log: () => {},
  });
  try {
    await waitFor(() => connection.up, "redis up", 10_000);
    for (const { name, batches, expect, clocked } of CASES) {
      if (clocked) continue;
      await connection.command(["FLUSHALL"]);
      const storage = new RedisStorage(connection, {
        nodeId: "n",
        historySize: 100,
        authEnabled: false,
      });
      // Redis gives the seq: every group op carries seq 0.
      const zeroed = batches.map((batch) =>
        batch.map((op) =>
          op.kind === "group"
            ? { ...op, message: { ...op.message, seq: 0 } }
            : op
        )
      );
      const results = await run(storage, zeroed);
      assert.deepEqual(outcome(results, zeroed.flat()), expect, name);
      const stored = zeroed.flat().filter((op, i) =>
        op.kind === "group" && op.message.room === "r" && expect[i] === null
      ).length;
      assert.equal(
        await connection.command(["ZCARD", KEYS.hist("r")]),
        stored,
        `${name}: resends are not stored`,
      );
      for (const [i, result] of results.entries()) {
        if (
          result.ok && result.original && zeroed.flat()[i]?.kind === "group"
        ) {
          // The resend is answered with the first one's seq.
          assert.equal(result.seq, result.original.seq, name);
          assert.ok(i > 0);
        }
      }
    }
    const ttl = Number(
      await connection.command(["PTTL", KEYS.groupSent("r", "alice", "k")]),
    );
    assert.ok(
      ttl > IDEMPOTENCY_WINDOW_MS - 60_000 && ttl <= IDEMPOTENCY_WINDOW_MS,
      `the key lives for the window: ${ttl}`,
    );
  } finally {
    await connection.close();
  }
});

// ---------------------------------------------------------------------------
// The reducer's side

const SETTINGS: ChatSettings = {
  serverName: "chat-test/1.0",
  authEnabled: false,
  defaultRoom: "general",
  maxMessageBytes: 512,
  maxContentChars: 64,
  maxRoomsPerConnection: 4,
  rateLimitPerSecond: 0,
  rateLimitBurst: 8,
  maxConsecutiveErrors: 5,
};

/** The frames (type and body) `conn` gets from `effects`. */
function framesTo(effects: readonly Effect[], conn: number) {
  return effects.flatMap((effect) => {
    const to = effect.type === "send"
      ? effect.conn === conn
      : effect.type === "broadcast" && [...effect.conns].includes(conn);
    if (!to || !("data" in effect)) return [];
    const { message_type, message_body } = JSON.parse(effect.data);
    return [[message_type, message_body]];
  });
}

interface ReducerCase {
  name: string;
  cluster: boolean;
  /** The seq the room delivered before the resend answers. */
  delivered: number;
  /** The first message's seq, as storage answers. */
  firstSeq: number;
  /** What the sender (1) and another member (2) get, in order. */
  sender: string[];
  other: string[];
}

const REDUCER_CASES: readonly ReducerCase[] = [
  {
    name: "one node: the first Ack, nothing delivered again",
    cluster: false,
    delivered: 1,
    firstSeq: 1,
    sender: ["Ack"],
    other: [],
  },
  {
    name: "cluster, delivered here already: the first Ack",
    cluster: true,
    delivered: 1,
    firstSeq: 1,
    sender: ["Ack"],
    other: [],
  },
  {
    name: "cluster, not delivered here yet: delivered in order, then the Ack",
    cluster: true,
    delivered: 0,
    firstSeq: 1,
    sender: ["GroupChat", "Ack"],
    other: ["GroupChat"],
  },
];

for (const c of REDUCER_CASES) {
  Deno.test(`idempotency, reducer: ${c.name}`, () => {
    let state = createState({ ...SETTINGS, cluster: c.cluster });
    const effects: Effect[] = [];
    const dispatch = (event: Event) => {
      const [next, out] = reduce(state, event);
      state = next;
      effects.push(...out);
      return out;
    };
    const frame = (conn: number, type: string, body: object, id: string) => {
      const text = JSON.stringify({
        message_type: type,
        message_body: body,
        id,
      });
      return dispatch({
        type: "frame",
        conn,
        now: T0,
        text,
        size: text.length,
        id: `fresh-${id}`,
      });
    };
    for (const [conn, user] of [[1, "alice"], [2, "bob"]] as const) {
      dispatch({ type: "open", conn, now: T0, publicId: `p${conn}` });
      const out = frame(
        conn,
        "Enter",
        { sender_username: user, room: "r" },
        "e",
      );
      const join = out.find((e) => e.type === "join");
      if (join?.type === "join") {
        dispatch({
          type: "joined",
          now: T0,
          request: join.request,
          result: {
            kind: "joined",
            seq: c.delivered,
            isNew: true,
            members: ["alice", "bob"],
          },
        });
      }
    }
    const room = state.rooms.get("r");
    assert.ok(room);
    room.deliveredSeq = c.delivered;
    const sent = frame(
      1,
      "GroupChat",
      { sender_username: "alice", room: "r", content: "again" },
      "k",
    );
    const persist = sent.find((e) => e.type === "persist");
    assert.ok(persist?.type === "persist");
    assert.equal(
      persist.request.op.kind === "group" && persist.request.op.ref,
      "k",
      "the client id goes to storage as the key",
    );
    const original = { id: "first", seq: c.firstSeq, timestamp: T0 - 5 };
    const answered = dispatch({
      type: "persisted",
      now: T0,
      request: persist.request,
      result: { ok: true, seq: c.firstSeq, original },
    });
    const toSender = framesTo(answered, 1);
    assert.deepEqual(toSender.map(([type]) => type), c.sender);
    assert.deepEqual(toSender.at(-1)?.[1], { ref: "k", ...original });
    for (const [type, body] of toSender) {
      if (type === "GroupChat") assert.equal(body.id, "first");
    }
    assert.deepEqual(framesTo(answered, 2).map(([type]) => type), c.other);
    assert.equal(state.connections.get(1)?.busy, false, "the sender goes on");
  });
}

interface FailureCase {
  reason: "failed" | "unknown";
  text: RegExp;
}

const FAILURES: readonly FailureCase[] = [
  {
    reason: "failed",
    text: /^the message was not stored; send it again with the same id$/,
  },
  {
    reason: "unknown",
    text: /may have been stored; send it again with the same id/,
  },
];

for (const { reason, text } of FAILURES) {
  Deno.test(`idempotency, reducer: a write that ${reason} answers unavailable, naming the same id`, () => {
    let state = createState(SETTINGS);
    const run = (event: Event) => {
      const [next, out] = reduce(state, event);
      state = next;
      return out;
    };
    run({ type: "open", conn: 1, now: T0, publicId: "p1" });
    const send = (type: string, body: object, id: string) => {
      const raw = JSON.stringify({
        message_type: type,
        message_body: body,
        id,
      });
      return run({
        type: "frame",
        conn: 1,
        now: T0,
        text: raw,
        size: raw.length,
        id: `fresh-${id}`,
      });
    };
    send("Enter", { sender_username: "alice", room: "r" }, "e");
    const out = send(
      "GroupChat",
      { sender_username: "alice", room: "r", content: "x" },
      "k",
    );
    const persist = out.find((e) => e.type === "persist");
    assert.ok(persist?.type === "persist");
    const answered = run({
      type: "persisted",
      now: T0,
      request: persist.request,
      result: { ok: false, reason },
    });
    const [[type, body] = []] = framesTo(answered, 1);
    assert.equal(type, "Error");
    assert.equal(body.code, "unavailable");
    assert.equal(body.ref, "k");
    assert.match(body.message, text);
  });
}

Deno.test("idempotency, reducer: a resent PrivateChat gets the first Ack and is not delivered again", () => {
  let state = createState(SETTINGS);
  const run = (event: Event) => {
    const [next, out] = reduce(state, event);
    state = next;
    return out;
  };
  const send = (conn: number, type: string, body: object, id: string) => {
    const raw = JSON.stringify({ message_type: type, message_body: body, id });
    return run({
      type: "frame",
      conn,
      now: T0,
      text: raw,
      size: raw.length,
      id: `fresh-${conn}-${id}`,
    });
  };
  for (const [conn, user] of [[1, "alice"], [2, "bob"]] as const) {
    run({ type: "open", conn, now: T0, publicId: `p${conn}` });
    send(conn, "Enter", { sender_username: user }, "e");
  }
  const out = send(
    1,
    "PrivateChat",
    { sender_username: "alice", target_username: "bob", content: "x" },
    "k",
  );
  const persist = out.find((e) => e.type === "persist");
  assert.ok(persist?.type === "persist");
  assert.equal(
    persist.request.op.kind === "private" && persist.request.op.ref,
    "k",
  );
  const answered = run({
    type: "persisted",
    now: T0,
    request: persist.request,
    result: { ok: true, original: { id: "first", seq: 0, timestamp: T0 - 1 } },
  });
  assert.deepEqual(framesTo(answered, 1), [[
    "Ack",
    { ref: "k", id: "first", timestamp: T0 - 1 },
  ]]);
  assert.deepEqual(framesTo(answered, 2), [], "not delivered again");
});

Deno.test("idempotency, memory: at most MEMORY_SENT_MAX keys, the oldest going first", async () => {
  const storage = new MemoryStorage(10);
  const ops: WriteOp[] = [];
  for (let n = 0; n <= MEMORY_SENT_MAX; n++) ops.push(g(n, `k${n}`));
  await storage.write(ops);
  const [oldest, newest] = await storage.write([
    g(MEMORY_SENT_MAX + 1, "k0"),
    g(MEMORY_SENT_MAX + 2, `k${MEMORY_SENT_MAX}`),
  ]);
  assert.ok(oldest?.ok && !oldest.original, "the oldest key was dropped");
  assert.ok(newest?.ok && newest.original, "the newest is kept");
});

/**
 * An offline `PrivateChat` refused with `inbox_full` was not stored, so it
 * keeps no key: its resend with the same id, once the inbox has room, is
 * stored (not answered as a resend of a message that never was).
 */
async function inboxFullKeepsNoKey(storage: Storage): Promise<void> {
  await storage.createToken(
    "t-bob",
    { username: "bob", expiresAt: T0 * 2 },
    T0,
  );
  const offline = (n: number, ref: string): WriteOp => ({
    ...p(n, ref),
    delivered: false,
    maxWaiting: 1,
  } as WriteOp);
  const [first] = await storage.write([offline(1, "a")]);
  assert.ok(first?.ok && first.original === undefined, JSON.stringify(first));
  assert.deepEqual(await storage.write([offline(2, "b")]), [
    { ok: false, reason: "inbox_full" },
  ]);
  // Bob reads his page, and it is marked delivered: the inbox has room.
  assert.deepEqual((await storage.offline("bob")).map((m) => m.id), [
    "server-1",
  ]);
  await storage.write([
    { kind: "delivered", ids: ["server-1"], username: "bob" },
  ]);
  const [again] = await storage.write([offline(3, "b")]);
  assert.ok(again?.ok, JSON.stringify(again));
  assert.equal(again.original, undefined, "stored, not a resend");
  assert.deepEqual(
    (await storage.offline("bob")).map((m) => m.id),
    ["server-3"],
  );
}

Deno.test("idempotency, memory and SQLite: a PrivateChat refused with inbox_full keeps no key", async () => {
  await inboxFullKeepsNoKey(new MemoryStorage(100));
  const sqlite = new SqliteStorage(":memory:", 100);
  try {
    await inboxFullKeepsNoKey(sqlite);
  } finally {
    await sqlite.close();
  }
});

Deno.test("idempotency, Redis: a PrivateChat refused with inbox_full keeps no key", async () => {
  await using redis = await startLocalRedis();
  const connection = connectRedis(redis.url, { name: "test", log: () => {} });
  try {
    await waitFor(() => connection.up, "redis up", 10_000);
    await inboxFullKeepsNoKey(
      new RedisStorage(connection, {
        nodeId: "n",
        historySize: 100,
        authEnabled: true,
      }),
    );
  } finally {
    await connection.close();
  }
});
