/**
 * Reducer tables for answers and limits: `Ack` and `Error`, the error
 * streak, the rate limit, frame size and binary frames, the order of
 * answers, and exactly one answer per frame before a close.
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
import type { ErrorCode, LeaveReason } from "../../src/wire/codes.ts";
import {
  type ChatSettings,
  type ConnId,
  type Event,
  MAX_QUEUED_FRAMES,
  MAX_WAITING,
} from "../../src/chat/reducer.ts";
import {
  assertEmpty,
  AUTH,
  AUTH_GRANTS,
  Chat,
  closes,
  CONNS,
  effectsOf,
  GRANT_ALICE,
  inbox,
  type Observed,
  roomsOf,
  scenarios,
  TOKEN_ALICE,
  TOKEN_BOB,
} from "../support/reducer_harness.ts";
import {
  ack,
  askHistory,
  assertFrames,
  type Body,
  enter,
  entered,
  error,
  type Frame,
  group,
  groupAck,
  groupFrame,
  leave,
  left,
  message,
  presence,
  say,
  T0,
  WHEN_AT,
  WHEN_ID,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// Ack and Error

Deno.test("every message with an id gets exactly one Ack or one Error, never both", () => {
  const chat = new Chat({ settings: { maxConsecutiveErrors: 100 } });
  for (const conn of CONNS) chat.open(conn);
  chat.send(2, enter("bob"));
  const frames: [frame: Body, accepted: boolean][] = [
    [say("alice", "hi", {}, withId("a")), false],
    [enter("alice", {}, withId("b")), true],
    [enter("alice", {}, withId("c")), true],
    [enter("alice", { room: "lobby", history: 3 }, withId("d")), true],
    [say("alice", "hi", {}, withId("e")), false],
    [say("alice", "hi", { room: "lobby" }, withId("f")), true],
    [whisper("alice", "bob", "psst", withId("g")), true],
    [whisper("alice", "dave", "psst", withId("h")), false],
    [askHistory("general", {}, withId("i")), true],
    [askHistory("nowhere", {}, withId("j")), false],
    [message("Shout", {}, withId("k")), false],
    [say("alice", "123456789", { room: "lobby" }, withId("l")), false],
    [enter("alice", { room: "third" }, withId("m")), false],
    [leave("alice", { room: "lobby" }, withId("n")), true],
    [leave("alice", {}, withId("o")), true],
    [leave("alice", {}, withId("p")), false],
    [say("bob", "hi", { room: "general" }, withId("q")), false],
  ];
  const seen: Observed[] = [];
  for (const [frame] of frames) seen.push(...chat.send(1, frame));
  const answers = inbox(seen, 1).filter(([type]) =>
    type === "Ack" || type === "Error"
  );
  assert.deepEqual(
    answers.map(([type, body]) => [body.ref, type]),
    frames.map(([frame, accepted]) => [frame.id, accepted ? "Ack" : "Error"]),
  );
});

Deno.test("a message without id gets no Ack, and an Error without ref", () => {
  const chat = new Chat();
  chat.open(1);
  const seen = [
    ...chat.send(1, enter("alice")),
    ...chat.send(1, enter("alice", { room: "lobby", history: 1 })),
    ...chat.send(1, say("alice", "hi", { room: "lobby" })),
    ...chat.send(1, say("alice", "hi")),
  ];
  assertFrames(inbox(seen, 1), [
    presence("general", ["alice"]),
    presence("lobby", ["alice"]),
    ["History", { room: "lobby", messages: [], complete: true }],
    groupFrame({
      seq: 1,
      content: "hi",
      room: "lobby",
      id: "srv-3",
      timestamp: T0,
    }),
    error("room_required"),
  ], "alice");
});

// ---------------------------------------------------------------------------
// Error streak

interface StreakCase {
  name: string;
  /** What connection 1 sends, in order. */
  sends: readonly ("refused" | "accepted" | "binary")[];
  /** The index of the send after which the connection is closed, if any. */
  closedAfter?: number;
}

const streakCases: StreakCase[] = [
  {
    name: "maxConsecutiveErrors - 1 Errors keep the connection",
    sends: ["refused", "refused"],
  },
  {
    name: "the Error that reaches maxConsecutiveErrors is sent, then 1008",
    sends: ["refused", "refused", "refused"],
    closedAfter: 2,
  },
  {
    name: "binary frames count as errors",
    sends: ["binary", "refused", "binary"],
    closedAfter: 2,
  },
  {
    name: "an accepted message resets the count",
    sends: ["refused", "refused", "accepted", "refused", "refused"],
  },
  {
    name: "the count starts again after an accepted message",
    sends: ["refused", "refused", "accepted", "refused", "refused", "refused"],
    closedAfter: 5,
  },
];

for (const c of streakCases) {
  Deno.test(`error streak: ${c.name}`, () => {
    const chat = new Chat();
    for (const conn of CONNS) chat.open(conn);
    chat.send(1, enter("alice"));
    chat.send(2, enter("bob"));
    c.sends.forEach((kind, index) => {
      const seen = kind === "binary"
        ? chat.binary(1)
        : kind === "refused"
        ? chat.send(1, say("alice", "hi", { room: "nowhere" }))
        : chat.send(1, enter("alice"));
      const types = inbox(seen, 1).map(([type]) => type);
      assert.deepEqual(
        types,
        kind === "accepted" ? ["Presence"] : ["Error"],
        `send ${index}`,
      );
      if (index === c.closedAfter) {
        assert.deepEqual(closes(seen), [[1, 1008]], `send ${index} closes`);
        const errorAt = seen.findIndex((effect) => effect.type === "deliver");
        const closeAt = seen.findIndex((effect) => effect.type === "close");
        assert.ok(errorAt < closeAt, "the Error goes out before the close");
        assertFrames(
          inbox(seen, 2),
          [left("general", "alice", "disconnected", T0)],
          "the room sees alice leave",
        );
        assert.equal(chat.state.connections.has(1), false);
      } else {
        assert.deepEqual(closes(seen), [], `send ${index} keeps it open`);
      }
    });
    assert.equal(chat.state.connections.has(1), c.closedAfter === undefined);
  });
}

// ---------------------------------------------------------------------------
// Rate limit

interface RateCase {
  name: string;
  rate: number;
  burst: number;
  /** When each frame arrives, in ms after the connection opened. */
  at: readonly number[];
  /** Whether each is accepted. */
  accepted: readonly boolean[];
}

const rateCases: RateCase[] = [
  {
    name: "a burst at once, then rate_limited",
    rate: 1,
    burst: 3,
    at: [0, 0, 0, 0, 0],
    accepted: [true, true, true, false, false],
  },
  {
    name: "the bucket refills at the rate",
    rate: 2,
    burst: 2,
    at: [0, 0, 0, 500, 500, 1000],
    accepted: [true, true, false, true, false, true],
  },
  {
    name: "half a token is not enough",
    rate: 1,
    burst: 1,
    at: [0, 500, 1000],
    accepted: [true, false, true],
  },
  {
    name: "the refill stops at the burst",
    rate: 10,
    burst: 2,
    at: [0, 0, 60_000, 60_000, 60_000],
    accepted: [true, true, true, true, false],
  },
  {
    name: "a rate of 0 is no limit",
    rate: 0,
    burst: 1,
    at: Array.from({ length: 30 }, () => 0),
    accepted: Array.from({ length: 30 }, () => true),
  },
];

for (const c of rateCases) {
  Deno.test(`rate limit: ${c.name}`, () => {
    const chat = new Chat({
      settings: {
        rateLimitPerSecond: c.rate,
        rateLimitBurst: c.burst,
        maxConsecutiveErrors: 100,
      },
    });
    chat.open(1);
    const answers = c.at.map((at, i) => {
      chat.now = T0 + at;
      const seen = chat.send(1, enter("alice", {}, withId(`r${i}`)));
      return inbox(seen, 1);
    });
    c.accepted.forEach((accepted, i) => {
      assertFrames(
        answers[i] ?? [],
        accepted
          ? [presence("general", ["alice"]), ack(`r${i}`)]
          : [error("rate_limited", `r${i}`)],
        `frame ${i} at ${c.at[i]} ms`,
      );
    });
  });
}

// ---------------------------------------------------------------------------
// Frames: size and binary

scenarios("frames", [
  {
    name: "a frame of maxMessageBytes is handled",
    given: [[1, enter("alice")]],
    when: { event: frameEvent(1, say("alice", "hi"), 512) },
    then: { 1: [groupFrame({ seq: 1, content: "hi" })] },
  },
  {
    name: "a frame over maxMessageBytes closes with 1009 and no Error",
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: { event: frameEvent(1, say("alice", "hi", {}, withId("g1")), 513) },
    then: { 2: [left("general", "alice", "disconnected")] },
    closes: [[1, 1009]],
    also: (state) => assert.equal(state.connections.has(1), false),
  },
  {
    name:
      "a frame over maxMessageBytes while others queue: out of the room now, closed after the write's answer",
    options: { auto: false },
    given: [[2, enter("bob")], [1, enter("alice")], [1, say("alice", "one")], [
      1,
      say("alice", "two"),
    ]],
    when: { event: frameEvent(1, say("alice", "three"), 10_000) },
    then: { 2: [left("general", "alice", "disconnected")] },
    closes: [],
    also: (state) =>
      assert.equal(state.connections.get(1)?.closing?.code, 1009),
  },
  {
    name: "a binary frame is unsupported_frame, and the connection stays",
    given: [[1, enter("alice")]],
    when: { event: { type: "binary", conn: 1, now: WHEN_AT, size: 3 } },
    then: { 1: [error("unsupported_frame")] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), ["general"]),
  },
  {
    name: "a binary frame over maxMessageBytes closes with 1009",
    when: { event: { type: "binary", conn: 1, now: WHEN_AT, size: 513 } },
    then: {},
    closes: [[1, 1009]],
  },
]);

function frameEvent(conn: ConnId, frame: Body, size: number): Event {
  return {
    type: "frame",
    conn,
    now: WHEN_AT,
    text: JSON.stringify(frame),
    size,
    id: WHEN_ID,
  };
}

// ---------------------------------------------------------------------------
// Ordering

Deno.test("ordering: frames that arrive during a write wait, then run in order", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.send(1, say("alice", "one", {}, withId("g1")), { id: "m1" });
  const waiting = [
    ...chat.send(1, say("alice", "two", {}, withId("g2")), { id: "m2" }),
    ...chat.send(1, "not json"),
    ...chat.send(1, enter("alice", { room: "lobby" }, withId("e3"))),
  ];
  assert.deepEqual(waiting, [], "nothing happens while alice waits");
  assert.equal(chat.state.connections.get(1)?.queue.length, 3);

  chat.now = T0 + 10;
  const first = chat.persisted();
  assertFrames(inbox(first, 1), [
    groupFrame({ seq: 1, content: "one", id: "m1", timestamp: T0 }),
    groupAck("g1", { seq: 1, content: "one", id: "m1", timestamp: T0 }),
  ], "after the first write");
  // The second GroupChat is handled now, with the time it is handled at.
  assert.deepEqual(effectsOf(first, "persist").map((e) => e.request.op), [{
    kind: "group",
    message: group({ seq: 2, content: "two", id: "m2", timestamp: T0 + 10 }),
    ref: "g2",
  }]);

  chat.now = T0 + 20;
  const second = chat.persisted();
  assertFrames(inbox(second, 1), [
    groupFrame({ seq: 2, content: "two", id: "m2", timestamp: T0 + 10 }),
    groupAck("g2", { seq: 2, content: "two", id: "m2", timestamp: T0 + 10 }),
    error("invalid_json"),
    presence("lobby", ["alice"]),
    ack("e3"),
  ], "after the second write");
  assertFrames(inbox(second, 2), [
    groupFrame({ seq: 2, content: "two", id: "m2", timestamp: T0 + 10 }),
  ], "bob");
  assert.equal(chat.state.connections.get(1)?.queue.length, 0);
  assert.equal(chat.state.connections.get(1)?.busy, false);
});

Deno.test("ordering: a Leave queued behind a GroupChat still lets the sender see its GroupChat", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.send(1, say("alice", "bye", {}, withId("g1")), { id: "m1" });
  chat.send(1, leave("alice", {}, withId("l1")));
  const seen = chat.persisted();
  const message = groupFrame({
    seq: 1,
    content: "bye",
    id: "m1",
    timestamp: T0,
  });
  assertFrames(inbox(seen, 1), [
    message,
    groupAck("g1", { seq: 1, content: "bye", id: "m1", timestamp: T0 }),
    ack("l1"),
  ], "alice");
  assertFrames(inbox(seen, 2), [
    message,
    left("general", "alice", "left", T0),
  ], "bob");
});

Deno.test("ordering: a device entering after another in the same event does not get its Enter", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1);
  chat.open(2);
  chat.open(3, TOKEN_BOB);
  chat.send(3, enter("bob"));
  // Two devices of alice wait for the same token lookup, each with an Enter.
  chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  chat.send(2, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(chat.pending.filter((e) => e.type === "check_token").length, 1);
  const seen = chat.tokenChecked(GRANT_ALICE);
  const members = presence("general", ["alice", "bob"]);
  assertFrames(inbox(seen, 1), [members], "device 1");
  assertFrames(inbox(seen, 2), [members], "device 2");
  assertFrames(inbox(seen, 3), [entered("general", "alice", T0)], "bob");
});

Deno.test("ordering: at most MAX_QUEUED_FRAMES wait; the next is rate_limited in its turn", () => {
  const chat = new Chat({ auto: false });
  chat.open(1);
  chat.send(1, enter("alice"));
  chat.send(1, say("alice", "hi", {}, withId("g0")), { id: "m0" });
  for (let i = 0; i < MAX_QUEUED_FRAMES; i++) {
    assert.deepEqual(chat.send(1, enter("alice", {}, withId(`q${i}`))), []);
  }
  const over = chat.send(1, enter("alice", {}, withId("over")));
  assertFrames(inbox(over, 1), [], "the refusal waits its turn");
  assert.equal(
    chat.state.connections.get(1)?.queue.length,
    MAX_QUEUED_FRAMES + 1,
  );

  const seen = chat.persisted();
  const stored = { seq: 1, content: "hi", id: "m0", timestamp: T0 };
  const expected: Frame[] = [groupFrame(stored), groupAck("g0", stored)];
  for (let i = 0; i < MAX_QUEUED_FRAMES; i++) {
    expected.push(presence("general", ["alice"]), ack(`q${i}`));
  }
  expected.push(error("rate_limited", "over"));
  assertFrames(inbox(seen, 1), expected, "everything queued, in order");
  assert.deepEqual(closes(seen), []);
});

// ---------------------------------------------------------------------------

// Exactly one answer per frame with an id, before any close the server starts

/** Rate limit 1/s with a burst of 3, three errors in a row close. */
const STRICT = { rateLimitPerSecond: 1, rateLimitBurst: 3 } as const;

interface CloseCase {
  name: string;
  settings?: Partial<ChatSettings>;
  /** What closes alice while her first GroupChat (g0) waits for its write. */
  close: (chat: Chat) => Observed[];
  code: number;
  /** The Error the frames queued behind g0 get. */
  answer: ErrorCode;
  /** The reason bob sees, when bob shares the room and sees one. */
  leave?: LeaveReason;
}

const CLOSE_CASES: CloseCase[] = [
  {
    name: "revocation",
    settings: AUTH,
    close: (chat) =>
      chat.dispatch({
        type: "token_revoked",
        now: chat.now,
        token: TOKEN_ALICE,
      }),
    code: 1008,
    answer: "invalid_token",
    leave: "token_revoked",
  },
  {
    name: "the error streak",
    close: (chat) => [...chat.binary(1), ...chat.binary(1), ...chat.binary(1)],
    code: 1008,
    answer: "unavailable",
    leave: "disconnected",
  },
  {
    name: "a slow consumer",
    close: (chat) =>
      chat.dispatch({ type: "overflow", conn: 1, now: chat.now }),
    code: 1008,
    answer: "unavailable",
    leave: "disconnected",
  },
  {
    name: "shutdown",
    close: (chat) => chat.dispatch({ type: "shutdown", now: chat.now }),
    code: 1001,
    answer: "unavailable",
  },
];

for (const c of CLOSE_CASES) {
  Deno.test(`close by ${c.name}: the write in flight gets its Ack, the queued frames their Error, then the close`, () => {
    const chat = new Chat({
      auto: false,
      settings: { ...c.settings },
      grants: AUTH_GRANTS,
    });
    const auth = c.settings?.authEnabled === true;
    chat.open(1, auth ? TOKEN_ALICE : undefined);
    chat.open(2, auth ? TOKEN_BOB : undefined);
    chat.send(1, enter("alice"));
    chat.send(2, enter("bob"));
    chat.send(1, say("alice", "zero", {}, withId("g0")), { id: "m0" });
    chat.send(1, say("alice", "one", {}, withId("g1")));
    chat.send(1, leave("alice", {}, withId("l2")));
    const closing = c.close(chat);
    assert.deepEqual(
      closes(closing).filter(([conn]) => conn === 1),
      [],
      "the close waits for the write",
    );
    if (c.leave) {
      assertFrames(
        inbox(closing, 2),
        [left("general", "alice", c.leave, T0)],
        "bob",
      );
    }
    // A frame that arrives meanwhile is answered in its turn.
    assertFrames(
      inbox(chat.send(1, say("alice", "x", {}, withId("g3"))), 1),
      [],
      "g3 waits its turn",
    );
    const answered = chat.persisted();
    const stored = { seq: 1, content: "zero", id: "m0", timestamp: T0 };
    assertFrames(inbox(answered, 1), [
      groupAck("g0", stored),
      error(c.answer, "g1"),
      error(c.answer, "l2"),
      error(c.answer, "g3"),
    ], "alice: every id answered once, in order, no chat frame");
    assert.deepEqual(closes(answered), [[1, c.code]]);
    assert.equal(chat.state.connections.has(1), false);
    assert.deepEqual(
      chat.pending.filter((e) => e.type !== "load_offline"),
      [],
      "nothing else asked for",
    );
  });
}

Deno.test("burst: 100 GroupChats with ids get 100 answers in order, and no close", () => {
  const chat = new Chat({ auto: false, settings: STRICT });
  chat.open(1);
  chat.send(1, enter("alice"));
  chat.now = T0 + 10_000; // a full bucket
  const seen: Observed[] = [];
  for (let i = 0; i < 100; i++) {
    seen.push(...chat.send(1, say("alice", "m", {}, withId(`r${i}`))));
  }
  while (chat.pending.length > 0) seen.push(...chat.persisted());
  const answers = inbox(seen, 1).filter(([type]) =>
    type === "Ack" || type === "Error"
  );
  assert.deepEqual(
    answers.map(([, body]) => body.ref),
    Array.from({ length: 100 }, (_, i) => `r${i}`),
  );
  assert.deepEqual(
    answers.map(([type, body]) => type === "Ack" ? "Ack" : body.code),
    [...Array(3).fill("Ack"), ...Array(97).fill("rate_limited")],
  );
  assert.deepEqual(closes(seen), []);
  assert.equal(chat.state.connections.get(1)?.errorStreak, 0);
});

Deno.test("burst: rate_limited with nothing waiting is answered at once and never closes", () => {
  const chat = new Chat({ settings: STRICT });
  chat.open(1);
  chat.send(1, enter("alice"));
  const seen: Observed[] = [];
  for (let i = 0; i < 20; i++) {
    seen.push(...chat.send(1, say("alice", "m", {}, withId(`r${i}`))));
  }
  // auto: each write answers at once, so nothing waits when r2.. arrive.
  assert.deepEqual(
    inbox(seen, 1).filter(([type]) => type === "Error").map(([, b]) => b.ref),
    Array.from({ length: 18 }, (_, i) => `r${i + 2}`),
  );
  assert.deepEqual(closes(seen), []);
  assert.equal(chat.state.connections.get(1)?.errorStreak, 0);
});

Deno.test("past MAX_WAITING entries the connection is closed, every entry answered first", () => {
  const chat = new Chat({ auto: false, settings: STRICT });
  chat.open(1);
  chat.send(1, enter("alice"));
  chat.now = T0 + 10_000;
  const seen: Observed[] = [];
  for (let i = 0; i <= MAX_WAITING + 1; i++) {
    seen.push(...chat.send(1, say("alice", "m", {}, withId(`r${i}`))));
  }
  while (chat.pending.length > 0) seen.push(...chat.persisted());
  const refs = inbox(seen, 1).filter(([type]) =>
    type === "Ack" || type === "Error"
  ).map(([, body]) => body.ref);
  assert.deepEqual(
    refs,
    Array.from({ length: MAX_WAITING + 2 }, (_, i) => `r${i}`),
  );
  assert.deepEqual(closes(seen), [[1, 1008]]);
});

Deno.test("shutdown again at the end of the grace closes what still waits for I/O", () => {
  const chat = new Chat({ auto: false });
  chat.open(1);
  chat.send(1, enter("alice"));
  chat.send(1, say("alice", "pending", {}, withId("g0")));
  chat.send(1, say("alice", "queued", {}, withId("g1")));
  assert.deepEqual(closes(chat.dispatch({ type: "shutdown", now: T0 })), []);
  const forced = chat.dispatch({ type: "shutdown", now: T0 + 2_000 });
  assertFrames(inbox(forced, 1), [error("unavailable", "g1")], "alice");
  assert.deepEqual(closes(forced), [[1, 1001]]);
  assertEmpty(chat.state);
  // The write's answer, if it ever comes, finds no one.
  assert.deepEqual(chat.persisted(), []);
});
