/**
 * Issue 12, resending is safe: a `GroupChat`'s client `id` is, with its
 * sender, its idempotency key. What every storage does with the key is in
 * the storage contract (`contract_writes.ts`); here are the reducer's answer
 * to a write that was a resend (the first message's `Ack`, nothing
 * delivered again), on one node and in a cluster, and what one storage
 * alone does: Redis's key expiry, MemoryStorage's bound.
 *
 * @module
 */
import assert from "node:assert/strict";
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
import { IDEMPOTENCY_WINDOW_MS, type WriteOp } from "../../src/chat/storage.ts";
import {
  MEMORY_SENT_MAX,
  MemoryStorage,
} from "../../src/storage/memory_storage.ts";
import { waitFor } from "../support/helpers.ts";
import { group, T0 } from "./contract.ts";

/** A `GroupChat` number `n` from alice with the client id `ref`. */
const g = (n: number, ref: string): WriteOp => ({
  kind: "group",
  message: group("r", n, `text ${ref}`),
  ref,
});

Deno.test("idempotency, Redis: a key lives for the window (Redis's clock)", async () => {
  await using redis = await startLocalRedis();
  const connection = connectRedis(redis.url, { name: "test", log: () => {} });
  try {
    await waitFor(() => connection.up, "redis up", 10_000);
    const storage = new RedisStorage(connection, {
      nodeId: "n",
      historySize: 100,
      authEnabled: false,
    });
    const [result] = await storage.write([{
      kind: "group",
      message: group("r", 0, "text k"),
      ref: "k",
    }]);
    assert.deepEqual(result, { ok: true, seq: 1 });
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
    // The room's seq known from the start: no read of it first.
    let state = createState(
      { ...SETTINGS, cluster: c.cluster },
      new Map([["r", 0]]),
    );
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
    let state = createState(SETTINGS, new Map([["r", 0]]));
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
  let state = createState(SETTINGS, new Map([["general", 0]]));
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
