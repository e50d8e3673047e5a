/**
 * The cluster (issue 7): several nodes on one real `redis-server`, which
 * each test starts on a free port (without redis-server the test fails, it
 * never skips), with clients on different nodes: every rule that crosses
 * nodes, Redis killed and restarted mid-conversation, a node killed with
 * `kill -9`, a node that stops gracefully, and one `seq` order on every
 * node under concurrent senders on different nodes.
 *
 * Why this file is long: the rules that cross nodes run once per backend
 * (`BACKENDS`: a standalone redis-server and a Redis Cluster) from one
 * loop each, beside the outage tests that share its helpers; narrower
 * cluster topics have files of their own (`cluster_*_test.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { NODE_TTL_MS } from "../../src/redis/bus.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { REPLY_TIMEOUT_MS } from "../../src/redis/connection.ts";
import {
  envelope,
  type Frame,
  RawPeer,
  serve,
  TestClient,
  type TestServer,
  WAIT_MS,
  waitFor,
} from "../support/helpers.ts";
import {
  ADMIN,
  api,
  chatMany,
  connectWithToken,
  enterWith,
  issueToken,
  revokeToken,
} from "../support/db_helpers.ts";
import {
  answerTo,
  BACKENDS,
  bodiesOf,
  collect,
  health,
  redisCommand,
  spawnNode,
  startCluster,
  type TestCluster,
  waitForHealth,
} from "../support/cluster_helpers.ts";

/** Settings of a cluster with authentication on and the token API. */
const AUTH = { authEnabled: true, adminToken: ADMIN } as const;

/** The first two nodes of a cluster, "A" and "B". */
function pair(cluster: TestCluster): [TestServer, TestServer] {
  const [a, b] = cluster.nodes;
  assert.ok(a && b, "the cluster has two nodes");
  return [a, b];
}

/** Asserts a `Leave` body for `username` in `room` with `reason`. */
function assertLeave(
  body: Record<string, unknown>,
  room: string,
  username: string,
  reason: string,
): void {
  assert.equal(body.room, room);
  assert.equal(body.sender_username, username);
  assert.equal(body.reason, reason);
  assert.equal(typeof body.timestamp, "number");
}

/** The next frame, within `ms`, which must be of `type`; returns its body. */
async function expectWithin(
  client: TestClient,
  type: string,
  ms: number,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const frame = await client.next(ms);
  assert.equal(frame.message_type, type, JSON.stringify(frame));
  return frame.message_body;
}

/** Sends a `PrivateChat` body from `sender` to `target`. */
function privateChat(
  client: TestClient,
  sender: string,
  target: string,
  content: string,
  id?: string,
): void {
  client.send(envelope("PrivateChat", {
    sender_username: sender,
    target_username: target,
    content,
  }, id));
}

for (const backend of BACKENDS) {
  Deno.test(`cluster: Presence lists members on every node; Enter and Leave cross nodes once (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = pair(cluster);
    await using alice = await TestClient.connect(a.wsUrl);
    await using bob = await TestClient.connect(b.wsUrl);
    await using carol = await TestClient.connect(a.wsUrl);
    await using dave = await TestClient.connect(b.wsUrl);

    assert.deepEqual(await alice.enter("alice", "r"), ["alice"]);
    assert.deepEqual(await bob.enter("bob", "r"), ["alice", "bob"]);
    assert.equal((await alice.expect("Enter")).sender_username, "bob");
    assert.deepEqual(await carol.enter("carol", "r"), [
      "alice",
      "bob",
      "carol",
    ]);
    assert.deepEqual(await dave.enter("dave", "r"), [
      "alice",
      "bob",
      "carol",
      "dave",
    ]);
    // Who sees whose Enter: each member, the ones who came after it.
    const enters: readonly (readonly [TestClient, readonly string[]])[] = [
      [alice, ["carol", "dave"]],
      [bob, ["carol", "dave"]],
      [carol, ["dave"]],
    ];
    for (const [client, entered] of enters) {
      for (const username of entered) {
        const enter = await client.expect("Enter");
        assert.equal(enter.sender_username, username);
        assert.equal(enter.room, "r");
        assert.equal(typeof enter.timestamp, "number");
      }
    }
    // Each Enter once: nothing more on any node.
    await alice.silent(300);
    for (const client of [bob, carol, dave]) await client.silent(0);

    alice.send(
      envelope("Leave", { sender_username: "alice", room: "r" }, "l1"),
    );
    assert.equal((await alice.expect("Ack")).ref, "l1");
    for (const client of [bob, carol, dave]) {
      assertLeave(await client.expect("Leave"), "r", "alice", "left");
    }
    await dave.close();
    for (const client of [bob, carol]) {
      assertLeave(await client.expect("Leave"), "r", "dave", "disconnected");
    }
    await bob.silent(300);
    for (const client of [alice, carol]) await client.silent(0);

    // A newcomer's Presence lists the members on every node.
    await using eve = await TestClient.connect(b.wsUrl);
    assert.deepEqual(await eve.enter("eve", "r"), ["bob", "carol", "eve"]);
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster, auth: one user on two nodes is one member: one Enter, one Leave at the last close (${backend})`, async () => {
    await using cluster = await startCluster(2, AUTH, backend);
    const [a, b] = pair(cluster);
    // Tokens live in Redis: issued through A, they work on B.
    const alice = await issueToken(a.httpUrl, "alice");
    const wa = await issueToken(a.httpUrl, "wa");
    const wb = await issueToken(a.httpUrl, "wb");
    await using watcherA = await connectWithToken(a.wsUrl, wa.token);
    await using watcherB = await connectWithToken(b.wsUrl, wb.token);
    assert.equal(watcherB.welcome.username, "wb");
    await watcherA.enter("wa", "r");
    await watcherB.enter("wb", "r");
    assert.equal((await watcherA.expect("Enter")).sender_username, "wb");

    await using aliceOnA = await connectWithToken(a.wsUrl, alice.token);
    await using aliceOnB = await connectWithToken(b.wsUrl, alice.token);
    assert.equal(aliceOnB.welcome.username, "alice");
    assert.deepEqual(await aliceOnA.enter("alice", "r"), ["alice", "wa", "wb"]);
    for (const watcher of [watcherA, watcherB]) {
      assert.equal((await watcher.expect("Enter")).sender_username, "alice");
    }
    assert.deepEqual(await aliceOnB.enter("alice", "r", "e2"), [
      "alice",
      "wa",
      "wb",
    ]);
    // The second connection of a user already in the room: no Enter.
    await watcherA.silent(300);
    await watcherB.silent(0);
    await aliceOnA.silent(0);

    await aliceOnA.close();
    // Still in the room through B: no Leave anywhere.
    await watcherA.silent(500);
    await watcherB.silent(0);
    await aliceOnB.silent(0);

    await aliceOnB.close();
    for (const watcher of [watcherA, watcherB]) {
      assertLeave(await watcher.expect("Leave"), "r", "alice", "disconnected");
    }
    await watcherA.silent(300);
    await watcherB.silent(0);
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster: a username held on one node is taken on the others until it closes (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = pair(cluster);
    await using watcher = await TestClient.connect(b.wsUrl);
    await watcher.enter("watcher", "r");
    await using bob = await TestClient.connect(a.wsUrl);
    await bob.enter("bob", "r");
    assert.equal((await watcher.expect("Enter")).sender_username, "bob");

    await using other = await TestClient.connect(b.wsUrl);
    const { answer } = await answerTo(
      other,
      "Enter",
      {
        sender_username: "bob",
        room: "elsewhere",
      },
      "e1",
      WAIT_MS,
    );
    assert.equal(answer.message_type, "Error", JSON.stringify(answer));
    assert.equal(answer.message_body.code, "username_taken");
    await watcher.silent(200);

    await bob.close();
    assertLeave(await watcher.expect("Leave"), "r", "bob", "disconnected");
    // The name is free again, on the other node too.
    assert.deepEqual(await other.enter("bob", "r", "e2"), ["bob", "watcher"]);
    assert.equal((await watcher.expect("Enter")).sender_username, "bob");
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster: PrivateChat reaches a user on another node; nobody online is user_not_found (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = pair(cluster);
    await using alice = await TestClient.connect(a.wsUrl);
    await using bob = await TestClient.connect(b.wsUrl);
    await alice.enter("alice", "ra");
    await bob.enter("bob", "rb");

    privateChat(alice, "alice", "bob", "psst", "p1");
    const echo = await alice.expect("PrivateChat");
    const ack = await alice.expect("Ack");
    assert.equal(ack.ref, "p1");
    assert.equal(ack.id, echo.id);
    const received = await bob.expect("PrivateChat");
    assert.deepEqual(received, echo);
    assert.equal(received.sender_username, "alice");
    assert.equal(received.target_username, "bob");
    assert.equal(received.content, "psst");

    privateChat(bob, "bob", "alice", "back", "p2");
    const echoBack = await bob.expect("PrivateChat");
    assert.equal((await bob.expect("Ack")).id, echoBack.id);
    assert.deepEqual(await alice.expect("PrivateChat"), echoBack);

    const { answer } = await answerTo(
      alice,
      "PrivateChat",
      {
        sender_username: "alice",
        target_username: "nobody",
        content: "hello?",
      },
      "p3",
      WAIT_MS,
    );
    assert.equal(answer.message_type, "Error", JSON.stringify(answer));
    assert.equal(answer.message_body.code, "user_not_found");
    await alice.silent(200);
    await bob.silent(0);
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster, auth: a PrivateChat to an offline user is delivered once, on whichever node they connect to (${backend})`, async () => {
    await using cluster = await startCluster(2, AUTH, backend);
    const [a, b] = pair(cluster);
    const alice = await issueToken(a.httpUrl, "alice");
    const dave = await issueToken(a.httpUrl, "dave");
    await using aliceOnA = await connectWithToken(a.wsUrl, alice.token);

    privateChat(aliceOnA, "alice", "dave", "for later", "p1");
    const echo = await aliceOnA.expect("PrivateChat");
    assert.equal((await aliceOnA.expect("Ack")).id, echo.id);
    const { answer } = await answerTo(
      aliceOnA,
      "PrivateChat",
      {
        sender_username: "alice",
        target_username: "ghost",
        content: "never held a token",
      },
      "p2",
      WAIT_MS,
    );
    assert.equal(answer.message_body.code, "user_not_found");

    {
      await using daveOnB = await connectWithToken(b.wsUrl, dave.token);
      assert.deepEqual(await daveOnB.expect("PrivateChat"), echo);
      await daveOnB.silent(300);
    }
    // Delivered once: a later connection, on any node, gets it no more.
    for (const node of [a, b]) {
      await using again = await connectWithToken(node.wsUrl, dave.token);
      await again.silent(400);
    }
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster, auth: a PrivateChat reaches every connection of target and sender, on every node, once (${backend})`, async () => {
    await using cluster = await startCluster(2, AUTH, backend);
    const [a, b] = pair(cluster);
    const alice = await issueToken(a.httpUrl, "alice");
    const bob = await issueToken(a.httpUrl, "bob");
    await using aliceOnA = await connectWithToken(a.wsUrl, alice.token);
    await using aliceOnB = await connectWithToken(b.wsUrl, alice.token);
    await using bobOnA = await connectWithToken(a.wsUrl, bob.token);
    await using bobOnB = await connectWithToken(b.wsUrl, bob.token);
    const everyone = [aliceOnA, aliceOnB, bobOnA, bobOnB];

    privateChat(aliceOnA, "alice", "bob", "to both of you", "p1");
    const echo = await aliceOnA.expect("PrivateChat");
    const ack = await aliceOnA.expect("Ack");
    assert.equal(ack.ref, "p1");
    assert.equal(ack.id, echo.id);
    for (const client of [aliceOnB, bobOnA, bobOnB]) {
      assert.deepEqual(await client.expect("PrivateChat"), echo);
    }
    await aliceOnA.silent(300);
    for (const client of everyone) await client.silent(0);

    // To oneself: each connection once.
    privateChat(aliceOnB, "alice", "alice", "note to self", "p2");
    const note = await aliceOnB.expect("PrivateChat");
    assert.equal((await aliceOnB.expect("Ack")).id, note.id);
    assert.deepEqual(await aliceOnA.expect("PrivateChat"), note);
    await aliceOnA.silent(300);
    for (const client of everyone) await client.silent(0);
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster: concurrent senders on three nodes; every member sees one seq order (${backend})`, async () => {
    const N = 50;
    await using cluster = await startCluster(3, {
      rateLimitPerSecond: 0,
      rateLimitBurst: 200,
    }, backend);
    const urls = cluster.nodes.map((node) => node.wsUrl);
    const names = ["w0", "w1", "w2", "s0", "s1", "s2"];
    const clients: TestClient[] = [];
    try {
      for (const [i, name] of names.entries()) {
        const client = await TestClient.connect(urls[i % 3] as string);
        clients.push(client);
        await client.enter(name, "r");
      }
      // Client i sees the Enter of each later one.
      for (const [i, client] of clients.entries()) {
        const frames = await collect(client, { Enter: names.length - 1 - i });
        assert.deepEqual(
          bodiesOf(frames, "Enter").map((enter) => enter.sender_username),
          names.slice(i + 1),
        );
        assert.equal(frames.length, names.length - 1 - i);
      }
      const senders = clients.slice(3);
      // Without waiting for Acks: each node has 50 in flight at once.
      for (let i = 1; i <= N; i++) {
        for (const [s, sender] of senders.entries()) {
          sender.send(envelope("GroupChat", {
            sender_username: `s${s}`,
            room: "r",
            content: `s${s}-${i}`,
          }, `s${s}-${i}`));
        }
      }
      const total = 3 * N;
      const seen = await Promise.all(
        clients.map((client, i) =>
          collect(client, { GroupChat: total, ...(i >= 3 ? { Ack: N } : {}) })
        ),
      );
      const orders = seen.map((frames) =>
        bodiesOf(frames, "GroupChat").map((m) =>
          `${m.seq} ${m.id} ${m.sender_username} ${m.content}`
        )
      );
      const first = bodiesOf(seen[0] as Frame[], "GroupChat");
      assert.deepEqual(
        first.map((m) => m.seq),
        Array.from({ length: total }, (_, i) => i + 1),
      );
      assert.equal(new Set(first.map((m) => m.id)).size, total);
      for (const [i, order] of orders.entries()) {
        assert.deepEqual(order, orders[0], `${names[i]} saw another order`);
      }
      // Each sender's messages in the order it sent them.
      for (let s = 0; s < 3; s++) {
        assert.deepEqual(
          first.filter((m) => m.sender_username === `s${s}`).map((m) =>
            m.content
          ),
          Array.from({ length: N }, (_, i) => `s${s}-${i + 1}`),
        );
      }
      const bySeq = new Map(first.map((m) => [m.seq, m]));
      for (const [s, frames] of seen.slice(3).entries()) {
        assert.deepEqual(bodiesOf(frames, "Error"), []);
        assert.equal(frames.length, total + N, `s${s}: only chat and Acks`);
        const acks = bodiesOf(frames, "Ack");
        assert.deepEqual(
          acks.map((ack) => ack.ref),
          Array.from({ length: N }, (_, i) => `s${s}-${i + 1}`),
        );
        for (const ack of acks) {
          const message = bySeq.get(ack.seq);
          assert.ok(message, `Ack ${ack.ref}: no message with seq ${ack.seq}`);
          assert.equal(message.id, ack.id);
          assert.equal(message.content, ack.ref);
          assert.equal(message.timestamp, ack.timestamp);
          // The Ack follows its own echo.
          const echoAt = frames.findIndex((f) =>
            f.message_type === "GroupChat" && f.message_body.seq === ack.seq
          );
          const ackAt = frames.findIndex((f) =>
            f.message_type === "Ack" && f.message_body.ref === ack.ref
          );
          assert.ok(echoAt < ackAt, `Ack ${ack.ref} before its GroupChat`);
        }
      }
      // The watchers got the chat and nothing else.
      for (const frames of seen.slice(0, 3)) assert.equal(frames.length, total);
    } finally {
      for (const client of clients) await client.close();
    }
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster: history and since recovery on another node (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = pair(cluster);
    await using alice = await TestClient.connect(a.wsUrl);
    await alice.enter("alice", "r");
    const sent = await chatMany(alice, "alice", "r", 5);
    assert.deepEqual(sent.map((m) => m.seq), [1, 2, 3, 4, 5]);

    await using bob = await TestClient.connect(b.wsUrl);
    const presence = await enterWith(bob, "bob", { room: "r", history: 3 });
    assert.deepEqual(presence.members, ["alice", "bob"]);
    const last3 = await bob.expect("History");
    assert.equal(last3.room, "r");
    assert.equal(last3.complete, true);
    assert.deepEqual(
      last3.messages.map((m: { id: string; seq: number; content: string }) => ({
        id: m.id,
        seq: m.seq,
        content: m.content,
      })),
      sent.slice(2),
    );

    await using carol = await TestClient.connect(b.wsUrl);
    await enterWith(carol, "carol", { room: "r", since: 2 }, { id: "e1" });
    const since2 = await carol.expect("History");
    assert.equal(since2.complete, true);
    assert.deepEqual(
      since2.messages.map((m: { id: string }) => m.id),
      sent.slice(2).map((m) => m.id),
    );
    assert.equal((await carol.expect("Ack")).ref, "e1");

    // An older page through History on B.
    bob.send(envelope("History", { room: "r", before: 3, limit: 10 }, "h1"));
    assert.equal((await bob.expect("Enter")).sender_username, "carol");
    const older = await bob.expect("History");
    assert.deepEqual(
      older.messages.map((m: { seq: number }) => m.seq),
      [1, 2],
    );
    assert.equal(older.complete, true);
    assert.equal((await bob.expect("Ack")).ref, "h1");

    // Live after History, no duplicate.
    await collect(alice, { Enter: 2 });
    const [sixth] = await chatMany(alice, "alice", "r", 1, "n");
    for (const client of [bob, carol]) {
      const live = await client.expect("GroupChat");
      assert.equal(live.seq, 6);
      assert.equal(live.id, sixth?.id);
      await client.silent(0);
    }
  });
}

for (const backend of BACKENDS) {
  Deno.test(`cluster, auth: a token revoked through node A ends its connection on node B within one pub/sub hop (${backend})`, async () => {
    await using cluster = await startCluster(2, AUTH, backend);
    const [a, b] = pair(cluster);
    const alice = await issueToken(a.httpUrl, "alice");
    await using onB = await connectWithToken(b.wsUrl, alice.token);
    // The token was checked just now on B: its cache would trust it for 5 s.
    await onB.enter("alice", "r", "e1");

    const started = Date.now();
    assert.equal(await revokeToken(a.httpUrl, alice.token), 204);
    // The revocation travels to B over pub/sub: one hop, well under the 5 s
    // of B's re-check; the connection that held the token is closed.
    const closed = await onB.closed;
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "token revoked");
    assert.ok(Date.now() - started < 1000, "well before the re-check");

    await using peer = await RawPeer.upgrade(
      b.server.port,
      {},
      `/ws?token=${alice.token}`,
    );
    assert.equal(peer.status, 401);
  });
}

Deno.test("cluster: Redis killed and restarted mid-conversation", async () => {
  await using cluster = await startCluster(2);
  const { redis } = cluster;
  const [a, b] = pair(cluster);
  await using alice = await TestClient.connect(a.wsUrl);
  await using carol = await TestClient.connect(a.wsUrl);
  const bob = await TestClient.connect(b.wsUrl);
  try {
    await alice.enter("alice", "r");
    await bob.enter("bob", "r");
    await carol.enter("carol", "r");
    await collect(alice, { Enter: 2 });
    await collect(bob, { Enter: 1 });
    const [first] = await chatMany(alice, "alice", "r", 1, "before");
    assert.equal((await bob.expect("GroupChat")).id, first?.id);
    assert.equal((await carol.expect("GroupChat")).id, first?.id);

    await redis.kill();
    for (const node of cluster.nodes) {
      const degraded = await waitForHealth(node.httpUrl, "degraded", 10_000);
      assert.equal(degraded.status, 200);
      assert.equal(degraded.body.cluster.redis, "down");
    }
    // A message that cannot be carried gets an answer, never silence.
    const chat = await answerTo(
      alice,
      "GroupChat",
      {
        sender_username: "alice",
        room: "r",
        content: "lost?",
      },
      "g-down",
      5000,
    );
    assert.equal(chat.answer.message_type, "Error", JSON.stringify(chat));
    assert.equal(chat.answer.message_body.code, "unavailable");
    assert.deepEqual(chat.before, []);
    // So does a PrivateChat, even to a user on the same node.
    const whisper = await answerTo(
      alice,
      "PrivateChat",
      {
        sender_username: "alice",
        target_username: "carol",
        content: "psst",
      },
      "p-down",
      5000,
    );
    assert.equal(whisper.answer.message_type, "Error", JSON.stringify(whisper));
    assert.equal(whisper.answer.message_body.code, "unavailable");
    assert.deepEqual(whisper.before, []);
    // So does an Enter.
    await using dave = await TestClient.connect(a.wsUrl);
    const enter = await answerTo(
      dave,
      "Enter",
      {
        sender_username: "dave",
        room: "r",
      },
      "e-down",
      5000,
    );
    assert.equal(enter.answer.message_type, "Error", JSON.stringify(enter));
    assert.equal(enter.answer.message_body.code, "unavailable");
    // Nobody else heard of either.
    await carol.silent(200);
    await bob.silent(0);
    for (const client of [alice, bob, carol, dave]) {
      assert.equal(client.socket.readyState, WebSocket.OPEN);
    }

    await redis.restart();
    for (const node of cluster.nodes) {
      const ok = await waitForHealth(node.httpUrl, "ok", 10_000);
      assert.equal(ok.body.cluster.redis, "up");
    }
    // Cross-node delivery works again.
    const [second] = await chatMany(alice, "alice", "r", 1, "after");
    const onB = await collect(bob, { GroupChat: 1 });
    assert.deepEqual(
      onB.map((frame) => frame.message_type),
      ["GroupChat"],
      "bob saw only the message",
    );
    assert.equal(bodiesOf(onB, "GroupChat")[0].id, second?.id);
    assert.equal((await carol.expect("GroupChat")).id, second?.id);
    const lastSeen = second!.seq;

    // Bob goes away, misses two messages, and comes back with `since`.
    await bob.close();
    assertLeave(await alice.expect("Leave"), "r", "bob", "disconnected");
    assertLeave(await carol.expect("Leave"), "r", "bob", "disconnected");
    const missed = await chatMany(alice, "alice", "r", 2, "missed");
    await using back = await TestClient.connect(b.wsUrl);
    await enterWith(back, "bob", { room: "r", since: lastSeen });
    const page = await back.expect("History");
    assert.deepEqual(
      page.messages.map((m: { id: string; seq: number }) => [m.id, m.seq]),
      missed.map((m) => [m.id, m.seq]),
    );
    assert.equal(page.complete, true);
  } finally {
    await bob.close();
  }
});

Deno.test("cluster: after a Redis outage longer than NODE_TTL_MS, nobody sees a connected user leave", async () => {
  await using cluster = await startCluster(2);
  const { redis } = cluster;
  const [a, b] = pair(cluster);
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  // Let the append-only file (fsync every second) hold the presence.
  await new Promise((resolve) => setTimeout(resolve, 1500));

  await redis.kill();
  // Every heartbeat in Redis expires meanwhile.
  await new Promise((resolve) => setTimeout(resolve, NODE_TTL_MS + 1500));
  await redis.restart();
  for (const node of cluster.nodes) {
    await waitForHealth(node.httpUrl, "ok", 10_000);
  }
  // Both stayed connected and in the room all along: no Leave, no Enter.
  await alice.silent(2000);
  await bob.silent(0);
  const [message] = await chatMany(alice, "alice", "r", 1);
  assert.equal((await bob.expect("GroupChat")).id, message?.id);
});

Deno.test("cluster: a node killed with kill -9 is reaped; its users leave and their names are free", async () => {
  await using cluster = await startCluster(1);
  const [a] = cluster.nodes as [TestServer];
  await using c = await spawnNode(cluster.redis.url);
  // Entering before the node's first sync is another test's matter.
  await waitFor(
    () => c.logs.some((line) => line.msg === "cluster synced"),
    "node C in sync with the cluster",
    10_000,
  );
  await using alice = await TestClient.connect(a.wsUrl);
  await alice.enter("alice", "r");
  const carol = await TestClient.connect(c.wsUrl);
  try {
    assert.deepEqual(await carol.enter("carol", "r", "e1"), ["alice", "carol"]);
    assert.equal((await alice.expect("Enter")).sender_username, "carol");
    await alice.silent(200);

    c.process.kill("SIGKILL");
    const started = Date.now();
    assert.equal((await c.process.status).signal, "SIGKILL");
    const leave = await expectWithin(alice, "Leave", 12_000);
    assertLeave(leave, "r", "carol", "disconnected");
    const took = Date.now() - started;
    // Reaped once its heartbeat expires, at the next heartbeat of A.
    assert.ok(
      took >= 1000,
      `Leave after ${took} ms, before the heartbeat expired`,
    );
    assert.ok(took <= NODE_TTL_MS + 7000, `Leave after ${took} ms`);
    await carol.closed;
  } finally {
    await carol.close();
  }
  await using again = await TestClient.connect(a.wsUrl);
  assert.deepEqual(await again.enter("carol", "r"), ["alice", "carol"]);
  assert.equal((await alice.expect("Enter")).sender_username, "carol");
  await alice.silent(200);
});

Deno.test("cluster: a resync while an Enter is in flight keeps the user in the room and its name", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = pair(cluster);
  await using alice = await TestClient.connect(a.wsUrl);
  await alice.enter("alice", "r");
  await using carol = await TestClient.connect(b.wsUrl);
  // Redis holds carol's join for a while; meanwhile B's subscriber drops,
  // comes back, and B syncs its records with what it holds.
  assert.equal(
    await redisCommand(cluster.redis.port, "CLIENT", "PAUSE", "700", "WRITE"),
    "+OK",
  );
  carol.send(envelope("Enter", { sender_username: "carol", room: "r" }, "e1"));
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.match(
    await redisCommand(cluster.redis.port, "CLIENT", "KILL", "TYPE", "pubsub"),
    /^:[1-9]/,
  );
  const entered = await collect(carol, { Ack: 1 }, 5000);
  assert.deepEqual(
    entered.map((frame) => frame.message_type),
    ["Presence", "Ack"],
  );
  for (const node of cluster.nodes) {
    await waitForHealth(node.httpUrl, "ok", 10_000);
  }
  assert.equal((await alice.expect("Enter")).sender_username, "carol");
  // carol is still connected and in the room: nobody sees her leave.
  await alice.silent(1500);
  // And her name is still hers on the other node.
  await using other = await TestClient.connect(a.wsUrl);
  const { answer } = await answerTo(
    other,
    "Enter",
    {
      sender_username: "carol",
      room: "elsewhere",
    },
    "e2",
    WAIT_MS,
  );
  assert.equal(
    answer.message_body.code,
    "username_taken",
    JSON.stringify(answer),
  );
});

for (const backend of BACKENDS) {
  Deno.test(`cluster: /healthz names the node; a node that stops gracefully makes its users leave at once (${backend})`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = pair(cluster);
    const answers = await Promise.all(
      cluster.nodes.map((n) => health(n.httpUrl)),
    );
    for (const [i, answer] of answers.entries()) {
      assert.equal(answer.status, 200);
      assert.equal(answer.body.status, "ok");
      assert.equal(answer.body.cluster.redis, "up");
      assert.equal(
        answer.body.cluster.node,
        cluster.nodes[i]?.server.bus?.nodeId,
      );
    }
    assert.notEqual(
      answers[0]?.body.cluster.node,
      answers[1]?.body.cluster.node,
    );

    await using alice = await TestClient.connect(a.wsUrl);
    await using bob = await TestClient.connect(b.wsUrl);
    await alice.enter("alice", "r");
    await bob.enter("bob", "r");
    assert.equal((await alice.expect("Enter")).sender_username, "bob");

    const started = Date.now();
    const stopping = b.server.shutdown();
    const leave = await alice.expect("Leave");
    const took = Date.now() - started;
    assertLeave(leave, "r", "bob", "disconnected");
    assert.ok(took < NODE_TTL_MS / 2, `Leave after ${took} ms`);
    assert.equal((await bob.closed).code, 1001);
    await stopping;
    await alice.silent(300);
    const after = await health(a.httpUrl);
    assert.equal(after.body.status, "ok");
    // The name is free at once.
    await using again = await TestClient.connect(a.wsUrl);
    assert.deepEqual(await again.enter("bob", "r"), ["alice", "bob"]);
  });
}

Deno.test("cluster: a Redis that answers nothing (frozen) gets unavailable, not silence; delivery resumes", async () => {
  await using cluster = await startCluster(2);
  const { redis } = cluster;
  const [a, b] = pair(cluster);
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await collect(alice, { Enter: 1 });
  const pid = redis.pid;
  assert.ok(pid !== undefined, "redis runs");
  // SIGSTOP: the TCP connections stay up, nothing is answered.
  Deno.kill(pid, "SIGSTOP");
  let resumed = false;
  try {
    const chat = await answerTo(
      alice,
      "GroupChat",
      {
        sender_username: "alice",
        room: "r",
        content: "anyone?",
      },
      "g-frozen",
      REPLY_TIMEOUT_MS + 2000,
    );
    assert.equal(chat.answer.message_type, "Error", JSON.stringify(chat));
    assert.equal(chat.answer.message_body.code, "unavailable");
    // The node knows now: degraded, and the next message fails at once.
    const degraded = await health(a.httpUrl);
    assert.equal(degraded.body.status, "degraded");
    const started = Date.now();
    const again = await answerTo(
      alice,
      "GroupChat",
      {
        sender_username: "alice",
        room: "r",
        content: "still?",
      },
      "g-frozen-2",
      1000,
    );
    assert.equal(again.answer.message_body.code, "unavailable");
    assert.ok(Date.now() - started < 500, "fails fast while stalled");
    Deno.kill(pid, "SIGCONT");
    resumed = true;
    await waitForHealth(a.httpUrl, "ok", 10_000);
    // The frozen message may have run once Redis woke: bob sees it at most once.
    const [after] = await chatMany(alice, "alice", "r", 1, "back");
    const seen = await collect(bob, { GroupChat: 1 }, 5000);
    const ids = bodiesOf(seen, "GroupChat").map((m) => m.id);
    if (!ids.includes(after?.id)) {
      const more = await collect(bob, { GroupChat: 1 }, 5000);
      ids.push(...bodiesOf(more, "GroupChat").map((m) => m.id));
    }
    assert.ok(ids.includes(after?.id), "delivery across nodes resumed");
  } finally {
    if (!resumed) Deno.kill(pid, "SIGCONT");
  }
});

Deno.test("cluster: chat_cluster_up is 1 in sync, 0 while Redis is away", async () => {
  await using cluster = await startCluster(1);
  const [node] = cluster.nodes;
  assert.ok(node);
  const gauge = async () => {
    const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
    return /^chat_cluster_up (\d+)$/m.exec(text)?.[1];
  };
  assert.equal(await gauge(), "1");
  await cluster.redis.kill();
  await waitForHealth(node.httpUrl, "degraded", 10_000);
  assert.equal(await gauge(), "0");
  await cluster.redis.restart();
  await waitForHealth(node.httpUrl, "ok", 10_000);
  assert.equal(await gauge(), "1");
});

Deno.test("cluster: a node started while Redis is down serves degraded, then joins when Redis comes", async () => {
  await using redis = await startLocalRedis();
  await redis.kill();
  // Starts at once: the node does not wait for Redis.
  await using a = await serve({ redisUrl: redis.url });
  const down = await health(a.httpUrl);
  assert.equal(down.status, 200);
  assert.equal(down.body.status, "degraded");
  await using early = await TestClient.connect(a.wsUrl);
  const refused = await answerTo(
    early,
    "Enter",
    {
      sender_username: "early",
      room: "r",
    },
    "e-down",
    5000,
  );
  assert.equal(refused.answer.message_body.code, "unavailable");

  await redis.restart();
  await waitForHealth(a.httpUrl, "ok", 10_000);
  await using b = await serve({ redisUrl: redis.url });
  await waitForHealth(b.httpUrl, "ok", 10_000);
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  // The node subscribed once Redis came: B's message reaches A.
  assert.deepEqual(await bob.enter("bob", "r"), ["alice", "bob"]);
  await collect(alice, { Enter: 1 });
  const [sent] = await chatMany(bob, "bob", "r", 1, "late start");
  assert.equal((await alice.expect("GroupChat")).id, sent?.id);
});

Deno.test("cluster, auth: tokens cannot be checked or issued while Redis is down: 503, not 500", async () => {
  await using cluster = await startCluster(1, AUTH);
  const [a] = cluster.nodes;
  assert.ok(a);
  const alice = await issueToken(a.httpUrl, "alice");
  await cluster.redis.kill();
  await waitForHealth(a.httpUrl, "degraded", 10_000);
  // A token at upgrade cannot be checked: try again later.
  await using peer = await RawPeer.upgrade(
    a.server.port,
    {},
    `/ws?token=${alice.token}`,
  );
  assert.equal(peer.status, 503);
  assert.match(peer.headers, /retry-after: 1/i);
  // The token API says the same.
  const issued = await api(a.httpUrl, "POST", "/api/tokens", {
    username: "bob",
  });
  assert.equal(issued.status, 503, JSON.stringify(issued.body));
  assert.equal(issued.headers.get("retry-after"), "1");
  assert.equal(
    (await api(a.httpUrl, "DELETE", `/api/tokens/${alice.token}`)).status,
    503,
  );
  await cluster.redis.restart();
  await waitForHealth(a.httpUrl, "ok", 10_000);
  assert.equal(await revokeToken(a.httpUrl, alice.token), 204);
});
