/**
 * Tables of events in and effects out for the chat rules: `Welcome`, frame
 * decoding, shutdown, no state left behind, determinism. No socket, server,
 * clock or storage: the harness builds a state with `createState`, feeds
 * events with explicit times and ids, and plays the runner's part.
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
import type { ErrorCode } from "../../src/wire/codes.ts";
import type { ChatSettings, ConnId } from "../../src/chat/reducer.ts";
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
  type Pending,
  roomsOf,
  scenarios,
  TOKEN_ALICE,
  TOKEN_BOB,
  username,
} from "../support/reducer_harness.ts";
import {
  ack,
  ANY,
  askHistory,
  assertFrames,
  type Body,
  enter,
  error,
  groupFrame,
  leave,
  message,
  presence,
  say,
  T0,
  WHEN_AT,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// Welcome

interface WelcomeCase {
  name: string;
  settings?: Partial<ChatSettings>;
  token?: string;
  welcome: Body;
}

const LIMITS = {
  max_message_bytes: 512,
  max_content_chars: 8,
  max_rooms: 2,
  rate_limit_per_second: 0,
  rate_limit_burst: 3,
};

const welcomeCases: WelcomeCase[] = [
  {
    name: "names the server, the connection, the default room and the limits",
    welcome: {
      server: "chat-test/1.0",
      connection_id: "public-1",
      auth_required: false,
      default_room: "general",
      limits: LIMITS,
    },
  },
  {
    name: "says when authentication is required and which default room",
    settings: { authEnabled: true, defaultRoom: "lobby" },
    welcome: {
      server: "chat-test/1.0",
      connection_id: "public-1",
      auth_required: true,
      default_room: "lobby",
      limits: LIMITS,
    },
  },
  {
    name: "carries the username of a token presented at upgrade",
    settings: AUTH,
    token: TOKEN_ALICE,
    welcome: {
      server: "chat-test/1.0",
      connection_id: "public-1",
      auth_required: true,
      username: "alice",
      default_room: "general",
      limits: LIMITS,
    },
  },
];

for (const c of welcomeCases) {
  Deno.test(`Welcome ${c.name}`, () => {
    const chat = new Chat({
      settings: c.settings,
      grants: { [TOKEN_ALICE]: GRANT_ALICE },
    });
    const seen = chat.open(1, c.token);
    assertFrames(inbox(seen, 1), [["Welcome", c.welcome]], "Welcome");
    assert.equal(username(chat.state, 1), c.token ? "alice" : null);
  });
}

// ---------------------------------------------------------------------------
// Decoding

interface DecodeErrorCase {
  name: string;
  /** A string is sent as it is; anything else as JSON. */
  frame: unknown;
  code: ErrorCode;
  /** What the `message` names. */
  names?: RegExp;
  /** The `ref`, when the frame's `id` was valid. */
  ref?: string;
}

const NAME_32 = "a".repeat(32);
const NAME_33 = "a".repeat(33);

const decodeErrorCases: DecodeErrorCase[] = [
  { name: "text that is not JSON", frame: "{oops", code: "invalid_json" },
  { name: "an empty frame", frame: "", code: "invalid_json" },
  { name: "a JSON array", frame: "[]", code: "invalid_json" },
  {
    name: "an array of a message",
    frame: JSON.stringify([enter("alice")]),
    code: "invalid_json",
  },
  { name: "JSON null", frame: "null", code: "invalid_json" },
  { name: "a JSON number", frame: "42", code: "invalid_json" },
  { name: "a JSON string", frame: '"Enter"', code: "invalid_json" },
  { name: "JSON true", frame: "true", code: "invalid_json" },
  {
    name: "a missing message_type",
    frame: { message_body: { sender_username: "alice" }, id: "d1" },
    code: "invalid_message",
    names: /^message_type\b/,
    ref: "d1",
  },
  {
    name: "a message_type that is not a string",
    frame: { message_type: 7, message_body: {}, id: "d1" },
    code: "invalid_message",
    names: /^message_type\b/,
    ref: "d1",
  },
  {
    name: "an unknown message_type",
    frame: message("Shout", { sender_username: "alice" }, withId("d1")),
    code: "unknown_type",
    names: /Shout/,
    ref: "d1",
  },
  {
    name: "a server message_type",
    frame: message("Welcome", {}),
    code: "unknown_type",
  },
  {
    name: "a message_type of another case",
    frame: message("enter", { sender_username: "alice" }),
    code: "unknown_type",
  },
  {
    name: "a missing message_body",
    frame: { message_type: "Enter", id: "d1" },
    code: "invalid_message",
    names: /^message_body\b/,
    ref: "d1",
  },
  {
    name: "a message_body that is an array",
    frame: { message_type: "Enter", message_body: [] },
    code: "invalid_message",
    names: /^message_body\b/,
  },
  {
    name: "a message_body that is null",
    frame: { message_type: "Enter", message_body: null },
    code: "invalid_message",
    names: /^message_body\b/,
  },
  {
    name: "a message_body that is a string",
    frame: { message_type: "Enter", message_body: "alice" },
    code: "invalid_message",
    names: /^message_body\b/,
  },
  {
    name: "a missing sender_username",
    frame: message("Enter", {}, withId("d1")),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
    ref: "d1",
  },
  {
    name: "a sender_username that is a number",
    frame: message("Enter", { sender_username: 1 }),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "an empty sender_username",
    frame: enter(""),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "a sender_username with a space",
    frame: enter("al ice"),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "a sender_username of 33 characters",
    frame: enter(NAME_33),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "a sender_username with a slash",
    frame: enter("alice/bob"),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "a room with a space",
    frame: enter("alice", { room: "the lobby" }, withId("d1")),
    code: "invalid_message",
    names: /^message_body\.room\b/,
    ref: "d1",
  },
  {
    name: "a room of 33 characters",
    frame: enter("alice", { room: NAME_33 }),
    code: "invalid_message",
    names: /^message_body\.room\b/,
  },
  {
    name: "a room that is null",
    frame: enter("alice", { room: null }),
    code: "invalid_message",
    names: /^message_body\.room\b/,
  },
  {
    name: "an Enter history over 100",
    frame: enter("alice", { history: 101 }),
    code: "invalid_message",
    names: /^message_body\.history\b/,
  },
  {
    name: "a negative Enter history",
    frame: enter("alice", { history: -1 }),
    code: "invalid_message",
    names: /^message_body\.history\b/,
  },
  {
    name: "an Enter history that is not an integer",
    frame: enter("alice", { history: 1.5 }),
    code: "invalid_message",
    names: /^message_body\.history\b/,
  },
  {
    name: "an Enter since that is a string",
    frame: enter("alice", { since: "3" }),
    code: "invalid_message",
    names: /^message_body\.since\b/,
  },
  {
    name: "a negative Enter since",
    frame: enter("alice", { since: -1 }),
    code: "invalid_message",
    names: /^message_body\.since\b/,
  },
  {
    name: "a missing Leave sender_username",
    frame: message("Leave", { room: "general" }),
    code: "invalid_message",
    names: /^message_body\.sender_username\b/,
  },
  {
    name: "a missing GroupChat content",
    frame: message("GroupChat", { sender_username: "alice" }, withId("d1")),
    code: "invalid_message",
    names: /^message_body\.content\b/,
    ref: "d1",
  },
  {
    name: "an empty GroupChat content",
    frame: say("alice", ""),
    code: "invalid_message",
    names: /^message_body\.content\b/,
  },
  {
    name: "a GroupChat content that is a number",
    frame: say("alice", "x", { content: 5 }),
    code: "invalid_message",
    names: /^message_body\.content\b/,
  },
  {
    name: "a GroupChat content of maxContentChars + 1 characters",
    frame: say("alice", "123456789"),
    code: "invalid_message",
    names: /^message_body\.content\b/,
  },
  {
    name: "a GroupChat content of maxContentChars + 1 emoji",
    frame: say("alice", "😀".repeat(9)),
    code: "invalid_message",
    names: /^message_body\.content\b/,
  },
  {
    name: "a PrivateChat content of maxContentChars + 1 characters",
    frame: whisper("alice", "bob", "123456789"),
    code: "invalid_message",
    names: /^message_body\.content\b/,
  },
  {
    name: "a missing PrivateChat target_username",
    frame: message("PrivateChat", { sender_username: "alice", content: "hi" }),
    code: "invalid_message",
    names: /^message_body\.target_username\b/,
  },
  {
    name: "a PrivateChat target_username with a space",
    frame: whisper("alice", "b ob", "hi"),
    code: "invalid_message",
    names: /^message_body\.target_username\b/,
  },
  {
    name: "a missing History room",
    frame: message("History", {}, withId("d1")),
    code: "invalid_message",
    names: /^message_body\.room\b/,
    ref: "d1",
  },
  {
    name: "a History limit of 0",
    frame: askHistory("general", { limit: 0 }),
    code: "invalid_message",
    names: /^message_body\.limit\b/,
  },
  {
    name: "a History limit over 100",
    frame: askHistory("general", { limit: 101 }),
    code: "invalid_message",
    names: /^message_body\.limit\b/,
  },
  {
    name: "a negative History before",
    frame: askHistory("general", { before: -1 }),
    code: "invalid_message",
    names: /^message_body\.before\b/,
  },
  {
    name: "an id of 65 characters, without ref",
    frame: enter("alice", {}, withId("x".repeat(65))),
    code: "invalid_message",
    names: /^id\b/,
  },
  {
    name: "an empty id, without ref",
    frame: enter("alice", {}, withId("")),
    code: "invalid_message",
    names: /^id\b/,
  },
  {
    name: "an id that is a number, without ref",
    frame: enter("alice", {}, { id: 7 }),
    code: "invalid_message",
    names: /^id\b/,
  },
  {
    name: "an id that is null, without ref",
    frame: enter("alice", {}, { id: null }),
    code: "invalid_message",
    names: /^id\b/,
  },
];

for (const c of decodeErrorCases) {
  Deno.test(`decoding refuses ${c.name} with ${c.code}`, () => {
    const chat = new Chat();
    chat.open(1);
    chat.open(2);
    chat.send(2, enter("bob"));
    const seen = chat.send(1, c.frame);
    assertFrames(
      inbox(seen, 1),
      [error(c.code, c.ref, c.names ?? ANY)],
      "one Error",
    );
    assertFrames(inbox(seen, 2), [], "nothing to others");
    assert.deepEqual(closes(seen), []);
    assert.equal(username(chat.state, 1), null, "the message had no effect");
    assert.deepEqual(roomsOf(chat.state, 1), []);
  });
}

// Frames at the edge of the rules, which are accepted.
scenarios("decoding accepts", [
  {
    name: "a sender_username of 32 characters",
    when: [1, enter(NAME_32)],
    then: { 1: [presence("general", [NAME_32])] },
  },
  {
    name: "names of Unicode letters and digits, '_', '-' and '.'",
    when: [1, enter("Zoë_日本-2.x", { room: "Café.1" })],
    then: { 1: [presence("Café.1", ["Zoë_日本-2.x"])] },
  },
  {
    name: "content of maxContentChars emoji, counted in code points",
    given: [[1, enter("alice")]],
    when: [1, say("alice", "😀".repeat(8))],
    then: { 1: [groupFrame({ seq: 1, content: "😀".repeat(8) })] },
  },
  {
    name: "content of exactly maxContentChars characters",
    given: [[1, enter("alice")]],
    when: [1, say("alice", "12345678")],
    then: { 1: [groupFrame({ seq: 1, content: "12345678" })] },
  },
  {
    name: "an id of 64 characters, carried back as ref",
    when: [1, enter("alice", {}, withId("x".repeat(64)))],
    then: { 1: [presence("general", ["alice"]), ack("x".repeat(64))] },
  },
  {
    name: "unknown extra fields, at the top and in the body",
    when: [1, {
      ...enter("alice", { colour: "blue" }, withId("e1")),
      extra: { nested: true },
      version: 2,
    }],
    then: { 1: [presence("general", ["alice"]), ack("e1")] },
  },
  {
    name: "an Enter history of 0 and a since of 0",
    when: [1, enter("alice", { history: 0, since: 0 }, withId("e1"))],
    then: {
      1: [
        presence("general", ["alice"]),
        ["History", { room: "general", messages: [], complete: true }],
        ack("e1"),
      ],
    },
  },
  {
    name: "a History limit of 100",
    given: [[1, enter("alice")]],
    when: [1, askHistory("general", { limit: 100 }, withId("h1"))],
    then: {
      1: [
        ["History", { room: "general", messages: [], complete: true }],
        ack("h1"),
      ],
    },
  },
]);

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Shutdown

Deno.test("shutdown closes every connection with 1001 and sends no Leave", () => {
  const chat = new Chat({ auto: false });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.send(2, enter("bob", { room: "lobby" }));
  chat.send(3, enter("carol", { room: "lobby", history: 5 }));
  chat.send(1, say("alice", "pending"));
  const seen = chat.dispatch({ type: "shutdown", now: WHEN_AT });
  // Alice and carol wait for I/O: they are closed once it answers.
  assert.deepEqual(closes(seen), [[2, 1001]]);
  assert.deepEqual(effectsOf(seen, "deliver"), [], "no frames at all");
  assert.equal(chat.state.draining, true);
  const written = chat.persisted();
  assert.deepEqual(effectsOf(written, "deliver"), [], "no id, no answer");
  assert.deepEqual(closes(written), [[1, 1001]]);
  const read = chat.historyLoaded({ messages: [], complete: true });
  assert.deepEqual(effectsOf(read, "deliver"), [], "no History while closing");
  assert.deepEqual(closes(read), [[3, 1001]]);
  assertEmpty(chat.state);
});

// ---------------------------------------------------------------------------
// No state left behind

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((
      rest,
    ) => [item, ...rest])
  );
}

for (const order of permutations([1, 2, 3, 4])) {
  Deno.test(`no state left behind after closing connections in the order ${order.join(", ")}`, () => {
    const chat = new Chat({
      auto: false,
      settings: { authEnabled: true },
      grants: AUTH_GRANTS,
    });
    chat.open(1, TOKEN_ALICE);
    chat.open(2, TOKEN_ALICE);
    chat.open(3, TOKEN_BOB);
    chat.open(4);
    for (const effect of [...chat.pending]) {
      if (effect.type === "load_offline") chat.take("load_offline");
    }
    chat.send(1, enter("alice"));
    chat.send(1, enter("alice", { room: "lobby" }));
    chat.send(2, enter("alice", { room: "lobby" }));
    chat.send(3, enter("bob"));
    // Connection 1 waits for a write, with a frame queued behind it.
    chat.send(1, say("alice", "hi", { room: "general" }));
    chat.send(1, leave("alice", { room: "lobby" }));
    // Connection 3 waits for a history read, with room frames held.
    chat.send(3, enter("bob", { room: "lobby", history: 5 }));
    // Connection 4 waits for a token lookup.
    chat.send(4, enter("alice", {}, { token: TOKEN_ALICE }));
    assert.ok(chat.state.rooms.get("lobby")?.held.has(3));

    const [first, ...rest] = order;
    chat.close(first as ConnId);
    // The I/O answers come back after the first close, the way a runner's would.
    while (chat.pending.length > 0) {
      const effect = chat.pending[0] as Pending;
      if (effect.type === "persist") chat.persisted();
      else if (effect.type === "load_history") {
        chat.historyLoaded({ messages: [], complete: true });
      } else if (effect.type === "check_token") chat.tokenChecked(GRANT_ALICE);
      else chat.take(effect.type);
    }
    for (const conn of rest) chat.close(conn);
    assertEmpty(chat.state);
    assert.deepEqual([...chat.state.tokenWaiters.keys()], []);
  });
}

// ---------------------------------------------------------------------------
// Determinism

Deno.test("the same events on two fresh states give deep-equal effects", () => {
  function run(): Observed[] {
    const chat = new Chat({ seqs: { general: 3 } });
    return [
      ...chat.open(1),
      ...chat.open(2),
      ...chat.send(1, enter("alice", {}, withId("e1"))),
      ...chat.send(2, enter("bob", { history: 2 }, withId("e2"))),
      ...chat.send(1, say("alice", "hi", {}, withId("g1"))),
      ...chat.send(2, whisper("bob", "alice", "psst", withId("p1"))),
      ...chat.send(1, "junk"),
      ...chat.binary(2),
      ...chat.send(2, askHistory("general", {}, withId("h1"))),
      ...chat.send(1, leave("alice", {}, withId("l1"))),
      ...chat.close(2),
      ...chat.dispatch({ type: "shutdown", now: T0 + 1 }),
    ];
  }
  const first = run();
  const second = run();
  assert.ok(first.length > 20);
  assert.deepEqual(first, second);
});

Deno.test("overload: chat messages are refused with rate_limited, without counting toward the streak", () => {
  const chat = new Chat({ settings: { maxConsecutiveErrors: 2 } });
  for (const conn of CONNS) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.dispatch({ type: "load", now: chat.now, overloaded: true });
  for (const id of ["g1", "g2", "g3"]) {
    const seen = chat.send(1, say("alice", "hi", {}, withId(id)));
    assertFrames(inbox(seen, 1), [error("rate_limited", id, /overloaded/)], id);
    assert.deepEqual(inbox(seen, 2), [], "nothing reaches the room");
  }
  const dm = chat.send(1, whisper("alice", "bob", "psst", withId("p1")));
  assertFrames(inbox(dm, 1), [error("rate_limited", "p1", /overloaded/)], "dm");
  assert.deepEqual(closes(dm), [], "overload refusals close nobody");
  // Joining and leaving still work while overloaded.
  const joined = chat.send(3, enter("carol", {}, withId("e1")));
  assertFrames(inbox(joined, 3), [
    presence("general", ["alice", "bob", "carol"]),
    ack("e1"),
  ], "joiner");
  chat.dispatch({ type: "load", now: chat.now, overloaded: false });
  const after = chat.send(1, say("alice", "back", {}, withId("g4")));
  assert.equal(
    inbox(after, 2).length,
    1,
    "delivered again once the load is normal",
  );
});

// ---------------------------------------------------------------------------
