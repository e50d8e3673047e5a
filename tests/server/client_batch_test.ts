/**
 * The typed client and batched delivery: `parseServerFrames` unpacks a
 * `Batch` into its frames (a typed table), and a `ChatClient` on a running
 * server asks for `?batch=1`, receives `Batch` frames in a burst, and its
 * listeners see every message on its own, in order, as a plain client gets
 * them. `batch: false` asks for nothing.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  ChatClient,
  type ChatEvent,
  type WebSocketConstructor,
} from "../../src/client/chat_client.ts";
import { parseServerFrames } from "../../src/client/frames.ts";
import { envelope, serve, TestClient, waitFor } from "../support/helpers.ts";

const ACK_1 = '{"message_type":"Ack","message_body":{"ref":"c-1"}}';
const ACK_2 = '{"message_type":"Ack","message_body":{"ref":"c-2"}}';
const JUNK = '{"message_type":"Nope","message_body":{}}';

/** `text` in, the parsed frames' types (and refs of acks) out. */
const PARSE_CASES: { name: string; text: string; frames: string[] }[] = [
  { name: "a plain frame is one frame", text: ACK_1, frames: ["ack c-1"] },
  {
    name: "a Batch is its frames, in order",
    text:
      `{"message_type":"Batch","message_body":{"frames":[${ACK_1},${ACK_2}]}}`,
    frames: ["ack c-1", "ack c-2"],
  },
  {
    name: "an unreadable frame in a Batch is unknown, the others are read",
    text:
      `{"message_type":"Batch","message_body":{"frames":[${ACK_1},${JUNK},7]}}`,
    frames: ["ack c-1", `unknown ${JUNK}`, "unknown 7"],
  },
  {
    name: "a Batch without a list of frames is unknown",
    text: '{"message_type":"Batch","message_body":{"frames":{}}}',
    frames: ['unknown {"message_type":"Batch","message_body":{"frames":{}}}'],
  },
  { name: "not JSON is unknown", text: "nope", frames: ["unknown nope"] },
];

for (const { name, text, frames } of PARSE_CASES) {
  Deno.test(`parseServerFrames: ${name}`, () => {
    assert.deepEqual(
      parseServerFrames(text).map((frame) =>
        frame.type === "ack"
          ? `ack ${frame.body.ref}`
          : frame.type === "unknown"
          ? `unknown ${frame.text}`
          : frame.type
      ),
      frames,
    );
  });
}

/** A `WebSocket` that records the URL it opened and every text frame it got. */
function recording(
  urls: string[],
  raw: string[],
): WebSocketConstructor {
  return class extends WebSocket {
    constructor(url: string | URL) {
      super(url);
      urls.push(String(url));
      this.addEventListener("message", (event) => {
        raw.push(event.data as string);
      });
    }
  } as unknown as WebSocketConstructor;
}

Deno.test("client: a ChatClient asks for batches and its listeners see each message", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  const urls: string[] = [];
  const raw: string[] = [];
  await using client = new ChatClient({
    url: server.wsUrl,
    username: "reader",
    WebSocket: recording(urls, raw),
  });
  const events: ChatEvent[] = [];
  client.on("*", (event) => events.push(event));
  await client.connect();
  await client.enter("hot");
  await using plain = await TestClient.connect(server.wsUrl);
  await plain.enter("plain", "hot");
  const count = 200;
  for (let i = 0; i < count; i++) {
    plain.send(
      envelope("GroupChat", {
        room: "hot",
        sender_username: "plain",
        content: `m${i}`,
      }),
    );
  }
  const chats = () =>
    events.flatMap((event) =>
      event.type === "group_chat" ? [event.body.content] : []
    );
  await waitFor(() => chats().length === count, "every message", 10_000);
  assert.equal(new URL(urls[0] as string).searchParams.get("batch"), "1");
  assert.deepEqual(chats(), Array.from({ length: count }, (_, i) => `m${i}`));
  assert.ok(
    raw.some((text) => text.startsWith('{"message_type":"Batch"')),
    "the burst came batched",
  );
  assert.ok(!events.some((event) => event.type === "unknown"));
  assert.equal(client.lastSeq("hot"), count);
});

Deno.test("client: batch: false does not ask for batches", async () => {
  await using server = await serve();
  const urls: string[] = [];
  await using client = new ChatClient({
    url: server.wsUrl,
    username: "reader",
    batch: false,
    WebSocket: recording(urls, []),
  });
  await client.connect();
  assert.equal(new URL(urls[0] as string).searchParams.get("batch"), null);
});
