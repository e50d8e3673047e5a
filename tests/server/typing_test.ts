/**
 * Typing indicators through a running server (issue 17): real WebSocket
 * clients on one server (room, direct, throttle, the stop a message and a
 * close bring, `/metrics`), and on a two-node cluster over a real
 * `redis-server` and a local Redis Cluster (the bus relays them both ways).
 *
 * @module
 */
import assert from "node:assert/strict";
import { TYPING_EXPIRES_MS } from "../../src/chat/reducer.ts";
import { serve, TestClient } from "../support/helpers.ts";
import { frame } from "../support/db_helpers.ts";
import { BACKENDS, startCluster } from "../support/cluster_helpers.ts";

/** A `Typing` frame from `user`. */
function typing(
  user: string,
  body: Record<string, unknown> = {},
  id?: string,
): Record<string, unknown> {
  return frame(
    "Typing",
    { sender_username: user, ...body },
    id === undefined ? {} : { id },
  );
}

/** The body of a room `Typing` others get. */
function inRoom(room: string, user: string, active = true) {
  return {
    room,
    sender_username: user,
    active,
    expires_in_ms: active ? TYPING_EXPIRES_MS : 0,
  };
}

/** The body of a direct `Typing` the target gets. */
function toUser(user: string, target: string, active = true) {
  return {
    sender_username: user,
    target_username: target,
    active,
    expires_in_ms: active ? TYPING_EXPIRES_MS : 0,
  };
}

Deno.test("typing: relayed to the room's others, throttled, stopped by the message; counted in /metrics", async () => {
  await using server = await serve();
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await using carol = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await carol.enter("carol", "r");
  await alice.expect("Enter");
  await alice.expect("Enter");
  await bob.expect("Enter");

  alice.send(typing("alice", { room: "r" }, "t1"));
  assert.deepEqual(await alice.expect("Ack"), { ref: "t1" });
  assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice"));
  assert.deepEqual(await carol.expect("Typing"), inRoom("r", "alice"));

  // A renewal right away is dropped: acknowledged, not relayed.
  alice.send(typing("alice", { room: "r" }, "t2"));
  assert.deepEqual(await alice.expect("Ack"), { ref: "t2" });

  alice.send(
    frame("GroupChat", { sender_username: "alice", content: "hi", room: "r" }),
  );
  for (const other of [bob, carol]) {
    assert.deepEqual(await other.expect("Typing"), inRoom("r", "alice", false));
    assert.equal((await other.expect("GroupChat")).content, "hi");
    await other.silent(0);
  }
  assert.equal((await alice.expect("GroupChat")).content, "hi");
  await alice.silent(0);

  const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
  for (
    const line of [
      'chat_typing_total{result="relayed"} 1',
      'chat_typing_total{result="throttled"} 1',
      'chat_frames_out_total{type="Typing"} 4',
    ]
  ) {
    assert.ok(metrics.includes(line), `${line} in:\n${metrics}`);
  }
});

Deno.test("typing: to a user; refused when not connected; a close stops every indicator", async () => {
  await using server = await serve();
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await alice.expect("Enter");

  alice.send(typing("alice", { target_username: "bob" }));
  assert.deepEqual(await bob.expect("Typing"), toUser("alice", "bob"));

  alice.send(typing("alice", { target_username: "nobody" }, "t1"));
  const refused = await alice.expect("Error");
  assert.equal(refused.code, "user_not_found");
  assert.equal(refused.ref, "t1");

  alice.send(typing("alice", { room: "r", target_username: "bob" }, "t2"));
  const both = await alice.expect("Error");
  assert.equal(both.code, "invalid_message");
  assert.match(both.message, /room or target_username, not both/);

  alice.send(typing("alice", { room: "r" }));
  assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice"));
  await alice.close();
  // Both indicators stop, then alice's Leave.
  const stops = [await bob.expect("Typing"), await bob.expect("Typing")];
  assert.deepEqual(
    stops.toSorted((x, y) => (x.room ? 0 : 1) - (y.room ? 0 : 1)),
    [inRoom("r", "alice", false), toUser("alice", "bob", false)],
  );
  assert.equal((await bob.expect("Leave")).reason, "disconnected");
  await bob.silent(0);
});

for (const backend of BACKENDS) {
  Deno.test(`typing cluster (${backend}): room and direct indicators cross nodes, and so does the stop of a close`, async () => {
    await using cluster = await startCluster(2, {}, backend);
    const [a, b] = cluster.nodes;
    assert.ok(a && b);
    await using alice = await TestClient.connect(a.wsUrl);
    await using carol = await TestClient.connect(a.wsUrl);
    await using bob = await TestClient.connect(b.wsUrl);
    await alice.enter("alice", "r");
    await carol.enter("carol", "s");
    await bob.enter("bob", "r");
    await alice.expect("Enter");

    alice.send(typing("alice", { room: "r" }));
    assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice"));
    // The same notice again (after a stop) is not taken for a repeat.
    alice.send(typing("alice", { room: "r", active: false }));
    alice.send(typing("alice", { room: "r" }));
    assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice", false));
    assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice"));

    bob.send(typing("bob", { target_username: "carol" }, "t1"));
    assert.deepEqual(await bob.expect("Ack"), { ref: "t1" });
    assert.deepEqual(await carol.expect("Typing"), toUser("bob", "carol"));

    bob.send(typing("bob", { room: "r" }));
    assert.deepEqual(await alice.expect("Typing"), inRoom("r", "bob"));

    await alice.close();
    assert.deepEqual(await bob.expect("Typing"), inRoom("r", "alice", false));
    assert.equal((await bob.expect("Leave")).sender_username, "alice");
    // Nobody else got anything: carol is in another room.
    await carol.silent(200);
    await bob.silent(0);
  });
}
