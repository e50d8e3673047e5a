/**
 * Tables of events in and effects out for the chat rules. No socket, server,
 * clock or storage: the test builds a state with `createState`, feeds events
 * with explicit times and ids, and plays the runner's part for the effects
 * that need I/O when it wants to (see {@linkcode Chat}).
 *
 * Conventions: connections 1, 2 and 3 are opened first and usually enter as
 * alice, bob and carol; the event under test happens at {@linkcode WHEN_AT}
 * and a frame under test gets the fresh id {@linkcode WHEN_ID}.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ErrorCode, LeaveReason } from "../../src/wire/codes.ts";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import {
  type ChatSettings,
  type ChatState,
  type ConnId,
  createState,
  type Effect,
  type Event,
  type HistoryRequest,
  MAX_QUEUED_FRAMES,
  MAX_WAITING,
  OFFLINE_PAGE,
  OFFLINE_PAGE_BYTES,
  reduce,
  TOKEN_RECHECK_MS,
} from "../../src/chat/reducer.ts";
import type {
  HistoryPage,
  TokenGrant,
  WriteResult,
} from "../../src/chat/storage.ts";

// ---------------------------------------------------------------------------
// Settings, times and ids

/** Small limits, so that every limit is quick to reach. */
const SETTINGS: ChatSettings = {
  serverName: "chat-test/1.0",
  authEnabled: false,
  defaultRoom: "general",
  maxMessageBytes: 512,
  maxContentChars: 8,
  maxRoomsPerConnection: 2,
  rateLimitPerSecond: 0,
  rateLimitBurst: 3,
  maxConsecutiveErrors: 3,
};

/** The time of everything before the event under test. */
const T0 = 1_700_000_000_000;
/** The time of the event under test. */
const WHEN_AT = T0 + 250;
/** The fresh id of the frame under test. */
const WHEN_ID = "srv-when";

const TOKEN_ALICE = "8f14e45f-ceea-4e7a-9f5e-2b7d4c1a0001";
const TOKEN_BOB = "8f14e45f-ceea-4e7a-9f5e-2b7d4c1a0002";
const GRANT_ALICE: TokenGrant = {
  username: "alice",
  expiresAt: T0 + 3_600_000,
};
const GRANT_BOB: TokenGrant = { username: "bob", expiresAt: T0 + 3_600_000 };
const AUTH = { authEnabled: true } as const;
const AUTH_GRANTS = { [TOKEN_ALICE]: GRANT_ALICE, [TOKEN_BOB]: GRANT_BOB };

// ---------------------------------------------------------------------------
// Client frames

type Body = Record<string, unknown>;

function message(type: string, body: Body, envelope: Body = {}): Body {
  return { message_type: type, message_body: body, ...envelope };
}

function enter(user: string, body: Body = {}, envelope: Body = {}): Body {
  return message("Enter", { sender_username: user, ...body }, envelope);
}

function leave(user: string, body: Body = {}, envelope: Body = {}): Body {
  return message("Leave", { sender_username: user, ...body }, envelope);
}

function say(
  user: string,
  content: string,
  body: Body = {},
  envelope: Body = {},
): Body {
  return message(
    "GroupChat",
    { sender_username: user, content, ...body },
    envelope,
  );
}

function whisper(
  user: string,
  target: string,
  content: string,
  envelope: Body = {},
): Body {
  return message("PrivateChat", {
    sender_username: user,
    target_username: target,
    content,
  }, envelope);
}

function askHistory(room: string, body: Body = {}, envelope: Body = {}): Body {
  return message("History", { room, ...body }, envelope);
}

/** The envelope of a message with a client id. */
function withId(id: string): Body {
  return { id };
}

// ---------------------------------------------------------------------------
// Observing effects

/** A server frame as a connection receives it. */
type Frame = readonly [type: string, body: Body];

/** An effect as a test sees it: a frame resolved to its recipients, or the effect. */
type Observed =
  | { type: "deliver"; to: ConnId[]; frame: Frame }
  | Exclude<Effect, { type: "send" | "broadcast" }>;

/** An effect that waits for an answer from I/O. */
type Pending = Extract<
  Observed,
  { type: "persist" | "load_history" | "check_token" | "load_offline" }
>;

function isPending(effect: Observed): effect is Pending {
  return effect.type === "persist" || effect.type === "load_history" ||
    effect.type === "check_token" || effect.type === "load_offline";
}

/**
 * Resolves frames to their recipients. Must run right after `reduce`, as the
 * runner does: a broadcast may read a live set.
 */
function observe(effects: readonly Effect[]): Observed[] {
  return effects.map((effect): Observed => {
    if (effect.type !== "send" && effect.type !== "broadcast") return effect;
    const decoded = JSON.parse(effect.data) as {
      message_type: string;
      message_body: Body;
    };
    assert.equal(decoded.message_type, effect.kind, "kind names the frame");
    let to: ConnId[];
    if (effect.type === "send") to = [effect.conn];
    else {
      to = [...effect.conns].filter((id) => id !== effect.except)
        .sort((a, b) => a - b);
      assert.equal(
        effect.count,
        to.length,
        "a broadcast counts its recipients",
      );
      assert.ok(to.length > 0, "a broadcast has recipients");
    }
    return {
      type: "deliver",
      to,
      frame: [decoded.message_type, decoded.message_body],
    };
  });
}

/** The frames `conn` receives, in order. */
function inbox(seen: readonly Observed[], conn: ConnId): Frame[] {
  const frames: Frame[] = [];
  for (const effect of seen) {
    if (effect.type === "deliver" && effect.to.includes(conn)) {
      frames.push(effect.frame);
    }
  }
  return frames;
}

/** The closes, as `[conn, code]`. */
function closes(seen: readonly Observed[]): [ConnId, number][] {
  const found: [ConnId, number][] = [];
  for (const effect of seen) {
    if (effect.type === "close") found.push([effect.conn, effect.code]);
  }
  return found;
}

function effectsOf<T extends Observed["type"]>(
  seen: readonly Observed[],
  type: T,
): Extract<Observed, { type: T }>[] {
  return seen.filter((effect): effect is Extract<Observed, { type: T }> =>
    effect.type === type
  );
}

// ---------------------------------------------------------------------------
// Expected frames

/** Matches any value that is present. */
const ANY = Symbol("any value");

function presence(room: string, members: string[]): Frame {
  return ["Presence", { room, members }];
}

function entered(room: string, user: string, timestamp = WHEN_AT): Frame {
  return ["Enter", { room, sender_username: user, timestamp }];
}

function left(
  room: string,
  user: string,
  reason: LeaveReason,
  timestamp = WHEN_AT,
): Frame {
  return ["Leave", { room, sender_username: user, timestamp, reason }];
}

function ack(ref: string, body: Body = {}): Frame {
  return ["Ack", { ref, ...body }];
}

/** An `Error`; `message` may be a pattern the text must match. */
function error(
  code: ErrorCode,
  ref?: string,
  message: RegExp | typeof ANY = ANY,
): Frame {
  return [
    "Error",
    ref === undefined ? { code, message } : { code, message, ref },
  ];
}

interface ChatFields {
  seq: number;
  content: string;
  sender?: string;
  room?: string;
  id?: string;
  timestamp?: number;
}

function group(fields: ChatFields): StoredGroupChat {
  return {
    id: fields.id ?? WHEN_ID,
    seq: fields.seq,
    room: fields.room ?? "general",
    sender_username: fields.sender ?? "alice",
    content: fields.content,
    timestamp: fields.timestamp ?? WHEN_AT,
  };
}

function groupFrame(fields: ChatFields): Frame {
  return ["GroupChat", { ...group(fields) }];
}

/** The `Ack` of the `GroupChat` of `fields`. */
function groupAck(ref: string, fields: ChatFields): Frame {
  const stored = group(fields);
  return ack(ref, {
    id: stored.id,
    seq: stored.seq,
    timestamp: stored.timestamp,
  });
}

function privateFrame(
  sender: string,
  target: string,
  content: string,
  id = WHEN_ID,
  timestamp = WHEN_AT,
): Frame {
  return ["PrivateChat", {
    id,
    sender_username: sender,
    target_username: target,
    content,
    timestamp,
  }];
}

/** `actual`, with the values that `expected` matches by pattern or `ANY` replaced by the pattern. */
function conform(actual: unknown, expected: unknown): unknown {
  if (expected === ANY) return actual === undefined ? actual : ANY;
  if (expected instanceof RegExp) {
    return typeof actual === "string" && expected.test(actual)
      ? expected
      : actual;
  }
  if (Array.isArray(actual) && Array.isArray(expected)) {
    return actual.map((value, i) => conform(value, expected[i]));
  }
  if (isRecord(actual) && isRecord(expected)) {
    return Object.fromEntries(
      Object.entries(actual).map((
        [key, value],
      ) => [key, conform(value, expected[key])]),
    );
  }
  return actual;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function assertFrames(
  actual: readonly Frame[],
  expected: readonly Frame[],
  label: string,
): void {
  assert.deepEqual(conform(actual, expected), expected, label);
}

// ---------------------------------------------------------------------------
// The state

/** Checks that the maps of the state agree with each other. */
function checkInvariants(state: ChatState): void {
  for (const [name, room] of state.rooms) {
    assert.equal(room.name, name);
    assert.ok(room.members.size > 0, `room ${name} is empty but kept`);
    const users = new Map<string, number>();
    for (const id of room.members) {
      const conn = state.connections.get(id);
      assert.ok(conn, `room ${name} holds closed connection ${id}`);
      assert.ok(conn.rooms.has(name), `connection ${id} forgot room ${name}`);
      assert.ok(conn.username !== null, `connection ${id} in a room unbound`);
      users.set(conn.username, (users.get(conn.username) ?? 0) + 1);
    }
    assert.deepEqual(room.users, users, `room ${name} counts its users`);
    for (const id of room.held.keys()) {
      assert.ok(room.members.has(id), `room ${name} holds frames for ${id}`);
    }
  }
  for (const [id, conn] of state.connections) {
    for (const name of conn.rooms) {
      assert.ok(state.rooms.get(name)?.members.has(id), `${id} in ${name}`);
    }
    if (conn.closing) {
      // Kept only for the I/O answer it waits for, and out of everything.
      assert.ok(conn.busy, `closing ${id} kept though it waits for nothing`);
      assert.equal(conn.rooms.size, 0, `closing ${id} still in a room`);
      assert.equal(conn.tokens.size, 0, `closing ${id} still holds a token`);
      assert.ok(!state.users.get(conn.username ?? "")?.has(id), `${id} user`);
    } else if (conn.username !== null) {
      assert.ok(state.users.get(conn.username)?.has(id), `${id} is a user`);
    }
  }
  for (const [username, conns] of state.users) {
    assert.ok(conns.size > 0, `user ${username} kept without connections`);
    for (const id of conns) {
      assert.equal(state.connections.get(id)?.username, username);
    }
  }
}

function username(state: ChatState, conn: ConnId): string | null | undefined {
  return state.connections.get(conn)?.username;
}

function roomsOf(state: ChatState, conn: ConnId): string[] {
  return [...state.connections.get(conn)?.rooms ?? []].sort();
}

function membersOf(state: ChatState, room: string): ConnId[] {
  return [...state.rooms.get(room)?.members ?? []].sort((a, b) => a - b);
}

function assertEmpty(state: ChatState): void {
  assert.deepEqual([...state.connections.keys()], [], "no connections left");
  assert.deepEqual([...state.users.keys()], [], "no users left");
  assert.deepEqual([...state.rooms.keys()], [], "no rooms left");
}

// ---------------------------------------------------------------------------
// The runner's part

interface ChatOptions {
  settings?: Partial<ChatSettings>;
  /** Each room's last `seq` from storage. */
  seqs?: Record<string, number>;
  /** Answer I/O effects at once, as the runner would (default `true`). */
  auto?: boolean;
  /** What `check_token` finds; a token not named is unknown (`null`). */
  grants?: Record<string, TokenGrant | null | undefined>;
  /** What `load_history` reads; default: nothing kept. */
  page?: (request: HistoryRequest) => HistoryPage | null;
  /** Undelivered `PrivateChat`s per username. */
  offline?: Record<string, StoredPrivateChat[]>;
}

/** A step of a scenario: a frame from a connection, a close, or any event. */
type Step =
  | readonly [conn: ConnId, frame: unknown]
  | { readonly close: ConnId }
  | { readonly event: Event };

/**
 * A state and the runner's part: feeds events, observes effects right after
 * each `reduce`, and answers I/O (with `auto`) or keeps it pending.
 */
class Chat {
  readonly state: ChatState;
  now = T0;
  auto: boolean;
  /** I/O effects not answered yet, oldest first. */
  readonly pending: Pending[] = [];
  readonly #options: ChatOptions;
  #fresh = 0;

  constructor(options: ChatOptions = {}) {
    this.#options = options;
    this.auto = options.auto ?? true;
    this.state = createState(
      { ...SETTINGS, ...options.settings },
      new Map(Object.entries(options.seqs ?? {})),
    );
  }

  /** Reduces `event`, then the answers to its I/O with `auto`; returns all that was seen. */
  dispatch(event: Event): Observed[] {
    const seen: Observed[] = [];
    const events: Event[] = [event];
    for (let next = events.shift(); next; next = events.shift()) {
      const [state, effects] = reduce(this.state, next);
      assert.equal(state, this.state, "reduce hands back its state");
      checkInvariants(state);
      for (const effect of observe(effects)) {
        seen.push(effect);
        if (!isPending(effect)) continue;
        if (this.auto) events.push(this.#answer(effect));
        else this.pending.push(effect);
      }
    }
    return seen;
  }

  #answer(effect: Pending): Event {
    const now = this.now;
    switch (effect.type) {
      case "persist":
        return {
          type: "persisted",
          now,
          request: effect.request,
          result: { ok: true },
        };
      case "load_history":
        return {
          type: "history_loaded",
          now,
          request: effect.request,
          page: this.#options.page?.(effect.request) ??
            { messages: [], complete: true },
        };
      case "check_token": {
        const grants = this.#options.grants ?? {};
        return {
          type: "token_checked",
          now,
          token: effect.token,
          grant: effect.token in grants ? grants[effect.token] : null,
        };
      }
      case "load_offline":
        return {
          type: "offline_loaded",
          now,
          username: effect.username,
          messages: this.#options.offline?.[effect.username] ?? [],
        };
    }
  }

  open(conn: ConnId, token?: string): Observed[] {
    const event: Event = {
      type: "open",
      conn,
      now: this.now,
      publicId: `public-${conn}`,
    };
    const grant = token === undefined
      ? undefined
      : this.#options.grants?.[token];
    if (token !== undefined && grant) {
      event.token = token;
      event.grant = grant;
    }
    return this.dispatch(event);
  }

  /** A text frame: an object is sent as JSON, a string as it is. */
  send(
    conn: ConnId,
    frame: unknown,
    options: { id?: string; size?: number } = {},
  ): Observed[] {
    const text = typeof frame === "string" ? frame : JSON.stringify(frame);
    return this.dispatch({
      type: "frame",
      conn,
      now: this.now,
      text,
      size: options.size ?? new TextEncoder().encode(text).length,
      id: options.id ?? `srv-${++this.#fresh}`,
    });
  }

  binary(conn: ConnId, size = 16): Observed[] {
    return this.dispatch({ type: "binary", conn, now: this.now, size });
  }

  close(conn: ConnId, code = 1000): Observed[] {
    return this.dispatch({ type: "closed", conn, now: this.now, code });
  }

  step(step: Step, id?: string): Observed[] {
    if ("close" in step) return this.close(step.close);
    if ("event" in step) return this.dispatch(step.event);
    const [conn, frame] = step;
    return this.send(conn, frame, id === undefined ? {} : { id });
  }

  /** Takes the oldest pending effect of `type`. */
  take<T extends Pending["type"]>(type: T): Extract<Pending, { type: T }> {
    const index = this.pending.findIndex((effect) => effect.type === type);
    assert.ok(index >= 0, `a pending ${type}`);
    const [effect] = this.pending.splice(index, 1);
    return effect as Extract<Pending, { type: T }>;
  }

  /** Answers the oldest pending `persist`. */
  persisted(result: WriteResult = { ok: true }): Observed[] {
    const { request } = this.take("persist");
    return this.dispatch({ type: "persisted", now: this.now, request, result });
  }

  /** Answers the oldest pending `load_history`. */
  historyLoaded(page: HistoryPage | null): Observed[] {
    const { request } = this.take("load_history");
    return this.dispatch({
      type: "history_loaded",
      now: this.now,
      request,
      page,
    });
  }

  /** Answers the oldest pending `check_token`. */
  tokenChecked(grant: TokenGrant | null | undefined): Observed[] {
    const { token } = this.take("check_token");
    return this.dispatch({
      type: "token_checked",
      now: this.now,
      token,
      grant,
    });
  }
}

// ---------------------------------------------------------------------------
// Scenarios: given some steps, when one more, then what each connection gets

/** Connections 1, 2 and 3 (alice, bob and carol by convention). */
const CONNS: readonly ConnId[] = [1, 2, 3];

interface Scenario {
  name: string;
  options?: ChatOptions;
  /** Tokens presented at upgrade, per connection. */
  upgrade?: Partial<Record<ConnId, string>>;
  /** Steps before the one under test, answered like the runner would. */
  given?: readonly Step[];
  /** The step under test, at {@linkcode WHEN_AT} with id {@linkcode WHEN_ID}. */
  when: Step;
  /** The frames each connection gets from `when`, in order; none for a connection not named. */
  then: Partial<Record<ConnId, readonly Frame[]>>;
  /** The closes `when` causes, as `[conn, code]`; default none. */
  closes?: [ConnId, number][];
  /** Further checks of the state and of the effects of `when`. */
  also?: (state: ChatState, seen: readonly Observed[]) => void;
}

function play(scenario: Scenario): void {
  const chat = new Chat(scenario.options);
  for (const conn of CONNS) chat.open(conn, scenario.upgrade?.[conn]);
  for (const step of scenario.given ?? []) chat.step(step);
  chat.now = WHEN_AT;
  const seen = chat.step(scenario.when, WHEN_ID);
  for (const conn of CONNS) {
    assertFrames(
      inbox(seen, conn),
      scenario.then[conn] ?? [],
      `frames to connection ${conn}`,
    );
  }
  assert.deepEqual(closes(seen), scenario.closes ?? [], "closes");
  scenario.also?.(chat.state, seen);
}

function scenarios(group: string, table: readonly Scenario[]): void {
  for (const scenario of table) {
    Deno.test(`${group}: ${scenario.name}`, () => play(scenario));
  }
}

// ---------------------------------------------------------------------------
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
    frame: enter("alice", { history: 5 }, withId("e1")),
    before: [presence("general", ["alice"])],
    request: {
      conn: 1,
      room: "general",
      ref: "e1",
      query: { kind: "last", count: 5, upTo: 7 },
    },
  },
  {
    name: "Enter with since asks for every seq after it",
    seqs: { lobby: 12 },
    frame: enter("alice", { room: "lobby", since: 3 }),
    before: [presence("lobby", ["alice"])],
    request: {
      conn: 1,
      room: "lobby",
      ref: undefined,
      query: { kind: "since", since: 3, upTo: 12 },
    },
  },
  {
    name: "Enter with history of a room without messages asks up to 0",
    frame: enter("alice", { history: 100 }),
    before: [presence("general", ["alice"])],
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
// Authentication

scenarios("auth", [
  {
    name: "a message without a token is auth_required",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, withId("a1"))],
    then: { 1: [error("auth_required", "a1", /token/)] },
    also: (state, seen) => {
      assert.equal(username(state, 1), null);
      assert.deepEqual(effectsOf(seen, "check_token"), []);
    },
  },
  {
    name: "a null token is auth_required",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, { token: null, id: "a1" })],
    then: { 1: [error("auth_required", "a1")] },
  },
  {
    name: "a token that is not a string is invalid_token",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, { token: 42, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "a valid token is checked, binds its user, and the message proceeds",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [[2, enter("bob", {}, { token: TOKEN_BOB })]],
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: {
      1: [presence("general", ["alice", "bob"]), ack("a1")],
      2: [entered("general", "alice")],
    },
    also: (state, seen) => {
      assert.deepEqual(effectsOf(seen, "check_token"), [{
        type: "check_token",
        token: TOKEN_ALICE,
      }]);
      assert.equal(username(state, 1), "alice");
    },
  },
  {
    name: "a token in capitals is the same token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE.toUpperCase() })],
    then: { 1: [presence("general", ["alice"])] },
  },
  {
    name: "an unknown or revoked token is invalid_token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [
      1,
      enter("alice", {}, {
        token: "00000000-0000-4000-8000-000000000000",
        id: "a1",
      }),
    ],
    then: { 1: [error("invalid_token", "a1")] },
    also: (state) => assert.equal(username(state, 1), null),
  },
  {
    name: "an expired token is invalid_token",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: { username: "alice", expiresAt: WHEN_AT } },
    },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "a failed lookup is unavailable",
    options: { settings: AUTH, grants: { [TOKEN_ALICE]: undefined } },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("unavailable", "a1")] },
  },
  {
    name: "a token of another user than sender_username is sender_mismatch",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [1, enter("mallory", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("sender_mismatch", "a1")] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), []),
  },
  {
    name: "a token of another user than the bound one is sender_mismatch",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [[1, enter("alice", {}, { token: TOKEN_ALICE })]],
    when: [1, say("bob", "hi", {}, { token: TOKEN_BOB, id: "a1" })],
    then: { 1: [error("sender_mismatch", "a1")] },
  },
  {
    name: "an upgrade token binds at open, so messages need no token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    when: [1, enter("alice", {}, withId("a1"))],
    then: { 1: [presence("general", ["alice"]), ack("a1")] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), [], "no lookup"),
  },
  {
    name: "an upgrade-bound connection is sender_mismatch under another name",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    when: [1, enter("bob", {}, withId("a1"))],
    then: { 1: [error("sender_mismatch", "a1")] },
  },
  {
    name: "token_revoked ends a connection that upgraded with the token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: { type: "token_revoked", now: WHEN_AT, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_revoked")] },
    closes: [[1, 1008]],
    also: (state) => {
      assert.equal(state.connections.has(1), false);
      assert.equal(state.bound.has(TOKEN_ALICE), false);
    },
  },
  {
    name: "token_revoked ends a connection that used the token in a message",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 2: TOKEN_BOB },
    given: [[1, enter("alice", {}, { token: TOKEN_ALICE })], [2, enter("bob")]],
    when: {
      event: { type: "token_revoked", now: WHEN_AT, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_revoked")] },
    closes: [[1, 1008]],
  },
  {
    name:
      "a revoked token's message is refused on a connection that never held it",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [{
      event: { type: "token_revoked", now: T0, token: TOKEN_ALICE },
    }],
    when: [1, say("alice", "hi", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "one user may hold several connections",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: [2, enter("alice", { room: "lobby" }, withId("a1"))],
    then: { 2: [presence("lobby", ["alice"]), ack("a1")] },
    also: (state) =>
      assert.deepEqual([...state.users.get("alice") ?? []], [1, 2]),
  },
  {
    name: "with auth off the seed README's placeholder token is ignored",
    when: [1, enter("alice", {}, { token: "optional_uuid_token", id: "e1" })],
    then: { 1: [presence("general", ["alice"]), ack("e1")] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), []),
  },
  {
    name: "with auth off a token of any type is ignored",
    given: [[1, enter("alice", {}, { token: 42 })]],
    when: [1, say("alice", "hi", {}, { token: { a: 1 } })],
    then: { 1: [groupFrame({ seq: 1, content: "hi" })] },
  },
  {
    name: "PrivateChat to a user with no connection is stored for later",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: [1, whisper("alice", "bob", "later", withId("p1"))],
    then: {
      1: [
        privateFrame("alice", "bob", "later"),
        ack("p1", { id: WHEN_ID, timestamp: WHEN_AT }),
      ],
    },
    also: (_state, seen) => {
      const [persist] = effectsOf(seen, "persist");
      assert.equal(persist?.request.op.kind, "private");
      assert.equal(
        persist?.request.op.kind === "private" && persist.request.op.delivered,
        false,
      );
    },
  },
]);

Deno.test("auth: a PrivateChat whose target left before the commit waits for the target's next connection", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  for (const username of ["alice", "bob"]) {
    chat.take("load_offline");
    chat.dispatch({ type: "offline_loaded", now: T0, username, messages: [] });
  }
  chat.send(1, whisper("alice", "bob", "bye", withId("p1")));
  chat.close(2);
  const seen = chat.persisted();
  const persist = effectsOf(seen, "persist").map((effect) => effect.request.op);
  assert.equal(persist.length, 1);
  assert.equal(persist[0]?.kind, "undelivered");
  assert.equal(
    persist[0]?.kind === "undelivered" && persist[0].message.content,
    "bye",
  );
  assert.deepEqual(
    inbox(seen, 1).map(([type]) => type),
    ["PrivateChat", "Ack"],
    "the sender still gets its copy and its Ack",
  );
});

Deno.test("auth: a PrivateChat to a user the store does not know is user_not_found", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.send(1, enter("alice"));
  chat.send(1, whisper("alice", "nobody", "hi", withId("p1")));
  const seen = chat.persisted({ ok: false, reason: "unknown_user" });
  assertFrames(
    inbox(seen, 1),
    [error("user_not_found", "p1", /nobody/)],
    "alice",
  );
});

Deno.test("auth: connections waiting for one lookup share it and all proceed", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  for (const conn of CONNS) chat.open(conn);
  const waiting = [
    ...chat.send(1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })),
    ...chat.send(1, say("alice", "hi", {}, { token: TOKEN_ALICE, id: "a2" })),
    ...chat.send(
      2,
      enter("alice", { room: "lobby" }, { token: TOKEN_ALICE, id: "b1" }),
    ),
  ];
  assert.deepEqual(effectsOf(waiting, "check_token"), [{
    type: "check_token",
    token: TOKEN_ALICE,
  }]);
  assert.deepEqual(inbox(waiting, 1), []);
  const seen = chat.tokenChecked(GRANT_ALICE);
  assertFrames(
    inbox(seen, 1),
    [presence("general", ["alice"]), ack("a1")],
    "1",
  );
  assertFrames(inbox(seen, 2), [presence("lobby", ["alice"]), ack("b1")], "2");
  // The GroupChat queued behind the lookup is handled after the Enter.
  assert.deepEqual(effectsOf(seen, "persist").map((e) => e.request.ref), [
    "a2",
  ]);
});

Deno.test("auth: a checked token is looked up again after TOKEN_RECHECK_MS", () => {
  const chat = new Chat({ settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1);
  const first = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(first, "check_token").length, 1);
  chat.now = T0 + TOKEN_RECHECK_MS;
  const cached = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(cached, "check_token").length, 0, "still cached");
  chat.now = T0 + TOKEN_RECHECK_MS + 1;
  chat.dispatch({ type: "tick", now: chat.now });
  const again = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(again, "check_token").length, 1, "checked again");
  assertFrames(inbox(again, 1), [presence("general", ["alice"])], "proceeds");
});

Deno.test("auth: presence is per user across devices", () => {
  const chat = new Chat({ settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_ALICE);
  chat.open(3, TOKEN_BOB);
  chat.send(3, enter("bob"));

  const first = chat.send(1, enter("alice"));
  assertFrames(
    inbox(first, 3),
    [entered("general", "alice", T0)],
    "first device",
  );
  const second = chat.send(2, enter("alice"));
  assertFrames(inbox(second, 2), [presence("general", ["alice", "bob"])], "2");
  assert.deepEqual(inbox(second, 3), [], "bob sees no second Enter");
  assert.deepEqual(inbox(second, 1), [], "nor does the first device");

  const dm = chat.send(3, whisper("bob", "alice", "yo"), { id: "p1" });
  for (const conn of CONNS) {
    assertFrames(
      inbox(dm, conn),
      [privateFrame("bob", "alice", "yo", "p1", T0)],
      `PrivateChat to ${conn}`,
    );
  }

  const oneLeaves = chat.send(2, leave("alice"));
  assert.deepEqual(inbox(oneLeaves, 3), [], "alice is still there");
  const lastCloses = chat.close(1);
  assertFrames(
    inbox(lastCloses, 3),
    [left("general", "alice", "disconnected", T0)],
    "the last device goes",
  );
});

Deno.test("auth: undelivered PrivateChats arrive when the user connects", () => {
  const stored: StoredPrivateChat = {
    id: "p0",
    sender_username: "bob",
    target_username: "alice",
    content: "later",
    timestamp: T0 - 1000,
  };
  const chat = new Chat({
    auto: false,
    settings: AUTH,
    grants: AUTH_GRANTS,
  });
  const opened = chat.open(1, TOKEN_ALICE);
  assert.deepEqual(effectsOf(opened, "load_offline"), [{
    type: "load_offline",
    username: "alice",
    limit: OFFLINE_PAGE,
  }]);
  chat.take("load_offline");
  const seen = chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [stored],
  });
  assertFrames(inbox(seen, 1), [["PrivateChat", { ...stored }]], "alice");
  assert.deepEqual(
    effectsOf(seen, "persist"),
    [],
    "not delivered until written",
  );
  assert.deepEqual(effectsOf(seen, "watch_written"), [{
    type: "watch_written",
    username: "alice",
    conns: [1],
    ids: ["p0"],
  }]);
  const written = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["p0"],
    written: true,
  });
  assert.deepEqual(effectsOf(written, "persist"), [{
    type: "persist",
    request: {
      conn: null,
      op: { kind: "delivered", ids: ["p0"], username: "alice" },
    },
  }]);
  assert.deepEqual(effectsOf(written, "load_offline"), [], "not yet");
  assert.equal(
    effectsOf(chat.persisted(), "load_offline").length,
    1,
    "the next page once marked",
  );
});

Deno.test("auth: a user back before the offline read answered gets its messages once", () => {
  const stored: StoredPrivateChat = {
    id: "p0",
    sender_username: "bob",
    target_username: "alice",
    content: "later",
    timestamp: T0 - 1000,
  };
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  assert.equal(effectsOf(chat.open(1, TOKEN_ALICE), "load_offline").length, 1);
  chat.close(1);
  const again = chat.open(2, TOKEN_ALICE);
  assert.deepEqual(
    effectsOf(again, "load_offline"),
    [],
    "no second read while the first is out",
  );
  const seen = chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [stored],
  });
  assertFrames(inbox(seen, 2), [["PrivateChat", { ...stored }]], "alice");
  chat.close(2);
  // The page was not written: it stays undelivered, and the pager stops.
  const dropped = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["p0"],
    written: false,
  });
  assert.deepEqual(effectsOf(dropped, "persist"), []);
  assert.deepEqual(effectsOf(dropped, "load_offline"), []);
  assert.equal(
    effectsOf(chat.open(3, TOKEN_ALICE), "load_offline").length,
    1,
    "a later connection reads again",
  );
});

/** `count` stored `PrivateChat`s from bob to alice, `size` characters each. */
function waitingForAlice(count: number, size = 5): StoredPrivateChat[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `w${i}`,
    sender_username: "bob",
    target_username: "alice",
    content: String(i).padStart(size, "x"),
    timestamp: T0 - 1000 + i,
  }));
}

/** Alice (1) and bob (2) online with tokens; alice's pager read is out. */
function pagerChat(settings: Partial<ChatSettings> = {}): Chat {
  const chat = new Chat({
    auto: false,
    settings: { ...AUTH, ...settings },
    grants: AUTH_GRANTS,
  });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  chat.take("load_offline");
  chat.take("load_offline");
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "bob",
    messages: [],
  });
  return chat;
}

interface PagerCase {
  name: string;
  /** What storage reads for alice's first page. */
  stored: StoredPrivateChat[];
  /** How many of them the page sends (the rest wait for the next read). */
  sent: number;
}

const PAGER_CASES: PagerCase[] = [
  { name: "a short inbox fits one page", stored: waitingForAlice(3), sent: 3 },
  {
    name: "a full read of small messages is one page",
    stored: waitingForAlice(OFFLINE_PAGE),
    sent: OFFLINE_PAGE,
  },
  {
    name: "large messages are cut at OFFLINE_PAGE_BYTES",
    stored: waitingForAlice(OFFLINE_PAGE, 2000),
    sent: Math.ceil(
      OFFLINE_PAGE_BYTES /
        JSON.stringify({
          message_type: "PrivateChat",
          message_body: waitingForAlice(1, 2000)[0],
        }).length,
    ),
  },
];

for (const { name, stored, sent } of PAGER_CASES) {
  Deno.test(`offline pager: ${name}; delivered once written, in order`, () => {
    const chat = pagerChat();
    const seen = chat.dispatch({
      type: "offline_loaded",
      now: T0,
      username: "alice",
      messages: stored,
    });
    const page = stored.slice(0, sent);
    assertFrames(
      inbox(seen, 1),
      page.map((message) => ["PrivateChat", { ...message }]),
      "alice gets the page in order",
    );
    assert.deepEqual(effectsOf(seen, "persist"), [], "nothing marked yet");
    assert.deepEqual(effectsOf(seen, "watch_written"), [{
      type: "watch_written",
      username: "alice",
      conns: [1],
      ids: page.map((message) => message.id),
    }]);
    const written = chat.dispatch({
      type: "offline_written",
      now: T0,
      username: "alice",
      ids: page.map((message) => message.id),
      written: true,
    });
    assert.deepEqual(effectsOf(written, "persist"), [{
      type: "persist",
      request: {
        conn: null,
        op: {
          kind: "delivered",
          ids: page.map((message) => message.id),
          username: "alice",
        },
      },
    }]);
    assert.deepEqual(effectsOf(written, "load_offline"), [], "not yet");
    assert.deepEqual(effectsOf(chat.persisted(), "load_offline"), [{
      type: "load_offline",
      username: "alice",
      limit: OFFLINE_PAGE,
    }], "then the next page, once the mark is committed");
  });
}

Deno.test("offline pager: a page that cannot be marked delivered stops the pager, no resend loop", () => {
  const chat = pagerChat();
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: waitingForAlice(2),
  });
  chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["w0", "w1"],
    written: true,
  });
  const failed = chat.persisted({ ok: false, reason: "failed" });
  assert.deepEqual(effectsOf(failed, "load_offline"), []);
  assert.equal(chat.state.offlineLoading.has("alice"), false);
  // Alice is online with no pager: new messages go to her live.
  const sent = chat.send(2, whisper("bob", "alice", "hi", withId("n1")));
  const op = effectsOf(sent, "persist")[0]?.request.op;
  assert.equal(op?.kind === "private" && op.delivered, true);
});

Deno.test("offline pager: a PrivateChat sent while the pager runs waits its turn in storage", () => {
  const chat = pagerChat({ maxOfflineMessages: 5 });
  const sent = chat.send(2, whisper("bob", "alice", "new", withId("n1")));
  const [persist] = effectsOf(sent, "persist");
  assert.deepEqual(persist?.request.op, {
    kind: "private",
    message: {
      id: "srv-1",
      sender_username: "bob",
      target_username: "alice",
      content: "new",
      timestamp: T0,
    },
    delivered: false,
    maxWaiting: 5,
    ref: "n1",
  });
  const stored = chat.persisted();
  assert.deepEqual(inbox(stored, 1), [], "not live: behind the older ones");
  assertFrames(inbox(stored, 2), [
    privateFrame("bob", "alice", "new", "srv-1", T0),
    ack("n1", { id: "srv-1", timestamp: T0 }),
  ], "bob");
  assert.deepEqual(effectsOf(stored, "load_offline"), [], "one pager");
  // The pager's read was out before the write: it ends, and the write's
  // answer starts it again.
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [],
  });
  const late = chat.send(2, whisper("bob", "alice", "late", withId("n2")));
  const op = effectsOf(late, "persist")[0]?.request.op;
  assert.equal(
    op?.kind === "private" && op.delivered,
    true,
    "live once the pager is done",
  );
});

Deno.test("offline pager: a message stored after the pager's last read starts it again", () => {
  const chat = pagerChat();
  chat.send(2, whisper("bob", "alice", "new", withId("n1")));
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [],
  });
  const stored = chat.persisted();
  assert.deepEqual(effectsOf(stored, "load_offline"), [{
    type: "load_offline",
    username: "alice",
    limit: OFFLINE_PAGE,
  }]);
});

Deno.test("offline pager: a page whose connections closed is not marked, and the pager stops", () => {
  const chat = pagerChat();
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: waitingForAlice(2),
  });
  chat.close(1);
  const seen = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["w0", "w1"],
    written: false,
  });
  assert.deepEqual(effectsOf(seen, "persist"), []);
  assert.deepEqual(effectsOf(seen, "load_offline"), []);
  assert.equal(chat.state.offlineLoading.has("alice"), false);
  // Her next connection starts from the same page.
  assert.equal(effectsOf(chat.open(3, TOKEN_ALICE), "load_offline").length, 1);
});

interface InboxFullCase {
  name: string;
  settings: Partial<ChatSettings>;
  /** The `maxWaiting` the write carries. */
  maxWaiting: number | undefined;
}

const INBOX_FULL_CASES: InboxFullCase[] = [
  {
    name: "the cap from settings",
    settings: { maxOfflineMessages: 3 },
    maxWaiting: 3,
  },
  { name: "no cap when unset", settings: {}, maxWaiting: undefined },
];

for (const { name, settings, maxWaiting } of INBOX_FULL_CASES) {
  Deno.test(`inbox_full: ${name}; refused with the ref, no echo, no Ack`, () => {
    const chat = pagerChat(settings);
    chat.close(1);
    const sent = chat.send(
      2,
      whisper("bob", "alice", "one more", withId("f1")),
    );
    const op = effectsOf(sent, "persist")[0]?.request.op;
    assert.equal(op?.kind, "private");
    assert.equal(op?.kind === "private" ? op.maxWaiting : null, maxWaiting);
    const refused = chat.persisted({ ok: false, reason: "inbox_full" });
    assertFrames(
      inbox(refused, 2),
      [error("inbox_full", "f1", /alice/)],
      "bob",
    );
  });
}

Deno.test("auth: a lookup answered after a revocation does not undo it", () => {
  const chat = new Chat({ auto: false, settings: AUTH });
  chat.open(1);
  chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  chat.take("check_token");
  chat.dispatch({ type: "token_revoked", now: T0, token: TOKEN_ALICE });
  const seen = chat.dispatch({
    type: "token_checked",
    now: T0,
    token: TOKEN_ALICE,
    grant: GRANT_ALICE,
  });
  assertFrames(inbox(seen, 1), [error("invalid_token")], "alice");
});

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
// Tokens end connections: revocation, expiry, re-check (timers are effects)

const SHORT_ALICE: TokenGrant = { username: "alice", expiresAt: T0 + 2_000 };

function tokenTimers(
  seen: readonly Observed[],
): { token: string; at: number | null }[] {
  return effectsOf(seen, "token_timer").map(({ token, at }) => ({ token, at }));
}

scenarios("token timers", [
  {
    name:
      "a token at upgrade arms its timer at its expiry when that comes first",
    options: { settings: AUTH, grants: { [TOKEN_ALICE]: SHORT_ALICE } },
    when: { event: { type: "tick", now: WHEN_AT } },
    then: {},
    also: (state) => {
      assert.equal(state.bound.get(TOKEN_ALICE)?.expiresAt, T0 + 2_000);
      assert.deepEqual([...state.bound.get(TOKEN_ALICE)?.conns ?? []], [1]);
    },
    upgrade: { 1: TOKEN_ALICE },
  },
  {
    name:
      "token_due at the expiry ends the connection: Leave token_expired, 1008",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: SHORT_ALICE, [TOKEN_BOB]: GRANT_BOB },
    },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: { type: "token_due", now: T0 + 2_000, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_expired", T0 + 2_000)] },
    closes: [[1, 1008]],
    also: (state, seen) => {
      assert.deepEqual(tokenTimers(seen), [{ token: TOKEN_ALICE, at: null }]);
      assert.equal(state.users.has("alice"), false);
    },
  },
  {
    name:
      "token_due before the expiry, the lookup stale: the token is looked up",
    options: { settings: AUTH, grants: AUTH_GRANTS, auto: false },
    upgrade: { 1: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: {
      event: {
        type: "token_due",
        now: T0 + TOKEN_RECHECK_MS,
        token: TOKEN_ALICE,
      },
    },
    then: {},
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), [
        { type: "check_token", token: TOKEN_ALICE },
      ]),
  },
  {
    name: "token_due for a token nobody holds any more does nothing",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    given: [{ close: 1 }],
    when: { event: { type: "token_due", now: WHEN_AT, token: TOKEN_ALICE } },
    then: {},
    also: (_state, seen) => assert.deepEqual(seen, []),
  },
  {
    name: "the last connection of a token closing cancels its timer",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_ALICE },
    given: [{ close: 2 }],
    when: { close: 1 },
    then: {},
    also: (state, seen) => {
      assert.deepEqual(tokenTimers(seen), [{ token: TOKEN_ALICE, at: null }]);
      assert.equal(state.bound.size, 0);
    },
  },
  {
    name: "a bus revocation ends this node's connections of the token",
    options: {
      settings: { ...AUTH, cluster: true },
      grants: AUTH_GRANTS,
    },
    upgrade: { 1: TOKEN_ALICE },
    when: {
      event: {
        type: "bus",
        now: WHEN_AT,
        message: { kind: "revoked", token: TOKEN_ALICE },
      },
    },
    then: {},
    closes: [[1, 1008]],
    also: (_state, seen) =>
      assert.deepEqual(
        effectsOf(seen, "release").map((e) => e.username),
        ["alice"],
      ),
  },
  {
    name: "a message with a token that expired ends the connection holding it",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: SHORT_ALICE, [TOKEN_BOB]: GRANT_BOB },
    },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: {
        type: "frame",
        conn: 1,
        now: T0 + 2_500,
        text: JSON.stringify(say("alice", "late", {}, withId("late"))),
        size: 80,
        id: WHEN_ID,
      },
    },
    then: {
      1: [error("invalid_token", "late")],
      2: [left("general", "alice", "token_expired", T0 + 2_500)],
    },
    closes: [[1, 1008]],
  },
]);

Deno.test("token re-check: a lookup that finds the token gone ends its connections; one that finds it re-arms", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.now = T0 + TOKEN_RECHECK_MS;
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_BOB });
  const found = chat.tokenChecked(GRANT_BOB);
  assert.deepEqual(tokenTimers(found), [{
    token: TOKEN_BOB,
    at: T0 + 2 * TOKEN_RECHECK_MS,
  }]);
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_ALICE });
  // Revoked by the command on the database: the server was not told.
  const gone = chat.tokenChecked(null);
  assertFrames(inbox(gone, 2), [
    left("general", "alice", "token_revoked", T0 + TOKEN_RECHECK_MS),
  ], "bob");
  assert.deepEqual(closes(gone), [[1, 1008]]);
  // A failed lookup keeps the connection and asks again later.
  chat.now = T0 + 2 * TOKEN_RECHECK_MS;
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_BOB });
  const failed = chat.tokenChecked(undefined);
  assert.deepEqual(closes(failed), []);
  assert.deepEqual(tokenTimers(failed), [{
    token: TOKEN_BOB,
    at: T0 + 3 * TOKEN_RECHECK_MS,
  }]);
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
