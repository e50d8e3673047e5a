/**
 * What a node accepts from its channels: every payload kind of this version
 * (a letter, the publishing node, a space, the body), and nothing with a
 * field missing or of the wrong type (a node of another version, or a stray
 * `SPUBLISH`), which would otherwise reach clients.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseBusPayload } from "../../src/redis/bus_scripts.ts";
import type { BusPayload } from "../../src/redis/bus_scripts.ts";

const GROUP = {
  id: "0b7f9d6e-2c1a-4f7e-9a51-2f3f1c9d8e7a",
  seq: 7,
  room: "lobby",
  sender_username: "alice",
  content: "hi",
  timestamp: 1_796_167_371_116,
};
const PRIVATE = {
  id: "1c8e0a7f-3d2b-4a8f-8b62-3a4f2d0e9f8b",
  sender_username: "alice",
  target_username: "bob",
  content: "psst",
  timestamp: 1_796_167_371_117,
};

interface Case {
  name: string;
  payload: string;
  expected: BusPayload["message"] | null;
}

const CASES: readonly Case[] = [
  {
    name: "a GroupChat",
    payload: `gn1 ${JSON.stringify(GROUP)}`,
    expected: { kind: "group", message: GROUP },
  },
  {
    name: "a GroupChat's unknown fields are dropped",
    payload: `gn1 ${JSON.stringify({ ...GROUP, extra: "<b>" })}`,
    expected: { kind: "group", message: GROUP },
  },
  {
    name: "a GroupChat without seq",
    payload: `gn1 ${JSON.stringify({ ...GROUP, seq: undefined })}`,
    expected: null,
  },
  {
    name: "a GroupChat with a string seq",
    payload: `gn1 ${JSON.stringify({ ...GROUP, seq: "7" })}`,
    expected: null,
  },
  {
    name: "a GroupChat with a numeric content",
    payload: `gn1 ${JSON.stringify({ ...GROUP, content: 5 })}`,
    expected: null,
  },
  {
    name: "a PrivateChat",
    payload: `pn1 ${JSON.stringify(PRIVATE)}`,
    expected: { kind: "private", message: PRIVATE },
  },
  {
    name: "a PrivateChat without target",
    payload: `pn1 ${
      JSON.stringify({ ...PRIVATE, target_username: undefined })
    }`,
    expected: null,
  },
  {
    name: "a PrivateChat that is an array",
    payload: "pn1 [1,2]",
    expected: null,
  },
  {
    name: "an Enter",
    payload: 'en1 {"room":"lobby","sender_username":"bob","timestamp":5}',
    expected: { kind: "enter", room: "lobby", username: "bob", timestamp: 5 },
  },
  {
    name: "a Leave",
    payload:
      'ln1 {"room":"lobby","sender_username":"bob","timestamp":6,"reason":"left"}',
    expected: {
      kind: "leave",
      room: "lobby",
      username: "bob",
      timestamp: 6,
      reason: "left",
    },
  },
  {
    name: "a revoked token",
    payload: "rn1 tok-1",
    expected: { kind: "revoked", token: "tok-1" },
  },
  { name: "not JSON", payload: "gn1 {oops", expected: null },
  { name: "an unknown kind", payload: "xn1 {}", expected: null },
  { name: "empty", payload: "", expected: null },
  {
    name: "no publishing node",
    payload: `g${JSON.stringify(GROUP)}`,
    expected: null,
  },
];

for (const { name, payload, expected } of CASES) {
  Deno.test(`bus payload: ${name}`, () => {
    assert.deepEqual(
      parseBusPayload(payload),
      expected && { origin: "n1", message: expected },
    );
  });
}
