/**
 * The cost of decoding a client frame and encoding a server frame, against
 * what a relay does (`JSON.parse` alone), with `Deno.bench`:
 *
 * ```sh
 * deno task bench:codec
 * ```
 *
 * @module
 */
import {
  createDecoder,
  encode,
  encodeGroupChat,
  encodePrivateChat,
  type StoredGroupChat,
  type StoredPrivateChat,
} from "../../src/wire/protocol.ts";

const decoder = createDecoder({ maxContentChars: 4000 });
const content = "x".repeat(64);
const privateFrame = JSON.stringify({
  message_type: "PrivateChat",
  message_body: {
    sender_username: "u00001",
    target_username: "u00002",
    content,
  },
});
const group: StoredGroupChat = {
  id: crypto.randomUUID(),
  seq: 1,
  room: "room-01",
  sender_username: "u00001",
  content,
  timestamp: Date.now(),
};
const direct: StoredPrivateChat = {
  id: crypto.randomUUID(),
  sender_username: "u00001",
  target_username: "u00002",
  content,
  timestamp: Date.now(),
};

Deno.bench("JSON.parse of a PrivateChat frame (what a relay does)", {
  group: "decode",
  baseline: true,
}, () => {
  JSON.parse(privateFrame);
});

Deno.bench("decode: JSON.parse and zod", { group: "decode" }, () => {
  decoder.decode(privateFrame);
});

Deno.bench("encode GroupChat: JSON.stringify", {
  group: "encode GroupChat",
  baseline: true,
}, () => {
  group.seq++;
  encode("GroupChat", group);
});

Deno.bench("encodeGroupChat", { group: "encode GroupChat" }, () => {
  group.seq++;
  encodeGroupChat(group);
});

Deno.bench("encode PrivateChat: JSON.stringify", {
  group: "encode PrivateChat",
  baseline: true,
}, () => {
  direct.timestamp++;
  encode("PrivateChat", direct);
});

Deno.bench("encodePrivateChat", { group: "encode PrivateChat" }, () => {
  direct.timestamp++;
  encodePrivateChat(direct);
});
