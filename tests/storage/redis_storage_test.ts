/**
 * What only `RedisStorage` (and its connection) has, against a real
 * `redis-server`: `seq`s given across nodes, the stored JSON, how many rows
 * a room keeps (`MIN_KEPT`), publishing to other nodes, `not_connected` and
 * `remote`, offline marks only for ids this node read, `EVALSHA` falling
 * back to `EVAL`, and writes while Redis is down. The rules every storage
 * shares are in the storage contract (`contract_test.ts`).
 *
 * Why this file is long: it is one `Deno.test` whose steps share one real
 * redis-server, started once, so every Redis-only rule is a step here
 * rather than a file with a server of its own.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Logger } from "../../src/runtime/log.ts";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import {
  connectRedis,
  type RedisConnection,
  RedisScript,
} from "../../src/redis/connection.ts";
import { MIN_KEPT, RedisStorage } from "../../src/redis/storage.ts";
import { KEYS } from "../../src/redis/keys.ts";
import type { WriteOp, WriteResult } from "../../src/chat/storage.ts";

const quiet: Logger = () => {};

/** Resolves once `done()` holds; fails after `ms`. */
async function until(done: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function group(room: string, n: number, seq = 0): StoredGroupChat {
  return {
    id: `${room}-${n}`,
    seq,
    room,
    sender_username: "alice",
    content: `message ${n} with "quotes" and "seq":0 inside`,
    timestamp: 1_700_000_000_000 + n,
  };
}

function groupOps(room: string, from: number, to: number): WriteOp[] {
  const ops: WriteOp[] = [];
  for (let n = from; n <= to; n++) {
    ops.push({ kind: "group", message: group(room, n) });
  }
  return ops;
}

function chat(id: string, sender: string, target: string): StoredPrivateChat {
  return {
    id,
    sender_username: sender,
    target_username: target,
    content: `hello ${id}`,
    timestamp: 1_700_000_000_000,
  };
}

function seqs(results: readonly WriteResult[]): number[] {
  return results.map((result) => {
    assert.ok(result.ok && result.seq !== undefined, JSON.stringify(result));
    return result.seq;
  });
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

const FAILED = { ok: false, reason: "failed" } as const;

/** One storage of node `nodeId` on a connection of its own. */
interface Node extends AsyncDisposable {
  connection: RedisConnection;
  storage: RedisStorage;
}

async function node(
  redis: LocalRedis,
  nodeId: string,
  options: { historySize?: number; authEnabled?: boolean } = {},
): Promise<Node> {
  const connection = connectRedis(redis.url, { name: nodeId, log: quiet });
  await until(() => connection.up);
  const storage = new RedisStorage(connection, {
    nodeId,
    historySize: options.historySize ?? 100,
    authEnabled: options.authEnabled ?? true,
  });
  return {
    connection,
    storage,
    [Symbol.asyncDispose]: () => connection.close(),
  };
}

/**
 * Subscribes to the sharded channels named in `named` (name to channel)
 * and collects their payloads, by name.
 */
async function listen(redis: LocalRedis, named: Record<string, string>) {
  const subscriber = connectRedis(redis.url, { name: "listener", log: quiet });
  await until(() => subscriber.up);
  const received: { node: string; payload: string }[] = [];
  const channels = new Map(
    Object.entries(named).map(([name, channel]) => [channel, name]),
  );
  await subscriber.client.sSubscribe(
    [...channels.keys()],
    (payload, channel) => {
      received.push({ node: channels.get(channel)!, payload });
    },
  );
  return {
    /**
     * Everything published so far, once a marker sent after it came back
     * on every channel (Redis keeps the order of one connection's messages).
     */
    async drain(client: RedisConnection): Promise<typeof received> {
      for (const channel of channels.keys()) {
        await client.command(["SPUBLISH", channel, "END"]);
      }
      await until(() =>
        received.filter(({ payload }) => payload === "END").length ===
          channels.size
      );
      const payloads = received.filter(({ payload }) => payload !== "END");
      received.length = 0;
      return payloads;
    },
    [Symbol.asyncDispose]: () => subscriber.close(),
  };
}

/** Messages written to a room of one node, seq 1 to `written`. */
interface HistoryCase {
  name: string;
  historySize: number;
  written: number;
}

const HISTORY_CASES: HistoryCase[] = [
  { name: "empty room", historySize: 100, written: 0 },
  { name: "all kept", historySize: 100, written: 10 },
  { name: "trimmed to 4", historySize: 4, written: 10 },
  { name: "one kept", historySize: 1, written: 5 },
  { name: "historySize 0", historySize: 0, written: 5 },
  {
    name: "more than Redis keeps, small history",
    historySize: 3,
    written: MIN_KEPT + 20,
  },
  {
    name: "history longer than MIN_KEPT",
    historySize: MIN_KEPT + 10,
    written: MIN_KEPT + 15,
  },
];

Deno.test("redis storage: against a real redis-server", async (t) => {
  await using redis = await startLocalRedis();
  const admin = connectRedis(redis.url, { name: "admin", log: quiet });
  try {
    await until(() => admin.up);
    const fresh = () => admin.client.sendCommand(["FLUSHALL"]);

    await t.step("group writes get consecutive seqs across nodes", async () => {
      await fresh();
      await using a = await node(redis, "n1");
      await using b = await node(redis, "n2");
      assert.deepEqual(
        seqs(await a.storage.write(groupOps("lobby", 1, 2))),
        [1, 2],
      );
      assert.deepEqual(
        seqs(await b.storage.write(groupOps("lobby", 3, 3))),
        [3],
      );
      assert.deepEqual(
        seqs(await a.storage.write(groupOps("other", 1, 1))),
        [1],
      );
      // Concurrent batches: each in order, together without gap or repeat.
      const [fromA, fromB] = await Promise.all([
        a.storage.write(groupOps("lobby", 4, 13)),
        b.storage.write(groupOps("lobby", 14, 23)),
      ]);
      const seqsA = seqs(fromA);
      const seqsB = seqs(fromB);
      for (const batch of [seqsA, seqsB]) {
        assert.deepEqual(batch, [...batch].sort((x, y) => x - y));
      }
      assert.deepEqual(
        [...seqsA, ...seqsB].sort((x, y) => x - y),
        range(4, 23),
      );
      // The stored JSON is the message's own, with its seq.
      const stored = await admin.client.sendCommand<string[]>([
        "ZRANGE",
        KEYS.hist("lobby"),
        "0",
        "-1",
      ]);
      assert.equal(stored.length, 23);
      const sent = [
        ...groupOps("lobby", 1, 3),
        ...groupOps("lobby", 4, 13),
        ...groupOps("lobby", 14, 23),
      ];
      const seqOf = [1, 2, 3, ...seqsA, ...seqsB];
      const expected = sent.map((op, i) => {
        assert.equal(op.kind, "group");
        const message = op.kind === "group" ? op.message : undefined;
        return JSON.stringify({ ...message, seq: seqOf[i] });
      }).sort((x, y) => JSON.parse(x).seq - JSON.parse(y).seq);
      assert.deepEqual(stored, expected);
      assert.equal(
        await admin.client.sendCommand(["GET", KEYS.seq("lobby")]),
        "23",
      );
    });

    await t.step("a group message must come with seq 0", async () => {
      await using a = await node(redis, "n1");
      await assert.rejects(
        a.storage.write([{ kind: "group", message: group("lobby", 1, 7) }]),
        /seq 0/,
      );
    });

    // What history reads is in the storage contract (contract_history.ts);
    // this is how many rows Redis keeps for that.
    await t.step("a room keeps max(historySize, MIN_KEPT) rows", async (t) => {
      await fresh();
      for (const testCase of HISTORY_CASES) {
        await t.step(testCase.name, async () => {
          const { historySize, written } = testCase;
          const room = `room-${testCase.name}`;
          await using a = await node(redis, "n1", { historySize });
          const ops = groupOps(room, 1, written);
          assert.deepEqual(seqs(await a.storage.write(ops)), range(1, written));
          assert.equal(
            await admin.client.sendCommand(["ZCARD", KEYS.hist(room)]),
            Math.min(written, Math.max(historySize, MIN_KEPT)),
          );
        });
      }
    });

    await t.step(
      "a group message is published once, on its room's sharded channel, from its writer",
      async () => {
        await fresh();
        await using a = await node(redis, "n1");
        await using listener = await listen(redis, {
          lobby: KEYS.roomChannel("lobby"),
          other: KEYS.roomChannel("other"),
        });
        await admin.client.sendCommand([
          "SADD",
          KEYS.roomNodes("lobby"),
          "n1",
          "n2",
          "n4",
        ]);
        const [result] = await a.storage.write(groupOps("lobby", 1, 1));
        assert.deepEqual(result, { ok: true, seq: 1 });
        const payload = "gn1 " + JSON.stringify(group("lobby", 1, 1));
        assert.deepEqual(await listener.drain(admin), [
          { node: "lobby", payload },
        ]);
      },
    );

    await t.step(
      "private messages: results, offline store, publish",
      async (t) => {
        interface PrivateCase {
          name: string;
          authEnabled: boolean;
          /** Which nodes hold which users; the writer is n1. */
          userNodes: Record<string, string[]>;
          /** Users holding a token. */
          tokenUsers?: string[];
          delivered: boolean;
          result: WriteResult;
          stored: boolean;
          /** The channels it was published on: the target's, the sender's. */
          publishedTo: ("bob" | "alice")[];
        }
        const cases: PrivateCase[] = [
          {
            name: "auth off, target nowhere: not_connected",
            authEnabled: false,
            userNodes: {},
            delivered: false,
            result: { ok: false, reason: "not_connected" },
            stored: false,
            publishedTo: [],
          },
          {
            name: "auth on, target nowhere without a token: unknown_user",
            authEnabled: true,
            userNodes: { alice: ["n3"] },
            delivered: false,
            result: { ok: false, reason: "unknown_user" },
            stored: false,
            publishedTo: [],
          },
          {
            name: "auth on, target nowhere with a token: kept offline",
            authEnabled: true,
            userNodes: { alice: ["n1", "n3"] },
            tokenUsers: ["bob"],
            delivered: false,
            result: { ok: true, remote: false },
            stored: true,
            publishedTo: ["alice"],
          },
          {
            name: "target on another node: remote",
            authEnabled: false,
            userNodes: { bob: ["n2"] },
            delivered: false,
            result: { ok: true, remote: true },
            stored: false,
            publishedTo: ["alice", "bob"],
          },
          {
            name: "target here only, delivered: ok",
            authEnabled: true,
            userNodes: { bob: ["n1"], alice: ["n1"] },
            delivered: true,
            result: { ok: true, remote: false },
            stored: false,
            publishedTo: ["alice"],
          },
          {
            name: "target here and elsewhere, delivered: remote",
            authEnabled: true,
            userNodes: { bob: ["n1", "n2"] },
            delivered: true,
            result: { ok: true, remote: true },
            stored: false,
            publishedTo: ["alice", "bob"],
          },
          {
            name: "sender and target on shared nodes: once on each channel",
            authEnabled: false,
            userNodes: { alice: ["n1", "n3", "n4"], bob: ["n2", "n3"] },
            delivered: false,
            result: { ok: true, remote: true },
            stored: false,
            publishedTo: ["alice", "bob"],
          },
        ];
        for (const testCase of cases) {
          await t.step(testCase.name, async () => {
            await fresh();
            await using a = await node(redis, "n1", {
              authEnabled: testCase.authEnabled,
            });
            await using listener = await listen(redis, {
              bob: KEYS.userChannel("bob"),
              alice: KEYS.userChannel("alice"),
            });
            for (const [user, nodes] of Object.entries(testCase.userNodes)) {
              await admin.client.sendCommand([
                "SADD",
                KEYS.userNodes(user),
                ...nodes,
              ]);
            }
            for (const user of testCase.tokenUsers ?? []) {
              await a.storage.createToken(
                `tok-${user}`,
                { username: user, expiresAt: 10_000 },
                1,
              );
            }
            const message = chat("p1", "alice", "bob");
            assert.deepEqual(
              await a.storage.write([
                { kind: "private", message, delivered: testCase.delivered },
              ]),
              [testCase.result],
            );
            assert.deepEqual(
              await a.storage.offline("bob"),
              testCase.stored ? [message] : [],
            );
            const published = await listener.drain(admin);
            assert.deepEqual(
              published.map(({ node }) => node).sort(),
              testCase.publishedTo,
            );
            for (const { payload } of published) {
              assert.equal(payload, "pn1 " + JSON.stringify(message));
            }
          });
        }
      },
    );

    await t.step(
      "offline messages are read in order and removed once delivered",
      async () => {
        await fresh();
        await using a = await node(redis, "n1");
        await using b = await node(redis, "n2");
        await a.storage.createToken("tok-bob", {
          username: "bob",
          expiresAt: 10_000,
        }, 1);
        const messages = ["p1", "p2", "p3"].map((id) =>
          chat(id, "alice", "bob")
        );
        assert.deepEqual(
          await a.storage.write([
            ...messages.map((message): WriteOp => ({
              kind: "private",
              message,
              delivered: false,
            })),
            { kind: "undelivered", message: chat("p4", "carol", "bob") },
          ]),
          [
            { ok: true, remote: false },
            { ok: true, remote: false },
            { ok: true, remote: false },
            { ok: true },
          ],
        );
        const all = [...messages, chat("p4", "carol", "bob")];
        assert.deepEqual(await b.storage.offline("bob"), all);
        // Ids this storage has not read are ignored.
        assert.deepEqual(
          await a.storage.write([{ kind: "delivered", ids: ["p1"] }]),
          [{ ok: true }],
        );
        assert.deepEqual(await b.storage.offline("bob"), all);
        assert.deepEqual(
          await b.storage.write([
            { kind: "delivered", ids: ["p1", "p3", "unknown"] },
          ]),
          [{ ok: true }],
        );
        assert.deepEqual(await a.storage.offline("bob"), [all[1], all[3]]);
        assert.deepEqual(await a.storage.offline("nobody"), []);
      },
    );

    await t.step(
      "RedisScript falls back to EVAL after SCRIPT FLUSH",
      async () => {
        const script = new RedisScript("return ARGV[1] .. ':' .. ARGV[2]");
        const sha = await script.ready;
        assert.equal(script.sha, sha);
        const exists = async () =>
          await admin.client.sendCommand<number[]>(["SCRIPT", "EXISTS", sha]);
        assert.equal(await script.run(admin, [], ["a", 1]), "a:1");
        assert.deepEqual(await exists(), [1]);
        await admin.client.sendCommand(["SCRIPT", "FLUSH"]);
        assert.deepEqual(await exists(), [0]);
        assert.equal(await script.run(admin, [], [2, "b"]), "2:b");
        assert.deepEqual(await exists(), [1]);
        // Errors other than NOSCRIPT are not retried.
        const failing = new RedisScript("return redis.error_reply('ERR nope')");
        await failing.ready;
        await assert.rejects(failing.run(admin, [], []), /nope/);
      },
    );

    await t.step(
      "while Redis is down, writes fail at once, then work again",
      async () => {
        await fresh();
        await using a = await node(redis, "n1");
        await a.storage.createToken("tok-bob", {
          username: "bob",
          expiresAt: 10_000,
        }, 1);
        assert.deepEqual(seqs(await a.storage.write(groupOps("lobby", 1, 2))), [
          1,
          2,
        ]);
        await redis.kill();
        await until(() => !a.connection.up);
        const started = performance.now();
        assert.deepEqual(
          await a.storage.write([
            ...groupOps("lobby", 3, 3),
            {
              kind: "private",
              message: chat("p1", "alice", "bob"),
              delivered: false,
            },
            { kind: "undelivered", message: chat("p2", "alice", "bob") },
          ]),
          Array(3).fill({ ...FAILED, error: "redis is not available" }),
        );
        await assert.rejects(
          a.storage.history("lobby", { kind: "last", count: 5, upTo: 2 }),
        );
        await assert.rejects(a.storage.offline("bob"));
        await assert.rejects(a.storage.checkToken("tok-bob", 0));
        assert.ok(performance.now() - started < 500, "failed quickly");

        await redis.restart();
        await until(() => a.connection.up);
        // The append-only file kept the seq and the history.
        assert.deepEqual(seqs(await a.storage.write(groupOps("lobby", 3, 3))), [
          3,
        ]);
        assert.deepEqual(
          (await a.storage.history("lobby", {
            kind: "last",
            count: 5,
            upTo: 3,
          }))
            .messages.map((message) => message.seq),
          [1, 2, 3],
        );
      },
    );
  } finally {
    await admin.close();
  }
});
