/**
 * Reducer tables for the chat commands: `GroupChat`, `PrivateChat` and
 * `History`.
 *
 * Why this file is long: mostly case tables, one row a
 * scenario; a rule's table stays in one place.
 *
 * Conventions (see `tests/support/reducer_harness.ts`): connections 1, 2
 * and 3 are opened first and usually enter as alice, bob and carol; the
 * event under test happens at `WHEN_AT` and a frame under test gets the
 * fresh id `WHEN_ID`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { HistoryRequest } from "../../src/chat/reducer.ts";
import {
  Chat,
  CONNS,
  effectsOf,
  inbox,
  roomsOf,
  scenarios,
  type Step,
} from "../support/reducer_harness.ts";
import {
  ack,
  askHistory,
  assertFrames,
  enter,
  entered,
  error,
  type Frame,
  group,
  groupAck,
  groupFrame,
  leave,
  left,
  presence,
  privateFrame,
  say,
  T0,
  WHEN_AT,
  WHEN_ID,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// GroupChat

scenarios("GroupChat", [
  {
    name: "goes to every member, the sender included, then Ack to the sender",
    given: [
      [1, enter("alice")],
      [2, enter("bob")],
      [3, enter("carol", { room: "other" })],
    ],
    when: [1, say("alice", "hi", {}, withId("g1"))],
    then: {
      1: [
        groupFrame({ seq: 1, content: "hi" }),
        groupAck("g1", { seq: 1, content: "hi" }),
      ],
      2: [groupFrame({ seq: 1, content: "hi" })],
    },
  },
  {
    name: "without id gets no Ack",
    given: [[1, enter("alice")]],
    when: [1, say("alice", "hi")],
    then: { 1: [groupFrame({ seq: 1, content: "hi" })] },
  },
  {
    name: "continues the seq given to createState",
    options: { seqs: { general: 41, other: 7 } },
    given: [[1, enter("alice")]],
    when: [1, say("alice", "hi", {}, withId("g1"))],
    then: {
      1: [
        groupFrame({ seq: 42, content: "hi" }),
        groupAck("g1", { seq: 42, content: "hi" }),
      ],
    },
  },
  {
    name: "grows the seq by one per message, per room",
    options: { seqs: { lobby: 10 } },
    given: [
      [1, enter("alice")],
      [1, enter("alice", { room: "lobby" })],
      [1, say("alice", "one", { room: "general" })],
      [1, say("alice", "two", { room: "general" })],
      [1, say("alice", "three", { room: "lobby" })],
    ],
    when: [1, say("alice", "four", { room: "general" })],
    then: { 1: [groupFrame({ seq: 3, content: "four" })] },
  },
  {
    name: "without room goes to the only room",
    given: [[1, enter("alice", { room: "lobby" })], [
      2,
      enter("bob", {
        room: "lobby",
      }),
    ]],
    when: [2, say("bob", "hi")],
    then: {
      1: [groupFrame({ seq: 1, content: "hi", sender: "bob", room: "lobby" })],
      2: [groupFrame({ seq: 1, content: "hi", sender: "bob", room: "lobby" })],
    },
  },
  {
    name: "without room while in two rooms is room_required",
    given: [
      [1, enter("alice")],
      [1, enter("alice", { room: "lobby" })],
      [2, enter("bob")],
    ],
    when: [1, say("alice", "hi", {}, withId("g1"))],
    then: { 1: [error("room_required", "g1", /message_body\.room/)] },
    also: (_state, seen) => assert.deepEqual(effectsOf(seen, "persist"), []),
  },
  {
    name: "without room while in no room is room_required",
    given: [[1, enter("alice")], [1, leave("alice")]],
    when: [1, say("alice", "hi", {}, withId("g1"))],
    then: { 1: [error("room_required", "g1", /message_body\.room/)] },
  },
  {
    name: "to a room not in is not_in_room, and its members see nothing",
    given: [[1, enter("alice")], [2, enter("bob", { room: "secret" })]],
    when: [1, say("alice", "hi", { room: "secret" }, withId("g1"))],
    then: { 1: [error("not_in_room", "g1", /secret/)] },
    also: (_state, seen) => assert.deepEqual(effectsOf(seen, "persist"), []),
  },
  {
    name: "before Enter is not_entered",
    when: [1, say("alice", "hi", { room: "general" }, withId("g1"))],
    then: { 1: [error("not_entered", "g1")] },
  },
  {
    name: "under another name is sender_mismatch and is delivered to no one",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, say("bob", "hi", {}, withId("g1"))],
    then: { 1: [error("sender_mismatch", "g1")] },
    also: (state, seen) => {
      assert.deepEqual(effectsOf(seen, "persist"), []);
      assert.equal(state.seqs.get("general") ?? 0, 0, "no seq is used");
    },
  },
  {
    name: "asks for a write of the message with the event's id and time",
    given: [[1, enter("alice")]],
    when: [1, say("alice", "hi", {}, withId("g1"))],
    then: {
      1: [
        groupFrame({ seq: 1, content: "hi" }),
        groupAck("g1", { seq: 1, content: "hi" }),
      ],
    },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "persist"), [{
        type: "persist",
        request: {
          conn: 1,
          ref: "g1",
          // The client's id goes along: the idempotency key.
          op: {
            kind: "group",
            message: group({ seq: 1, content: "hi" }),
            ref: "g1",
          },
        },
      }]),
  },
]);

Deno.test("GroupChat is delivered only after its write is persisted", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.now = WHEN_AT;
  const sent = chat.send(1, say("alice", "hi", {}, withId("g1")), {
    id: WHEN_ID,
  });
  assert.deepEqual(inbox(sent, 1), [], "nothing before the write");
  assert.deepEqual(inbox(sent, 2), []);
  assert.equal(chat.pending.length, 1);

  chat.now = WHEN_AT + 40;
  const stored = chat.persisted();
  assertFrames(inbox(stored, 1), [
    groupFrame({ seq: 1, content: "hi" }),
    groupAck("g1", { seq: 1, content: "hi" }),
  ], "sender");
  assertFrames(
    inbox(stored, 2),
    [groupFrame({ seq: 1, content: "hi" })],
    "member",
  );
  assert.deepEqual(inbox(stored, 3), []);
  assert.equal(chat.state.rooms.get("general")?.deliveredSeq, 1);
});

Deno.test("GroupChat whose write fails gets unavailable with ref and reaches no one", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.send(1, say("alice", "hi", {}, withId("g1")));
  const failed = chat.persisted({ ok: false, reason: "failed" });
  assertFrames(inbox(failed, 1), [error("unavailable", "g1")], "sender");
  assert.deepEqual(inbox(failed, 2), []);
  assert.equal(chat.state.rooms.get("general")?.deliveredSeq, 0);

  // The connection goes on: the next message is handled at once.
  const next = chat.send(1, say("alice", "again", {}, withId("g2")));
  assert.equal(effectsOf(next, "persist").length, 1);
  const stored = chat.persisted();
  assert.deepEqual(
    inbox(stored, 1).map(([type]) => type),
    ["GroupChat", "Ack"],
  );
});

// ---------------------------------------------------------------------------
// PrivateChat

scenarios("PrivateChat", [
  {
    name: "goes to the target and the sender, then Ack with id and timestamp",
    given: [[1, enter("alice")], [2, enter("bob")], [3, enter("carol")]],
    when: [1, whisper("alice", "bob", "psst", withId("p1"))],
    then: {
      1: [
        privateFrame("alice", "bob", "psst"),
        ack("p1", { id: WHEN_ID, timestamp: WHEN_AT }),
      ],
      2: [privateFrame("alice", "bob", "psst")],
    },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "persist"), [{
        type: "persist",
        request: {
          conn: 1,
          ref: "p1",
          op: {
            kind: "private",
            message: {
              id: WHEN_ID,
              sender_username: "alice",
              target_username: "bob",
              content: "psst",
              timestamp: WHEN_AT,
            },
            delivered: true,
            ref: "p1",
          },
        },
      }]),
  },
  {
    name: "reaches a target in no room",
    given: [[1, enter("alice")], [2, enter("bob")], [2, leave("bob")]],
    when: [1, whisper("alice", "bob", "psst")],
    then: {
      1: [privateFrame("alice", "bob", "psst")],
      2: [privateFrame("alice", "bob", "psst")],
    },
  },
  {
    name: "to oneself arrives once",
    given: [[1, enter("alice")]],
    when: [1, whisper("alice", "alice", "memo", withId("p1"))],
    then: {
      1: [
        privateFrame("alice", "alice", "memo"),
        ack("p1", { id: WHEN_ID, timestamp: WHEN_AT }),
      ],
    },
  },
  {
    name: "to a username not connected is user_not_found",
    given: [[1, enter("alice")]],
    when: [1, whisper("alice", "dave", "psst", withId("p1"))],
    then: { 1: [error("user_not_found", "p1", /dave/)] },
    also: (_state, seen) => assert.deepEqual(effectsOf(seen, "persist"), []),
  },
  {
    name: "to a username whose connection closed is user_not_found",
    given: [[1, enter("alice")], [2, enter("bob")], { close: 2 }],
    when: [1, whisper("alice", "bob", "psst", withId("p1"))],
    then: { 1: [error("user_not_found", "p1")] },
  },
  {
    name: "before Enter is not_entered",
    given: [[2, enter("bob")]],
    when: [1, whisper("alice", "bob", "psst", withId("p1"))],
    then: { 1: [error("not_entered", "p1")] },
  },
  {
    name: "under another name is sender_mismatch and reaches no one",
    given: [[1, enter("alice")], [2, enter("bob")], [3, enter("carol")]],
    when: [1, whisper("carol", "bob", "psst", withId("p1"))],
    then: { 1: [error("sender_mismatch", "p1")] },
  },
]);

// ---------------------------------------------------------------------------
// History

interface HistoryQueryCase {
  name: string;
  seqs?: Record<string, number>;
  given?: readonly Step[];
  frame: unknown;
  /** The frames before the read, to the asking connection. */
  before: readonly Frame[];
  request: HistoryRequest;
}

const historyQueryCases: HistoryQueryCase[] = [
  {
    name: "Enter with history asks for the last K up to the delivered seq",
    seqs: { general: 7 },
    given: [[2, enter("bob")]],
    frame: enter("alice", { history: 5 }, withId("e1")),
    before: [presence("general", ["alice", "bob"])],
    request: {
      conn: 1,
      room: "general",
      ref: "e1",
      query: { kind: "last", count: 5, upTo: 7 },
    },
  },
  {
    // Its seq is read meanwhile; nothing of it is being written.
    name:
      "Enter with history into a room opening asks up to what storage holds",
    seqs: { general: 7 },
    frame: enter("alice", { history: 5 }, withId("e1")),
    before: [presence("general", ["alice"])],
    request: {
      conn: 1,
      room: "general",
      ref: "e1",
      query: { kind: "last", count: 5, upTo: Number.MAX_SAFE_INTEGER },
    },
  },
  {
    name: "Enter with since asks for every seq after it",
    seqs: { lobby: 12 },
    given: [[2, enter("bob", { room: "lobby" })]],
    frame: enter("alice", { room: "lobby", since: 3 }),
    before: [presence("lobby", ["alice", "bob"])],
    request: {
      conn: 1,
      room: "lobby",
      ref: undefined,
      query: { kind: "since", since: 3, upTo: 12 },
    },
  },
  {
    name: "Enter with history of a room without messages asks up to 0",
    given: [[2, enter("bob")]],
    frame: enter("alice", { history: 100 }),
    before: [presence("general", ["alice", "bob"])],
    request: {
      conn: 1,
      room: "general",
      ref: undefined,
      query: { kind: "last", count: 100, upTo: 0 },
    },
  },
  {
    name: "Enter with history counts messages delivered since the start",
    seqs: { general: 7 },
    given: [[2, enter("bob")], [2, say("bob", "one")], [2, say("bob", "two")]],
    frame: enter("alice", { history: 1 }),
    before: [presence("general", ["alice", "bob"])],
    request: {
      conn: 1,
      room: "general",
      ref: undefined,
      query: { kind: "last", count: 1, upTo: 9 },
    },
  },
  {
    name: "History defaults before to upTo + 1 and limit to 50",
    seqs: { general: 7 },
    given: [[1, enter("alice")]],
    frame: askHistory("general", {}, withId("h1")),
    before: [],
    request: {
      conn: 1,
      room: "general",
      ref: "h1",
      query: { kind: "before", before: 8, limit: 50, upTo: 7 },
    },
  },
  {
    name: "History passes before and limit",
    seqs: { general: 7 },
    given: [[1, enter("alice")]],
    frame: askHistory("general", { before: 5, limit: 10 }),
    before: [],
    request: {
      conn: 1,
      room: "general",
      ref: undefined,
      query: { kind: "before", before: 5, limit: 10, upTo: 7 },
    },
  },
];

for (const c of historyQueryCases) {
  Deno.test(`History: ${c.name}`, () => {
    const chat = new Chat({ seqs: c.seqs });
    for (const conn of CONNS) chat.open(conn);
    for (const step of c.given ?? []) chat.step(step);
    chat.auto = false;
    const seen = chat.send(1, c.frame);
    assertFrames(inbox(seen, 1), c.before, "frames before the read");
    assert.deepEqual(effectsOf(seen, "load_history"), [{
      type: "load_history",
      request: c.request,
    }]);
    assert.equal(chat.state.connections.get(1)?.busy, true, "waits");
  });
}

const KEPT = [
  group({ seq: 6, content: "six", sender: "bob", id: "m6", timestamp: T0 - 2 }),
  group({
    seq: 7,
    content: "seven",
    sender: "bob",
    id: "m7",
    timestamp: T0 - 1,
  }),
];

scenarios("History", [
  {
    name: "Enter without history or since sends no History",
    when: [1, enter("alice", {}, withId("e1"))],
    then: { 1: [presence("general", ["alice"]), ack("e1")] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "load_history"), []),
  },
  {
    name: "Enter with history: Presence, History, then Ack",
    options: {
      seqs: { general: 7 },
      page: () => ({ messages: KEPT, complete: false }),
    },
    when: [1, enter("alice", { history: 2 }, withId("e1"))],
    then: {
      1: [
        presence("general", ["alice"]),
        ["History", { room: "general", messages: KEPT, complete: false }],
        ack("e1"),
      ],
    },
  },
  {
    name: "Enter with since and nothing newer sends an empty History",
    options: { seqs: { general: 7 } },
    when: [1, enter("alice", { since: 7 })],
    then: {
      1: [
        presence("general", ["alice"]),
        ["History", { room: "general", messages: [], complete: true }],
      ],
    },
  },
  {
    name: "a room already in with history sends Presence and History again",
    options: {
      seqs: { general: 7 },
      page: () => ({ messages: KEPT, complete: true }),
    },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, enter("alice", { history: 2 }, withId("e2"))],
    then: {
      1: [
        presence("general", ["alice", "bob"]),
        ["History", { room: "general", messages: KEPT, complete: true }],
        ack("e2"),
      ],
    },
  },
  {
    name: "History request: History then Ack",
    options: {
      seqs: { general: 7 },
      page: () => ({ messages: KEPT, complete: true }),
    },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [1, askHistory("general", { before: 8, limit: 2 }, withId("h1"))],
    then: {
      1: [
        ["History", { room: "general", messages: KEPT, complete: true }],
        ack("h1"),
      ],
    },
  },
  {
    name: "History of a room not in is not_in_room",
    given: [[1, enter("alice")], [2, enter("bob", { room: "secret" })]],
    when: [1, askHistory("secret", {}, withId("h1"))],
    then: { 1: [error("not_in_room", "h1", /secret/)] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "load_history"), []),
  },
  {
    name: "History of a room left is not_in_room",
    given: [[1, enter("alice")], [1, leave("alice")]],
    when: [1, askHistory("general", {}, withId("h1"))],
    then: { 1: [error("not_in_room", "h1")] },
  },
]);

Deno.test("History: room frames during the read are held, then sent after History and before Ack", () => {
  const chat = new Chat({ auto: false, seqs: { general: 7 } });
  for (const conn of CONNS) chat.open(conn);
  chat.send(2, enter("bob"));
  // A message of bob's is accepted but not yet stored when alice enters.
  chat.send(2, say("bob", "eight"), { id: "m8" });

  const entering = chat.send(1, enter("alice", { history: 5 }, withId("e1")));
  assertFrames(
    inbox(entering, 1),
    [presence("general", ["alice", "bob"])],
    "alice",
  );
  assertFrames(inbox(entering, 2), [entered("general", "alice", T0)], "bob");
  const read = chat.take("load_history");
  assert.deepEqual(read.request.query, { kind: "last", count: 5, upTo: 7 });

  // Meanwhile the room goes on: bob's message is stored, carol comes and goes.
  const stored = chat.dispatch({
    type: "persisted",
    now: T0,
    request: chat.take("persist").request,
    result: { ok: true },
  });
  const eight = group({
    seq: 8,
    content: "eight",
    sender: "bob",
    id: "m8",
    timestamp: T0,
  });
  assertFrames(inbox(stored, 2), [["GroupChat", { ...eight }]], "bob");
  assert.deepEqual(inbox(stored, 1), [], "held for alice");
  const carol = chat.send(3, enter("carol"));
  assert.deepEqual(inbox(carol, 1), [], "held for alice");
  const carolLeft = chat.send(3, leave("carol"));
  assert.deepEqual(inbox(carolLeft, 1), [], "held for alice");
  // alice's own frames wait behind the read.
  const queued = chat.send(1, say("alice", "hi", {}, withId("g1")), {
    id: "m9",
  });
  assert.deepEqual(queued, []);

  chat.now = WHEN_AT;
  const loaded = chat.dispatch({
    type: "history_loaded",
    now: WHEN_AT,
    request: read.request,
    page: { messages: KEPT, complete: true },
  });
  assertFrames(inbox(loaded, 1), [
    ["History", { room: "general", messages: KEPT, complete: true }],
    ["GroupChat", { ...eight }],
    entered("general", "carol", T0),
    left("general", "carol", "left", T0),
    ack("e1"),
  ], "alice");
  assert.equal(chat.state.rooms.get("general")?.held.size, 0);
  // Then alice's queued GroupChat is handled: it asks for its write.
  assert.deepEqual(
    effectsOf(loaded, "persist").map((effect) => effect.request.ref),
    ["g1"],
  );
});

Deno.test("History: a failed read answers unavailable with ref, and held room frames still arrive", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(2, enter("bob"));
  chat.send(1, enter("alice", { history: 5 }, withId("e1")));
  chat.send(2, say("bob", "hi"), { id: "m1" });
  chat.persisted();

  const failed = chat.historyLoaded(null);
  assertFrames(inbox(failed, 1), [
    groupFrame({
      seq: 1,
      content: "hi",
      sender: "bob",
      id: "m1",
      timestamp: T0,
    }),
    error("unavailable", "e1"),
  ], "alice");
  assert.equal(chat.state.connections.get(1)?.busy, false);
  assert.deepEqual(roomsOf(chat.state, 1), ["general"]);

  // alice is a member like any other from now on.
  chat.send(2, say("bob", "again"), { id: "m2" });
  const next = chat.persisted();
  assert.deepEqual(inbox(next, 1).map(([type]) => type), ["GroupChat"]);
});

// ---------------------------------------------------------------------------
