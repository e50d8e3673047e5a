/**
 * A master added to a running Redis Cluster, and a room's slot and a user's
 * slot moved to it with their keys (a resharding): the chat nodes follow
 * both channels to the new master by themselves (Redis pushes
 * `SUNSUBSCRIBE` when a slot moves away), no client reconnects, the room's
 * `seq` carries on from the moved keys, its history is read from the new
 * master, and direct messages still cross nodes. This is how a cluster grows:
 * a master added later takes traffic off the others.
 *
 * @module
 */
import assert from "node:assert/strict";
import { KEYS } from "../../src/redis/keys.ts";
import { keySlot } from "../../src/redis/slot.ts";
import { envelope, TestClient } from "../support/helpers.ts";
import {
  answerTo,
  portOf,
  startCluster,
  waitForSubscribers,
} from "../support/cluster_helpers.ts";

/** Sends until a frame is acknowledged (a write may meet the move: `unavailable`), at most `ms`. */
async function sendUntilAck(
  client: TestClient,
  type: "GroupChat" | "PrivateChat",
  body: Record<string, string>,
  ref: string,
  ms: number,
): Promise<{ seq?: number; tries: number }> {
  const deadline = Date.now() + ms;
  for (let tries = 1;; tries++) {
    const { answer } = await answerTo(
      client,
      type,
      body,
      `${ref}-${tries}`,
      ms,
    );
    if (answer.message_type === "Ack") {
      const seq = answer.message_body.seq;
      return { ...(typeof seq === "number" ? { seq } : {}), tries };
    }
    assert.equal(
      answer.message_body.code,
      "unavailable",
      JSON.stringify(answer),
    );
    if (Date.now() > deadline) throw new Error(`${ref}: no Ack in ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("cluster resharding: a master added later takes a room's slot and a user's slot; the nodes follow without reconnecting, seq carries on, history and direct messages work", async () => {
  await using cluster = await startCluster(2, {}, "redis-cluster");
  const redis = cluster.redisCluster!;
  const [a, b] = cluster.nodes as [
    typeof cluster.nodes[0],
    typeof cluster.nodes[0],
  ];
  const room = "moving";
  await using alice = await TestClient.connect(a!.wsUrl);
  await using bob = await TestClient.connect(b!.wsUrl);
  await alice.enter("alice", room);
  await bob.enter("bob", room);
  await alice.expect("Enter");
  const say = (content: string) =>
    sendUntilAck(
      alice,
      "GroupChat",
      { sender_username: "alice", room, content },
      content,
      10_000,
    );
  assert.equal((await say("before")).seq, 1);
  assert.equal((await bob.expect("GroupChat")).seq, 1);

  const added = await redis.addMaster();
  const roomChannel = KEYS.roomChannel(room);
  const bobChannel = KEYS.userChannel("bob");
  for (const channel of [roomChannel, bobChannel]) {
    await redis.moveSlot(keySlot(channel), added);
    assert.equal(await portOf(cluster, channel), added.port);
  }
  // Both nodes listen on the room's channel at the new master, and node B
  // (bob's) on bob's channel.
  await waitForSubscribers(cluster, roomChannel, 2, 10_000);
  await waitForSubscribers(cluster, bobChannel, 1, 10_000);

  // The room's seq carries on from the keys that moved.
  const after = await say("after");
  assert.equal(after.seq, 2);
  const got = await bob.expect("GroupChat");
  assert.deepEqual([got.seq, got.content], [2, "after"]);
  // History is read where the room's keys are now.
  bob.send(envelope("History", { room, limit: 10 }, "h"));
  const history = await bob.expect("History");
  assert.deepEqual(
    // deno-lint-ignore no-explicit-any
    history.messages.map((m: any) => [m.seq, m.content]),
    [[1, "before"], [2, "after"]],
  );
  assert.equal((await bob.expect("Ack")).ref, "h");
  // A direct message to bob crosses nodes through his moved channel.
  await sendUntilAck(
    alice,
    "PrivateChat",
    { sender_username: "alice", target_username: "bob", content: "psst" },
    "dm",
    10_000,
  );
  assert.equal((await bob.expect("PrivateChat")).content, "psst");
  // Nobody reconnected.
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
  assert.equal(bob.socket.readyState, WebSocket.OPEN);
});
