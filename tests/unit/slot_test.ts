/**
 * The hash slot of keys and sharded channels (`src/redis/slot.ts`), against
 * the examples of the Redis Cluster specification and our own key layout.
 *
 * @module
 */
import assert from "node:assert/strict";
import { KEYS } from "../../src/redis/keys.ts";
import { keySlot } from "../../src/redis/slot.ts";

interface SlotCase {
  key: string;
  slot: number;
}

const CASES: SlotCase[] = [
  // CRC16-XMODEM("123456789") is 0x31C3, the specification's check value.
  { key: "123456789", slot: 0x31c3 },
  { key: "foo", slot: 12182 },
  { key: "{user1000}.following", slot: keySlot("user1000") },
  // An empty tag does not count: the whole key is hashed.
  { key: "foo{}{bar}", slot: keySlot("foo{}{bar}") },
  { key: "foo{{bar}}zap", slot: keySlot("{bar") },
  { key: "foo{bar}{zap}", slot: keySlot("bar") },
];

for (const { key, slot } of CASES) {
  Deno.test(`keySlot(${JSON.stringify(key)}) is ${slot}`, () => {
    assert.equal(keySlot(key), slot);
  });
}

Deno.test("a room's channel shares its keys' slot, a user's channel its keys'", () => {
  assert.equal(keySlot(KEYS.roomChannel("lobby")), keySlot(KEYS.seq("lobby")));
  assert.equal(
    keySlot(KEYS.userChannel("Alice")),
    keySlot(KEYS.offline("alice")),
  );
});
