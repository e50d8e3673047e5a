/**
 * Batched delivery on a running server, with real WebSocket clients: a
 * client that upgrades with `?batch=1` gets a burst of room traffic in fewer
 * frames, in order and with every message as the others get it; its own
 * answers keep their place; a quiet room's message is not held back; a
 * `Batch` stays within `MAX_MESSAGE_BYTES`; a bad `?batch=` is refused. The
 * batching rules themselves are tabled in `tests/unit/frame_batcher_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  envelope,
  type Frame,
  serve,
  TestClient,
  waitFor,
} from "../support/helpers.ts";

/** A client's frames with every `Batch` unpacked, in order. */
function unpacked(frames: readonly Frame[]): Frame[] {
  return frames.flatMap((frame) =>
    frame.message_type === "Batch"
      ? frame.message_body.frames as Frame[]
      : [frame]
  );
}

/** Records every text frame a client receives as it came, with its time. */
function record(client: TestClient): { text: string; at: number }[] {
  const raw: { text: string; at: number }[] = [];
  client.socket.addEventListener("message", (event) => {
    raw.push({ text: event.data as string, at: performance.now() });
  });
  return raw;
}

/** Sends `count` `GroupChat`s from `username` to `room` in one go. */
function burst(
  client: TestClient,
  username: string,
  room: string,
  count: number,
  size = 8,
) {
  for (let i = 0; i < count; i++) {
    client.send(
      envelope("GroupChat", {
        room,
        sender_username: username,
        content: `m${i} ${"x".repeat(size)}`,
      }),
    );
  }
}

/** A `GroupChat` from `username`. */
function chat(username: string, room: string, content: string, id?: string) {
  return envelope(
    "GroupChat",
    { room, sender_username: username, content },
    id,
  );
}

Deno.test("batch: a burst reaches a ?batch=1 client in fewer frames, in order, as the others see it", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  await using sender = await TestClient.connect(server.wsUrl);
  await using plain = await TestClient.connect(server.wsUrl);
  await using batched = await TestClient.connect(`${server.wsUrl}?batch=1`);
  await plain.enter("plain", "hot");
  await batched.enter("batched", "hot");
  await sender.enter("sender", "hot");
  await plain.expect("Enter");
  await plain.expect("Enter");
  await batched.expect("Enter");
  const count = 200;
  burst(sender, "sender", "hot", count);
  await waitFor(
    () =>
      unpacked(batched.frames).length === count &&
      plain.frames.length === count,
    "every message delivered",
    10_000,
  );
  assert.deepEqual(unpacked(batched.frames), plain.frames);
  assert.deepEqual(
    plain.frames.map((frame) => frame.message_body.content),
    Array.from({ length: count }, (_, i) => `m${i} xxxxxxxx`),
  );
  assert.ok(
    batched.frames.length < count,
    `${batched.frames.length} frames for ${count} messages`,
  );
  assert.ok(batched.frames.some((frame) => frame.message_type === "Batch"));
  assert.equal(plain.frames.length, count, "the plain client: one per frame");
});

Deno.test("batch: a batched sender gets its own messages before their Acks, and Enter/Leave in order", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  await using batched = await TestClient.connect(`${server.wsUrl}?batch=1`);
  await using plain = await TestClient.connect(server.wsUrl);
  await batched.enter("batched", "hot");
  await plain.enter("plain", "hot");
  await batched.expect("Enter");
  const count = 30;
  for (let i = 0; i < count; i++) {
    batched.send(chat("batched", "hot", `own ${i}`, `id-${i}`));
    plain.send(chat("plain", "hot", `other ${i}`));
  }
  const late = await TestClient.connect(server.wsUrl);
  await late.enter("late", "hot");
  await late.close();
  await waitFor(
    () =>
      unpacked(batched.frames).length === 3 * count + 2 &&
      plain.frames.length === 2 * count + 2,
    "every frame delivered",
    10_000,
  );
  const seen = unpacked(batched.frames);
  // Each Ack comes after the sender's own copy of its message.
  for (let i = 0; i < count; i++) {
    const own = seen.findIndex((frame) =>
      frame.message_type === "GroupChat" &&
      frame.message_body.content === `own ${i}`
    );
    const acked = seen.findIndex((frame) =>
      frame.message_type === "Ack" && frame.message_body.ref === `id-${i}`
    );
    assert.ok(own >= 0 && acked > own, `Ack of ${i} after its message`);
  }
  // Room traffic in the same order as the plain client saw it.
  assert.deepEqual(
    seen.filter((frame) => frame.message_type !== "Ack"),
    plain.frames,
  );
  assert.deepEqual(
    seen.filter((frame) => ["Enter", "Leave"].includes(frame.message_type))
      .map((frame) => frame.message_type),
    ["Enter", "Leave"],
  );
  // Acks are never inside a Batch.
  for (const frame of batched.frames) {
    if (frame.message_type !== "Batch") continue;
    for (const inner of frame.message_body.frames as Frame[]) {
      assert.ok(["GroupChat", "Enter", "Leave"].includes(inner.message_type));
    }
  }
});

Deno.test("batch: a quiet room's message reaches a batched client as soon as a plain one", async () => {
  // A window far longer than the delay allowed: any wait for it would show.
  await using server = await serve({ batchWindowMs: 50 });
  await using sender = await TestClient.connect(server.wsUrl);
  await using plain = await TestClient.connect(server.wsUrl);
  await using batched = await TestClient.connect(`${server.wsUrl}?batch=1`);
  await plain.enter("plain", "calm");
  await batched.enter("batched", "calm");
  await sender.enter("sender", "calm");
  await plain.expect("Enter");
  await plain.expect("Enter");
  await batched.expect("Enter");
  const plainTimes = record(plain);
  const batchedTimes = record(batched);
  const gaps: number[] = [];
  for (let i = 0; i < 5; i++) {
    // Longer apart than the window: the room is quiet each time.
    await new Promise((resolve) => setTimeout(resolve, 80));
    sender.send(chat("sender", "calm", `q${i}`));
    await waitFor(
      () => plainTimes.length > i && batchedTimes.length > i,
      "the message",
    );
    const plainAt = plainTimes[i]?.at as number;
    const batchedAt = batchedTimes[i]?.at as number;
    gaps.push(batchedAt - plainAt);
    assert.equal(batchedTimes[i]?.text, plainTimes[i]?.text, "a plain frame");
  }
  gaps.sort((a, b) => a - b);
  const median = gaps[2] as number;
  assert.ok(median < 25, `batched lags by ${gaps.join(", ")} ms`);
});

Deno.test("batch: no Batch frame exceeds MAX_MESSAGE_BYTES", async () => {
  const limit = 2048;
  await using server = await serve({
    rateLimitPerSecond: 0,
    maxMessageBytes: limit,
  });
  await using sender = await TestClient.connect(server.wsUrl);
  await using batched = await TestClient.connect(`${server.wsUrl}?batch=1`);
  await batched.enter("batched", "big");
  await sender.enter("sender", "big");
  await batched.expect("Enter");
  const raw = record(batched);
  const count = 60;
  // Each GroupChat is about 530 bytes: at most 3 fit in a Batch of 2048.
  burst(sender, "sender", "big", count, 400);
  await waitFor(
    () => unpacked(batched.frames).length === count,
    "every message delivered",
    10_000,
  );
  const encoder = new TextEncoder();
  for (const { text } of raw) {
    assert.ok(encoder.encode(text).length <= limit, `${text.length} chars`);
  }
  assert.ok(raw.length < count, "still gathered");
  assert.ok(raw.length >= count / 3, "at most three to a Batch");
});

Deno.test("batch: an upgrade with a bad ?batch= is refused with 400", async () => {
  await using server = await serve();
  const response = await fetch(`${server.httpUrl}/ws?batch=yes`, {
    headers: {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    },
  });
  assert.equal(response.status, 400);
  assert.match(await response.text(), /batch takes 1, true, 0 or false/);
});
