/**
 * Reducer tables for an administrator's requests (`admin` events): the
 * reads answered with `admin_reply`, kick and ban (Leave `kicked` /
 * `banned`, closes), the bans `Enter` and tokens are checked against (and
 * their reload), the reserved name `system`, a system message and
 * `Deleted`.
 *
 * Conventions as in `reducer_auth_test.ts`: connections 1, 2 and 3, the
 * event under test at `WHEN_AT`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { joinedAt, Node } from "../support/cluster_node.ts";
import type { AdminRequest, Event } from "../../src/chat/reducer.ts";
import {
  AUTH,
  AUTH_GRANTS,
  effectsOf,
  scenarios,
  type Step,
  TOKEN_ALICE,
  username,
} from "../support/reducer_harness.ts";
import {
  enter,
  entered,
  error,
  left,
  presence,
  say,
  T0,
  WHEN_AT,
  withId,
} from "../support/reducer_frames.ts";

/** An `admin` event as a step, with the request id 7. */
function admin(request: AdminRequest, id: number | null = 7): Step {
  const event: Event = { type: "admin", now: WHEN_AT, id, request };
  return { event };
}

/** alice (1) and bob (2) in general. */
const TWO: readonly Step[] = [
  [1, enter("alice")],
  [2, enter("bob")],
];

const BANNED = T0 + 3_600_000;

scenarios("admin", [
  {
    name: "rooms: each room held, with its members, connections and last seq",
    given: [...TWO, [1, say("alice", "hi")]],
    when: admin({ kind: "rooms" }),
    then: {},
    also: (_state, seen) => {
      assert.deepEqual(effectsOf(seen, "admin_reply"), [{
        type: "admin_reply",
        id: 7,
        answer: {
          status: 200,
          body: {
            rooms: [
              { room: "general", members: 2, connections: 2, last_seq: 1 },
            ],
          },
        },
      }]);
    },
  },
  {
    name: "members: a page by username, with the cursor of the next",
    given: [...TWO, [3, enter("carol")]],
    when: admin({ kind: "members", room: "general", limit: 2 }),
    then: {},
    also: (_state, seen) => {
      const [reply] = effectsOf(seen, "admin_reply");
      assert.deepEqual(reply?.answer.body, {
        room: "general",
        members: [
          { username: "alice", connections: 1 },
          { username: "bob", connections: 1 },
        ],
        next_cursor: "bob",
      });
    },
  },
  {
    name: "members of a room nobody is in and that has no seq: 404",
    when: admin({ kind: "members", room: "nowhere", limit: 10 }),
    then: {},
    also: (_state, seen) => {
      assert.equal(effectsOf(seen, "admin_reply")[0]?.answer.status, 404);
    },
  },
  {
    name: "kick: the user's connections leave with kicked and are closed",
    given: TWO,
    when: admin({ kind: "kick", username: "ALICE" }),
    then: { 2: [left("general", "alice", "kicked")] },
    closes: [[1, 1008]],
    also: (state, seen) => {
      assert.equal(username(state, 1), undefined);
      assert.deepEqual(
        effectsOf(seen, "close").map((c) => c.reason),
        ["kicked by an administrator"],
      );
      assert.deepEqual(effectsOf(seen, "admin_reply")[0]?.answer.body, {
        username: "ALICE",
        closed: 1,
      });
    },
  },
  {
    name: "ban: kicked with banned, and remembered under the folded name",
    given: TWO,
    when: admin({ kind: "ban", username: "Alice", until: BANNED }),
    then: { 2: [left("general", "alice", "banned")] },
    closes: [[1, 1008]],
    also: (state) => assert.equal(state.bans.get("alice"), BANNED),
  },
  {
    name: "a banned name's first Enter is banned, in any case",
    given: [admin({ kind: "ban", username: "alice", until: BANNED }, null)],
    when: [1, enter("ALICE", {}, withId("e1"))],
    then: { 1: [error("banned", "e1", /banned until/)] },
    also: (state) => assert.equal(username(state, 1), null),
  },
  {
    name: "a ban that ended refuses nothing",
    given: [admin({ kind: "ban", username: "alice", until: T0 }, null)],
    when: [1, enter("alice")],
    then: { 1: [presence("general", ["alice"])] },
  },
  {
    name: "unban: the name may enter again",
    given: [
      admin({ kind: "ban", username: "alice", until: BANNED }, null),
      admin({ kind: "unban", username: "alice" }, null),
    ],
    when: [1, enter("alice")],
    then: { 1: [presence("general", ["alice"])] },
  },
  {
    name: "a token of a banned user is banned",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [admin({ kind: "ban", username: "alice", until: BANNED }, null)],
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "e1" })],
    then: { 1: [error("banned", "e1")] },
    also: (state) => assert.equal(username(state, 1), null),
  },
  {
    name: "a reload that brings a new ban ends the name's connections",
    given: TWO,
    when: admin({ kind: "bans", bans: [["alice", BANNED]] }, null),
    then: { 2: [left("general", "alice", "banned")] },
    closes: [[1, 1008]],
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "admin_reply"), []),
  },
  {
    name: "a reload of a ban already known ends nothing",
    given: [
      ...TWO,
      admin({ kind: "bans", bans: [["carol", BANNED]] }, null),
    ],
    when: admin({ kind: "bans", bans: [["carol", BANNED]] }, null),
    then: {},
  },
  {
    name: "nobody may enter as system",
    when: [1, enter("System", {}, withId("e1"))],
    then: { 1: [error("name_reserved", "e1", /reserved/)] },
  },
  {
    name:
      "a system message is numbered, written, delivered from system and answered 201",
    options: { seqs: { general: 2 } },
    given: TWO,
    when: admin({
      kind: "say",
      room: "general",
      content: "maintenance",
      id: "sys-1",
    }),
    then: {
      1: [["GroupChat", {
        id: "sys-1",
        seq: 3,
        room: "general",
        sender_username: "system",
        content: "maintenance",
        timestamp: WHEN_AT,
      }]],
      2: [["GroupChat", {
        id: "sys-1",
        seq: 3,
        room: "general",
        sender_username: "system",
        content: "maintenance",
        timestamp: WHEN_AT,
      }]],
    },
    also: (_state, seen) => {
      assert.deepEqual(effectsOf(seen, "admin_reply")[0]?.answer, {
        status: 201,
        body: { id: "sys-1", room: "general", seq: 3, timestamp: WHEN_AT },
      });
    },
  },
  {
    name: "deleted: the room's members get Deleted",
    given: TWO,
    when: admin({ kind: "deleted", room: "general", id: "m-2", seq: 2 }),
    then: {
      1: [["Deleted", { room: "general", id: "m-2", seq: 2 }]],
      2: [["Deleted", { room: "general", id: "m-2", seq: 2 }]],
    },
  },
  {
    name: "a kick from the bus (no request id) answers nobody",
    given: TWO,
    when: {
      event: {
        type: "bus",
        now: WHEN_AT,
        message: { kind: "admin", request: { kind: "kick", username: "bob" } },
      },
    },
    then: { 1: [left("general", "bob", "kicked")] },
    closes: [[2, 1008]],
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "admin_reply"), []),
  },
]);

// The Enter of a kicked user's name right after: free again.
scenarios("admin", [{
  name: "a kicked name may enter again at once",
  given: [...TWO, admin({ kind: "kick", username: "alice" }, null)],
  when: [3, enter("alice")],
  then: {
    2: [entered("general", "alice")],
    3: [presence("general", ["alice", "bob"])],
  },
}]);

Deno.test("admin (cluster): a ban that arrives while a first Enter's join is out ends the connection when the join answers", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" }, "e1");
  node.bus({
    kind: "admin",
    request: { kind: "ban", username: "alice", until: Date.now() + 60_000 },
  });
  const answered = node.joined(joinedAt(0, ["alice"]));
  const closes = answered.filter((effect) => effect.type === "close");
  assert.deepEqual(
    closes.map((effect) => effect.type === "close" && effect.reason),
    ["banned by an administrator"],
  );
  assert.equal(node.state.users.has("alice"), false);
});
