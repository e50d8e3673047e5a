/**
 * Every client frame with an `id` gets exactly one answer (`Ack` or `Error`
 * with that `ref`) before any close the server starts: a burst over the rate
 * limit, and a shutdown while answers are still owed. Real servers, real
 * sockets, real SQLite and a real `redis-server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type Frame,
  RawPeer,
  serve,
  TestClient,
  waitFor,
} from "../support/helpers.ts";
import { startCluster } from "../support/cluster_helpers.ts";
import { enterWith, frame, serveOnTempDb } from "../support/db_helpers.ts";

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

Deno.test("the error streak closes 1008 only after every frame behind the Error that reached it is answered", async () => {
  await using server = await serveOnTempDb();
  const max = server.server.runner.state.settings.maxConsecutiveErrors;
  await using peer = await RawPeer.upgrade(server.server.port);
  assert.equal(peer.status, 101);
  assert.equal((await peer.readJson()).message_type, "Welcome");
  const texts = [
    JSON.stringify(frame("Enter", { sender_username: "alice" }, { id: "e" })),
    JSON.stringify(
      frame("GroupChat", { sender_username: "alice", content: "hi" }, {
        id: "g0",
      }),
    ),
  ];
  for (let i = 0; i < max + 2; i++) {
    texts.push(JSON.stringify({
      message_type: "Shout",
      message_body: {},
      id: `bad${i}`,
    }));
  }
  texts.push(JSON.stringify(
    frame("GroupChat", { sender_username: "alice", content: "x" }, {
      id: "last",
    }),
  ));
  // One write: the server reads every frame before the write of g0 answers,
  // so all of them wait behind it.
  await peer.sendTexts(texts);
  const refs: string[] = [];
  const codes: string[] = [];
  let close: number | null = null;
  while (close === null) {
    const next = await peer.readFrame();
    if (next === null) break;
    if (next.opcode === 0x8) {
      close = new DataView(next.payload.buffer).getUint16(0);
      break;
    }
    if (next.opcode !== 0x1) continue;
    const body = JSON.parse(new TextDecoder().decode(next.payload));
    if (body.message_type === "Ack" || body.message_type === "Error") {
      refs.push(body.message_body.ref);
      codes.push(body.message_body.code ?? "Ack");
    }
  }
  assert.deepEqual(refs, texts.map((t) => JSON.parse(t).id));
  assert.deepEqual(codes, [
    "Ack",
    "Ack",
    ...Array(max).fill("unknown_type"),
    ...Array(3).fill("unavailable"),
  ]);
  assert.equal(close, 1008);
});
