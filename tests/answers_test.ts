/**
 * Every client frame with an `id` gets exactly one answer (`Ack` or `Error`
 * with that `ref`) before any close the server starts: a burst over the rate
 * limit, and a shutdown while answers are still owed. Real servers, real
 * sockets, real SQLite and a real `redis-server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type Frame, serve, TestClient, waitFor } from "./helpers.ts";
import { startCluster } from "./cluster_helpers.ts";
import { enterWith, frame, serveOnTempDb } from "./db_helpers.ts";

/** Frames until `count` answers (Ack or Error) have come, or the socket closed. */
async function answers(
  client: TestClient,
  count: number,
  ms = 10_000,
): Promise<Frame[]> {
  const found: Frame[] = [];
  const deadline = Date.now() + ms;
  while (found.length < count) {
    let next: Frame;
    try {
      next = await client.next(Math.max(1, deadline - Date.now()));
    } catch {
      break; // closed, or no frame in time: the caller counts what came
    }
    if (next.message_type === "Ack" || next.message_type === "Error") {
      found.push(next);
    }
  }
  return found;
}

function burst(client: TestClient, count: number, prefix = "r"): string[] {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  for (const id of ids) {
    client.send(
      frame("GroupChat", { sender_username: "alice", content: id }, { id }),
    );
  }
  return ids;
}

for (const storage of ["sqlite", ":memory:"] as const) {
  Deno.test(`a burst of 100 GroupChats at default limits (${storage}): 100 answers in order of ref, no close`, async () => {
    await using server = storage === "sqlite"
      ? await serveOnTempDb()
      : await serve({ databasePath: ":memory:" });
    await using alice = await TestClient.connect(server.wsUrl);
    await enterWith(alice, "alice");
    // A full bucket, as for a client that has been quiet a while.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const ids = burst(alice, 100);
    const got = await answers(alice, 100);
    assert.deepEqual(got.map((f) => f.message_body.ref), ids);
    for (const f of got) {
      if (f.message_type === "Error") {
        assert.equal(f.message_body.code, "rate_limited");
      }
    }
    assert.ok(got.filter((f) => f.message_type === "Ack").length >= 40);
    await alice.silent(100);
    assert.equal(alice.socket.readyState, WebSocket.OPEN);
  });
}

Deno.test("shutdown while an Enter waits for the cluster: it and the frames behind it are answered, then 1001", async () => {
  await using cluster = await startCluster(1);
  const [node] = cluster.nodes;
  assert.ok(node);
  await using alice = await TestClient.connect(node.wsUrl);
  // Redis stops answering (SIGSTOP): the Enter waits for its join.
  const pid = cluster.redis.pid as number;
  Deno.kill(pid, "SIGSTOP");
  try {
    alice.send(frame("Enter", { sender_username: "alice" }, { id: "e" }));
    const ids = burst(alice, 5);
    await waitFor(
      () =>
        [...node.server.runner.state.connections.values()][0]?.queue
          .length === 5,
      "the frames wait behind the Enter",
    );
    const stopping = node.server.shutdown();
    // The answer to the join comes after the shutdown began.
    await new Promise((resolve) => setTimeout(resolve, 100));
    Deno.kill(pid, "SIGCONT");
    const got = await answers(alice, 6);
    assert.deepEqual(got.map((f) => f.message_body.ref), ["e", ...ids]);
    for (const f of got) {
      assert.equal(f.message_type, "Error");
      assert.equal(f.message_body.code, "unavailable");
    }
    assert.equal((await alice.closed).code, 1001);
    await stopping;
  } finally {
    Deno.kill(pid, "SIGCONT");
  }
});
