/**
 * The admin API on a two-node cluster (a real `redis-server`): a kick and a
 * ban on node A end the user's connections on node B at once (the bus),
 * a ban holds on a node started after it (Redis keeps it), reads answer for
 * the node asked, a system message reaches both nodes, and a deleted
 * message reaches both nodes as `Deleted` and is gone from `since`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  serve,
  TestClient,
  type TestServer,
  waitFor,
} from "../support/helpers.ts";
import { BACKENDS, collect, startCluster } from "../support/cluster_helpers.ts";
import { ADMIN, api, frame } from "../support/db_helpers.ts";

/** Takes frames until one of `type`; its body. */
// deno-lint-ignore no-explicit-any
async function nextOf(client: TestClient, type: string): Promise<any> {
  for (;;) {
    const next = await client.next(5000);
    if (next.message_type === type) return next.message_body;
  }
}

for (const backend of BACKENDS) {
  Deno.test(`cluster admin (${backend}): kick and ban on node A end the user's connections on node B; the ban holds on a node started later`, async () => {
    await using cluster = await startCluster(2, { adminToken: ADMIN }, backend);
    const [a, b] = cluster.nodes as [TestServer, TestServer];
    await using bob = await TestClient.connect(a.wsUrl);
    await bob.enter("bob", "r");
    await using alice = await TestClient.connect(b.wsUrl);
    await alice.enter("alice", "r");
    await collect(bob, { Enter: 1 });

    // Reads answer for the node asked.
    const onA = await api(a.httpUrl, "GET", "/api/users/alice");
    assert.deepEqual(
      (onA.body as { connections: unknown[] }).connections,
      [],
    );
    assert.equal((onA.body as { scope: string }).scope, "node");
    const onB = await api(b.httpUrl, "GET", "/api/users/alice");
    assert.equal(
      (onB.body as { connections: unknown[] }).connections.length,
      1,
    );

    const kicked = await api(a.httpUrl, "POST", "/api/users/alice/kick");
    assert.equal(kicked.status, 200);
    assert.equal((kicked.body as { cluster_told: boolean }).cluster_told, true);
    const closed = await alice.closed;
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "kicked by an administrator");
    assert.equal((await nextOf(bob, "Leave")).reason, "kicked");

    await using again = await TestClient.connect(b.wsUrl);
    await again.enter("alice", "r");
    await nextOf(bob, "Enter");
    const banned = await api(a.httpUrl, "POST", "/api/users/alice/ban", {
      seconds: 600,
    });
    assert.equal(banned.status, 200);
    assert.equal((await again.closed).reason, "banned by an administrator");
    assert.equal((await nextOf(bob, "Leave")).reason, "banned");
    // Refused on B, which heard it over the bus.
    {
      await using retry = await TestClient.connect(b.wsUrl);
      retry.send(frame("Enter", { sender_username: "Alice" }, { id: "e" }));
      assert.equal((await retry.expect("Error")).code, "banned");
    }
    // A node started after the ban reads it from Redis.
    await using c = await serve({
      adminToken: ADMIN,
      redisUrl: cluster.redisUrl,
    });
    await waitFor(() => c.server.bus?.up === true, "node C in sync", 10_000);
    await using late = await TestClient.connect(c.wsUrl);
    late.send(frame("Enter", { sender_username: "alice" }, { id: "e" }));
    assert.equal((await late.expect("Error")).code, "banned");
    const lifted = await api(c.httpUrl, "DELETE", "/api/users/alice/ban");
    assert.equal(lifted.status, 200);
    assert.equal((lifted.body as { cluster_told: boolean }).cluster_told, true);
    // The lift reaches B one pub/sub hop later (B's own reading says when).
    await waitFor(
      async () =>
        ((await api(b.httpUrl, "GET", "/api/users/alice")).body as {
          banned_until: number | null;
        }).banned_until === null,
      "node B hears the lift",
    );
    await using free = await TestClient.connect(b.wsUrl);
    await free.enter("alice", "r");
  });
}

Deno.test("cluster admin: a system message and a deletion reach both nodes; since no longer returns the deleted message", async () => {
  await using cluster = await startCluster(2, { adminToken: ADMIN });
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  await using bob = await TestClient.connect(a.wsUrl);
  await bob.enter("bob", "r");
  await using alice = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await collect(bob, { Enter: 1 });

  const seqs: number[] = [];
  for (const content of ["one", "two", "three"]) {
    const posted = await api(a.httpUrl, "POST", "/api/rooms/r/messages", {
      content,
    });
    assert.equal(posted.status, 201);
    seqs.push((posted.body as { seq: number }).seq);
  }
  assert.deepEqual(seqs, [1, 2, 3]);
  for (const client of [alice, bob]) {
    const got = await collect(client, { GroupChat: 3 });
    assert.deepEqual(
      got.filter((f) => f.message_type === "GroupChat").map((f) =>
        (f.message_body as { sender_username: string }).sender_username
      ),
      ["system", "system", "system"],
    );
  }
  const deleted = await api(b.httpUrl, "DELETE", "/api/rooms/r/messages/2");
  assert.equal(deleted.status, 200);
  for (const client of [alice, bob]) {
    const body = await nextOf(client, "Deleted");
    assert.equal(body.seq, 2);
    assert.equal(body.room, "r");
  }
  await using late = await TestClient.connect(a.wsUrl);
  late.send(
    frame("Enter", { sender_username: "carol", room: "r", since: 0 }),
  );
  const history = await nextOf(late, "History");
  assert.deepEqual(
    history.messages.map((m: { seq: number }) => m.seq),
    [1, 3],
  );
  // Rooms on A: node-local counts, the room's last seq.
  const rooms = await api(a.httpUrl, "GET", "/api/rooms");
  assert.deepEqual(rooms.body, {
    scope: "node",
    node: (rooms.body as { node: string }).node,
    rooms: [{ room: "r", members: 2, connections: 2, last_seq: 3 }],
  });
});
