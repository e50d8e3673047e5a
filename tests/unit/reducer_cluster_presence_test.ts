/**
 * Reducer cases for large rooms on a cluster node: joins and leaves
 * batched per tick for the other nodes, other nodes' batches merged into
 * one `PresenceDiff`, the newest count kept by version, `full` back to full
 * presence, and `Members` read from the cluster. The Redis side is tested
 * in `tests/server/cluster_large_room_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { JoinResult } from "../../src/chat/reducer.ts";
import { framesTo, joinedAt, Node, types } from "../support/cluster_node.ts";
import { T0 } from "../support/reducer_frames.ts";

/** A `joined` answer in a large room: `count`, a page, its version. */
function joinedLarge(
  count: number,
  version: number,
  page: string[],
  cursor = 0,
): JoinResult {
  return {
    kind: "joined",
    seq: 0,
    isNew: true,
    members: page,
    count,
    large: true,
    version,
    cursor,
  };
}

function tick(node: Node, at = 1000) {
  node.now = T0 + at;
  return node.dispatch({ type: "tick", now: node.now });
}

/** A node with alice (1) in a room that is large in the cluster. */
function largeRoom(): Node {
  const node = new Node({ presenceFullLimit: 2 });
  node.open(1);
  node.enter(1, "alice", "r", joinedLarge(10, 5, ["x", "alice"], 77));
  return node;
}

Deno.test("cluster large room: the joiner's Presence has the cluster's count and first page", () => {
  const node = new Node({ presenceFullLimit: 2 });
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  const effects = node.joined(joinedLarge(10, 5, ["x", "alice"], 77));
  assert.deepEqual(framesTo(effects, 1), [{
    type: "Presence",
    body: {
      room: "r",
      members: ["x", "alice"],
      count: 10,
      more: true,
      cursor: 77,
    },
  }]);
});

Deno.test("cluster large room: local joins go out as one batch per tick, not announced one by one", () => {
  const node = largeRoom();
  node.effects.length = 0;
  node.open(2);
  node.send(2, "Enter", { sender_username: "bob", room: "r" });
  const joined = node.joined(joinedLarge(11, 6, []));
  assert.deepEqual(types(framesTo(joined, 1)), [], "no Enter for alice");
  node.open(3);
  node.enter(3, "carol", "r", joinedLarge(12, 7, []));
  const effects = tick(node);
  const batches = effects.filter((effect) => effect.type === "presence_batch");
  assert.deepEqual(batches, [{
    type: "presence_batch",
    batch: {
      room: "r",
      joined: ["alice", "bob", "carol"],
      joined_count: 3,
      left: [],
      left_count: 0,
    },
  }]);
  const diff = framesTo(effects, 1);
  assert.deepEqual(diff.map((frame) => frame.body.count), [12]);
  assert.deepEqual(diff[0]?.body.joined, ["alice", "bob", "carol"]);
});

Deno.test("cluster large room: other nodes' batches merge into one diff; the newest count wins", () => {
  const node = largeRoom();
  tick(node);
  node.bus({
    kind: "presence",
    batch: {
      room: "r",
      joined: ["b1", "b2"],
      joined_count: 150,
      left: ["x"],
      left_count: 1,
    },
    count: 160,
    version: 9,
  });
  // An older count, heard late, is ignored.
  node.bus({
    kind: "presence",
    batch: { room: "r", joined: [], joined_count: 0, left: [], left_count: 0 },
    count: 100,
    version: 8,
  });
  const frames = framesTo(tick(node, 2000), 1);
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0]?.body, {
    room: "r",
    count: 160,
    joined: ["b1", "b2"],
    joined_count: 150,
    left: ["x"],
    left_count: 1,
    timestamp: T0 + 2000,
  });
  assert.deepEqual(framesTo(tick(node, 3000), 1), [], "nothing new");
  // A count alone (this node's batch answered) is told too.
  node.dispatch({
    type: "presence_counted",
    now: node.now,
    room: "r",
    counted: { count: 170, version: 12 },
  });
  assert.deepEqual(
    framesTo(tick(node, 4000), 1).map((frame) => frame.body.count),
    [170],
  );
});

Deno.test("cluster large room: a local leave is batched; full brings a full Presence", () => {
  const node = largeRoom();
  node.open(2);
  node.enter(2, "bob", "r", joinedLarge(11, 6, []));
  tick(node);
  node.effects.length = 0;
  node.send(2, "Leave", { sender_username: "bob", room: "r" });
  const part = node.take("part");
  const parted = node.dispatch({
    type: "parted",
    now: node.now,
    room: part.room,
    username: part.username,
    reason: part.reason,
    timestamp: part.timestamp,
    gone: true,
    result: { gone: true, count: 10, large: true, version: 8 },
  });
  assert.deepEqual(framesTo(parted, 1), [], "no Leave one by one");
  const effects = tick(node, 2000);
  assert.deepEqual(
    effects.filter((effect) => effect.type === "presence_batch").map((
      effect,
    ) => effect.type === "presence_batch" && effect.batch.left),
    [["bob"]],
  );
  const full = node.bus({
    kind: "full",
    room: "r",
    members: ["zed", "alice"],
    count: 2,
    version: 9,
  });
  assert.deepEqual(framesTo(full, 1), [{
    type: "Presence",
    body: { room: "r", members: ["alice", "zed"] },
  }]);
  assert.equal(node.state.rooms.get("r")?.large, false);
  // Full again: another node's user entering is announced as before.
  const enter = node.bus({
    kind: "enter",
    room: "r",
    username: "dan",
    timestamp: T0,
  });
  assert.deepEqual(types(framesTo(enter, 1)), ["Enter"]);
});

Deno.test("cluster: Members is read from the cluster; a failed read is unavailable", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice", "bob"]));
  node.effects.length = 0;
  node.send(1, "Members", { room: "r", limit: 10 }, "m1");
  const { request } = node.take("members_page");
  assert.deepEqual(request, {
    conn: 1,
    room: "r",
    cursor: 0,
    limit: 10,
    ref: "m1",
  });
  const loaded = node.dispatch({
    type: "members_loaded",
    now: node.now,
    request,
    page: { names: ["bob", "alice"], cursor: 0, count: 2 },
  });
  assert.deepEqual(framesTo(loaded, 1), [
    {
      type: "Members",
      body: {
        room: "r",
        members: ["bob", "alice"],
        count: 2,
        more: false,
        cursor: 0,
      },
    },
    { type: "Ack", body: { ref: "m1" } },
  ]);
  node.send(1, "Members", { room: "r" }, "m2");
  const again = node.take("members_page");
  const failed = node.dispatch({
    type: "members_loaded",
    now: node.now,
    request: again.request,
    page: null,
  });
  assert.deepEqual(types(framesTo(failed, 1)), ["Error"]);
  assert.equal(framesTo(failed, 1)[0]?.body.code, "unavailable");
});
