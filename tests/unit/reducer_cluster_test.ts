/**
 * Tables for one cluster node's `Enter` and `Leave` (`settings.cluster`): the
 * reducer asks the cluster (`join`, `part`, `claim`, `release`) and the test
 * answers each cluster effect itself, as the runner would with Redis; no
 * Redis here. Ordering and gaps are in `reducer_cluster_order_test.ts`, the
 * bus in `reducer_cluster_bus_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ConnId, JoinResult } from "../../src/chat/reducer.ts";
import { framesTo, joinedAt, Node, types } from "../support/cluster_node.ts";
import { T0 } from "../support/reducer_frames.ts";
import { effectsOf } from "../support/reducer_harness.ts";

Deno.test("cluster Enter: asks the cluster, answers only after joined", () => {
  const node = new Node();
  node.open(1);
  const asked = node.send(
    1,
    "Enter",
    { sender_username: "alice", room: "r" },
    "e1",
  );
  assert.deepEqual(
    framesTo(asked, 1),
    [],
    "nothing before the cluster answers",
  );
  const join = effectsOf(asked, "join")[0];
  assert.deepEqual(
    join && { ...join.request, timestamp: 0 },
    {
      conn: 1,
      room: "r",
      username: "alice",
      claim: "exclusive",
      ref: "e1",
      since: undefined,
      history: undefined,
      timestamp: 0,
    },
  );
  const answered = node.joined(joinedAt(4, ["alice", "bob"]));
  assert.deepEqual(framesTo(answered, 1), [
    { type: "Presence", body: { room: "r", members: ["alice", "bob"] } },
    { type: "Ack", body: { ref: "e1" } },
  ]);
  assert.equal(node.state.rooms.get("r")?.deliveredSeq, 4);
  assert.deepEqual([...node.state.users.keys()], ["alice"]);
  assert.deepEqual(
    effectsOf(answered, "claim"),
    [],
    "the join claimed the name",
  );
});

interface JoinCase {
  name: string;
  result: JoinResult | null;
  code: string;
}

const JOIN_REFUSALS: readonly JoinCase[] = [
  {
    name: "taken on another node",
    result: { kind: "taken" },
    code: "username_taken",
  },
  { name: "Redis away", result: null, code: "unavailable" },
];

for (const { name, result, code } of JOIN_REFUSALS) {
  Deno.test(`cluster Enter refused: ${name} → ${code}, nothing kept`, () => {
    const node = new Node();
    node.open(1);
    node.send(1, "Enter", { sender_username: "alice", room: "r" }, "e1");
    const answered = node.joined(result);
    assert.deepEqual(framesTo(answered, 1).map((f) => f.body.code), [code]);
    assert.equal(node.state.connections.get(1)?.username, null);
    assert.deepEqual([...node.state.rooms.keys()], [], "room forgotten");
    assert.deepEqual([...node.state.claiming], []);
    // The connection goes on: its next Enter is asked again.
    assert.equal(
      effectsOf(node.send(1, "Enter", { sender_username: "alice" }), "join")
        .length,
      1,
    );
  });
}

Deno.test("cluster Enter: a name being claimed on this node is taken", () => {
  const node = new Node();
  node.open(1);
  node.open(2);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  const second = node.send(
    2,
    "Enter",
    { sender_username: "alice", room: "r" },
    "e2",
  );
  assert.deepEqual(framesTo(second, 2).map((f) => f.body.code), [
    "username_taken",
  ]);
  assert.equal(effectsOf(second, "join").length, 0);
});

Deno.test("cluster Enter: Enter broadcast to local members only when new on every node", () => {
  for (const isNew of [true, false]) {
    const node = new Node();
    node.open(1);
    node.open(2);
    node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
    node.send(2, "Enter", { sender_username: "bob", room: "r" });
    const answered = node.joined(joinedAt(0, ["alice", "bob"], isNew));
    assert.deepEqual(types(framesTo(answered, 1)), isNew ? ["Enter"] : []);
    assert.deepEqual(types(framesTo(answered, 2)), ["Presence"]);
  }
});

Deno.test("cluster Enter: closed while joining gives back what the cluster recorded", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  node.close(1);
  const answered = node.joined(joinedAt(0, ["alice"]));
  assert.deepEqual(
    effectsOf(answered, "part").map((p) => [p.room, p.username, p.empty]),
    [
      ["r", "alice", true],
    ],
  );
  assert.deepEqual(effectsOf(answered, "release").map((r) => r.username), [
    "alice",
  ]);
  assert.deepEqual([...node.state.rooms.keys()], []);
});

// ---------------------------------------------------------------------------
// Leave: the cluster tells whether the user is gone from the room

interface PartCase {
  name: string;
  gone: boolean | null;
  /** Whether the other member sees `Leave`. */
  leave: boolean;
}

const PARTS: readonly PartCase[] = [
  { name: "gone from every node", gone: true, leave: true },
  { name: "still on another node", gone: false, leave: false },
  { name: "Redis away: this node's view", gone: null, leave: true },
];

for (const { name, gone, leave } of PARTS) {
  Deno.test(`cluster Leave: ${name}`, () => {
    const node = new Node();
    node.open(1);
    node.open(2);
    node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
    node.enter(2, "bob", "r", joinedAt(0, ["alice", "bob"]));
    const left = node.send(
      2,
      "Leave",
      { sender_username: "bob", room: "r" },
      "l1",
    );
    assert.deepEqual(
      types(framesTo(left, 1)),
      [],
      "no Leave before the cluster answers",
    );
    assert.deepEqual(types(framesTo(left, 2)), ["Ack"]);
    const part = node.take("part");
    assert.deepEqual([part.room, part.username, part.reason, part.empty], [
      "r",
      "bob",
      "left",
      false,
    ]);
    const answered = node.dispatch({
      type: "parted",
      now: node.now,
      room: part.room,
      username: part.username,
      reason: part.reason,
      timestamp: part.timestamp,
      gone,
    });
    assert.deepEqual(
      framesTo(answered, 1),
      leave
        ? [{
          type: "Leave",
          body: {
            room: "r",
            sender_username: "bob",
            timestamp: T0,
            reason: "left",
          },
        }]
        : [],
    );
  });
}

Deno.test("cluster close: parts every room and releases the name", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.send(1, "Enter", { sender_username: "alice", room: "s" });
  node.joined(joinedAt(0, ["alice"]));
  const closed = node.close(1);
  assert.deepEqual(
    effectsOf(closed, "part").map((p) => [p.room, p.reason, p.empty]).sort(),
    [["r", "disconnected", true], ["s", "disconnected", true]],
  );
  assert.deepEqual(effectsOf(closed, "release").map((r) => r.username), [
    "alice",
  ]);
});

Deno.test("cluster auth: a token's user is claimed (shared) and released with the last connection", () => {
  const node = new Node({ authEnabled: true });
  const grant = { username: "alice", expiresAt: T0 + 60_000 };
  const opened = (conn: ConnId) =>
    node.dispatch({
      type: "open",
      conn,
      now: node.now,
      publicId: `p${conn}`,
      token: "t",
      grant,
    });
  assert.deepEqual(effectsOf(opened(1), "claim").map((c) => c.username), [
    "alice",
  ]);
  assert.deepEqual(effectsOf(opened(2), "claim"), [], "claimed once per node");
  assert.deepEqual(effectsOf(node.close(1), "release"), []);
  assert.deepEqual(effectsOf(node.close(2), "release").map((r) => r.username), [
    "alice",
  ]);
});

interface HeldJoinCase {
  name: string;
  /** Whether alice's first connection is in the room when the second enters. */
  firstInRoom: boolean;
  /** What the cluster answers the second join. */
  isNew: boolean;
  /** The `held` the join carries. */
  held: boolean | undefined;
  /** Whether carol, in the room here, sees alice enter. */
  carolSeesEnter: boolean;
}

const HELD_JOIN_CASES: HeldJoinCase[] = [
  {
    name: "first device elsewhere: new in the room, announced",
    firstInRoom: false,
    isNew: true,
    held: undefined,
    carolSeesEnter: true,
  },
  {
    name: "first device in the room, Redis agrees: not new, quiet",
    firstInRoom: true,
    isNew: false,
    held: true,
    carolSeesEnter: false,
  },
  {
    name:
      "first device in the room, Redis lost the record (restarted empty): quiet anyway",
    firstInRoom: true,
    isNew: true,
    held: true,
    carolSeesEnter: false,
  },
];

for (const testCase of HELD_JOIN_CASES) {
  Deno.test(`cluster auth: a second device enters; ${testCase.name}`, () => {
    const node = new Node({ authEnabled: true });
    const grant = { username: "alice", expiresAt: T0 + 60_000 };
    for (const conn of [1, 2]) {
      node.dispatch({
        type: "open",
        conn,
        now: T0,
        publicId: `p${conn}`,
        token: "t",
        grant,
      });
    }
    node.dispatch({
      type: "open",
      conn: 3,
      now: T0,
      publicId: "p3",
      token: "tc",
      grant: { username: "carol", expiresAt: T0 + 60_000 },
    });
    node.enter(3, "carol", "r", joinedAt(0, ["carol"]));
    node.enter(
      1,
      "alice",
      testCase.firstInRoom ? "r" : "s",
      joinedAt(0, ["alice", "carol"]),
    );
    const sent = node.send(2, "Enter", { sender_username: "alice", room: "r" });
    assert.equal(effectsOf(sent, "join")[0]?.request.held, testCase.held);
    const joined = node.joined(
      joinedAt(0, ["alice", "carol"], testCase.isNew),
    );
    assert.deepEqual(
      types(framesTo(joined, 3)),
      testCase.carolSeesEnter ? ["Enter"] : [],
    );
  });
}
