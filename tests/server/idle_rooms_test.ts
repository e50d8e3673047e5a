/**
 * Per-room state is bounded on a running server: a room that is empty and
 * idle is forgotten (its `seq` stays in storage), and a rejoin continues the
 * `seq` from storage. The rules in detail are in
 * `tests/unit/reducer_presence_test.ts` ("Idle rooms").
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  envelope,
  serve,
  TestClient,
  waitFor,
  waitForNoLeftovers,
} from "../support/helpers.ts";

Deno.test("idle rooms: 50 rooms used one after another leave no room or seq behind, and a rejoin continues the seq", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using server = await serve({
      databasePath: `${dir}/chat.db`,
      rateLimitPerSecond: 0,
    });
    const { state } = server.server.runner;
    await using client = await TestClient.connect(server.wsUrl);
    for (let i = 0; i < 50; i++) {
      const room = `room${i}`;
      await client.enter("alice", room, `e${i}`);
      client.send(
        envelope(
          "GroupChat",
          { sender_username: "alice", content: "hi", room },
          `s${i}`,
        ),
      );
      assert.equal((await client.expect("GroupChat")).seq, 1);
      assert.equal((await client.expect("Ack")).seq, 1);
      client.send(
        envelope("Leave", { sender_username: "alice", room }, `l${i}`),
      );
      await client.expect("Ack");
    }
    await waitFor(
      () => state.seqs.size === 0 && state.rooms.size === 0,
      `rooms forgotten (${state.rooms.size} rooms, ${state.seqs.size} seqs)`,
    );
    assert.equal(state.writing.size, 0);
    // Back into a forgotten room: its seq comes from storage.
    await client.enter("alice", "room7", "again");
    client.send(
      envelope(
        "GroupChat",
        { sender_username: "alice", content: "back", room: "room7" },
        "s-again",
      ),
    );
    assert.equal((await client.expect("GroupChat")).seq, 2);
    assert.equal((await client.expect("Ack")).seq, 2);
    await client.close();
    await waitForNoLeftovers(server);
    assert.equal(state.seqs.size, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
