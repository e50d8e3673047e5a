/**
 * Reducer tables for typing indicators in a cluster (issue 17): a start or
 * a stop goes to the other nodes as the effect `typing`, a notice from the
 * bus reaches this node's recipients, and the bus payload is read back.
 * No Redis: the test plays the other nodes (`cluster_node.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { TYPING_EXPIRES_MS } from "../../src/chat/reducer.ts";
import { parseBusPayload } from "../../src/redis/bus_scripts.ts";
import { framesTo, joinedAt, Node } from "../support/cluster_node.ts";
import { effectsOf } from "../support/reducer_harness.ts";

Deno.test("typing cluster: a start goes to the other nodes as effect typing", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  const effects = node.send(1, "Typing", { sender_username: "alice" });
  assert.deepEqual(effectsOf(effects, "typing"), [{
    type: "typing",
    notice: {
      room: "r",
      sender_username: "alice",
      active: true,
      expires_in_ms: TYPING_EXPIRES_MS,
    },
  }]);
  const dm = node.send(1, "Typing", {
    sender_username: "alice",
    target_username: "zed",
  });
  assert.deepEqual(
    effectsOf(dm, "typing").map((effect) => effect.notice.target_username),
    ["zed"],
    "a target on no node here is not refused: it may be on another",
  );
  assert.deepEqual(framesTo(dm, 1), [], "no Error");
});

Deno.test("typing cluster: the stop of a closing connection goes to the bus", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.send(1, "Typing", { sender_username: "alice" });
  const effects = node.close(1);
  assert.deepEqual(
    effectsOf(effects, "typing").map((effect) => effect.notice.active),
    [false],
  );
});

Deno.test("typing cluster: from the bus, to this node's recipients", () => {
  const node = new Node();
  node.open(1);
  node.open(2);
  node.enter(1, "bob", "r", joinedAt(0, ["bob"]));
  node.enter(2, "carol", "s", joinedAt(0, ["carol"]));
  const notice = {
    room: "r",
    sender_username: "alice",
    active: true,
    expires_in_ms: TYPING_EXPIRES_MS,
  };
  const inRoomR = node.bus({ kind: "typing", notice });
  assert.deepEqual(framesTo(inRoomR, 1), [{ type: "Typing", body: notice }]);
  assert.deepEqual(framesTo(inRoomR, 2), []);
  assert.deepEqual(effectsOf(inRoomR, "typing"), [], "not relayed again");
  const dm = {
    sender_username: "alice",
    target_username: "carol",
    active: false,
    expires_in_ms: 0,
  };
  const toCarol = node.bus({ kind: "typing", notice: dm });
  assert.deepEqual(framesTo(toCarol, 2), [{ type: "Typing", body: dm }]);
  assert.deepEqual(framesTo(toCarol, 1), []);
  const own = node.bus({
    kind: "typing",
    notice: { ...notice, sender_username: "bob" },
  });
  assert.deepEqual(framesTo(own, 1), [], "the sender's own connections: no");
  assert.deepEqual(
    node.bus({ kind: "typing", notice: { ...notice, room: "gone" } }),
    [],
  );
});

Deno.test("typing cluster: the bus payload is read back without its nonce; a bad one is refused", () => {
  const notice = {
    room: "r",
    sender_username: "alice",
    active: true,
    expires_in_ms: TYPING_EXPIRES_MS,
  };
  assert.deepEqual(
    parseBusPayload(`tn ${JSON.stringify({ ...notice, nonce: "n/1" })}`),
    { origin: "n", message: { kind: "typing", notice } },
  );
  for (
    const bad of [
      { ...notice, target_username: "bob" },
      { ...notice, room: undefined },
      { ...notice, active: "yes" },
      { ...notice, expires_in_ms: -1 },
    ]
  ) {
    assert.equal(parseBusPayload(`tn ${JSON.stringify(bad)}`), null);
  }
  assert.equal(parseBusPayload("tn {not json"), null);
});
