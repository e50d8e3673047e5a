/**
 * Reducer tables for typing indicators (issue 17): who a `Typing` is
 * relayed to and what is refused (relay), how often a connection's starts
 * are relayed (rate), and when the server relays a stop (expiry). Pure
 * reducer, no socket; the cluster's part is in
 * `reducer_typing_cluster_test.ts`.
 *
 * Why this file is long: mostly case tables (relay, then rate and expiry,
 * played at given times by `playTimed`), one row a scenario; a rule's rows
 * stay in one place.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type ConnId,
  TYPING_EXPIRES_MS,
  TYPING_INTERVAL_MS,
} from "../../src/chat/reducer.ts";
import {
  ack,
  type Body,
  enter,
  error,
  type Frame,
  left,
  message,
  privateFrame,
  say,
  T0,
  WHEN_AT,
  whisper,
  withId,
} from "../support/reducer_frames.ts";
import {
  AUTH,
  AUTH_GRANTS,
  Chat,
  CONNS,
  effectsOf,
  inbox,
  type Observed,
  scenarios,
  TOKEN_ALICE,
  TOKEN_BOB,
} from "../support/reducer_harness.ts";

/** A `Typing` from `user` (`room` or `target_username` in `body`). */
function typing(user: string, body: Body = {}, envelope: Body = {}): Body {
  return message("Typing", { sender_username: user, ...body }, envelope);
}

/** The `Typing` frame others get when `user` starts (or stops) in `room`. */
function inRoom(room: string, user: string, active = true): Frame {
  return ["Typing", {
    room,
    sender_username: user,
    active,
    expires_in_ms: active ? TYPING_EXPIRES_MS : 0,
  }];
}

/** The `Typing` frame `target` gets when `user` types to them. */
function toUser(user: string, target: string, active = true): Frame {
  return ["Typing", {
    sender_username: user,
    target_username: target,
    active,
    expires_in_ms: active ? TYPING_EXPIRES_MS : 0,
  }];
}

/** Alice (1), bob (2) and carol (3) in `general`. */
const ALL_IN = [
  [1, enter("alice")],
  [2, enter("bob")],
  [3, enter("carol")],
] as const;

/** Authentication on: alice on 1 and 2, bob on 3 (tokens at upgrade). */
const TWO_ALICES = {
  options: { settings: AUTH, grants: AUTH_GRANTS },
  upgrade: { 1: TOKEN_ALICE, 2: TOKEN_ALICE, 3: TOKEN_BOB },
} as const;

/** Checks that a `Typing` asked for no write and no read. */
function nothingStored(_state: unknown, seen: readonly Observed[]): void {
  assert.deepEqual(effectsOf(seen, "persist"), [], "never stored");
  assert.deepEqual(effectsOf(seen, "load_history"), [], "nothing read");
}

// ---------------------------------------------------------------------------
// Relay: who gets it, what is refused

scenarios("typing relay", [
  {
    name: "in a room: the others get it, the sender's connection nothing",
    given: ALL_IN,
    when: [1, typing("alice", { room: "general" })],
    then: { 2: [inRoom("general", "alice")], 3: [inRoom("general", "alice")] },
    also: nothingStored,
  },
  {
    name: "with an id: the sender gets its Ack",
    given: ALL_IN,
    when: [1, typing("alice", { room: "general" }, withId("t1"))],
    then: {
      1: [ack("t1")],
      2: [inRoom("general", "alice")],
      3: [inRoom("general", "alice")],
    },
  },
  {
    name: "room omitted: the connection's only room",
    given: ALL_IN,
    when: [1, typing("alice")],
    then: { 2: [inRoom("general", "alice")], 3: [inRoom("general", "alice")] },
  },
  {
    name: "members of other rooms get nothing",
    given: [[1, enter("alice")], [2, enter("bob")], [
      3,
      enter("carol", { room: "other" }),
    ]],
    when: [1, typing("alice", { room: "general" })],
    then: { 2: [inRoom("general", "alice")] },
  },
  {
    name: "the sender's other connections are not told (same user)",
    ...TWO_ALICES,
    given: [[1, enter("alice")], [2, enter("alice")], [3, enter("bob")]],
    when: [1, typing("alice", { room: "general" })],
    then: { 3: [inRoom("general", "alice")] },
  },
  {
    name: "alone in the room: accepted, nobody to tell",
    given: [[1, enter("alice")]],
    when: [1, typing("alice", {}, withId("t1"))],
    then: { 1: [ack("t1")] },
  },
  {
    name: "a room the connection is not in: not_in_room",
    given: ALL_IN,
    when: [1, typing("alice", { room: "other" }, withId("t1"))],
    then: { 1: [error("not_in_room", "t1", /not in room 'other'/)] },
  },
  {
    name: "room omitted in two rooms: room_required",
    given: [...ALL_IN, [1, enter("alice", { room: "other" })]],
    when: [1, typing("alice", {}, withId("t1"))],
    then: { 1: [error("room_required", "t1")] },
  },
  {
    name: "another sender: sender_mismatch",
    given: ALL_IN,
    when: [1, typing("bob", { room: "general" }, withId("t1"))],
    then: { 1: [error("sender_mismatch", "t1")] },
  },
  {
    name: "before any Enter: not_entered",
    when: [1, typing("alice", { room: "general" }, withId("t1"))],
    then: { 1: [error("not_entered", "t1")] },
  },
  {
    name: "room and target_username both: invalid_message",
    given: ALL_IN,
    when: [
      1,
      typing("alice", { room: "general", target_username: "bob" }, {
        id: "t1",
      }),
    ],
    then: {
      1: [error("invalid_message", "t1", /room or target_username, not both/)],
    },
  },
  {
    name: "active not a boolean: invalid_message",
    given: ALL_IN,
    when: [1, typing("alice", { active: "yes" }, withId("t1"))],
    then: { 1: [error("invalid_message", "t1", /active: must be a boolean/)] },
  },
  {
    name: "to a user: the target gets it, nobody else",
    given: ALL_IN,
    when: [1, typing("alice", { target_username: "bob" })],
    then: { 2: [toUser("alice", "bob")] },
    also: nothingStored,
  },
  {
    name: "to a user: every connection of the target",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB, 3: TOKEN_BOB },
    when: [1, typing("alice", { target_username: "bob" })],
    then: { 2: [toUser("alice", "bob")], 3: [toUser("alice", "bob")] },
  },
  {
    name: "to a user not connected (authentication off): user_not_found",
    given: ALL_IN,
    when: [1, typing("alice", { target_username: "dave" }, withId("t1"))],
    then: { 1: [error("user_not_found", "t1", /'dave' is not connected/)] },
  },
  {
    name: "to a user offline (authentication on): accepted, nobody told",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    when: [1, typing("alice", { target_username: "bob" }, withId("t1"))],
    then: { 1: [ack("t1")] },
    also: nothingStored,
  },
  {
    name: "stop: the others get active false",
    given: [...ALL_IN, [1, typing("alice")]],
    when: [1, typing("alice", { active: false })],
    then: {
      2: [inRoom("general", "alice", false)],
      3: [inRoom("general", "alice", false)],
    },
  },
  {
    name: "stop with nothing shown: nothing relayed, Ack",
    given: ALL_IN,
    when: [1, typing("alice", { active: false }, withId("t1"))],
    then: { 1: [ack("t1")] },
  },
  {
    name: "a GroupChat stops it, before the message",
    given: [...ALL_IN, [1, typing("alice")]],
    when: [1, say("alice", "hi")],
    then: {
      1: [conformable(["GroupChat", { content: "hi" }])],
      2: [
        inRoom("general", "alice", false),
        conformable(["GroupChat", {
          content: "hi",
        }]),
      ],
      3: [
        inRoom("general", "alice", false),
        conformable(["GroupChat", {
          content: "hi",
        }]),
      ],
    },
  },
  {
    name: "a PrivateChat stops the indicator to its target",
    given: [...ALL_IN, [1, typing("alice", { target_username: "bob" })]],
    when: [1, whisper("alice", "bob", "psst")],
    then: {
      1: [privateFrame("alice", "bob", "psst")],
      2: [toUser("alice", "bob", false), privateFrame("alice", "bob", "psst")],
    },
  },
  {
    name: "a GroupChat in another room leaves it shown",
    given: [
      ...ALL_IN,
      [1, enter("alice", { room: "other" })],
      [1, typing("alice", { room: "general" })],
    ],
    when: [1, say("alice", "hi", { room: "other" })],
    then: {
      1: [conformable(["GroupChat", { content: "hi", room: "other" }])],
    },
  },
  {
    name: "Leave stops it, before the Leave",
    given: [...ALL_IN, [1, typing("alice")]],
    when: [1, message("Leave", { sender_username: "alice" })],
    then: {
      2: [inRoom("general", "alice", false), left("general", "alice", "left")],
      3: [inRoom("general", "alice", false), left("general", "alice", "left")],
    },
  },
  {
    name: "a close stops every indicator of the connection",
    given: [
      ...ALL_IN,
      [1, typing("alice")],
      [1, typing("alice", { target_username: "carol" })],
    ],
    when: { close: 1 },
    then: {
      2: [
        inRoom("general", "alice", false),
        left("general", "alice", "disconnected"),
      ],
      3: [
        inRoom("general", "alice", false),
        toUser("alice", "carol", false),
        left("general", "alice", "disconnected"),
      ],
    },
  },
  {
    name: "a large room (past PRESENCE_FULL_LIMIT): not relayed, Ack",
    options: { settings: { presenceFullLimit: 2 } },
    given: ALL_IN,
    when: [1, typing("alice", {}, withId("t1"))],
    then: { 1: [ack("t1")] },
    also: (_state, seen) =>
      assert.deepEqual(
        effectsOf(seen, "count").map((count) => count.label),
        ["Typing", "large_room"],
      ),
  },
  {
    name: "overloaded: shed without an Error, Ack",
    given: [...ALL_IN, {
      event: { type: "load", now: T0, overloaded: true },
    }],
    when: [1, typing("alice", {}, withId("t1"))],
    then: { 1: [ack("t1")] },
    also: (_state, seen) =>
      assert.deepEqual(
        effectsOf(seen, "count").map((count) => count.label),
        ["Typing", "shed"],
      ),
  },
]);

/** A `GroupChat` frame matched on its content only. */
function conformable(frame: readonly [string, Body]): Frame {
  const [type, body] = frame;
  return [type, {
    id: /./,
    seq: 1,
    room: "general",
    sender_username: "alice",
    timestamp: WHEN_AT,
    ...body,
  }];
}

// ---------------------------------------------------------------------------
// Rate and expiry: steps at given times

/** A step at `at` ms after {@linkcode T0}. */
type Timed =
  | { at: number; conn: ConnId; frame: Body }
  | { at: number; close: ConnId };

interface TimedCase {
  name: string;
  /** Authentication on with alice on 1 and 2, bob on 3; default: off. */
  twoAlices?: boolean;
  steps: readonly Timed[];
  /** What connection 2 (or `watch`) gets from all the steps, in order. */
  then: readonly Frame[];
  watch?: ConnId;
  /** The `typing` metric labels of all the steps, in order. */
  results?: readonly string[];
}

function playTimed(row: TimedCase): void {
  const chat = row.twoAlices
    ? new Chat({ settings: AUTH, grants: AUTH_GRANTS })
    : new Chat();
  const tokens = row.twoAlices
    ? [TOKEN_ALICE, TOKEN_ALICE, TOKEN_BOB]
    : [undefined, undefined, undefined];
  const names = row.twoAlices
    ? ["alice", "alice", "bob"]
    : ["alice", "bob", "carol"];
  CONNS.forEach((conn, i) => chat.open(conn, tokens[i]));
  CONNS.forEach((conn, i) => chat.send(conn, enter(names[i] as string)));
  CONNS.forEach((conn, i) =>
    chat.send(conn, enter(names[i] as string, { room: "b" }))
  );
  const seen: Observed[] = [];
  for (const step of row.steps) {
    chat.now = T0 + step.at;
    seen.push(
      ..."close" in step ? chat.close(step.close) : chat.send(
        step.conn,
        step.frame,
      ),
    );
  }
  const watch = row.watch ?? 2;
  assert.deepEqual(
    inbox(seen, watch).filter(([type]) => type === "Typing"),
    row.then,
    `Typing frames to ${watch}`,
  );
  if (row.results) {
    assert.deepEqual(
      effectsOf(seen, "count").filter((c) => c.metric === "typing").map((c) =>
        c.label
      ),
      row.results,
    );
  }
  assert.deepEqual(effectsOf(seen, "close"), [], "no close");
}

const start = (room = "general") => typing("alice", { room });
const stop = (room = "general") => typing("alice", { room, active: false });
const hi = say("alice", "hi", { room: "general" });
const on = inRoom("general", "alice");
const off = inRoom("general", "alice", false);

const RATE: readonly TimedCase[] = [
  {
    name: "a renewal within the interval is dropped, counted",
    steps: [{ at: 0, conn: 1, frame: start() }, {
      at: 250,
      conn: 1,
      frame: start(),
    }],
    then: [on],
    results: ["relayed", "throttled"],
  },
  {
    name: "just under the interval: dropped",
    steps: [{ at: 0, conn: 1, frame: start() }, {
      at: TYPING_INTERVAL_MS - 1,
      conn: 1,
      frame: start(),
    }],
    then: [on],
    results: ["relayed", "throttled"],
  },
  {
    name: "at the interval: relayed again",
    steps: [{ at: 0, conn: 1, frame: start() }, {
      at: TYPING_INTERVAL_MS,
      conn: 1,
      frame: start(),
    }],
    then: [on, on],
    results: ["relayed", "relayed"],
  },
  {
    name: "many renewals in a burst: one relayed, no error, no close",
    steps: Array.from({ length: 12 }, (_, i) => ({
      at: i * 100,
      conn: 1 as ConnId,
      frame: start(),
    })),
    then: [on],
    results: ["relayed", ...Array(11).fill("throttled")],
  },
  {
    name: "a start right after a stop is relayed (the stop ended it)",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 300, conn: 1, frame: stop() },
      { at: 600, conn: 1, frame: start() },
    ],
    then: [on, off, on],
    results: ["relayed", "stopped", "relayed"],
  },
  {
    name: "per room: another room within the interval is relayed",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 100, conn: 1, frame: start("b") },
    ],
    then: [on, inRoom("b", "alice")],
  },
  {
    name: "per target: another user within the interval is relayed",
    watch: 3,
    steps: [
      { at: 0, conn: 1, frame: typing("alice", { target_username: "bob" }) },
      {
        at: 100,
        conn: 1,
        frame: typing("alice", { target_username: "carol" }),
      },
    ],
    then: [toUser("alice", "carol")],
  },
  {
    name: "per connection: the user's other connection is relayed too",
    twoAlices: true,
    watch: 3,
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 100, conn: 2, frame: start() },
    ],
    then: [on, on],
  },
];

const EXPIRY: readonly TimedCase[] = [
  {
    name: "a message just before expiry stops it",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS - 1, conn: 1, frame: hi },
    ],
    then: [on, off],
  },
  {
    name: "a message after expiry sends no stop (clients dropped it)",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS, conn: 1, frame: hi },
    ],
    then: [on],
  },
  {
    name: "a stop after expiry relays nothing",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS + 500, conn: 1, frame: stop() },
    ],
    then: [on],
    results: ["relayed", "idle"],
  },
  {
    name: "a dropped renewal does not extend it",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 1000, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS + 500, conn: 1, frame: hi },
    ],
    then: [on],
  },
  {
    name: "a relayed renewal extends it",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 3000, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS + 500, conn: 1, frame: hi },
    ],
    then: [on, on, off],
  },
  {
    name: "a close after expiry sends no stop",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: TYPING_EXPIRES_MS + 1, close: 1 },
    ],
    then: [on],
  },
  {
    name: "a second stop relays nothing",
    steps: [
      { at: 0, conn: 1, frame: start() },
      { at: 100, conn: 1, frame: stop() },
      { at: 200, conn: 1, frame: stop() },
    ],
    then: [on, off],
    results: ["relayed", "stopped", "idle"],
  },
];

for (const row of RATE) {
  Deno.test(`typing rate: ${row.name}`, () => playTimed(row));
}
for (const row of EXPIRY) {
  Deno.test(`typing expiry: ${row.name}`, () => playTimed(row));
}

Deno.test("typing: a connection remembers few indicators however many targets", () => {
  const chat = new Chat({ settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  for (let i = 0; i < 100; i++) {
    chat.now = T0 + i * TYPING_EXPIRES_MS / 4;
    chat.send(1, typing("alice", { target_username: `user${i}` }));
  }
  const typingOf = chat.state.connections.get(1)?.typing;
  assert.ok(typingOf && typingOf.size <= 17, `kept ${typingOf?.size}`);
});
