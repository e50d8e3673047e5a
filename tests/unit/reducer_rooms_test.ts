/**
 * Reducer tables for membership: `Enter`, `Leave`, identity (usernames)
 * and presence.
 *
 * Conventions (see `tests/support/reducer_harness.ts`): connections 1, 2
 * and 3 are opened first and usually enter as alice, bob and carol; the
 * event under test happens at `WHEN_AT` and a frame under test gets the
 * fresh id `WHEN_ID`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  membersOf,
  roomsOf,
  scenarios,
  username,
} from "../support/reducer_harness.ts";
import {
  ack,
  enter,
  entered,
  error,
  groupFrame,
  leave,
  left,
  presence,
  say,
  T0,
  WHEN_AT,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// Enter

scenarios("Enter", [
  {
    name: "binds the username and answers Presence, without Ack when no id",
    when: [1, enter("alice")],
    then: { 1: [presence("general", ["alice"])] },
    also: (state) => {
      assert.equal(username(state, 1), "alice");
      assert.deepEqual([...state.users.get("alice") ?? []], [1]);
      assert.deepEqual(roomsOf(state, 1), ["general"]);
    },
  },
  {
    name: "with an id answers Presence then Ack",
    when: [1, enter("alice", {}, withId("e1"))],
    then: { 1: [presence("general", ["alice"]), ack("e1")] },
  },
  {
    name: "joins the named room",
    when: [1, enter("alice", { room: "lobby" }, withId("e1"))],
    then: { 1: [presence("lobby", ["alice"]), ack("e1")] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), ["lobby"]),
  },
  {
    name: "without room joins the configured default room",
    options: { settings: { defaultRoom: "lobby" } },
    when: [1, enter("alice")],
    then: { 1: [presence("lobby", ["alice"])] },
  },
  {
    name: "is broadcast to the room's other members only",
    given: [[2, enter("bob")], [3, enter("carol", { room: "other" })]],
    when: [1, enter("alice", {}, withId("e1"))],
    then: {
      1: [presence("general", ["alice", "bob"]), ack("e1")],
      2: [entered("general", "alice")],
    },
  },
  {
    name: "lists members sorted",
    given: [[3, enter("carol")], [1, enter("alice")]],
    when: [2, enter("bob")],
    then: {
      1: [entered("general", "bob")],
      2: [presence("general", ["alice", "bob", "carol"])],
      3: [entered("general", "bob")],
    },
  },
  {
    name: "a second room keeps the first",
    given: [[1, enter("alice")]],
    when: [1, enter("alice", { room: "lobby" }, withId("e2"))],
    then: { 1: [presence("lobby", ["alice"]), ack("e2")] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), ["general", "lobby"]),
  },
  {
    name: "a room already in sends Presence again and nothing to others",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, enter("alice", {}, withId("e2"))],
    then: { 1: [presence("general", ["alice", "bob"]), ack("e2")] },
    also: (state) => assert.deepEqual(membersOf(state, "general"), [1, 2]),
  },
  {
    name: "a room already in is allowed at maxRoomsPerConnection",
    given: [[1, enter("alice")], [1, enter("alice", { room: "lobby" })]],
    when: [1, enter("alice", { room: "lobby" }, withId("e3"))],
    then: { 1: [presence("lobby", ["alice"]), ack("e3")] },
  },
  {
    name: "a new room past maxRoomsPerConnection is too_many_rooms",
    given: [
      [2, enter("bob", { room: "third" })],
      [1, enter("alice")],
      [1, enter("alice", { room: "lobby" })],
    ],
    when: [1, enter("alice", { room: "third" }, withId("e3"))],
    then: { 1: [error("too_many_rooms", "e3")] },
    also: (state) => {
      assert.deepEqual(roomsOf(state, 1), ["general", "lobby"]);
      assert.deepEqual(membersOf(state, "third"), [2]);
    },
  },
  {
    name: "a username held by another connection is username_taken",
    given: [[1, enter("alice")]],
    when: [2, enter("alice", { room: "lobby" }, withId("e1"))],
    then: { 2: [error("username_taken", "e1", /alice/)] },
    also: (state) => {
      assert.equal(username(state, 2), null);
      assert.deepEqual(roomsOf(state, 2), []);
      assert.equal(state.rooms.has("lobby"), false);
    },
  },
  {
    name: "after username_taken the connection may enter with another name",
    given: [[1, enter("alice")], [2, enter("alice")]],
    when: [2, enter("bob", {}, withId("e2"))],
    then: {
      1: [entered("general", "bob")],
      2: [presence("general", ["alice", "bob"]), ack("e2")],
    },
  },
  {
    name: "under another name once bound is sender_mismatch",
    given: [[1, enter("alice")]],
    when: [1, enter("bob", { room: "lobby" }, withId("e2"))],
    then: { 1: [error("sender_mismatch", "e2", /sender_username/)] },
    also: (state) => {
      assert.equal(username(state, 1), "alice");
      assert.deepEqual(roomsOf(state, 1), ["general"]);
      assert.equal(state.users.has("bob"), false);
    },
  },
  {
    name: "a username freed by a close can be taken",
    given: [[1, enter("alice")], { close: 1 }],
    when: [2, enter("alice", {}, withId("e1"))],
    then: { 2: [presence("general", ["alice"]), ack("e1")] },
    also: (state) => assert.deepEqual([...state.users.get("alice") ?? []], [2]),
  },
]);

// ---------------------------------------------------------------------------
// Leave

scenarios("Leave", [
  {
    name: "of a named room: Ack to the leaver, Leave 'left' to the others",
    given: [[1, enter("alice")], [2, enter("bob")], [3, enter("carol")]],
    when: [1, leave("alice", { room: "general" }, withId("l1"))],
    then: {
      1: [ack("l1")],
      2: [left("general", "alice", "left")],
      3: [left("general", "alice", "left")],
    },
    also: (state) => {
      assert.deepEqual(roomsOf(state, 1), []);
      assert.deepEqual(membersOf(state, "general"), [2, 3]);
      assert.equal(username(state, 1), "alice", "the username stays bound");
    },
  },
  {
    name: "without room leaves the only room",
    given: [[1, enter("alice", { room: "lobby" })], [
      2,
      enter("bob", {
        room: "lobby",
      }),
    ]],
    when: [1, leave("alice", {}, withId("l1"))],
    then: { 1: [ack("l1")], 2: [left("lobby", "alice", "left")] },
  },
  {
    name: "without room while in two rooms is room_required",
    given: [[1, enter("alice")], [1, enter("alice", { room: "lobby" })]],
    when: [1, leave("alice", {}, withId("l1"))],
    then: { 1: [error("room_required", "l1", /message_body\.room/)] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), ["general", "lobby"]),
  },
  {
    name: "without room while in no room is room_required",
    given: [[1, enter("alice")], [1, leave("alice")]],
    when: [1, leave("alice", {}, withId("l2"))],
    then: { 1: [error("room_required", "l2", /message_body\.room/)] },
  },
  {
    name: "of a room not in is not_in_room",
    given: [[1, enter("alice")], [2, enter("bob", { room: "lobby" })]],
    when: [1, leave("alice", { room: "lobby" }, withId("l1"))],
    then: { 1: [error("not_in_room", "l1", /lobby/)] },
    also: (state) => assert.deepEqual(membersOf(state, "lobby"), [2]),
  },
  {
    name: "before Enter is not_entered",
    when: [1, leave("alice", { room: "general" }, withId("l1"))],
    then: { 1: [error("not_entered", "l1")] },
  },
  {
    name: "under another name is sender_mismatch",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, leave("bob", {}, withId("l1"))],
    then: { 1: [error("sender_mismatch", "l1")] },
    also: (state) => assert.deepEqual(membersOf(state, "general"), [1, 2]),
  },
  {
    name: "by the last member removes the room",
    given: [[1, enter("alice", { room: "lobby" })]],
    when: [1, leave("alice", { room: "lobby" })],
    then: {},
    also: (state) => assert.equal(state.rooms.has("lobby"), false),
  },
  {
    name: "is not seen by members of other rooms",
    given: [[1, enter("alice")], [1, enter("alice", { room: "lobby" })], [
      2,
      enter("bob"),
    ]],
    when: [1, leave("alice", { room: "lobby" }, withId("l1"))],
    then: { 1: [ack("l1")] },
  },
  {
    name: "then Enter again is seen as Enter",
    given: [[1, enter("alice")], [2, enter("bob")], [1, leave("alice")]],
    when: [1, enter("alice")],
    then: {
      1: [presence("general", ["alice", "bob"])],
      2: [entered("general", "alice")],
    },
  },
]);

// ---------------------------------------------------------------------------

// Identity

scenarios("identity", [
  {
    name: "the first Enter binds the connection's username",
    given: [[1, enter("alice", { room: "lobby" })]],
    when: [1, say("alice", "hi")],
    then: { 1: [groupFrame({ seq: 1, content: "hi", room: "lobby" })] },
  },
  {
    name: "sender_mismatch on Enter once bound",
    given: [[1, enter("alice")]],
    when: [1, enter("mallory", {}, withId("x"))],
    then: { 1: [error("sender_mismatch", "x")] },
  },
  {
    name: "sender_mismatch on Leave once bound",
    given: [[1, enter("alice")]],
    when: [1, leave("mallory", {}, withId("x"))],
    then: { 1: [error("sender_mismatch", "x")] },
  },
  {
    name: "sender_mismatch on GroupChat once bound",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, say("mallory", "hi", {}, withId("x"))],
    then: { 1: [error("sender_mismatch", "x")] },
  },
  {
    name: "sender_mismatch on PrivateChat once bound",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, whisper("mallory", "bob", "hi", withId("x"))],
    then: { 1: [error("sender_mismatch", "x")] },
  },
  {
    name: "sender_mismatch when naming another live user",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, say("bob", "hi", {}, withId("x"))],
    then: { 1: [error("sender_mismatch", "x")] },
  },
  {
    name: "username_taken with authentication off",
    given: [[1, enter("alice")]],
    when: [2, enter("alice", {}, withId("x"))],
    then: { 2: [error("username_taken", "x")] },
  },
  {
    name: "not_entered for Leave before Enter",
    when: [1, leave("alice", {}, withId("x"))],
    then: { 1: [error("not_entered", "x")] },
  },
  {
    name: "not_entered for GroupChat before Enter",
    given: [[2, enter("alice")]],
    when: [1, say("alice", "hi", {}, withId("x"))],
    then: { 1: [error("not_entered", "x")] },
  },
  {
    name: "not_entered for PrivateChat before Enter",
    given: [[2, enter("bob")]],
    when: [1, whisper("alice", "bob", "hi", withId("x"))],
    then: { 1: [error("not_entered", "x")] },
  },
  {
    name: "a refused first Enter binds nothing",
    given: [[1, enter("alice")], [2, enter("alice")]],
    when: [2, say("alice", "hi", {}, withId("x"))],
    then: { 2: [error("not_entered", "x")] },
    also: (state) => assert.equal(username(state, 2), null),
  },
  {
    name: "the username is freed on close",
    given: [[1, enter("alice")], { close: 1 }],
    when: [2, enter("alice")],
    then: { 2: [presence("general", ["alice"])] },
  },
  {
    name: "the username is freed when the server closes the connection",
    given: [[1, enter("alice")], {
      event: { type: "overflow", conn: 1, now: T0 },
    }],
    when: [2, enter("alice")],
    then: { 2: [presence("general", ["alice"])] },
  },
  {
    name: "the username stays bound after leaving every room",
    given: [[1, enter("alice")], [1, leave("alice")]],
    when: [2, enter("alice", {}, withId("x"))],
    then: { 2: [error("username_taken", "x")] },
  },
]);

// ---------------------------------------------------------------------------
// Presence

scenarios("presence", [
  {
    name: "a close is Leave 'disconnected' to every room of the connection",
    given: [
      [1, enter("alice")],
      [1, enter("alice", { room: "lobby" })],
      [2, enter("bob")],
      [3, enter("carol", { room: "lobby" })],
    ],
    when: { close: 1 },
    then: {
      2: [left("general", "alice", "disconnected")],
      3: [left("lobby", "alice", "disconnected")],
    },
  },
  {
    name: "a close of a connection in no room is seen by no one",
    given: [[1, enter("alice")], [1, leave("alice")], [2, enter("bob")]],
    when: { close: 1 },
    then: {},
  },
  {
    name: "a close before Enter is seen by no one",
    given: [[2, enter("bob")]],
    when: { close: 1 },
    then: {},
  },
  {
    name: "the last member's close removes the room",
    given: [[1, enter("alice", { room: "lobby" })], [2, enter("bob")]],
    when: { close: 1 },
    then: {},
    also: (state) => assert.deepEqual([...state.rooms.keys()], ["general"]),
  },
  {
    name: "a server close (slow consumer) is 1008 and Leave 'disconnected'",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: { event: { type: "overflow", conn: 1, now: WHEN_AT } },
    then: { 2: [left("general", "alice", "disconnected")] },
    closes: [[1, 1008]],
  },
  {
    name: "a closed event for an unknown connection changes nothing",
    given: [[1, enter("alice")]],
    when: { event: { type: "closed", conn: 99, now: WHEN_AT, code: 1000 } },
    then: {},
    also: (state) => assert.deepEqual(membersOf(state, "general"), [1]),
  },
]);

// ---------------------------------------------------------------------------
