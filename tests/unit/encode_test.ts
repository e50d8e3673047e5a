/**
 * The fast encoders of the busiest frames give the very text of the generic
 * `encode`, whatever the strings hold.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  encode,
  encodeGroupChat,
  encodePrivateChat,
  type StoredGroupChat,
  type StoredPrivateChat,
} from "../../src/wire/server_frames.ts";

interface Case {
  name: string;
  text: string;
}

const CASES: readonly Case[] = [
  { name: "plain", text: "hello" },
  { name: "empty", text: "" },
  { name: "quotes and backslashes", text: 'say "hi" \\ \\" \\\\' },
  { name: "control characters", text: "a\nb\tc\r\u0000\u0001\u001f\u007f" },
  { name: "line and paragraph separators", text: "\u2028\u2029" },
  { name: "surrogate pairs", text: "👋🏽 élan 漢字" },
  { name: "lone surrogates", text: "\ud800 x \udfff" },
  { name: "markup", text: "</script><b>&amp;</b>" },
  { name: "JSON lookalike", text: '","seq":99,"x":"' },
];

for (const { name, text } of CASES) {
  Deno.test(`encodeGroupChat equals encode: ${name}`, () => {
    const message: StoredGroupChat = {
      id: "0b7f9d6e-2c1a-4f7e-9a51-2f3f1c9d8e7a",
      seq: 9_007_199_254_740_991,
      room: text,
      sender_username: text,
      content: text,
      timestamp: 1_796_167_371_116,
    };
    const data = encodeGroupChat(message);
    assert.equal(data, encode("GroupChat", message));
    assert.deepEqual(JSON.parse(data), {
      message_type: "GroupChat",
      message_body: message,
    });
  });

  Deno.test(`encodePrivateChat equals encode: ${name}`, () => {
    const message: StoredPrivateChat = {
      id: text,
      sender_username: text,
      target_username: `${text}2`,
      content: text,
      timestamp: 0,
    };
    const data = encodePrivateChat(message);
    assert.equal(data, encode("PrivateChat", message));
    assert.deepEqual(JSON.parse(data), {
      message_type: "PrivateChat",
      message_body: message,
    });
  });
}
