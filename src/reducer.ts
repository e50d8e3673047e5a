/**
 * All chat rules, as one transition function:
 * `reduce(state, event) -> [state, effects]`.
 *
 * The reducer does no I/O and reads no clock and no randomness: the event
 * carries the time and fresh ids, and everything the server does goes out as
 * an {@linkcode Effect} for the runner to apply. Answers that need I/O first
 * (a write before an `Ack`, a history read, a token lookup) go out as effects
 * and come back as events; meanwhile the connection waits and its later
 * frames queue behind (bounded), so its messages take effect in order.
 *
 * The state is plain data owned by the reducer: `reduce` returns the state it
 * was given, updated in place, so a message costs O(1) plus its recipients
 * instead of a copy of every map. Callers hand the state over and use the one
 * returned; the tests assert on both.
 *
 * @module
 */
import { CLOSE_CODES, type CloseName, type ErrorCode } from "./codes.ts";
import {
  type ClientMessage,
  createDecoder,
  type Decoder,
  encode,
  type EnterBody,
  type GroupChatBody,
  type HistoryBody,
  type LeaveBody,
  type PrivateChatBody,
  type ServerType,
  type StoredGroupChat,
  type StoredPrivateChat,
} from "./protocol.ts";
import type {
  HistoryPage,
  HistoryQuery,
  TokenGrant,
  WriteOp,
  WriteResult,
} from "./storage.ts";

/** A connection's id, given by the runner. */
export type ConnId = number;

/** How long a checked token is trusted before it is looked up again. */
export const TOKEN_RECHECK_MS = 5_000;

/** Frames one connection may have waiting behind an I/O answer, at least; `RATE_LIMIT_BURST` when larger. */
export const MAX_QUEUED_FRAMES = 64;

/** The settings the chat rules depend on. */
export interface ChatSettings {
  /** Name and version, sent in `Welcome`. */
  readonly serverName: string;
  readonly authEnabled: boolean;
  readonly defaultRoom: string;
  readonly maxMessageBytes: number;
  readonly maxContentChars: number;
  readonly maxRoomsPerConnection: number;
  /** `0` is no limit. */
  readonly rateLimitPerSecond: number;
  readonly rateLimitBurst: number;
  readonly maxConsecutiveErrors: number;
}

/** A frame that passed the arrival checks and waits for its turn. */
type QueuedFrame = Extract<Event, { type: "frame" }>;

/** One open connection. */
export interface Connection {
  readonly id: ConnId;
  /** The id shown to the client in `Welcome`. */
  readonly publicId: string;
  /** Bound by the first `Enter`, or by a token. */
  username: string | null;
  /** The token presented at upgrade, used for messages that carry none. */
  token: string | null;
  readonly rooms: Set<string>;
  /** Token bucket of the rate limit. */
  allowance: number;
  refilledAt: number;
  errorStreak: number;
  /** Waiting for an I/O answer; later frames queue. */
  busy: boolean;
  readonly queue: QueuedFrame[];
}

/** Frames held for a member whose `History` has not been sent yet. */
interface Held {
  seq: number;
  data: string;
  kind: ServerType;
}

/** A room with at least one member. */
export interface Room {
  readonly name: string;
  /** Connections in the room, the fan-out list. */
  readonly members: Set<ConnId>;
  /** Connections per username: presence is per user. */
  readonly users: Map<string, number>;
  /** The `seq` of the last `GroupChat` sent to the members. */
  deliveredSeq: number;
  /** Members waiting for their `History`: what the room sent them meanwhile. */
  readonly held: Map<ConnId, Held[]>;
}

/** A token lookup, remembered for {@linkcode TOKEN_RECHECK_MS}. */
export interface CachedToken {
  grant: TokenGrant | null;
  checkedAt: number;
  /** Revoked through the API: a lookup answered later must not undo it. */
  revoked?: boolean;
}

/** The whole state of the chat rules. */
export interface ChatState {
  readonly settings: ChatSettings;
  readonly decoder: Decoder;
  readonly connections: Map<ConnId, Connection>;
  /** Live connections per bound username. */
  readonly users: Map<string, Set<ConnId>>;
  readonly rooms: Map<string, Room>;
  /** Last `seq` assigned per room, whether or not the room has members. */
  readonly seqs: Map<string, number>;
  readonly tokens: Map<string, CachedToken>;
  /** Connections waiting for a token lookup, per token. */
  readonly tokenWaiters: Map<string, Set<ConnId>>;
  /** Users whose offline messages are being read: one read at a time each. */
  readonly offlineLoading: Set<string>;
  draining: boolean;
  /** The runner reports an overload: chat messages are refused. */
  overloaded: boolean;
  /** The time of the event being reduced. */
  now: number;
}

/** A write the reducer asks for, with what it needs to finish the message. */
export interface PersistRequest {
  readonly conn: ConnId | null;
  readonly ref?: string | undefined;
  readonly op: WriteOp;
}

/** A history read the reducer asks for. */
export interface HistoryRequest {
  readonly conn: ConnId;
  readonly room: string;
  readonly ref?: string | undefined;
  readonly query: HistoryQuery;
}

/** Everything that happens to the server. */
export type Event =
  | {
    type: "open";
    conn: ConnId;
    now: number;
    publicId: string;
    /** A token that was valid at upgrade (`?token=`), and its grant. */
    token?: string;
    grant?: TokenGrant;
  }
  | {
    type: "frame";
    conn: ConnId;
    now: number;
    text: string;
    /** Size of the frame in bytes. */
    size: number;
    /** A fresh id, used if the frame becomes a chat message. */
    id: string;
  }
  | { type: "binary"; conn: ConnId; now: number; size: number }
  | { type: "closed"; conn: ConnId; now: number; code: number }
  /** The connection's unsent data passed `MAX_BUFFERED_BYTES`. */
  | { type: "overflow"; conn: ConnId; now: number }
  | { type: "tick"; now: number }
  | {
    type: "persisted";
    now: number;
    request: PersistRequest;
    result: WriteResult;
  }
  | {
    type: "history_loaded";
    now: number;
    request: HistoryRequest;
    /** `null` when the read failed. */
    page: HistoryPage | null;
  }
  | {
    type: "token_checked";
    now: number;
    token: string;
    /** `null` for unknown, revoked or expired; `undefined` if the lookup failed. */
    grant: TokenGrant | null | undefined;
  }
  | { type: "token_revoked"; now: number; token: string }
  | {
    type: "offline_loaded";
    now: number;
    username: string;
    messages: StoredPrivateChat[];
  }
  /** The runner's event loop fell behind (`true`) or caught up (`false`). */
  | { type: "load"; now: number; overloaded: boolean }
  | { type: "shutdown"; now: number };

/** A counter the runner keeps for `/metrics`. */
export type Metric = "frames_in" | "errors" | "closes";

/** Everything the server does. */
export type Effect =
  | { type: "send"; conn: ConnId; data: string; kind: ServerType }
  | {
    type: "broadcast";
    /** Recipients; read when the effect is applied, right after `reduce`. */
    conns: Iterable<ConnId>;
    /** How many recipients, for metrics. */
    count: number;
    except?: ConnId;
    data: string;
    kind: ServerType;
  }
  | { type: "close"; conn: ConnId; code: number; reason: string }
  | { type: "persist"; request: PersistRequest }
  | { type: "load_history"; request: HistoryRequest }
  | { type: "check_token"; token: string }
  | { type: "load_offline"; username: string }
  | {
    type: "log";
    level: "debug" | "info" | "warn" | "error";
    msg: string;
    fields?: Record<string, unknown>;
  }
  | { type: "count"; metric: Metric; label: string };

/** Creates the empty state; `seqs` is each room's last `seq` from storage. */
export function createState(
  settings: ChatSettings,
  seqs: ReadonlyMap<string, number> = new Map(),
): ChatState {
  return {
    settings,
    decoder: createDecoder({ maxContentChars: settings.maxContentChars }),
    connections: new Map(),
    users: new Map(),
    rooms: new Map(),
    seqs: new Map(seqs),
    tokens: new Map(),
    tokenWaiters: new Map(),
    offlineLoading: new Set(),
    draining: false,
    overloaded: false,
    now: 0,
  };
}

/** The result of {@linkcode reduce}. */
export type Transition = [ChatState, Effect[]];

/** Applies one event to the state. Pure: see the module documentation. */
export function reduce(state: ChatState, event: Event): Transition {
  const out: Effect[] = [];
  state.now = event.now;
  switch (event.type) {
    case "open":
      open(state, event, out);
      break;
    case "frame":
      arrive(state, event, out);
      break;
    case "binary": {
      const conn = state.connections.get(event.conn);
      if (conn && admit(state, conn, event.now, event.size, out)) {
        out.push({ type: "count", metric: "frames_in", label: "binary" });
        refuse(
          state,
          conn,
          "unsupported_frame",
          "binary frames are not supported; send JSON text",
          undefined,
          out,
        );
      }
      break;
    }
    case "closed": {
      const conn = state.connections.get(event.conn);
      if (conn) {
        out.push({
          type: "count",
          metric: "closes",
          label: String(event.code),
        });
        out.push({
          type: "log",
          level: "info",
          msg: "connection closed",
          fields: { connection: conn.publicId, code: event.code },
        });
        drop(state, conn, event.now, out);
      }
      break;
    }
    case "overflow": {
      const conn = state.connections.get(event.conn);
      if (conn) close(state, conn, "policy", event.now, out, "slow consumer");
      break;
    }
    case "tick":
      tick(state, event.now);
      break;
    case "persisted":
      persisted(state, event, out);
      break;
    case "history_loaded":
      historyLoaded(state, event, out);
      break;
    case "token_checked":
      tokenChecked(state, event, out);
      break;
    case "token_revoked":
      state.tokens.set(event.token, {
        grant: null,
        checkedAt: event.now,
        revoked: true,
      });
      break;
    case "offline_loaded":
      offlineLoaded(state, event, out);
      break;
    case "load":
      state.overloaded = event.overloaded;
      break;
    case "shutdown":
      state.draining = true;
      for (const conn of [...state.connections.values()]) {
        close(state, conn, "going_away", event.now, out);
      }
      break;
  }
  return [state, out];
}

function open(
  state: ChatState,
  event: Extract<Event, { type: "open" }>,
  out: Effect[],
): void {
  const { settings } = state;
  const conn: Connection = {
    id: event.conn,
    publicId: event.publicId,
    username: null,
    token: null,
    rooms: new Set(),
    allowance: settings.rateLimitBurst,
    refilledAt: event.now,
    errorStreak: 0,
    busy: false,
    queue: [],
  };
  state.connections.set(conn.id, conn);
  if (event.token !== undefined && event.grant) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
    conn.token = event.token;
    bind(state, conn, event.grant.username, out);
  }
  const welcome: Record<string, unknown> = {
    server: settings.serverName,
    connection_id: conn.publicId,
    auth_required: settings.authEnabled,
    default_room: settings.defaultRoom,
    limits: {
      max_message_bytes: settings.maxMessageBytes,
      max_content_chars: settings.maxContentChars,
      max_rooms: settings.maxRoomsPerConnection,
      rate_limit_per_second: settings.rateLimitPerSecond,
      rate_limit_burst: settings.rateLimitBurst,
    },
  };
  if (conn.username !== null) welcome.username = conn.username;
  send(out, conn.id, "Welcome", welcome);
  out.push({
    type: "log",
    level: "info",
    msg: "connection opened",
    fields: { connection: conn.publicId },
  });
}

/**
 * Checks a frame's size and rate; `false` when it must go no further.
 * `text` is the frame's, to answer a dropped one with its `id` as `ref`.
 */
function admit(
  state: ChatState,
  conn: Connection,
  now: number,
  size: number,
  out: Effect[],
  text?: string,
): boolean {
  const { settings } = state;
  if (size > settings.maxMessageBytes) {
    close(state, conn, "too_big", now, out);
    return false;
  }
  if (settings.rateLimitPerSecond > 0) {
    const elapsed = Math.max(0, now - conn.refilledAt);
    conn.allowance = Math.min(
      settings.rateLimitBurst,
      conn.allowance + elapsed * settings.rateLimitPerSecond / 1000,
    );
    conn.refilledAt = now;
    if (conn.allowance < 1) {
      refuse(
        state,
        conn,
        "rate_limited",
        `more than ${settings.rateLimitPerSecond} messages a second; message dropped`,
        text === undefined ? undefined : refOf(state, text),
        out,
      );
      return false;
    }
    conn.allowance -= 1;
  }
  return true;
}

/** The `id` of a frame dropped before its turn, for the `ref` of its `Error`. */
function refOf(state: ChatState, text: string): string | undefined {
  const decoded = state.decoder.decode(text);
  return decoded.ok ? decoded.message.ref : decoded.error.ref;
}

function arrive(state: ChatState, event: QueuedFrame, out: Effect[]): void {
  const conn = state.connections.get(event.conn);
  if (!conn || !admit(state, conn, event.now, event.size, out, event.text)) {
    return;
  }
  if (conn.busy) {
    // A burst the rate limit allows must fit in the queue.
    const bound = Math.max(MAX_QUEUED_FRAMES, state.settings.rateLimitBurst);
    if (conn.queue.length >= bound) {
      refuse(
        state,
        conn,
        "rate_limited",
        "too many messages waiting; message dropped",
        refOf(state, event.text),
        out,
      );
    } else conn.queue.push(event);
    return;
  }
  handle(state, conn, event, out);
}

/** Handles queued frames until the connection waits again. */
function resume(
  state: ChatState,
  conn: Connection,
  now: number,
  out: Effect[],
): void {
  conn.busy = false;
  while (!conn.busy && state.connections.has(conn.id)) {
    const next = conn.queue.shift();
    if (!next) break;
    handle(state, conn, { ...next, now }, out);
  }
}

function handle(
  state: ChatState,
  conn: Connection,
  frame: QueuedFrame,
  out: Effect[],
): void {
  const decoded = state.decoder.decode(frame.text);
  if (!decoded.ok) {
    out.push({ type: "count", metric: "frames_in", label: "invalid" });
    const { code, message, ref } = decoded.error;
    refuse(state, conn, code, message, ref, out);
    return;
  }
  const message = decoded.message;
  if (
    state.settings.authEnabled &&
    !authenticate(state, conn, message, frame, out)
  ) {
    return;
  }
  out.push({ type: "count", metric: "frames_in", label: message.type });
  if (
    state.overloaded &&
    (message.type === "GroupChat" || message.type === "PrivateChat")
  ) {
    // Shed load cheaply instead of queueing it; the server's fault, so it
    // does not count toward the connection's error streak.
    refuse(
      state,
      conn,
      "rate_limited",
      "the server is overloaded; message dropped, try again shortly",
      message.ref,
      out,
      false,
    );
    return;
  }
  switch (message.type) {
    case "Enter":
      enter(state, conn, message.body, message.ref, frame.now, out);
      break;
    case "Leave":
      leave(state, conn, message.body, message.ref, frame.now, out);
      break;
    case "GroupChat":
      groupChat(state, conn, message.body, message.ref, frame, out);
      break;
    case "PrivateChat":
      privateChat(state, conn, message.body, message.ref, frame, out);
      break;
    case "History":
      history(state, conn, message.body, message.ref, out);
      break;
  }
}

/**
 * Binds the connection to its token's user. `false` when the message was
 * refused, or waits for a token lookup (then it runs again afterwards).
 */
function authenticate(
  state: ChatState,
  conn: Connection,
  message: ClientMessage,
  frame: QueuedFrame,
  out: Effect[],
): boolean {
  let token: string;
  if (message.token === undefined || message.token === null) {
    if (conn.token === null) {
      refuse(
        state,
        conn,
        "auth_required",
        "token: required, authentication is on",
        message.ref,
        out,
      );
      return false;
    }
    token = conn.token;
  } else if (typeof message.token !== "string") {
    refuse(
      state,
      conn,
      "invalid_token",
      "token: must be a string",
      message.ref,
      out,
    );
    return false;
  } else token = message.token.toLowerCase();
  const cached = state.tokens.get(token);
  if (!cached || frame.now - cached.checkedAt > TOKEN_RECHECK_MS) {
    conn.busy = true;
    conn.queue.unshift(frame);
    const waiters = state.tokenWaiters.get(token);
    if (waiters) waiters.add(conn.id);
    else {
      state.tokenWaiters.set(token, new Set([conn.id]));
      out.push({ type: "check_token", token });
    }
    return false;
  }
  const grant = cached.grant;
  if (!grant || grant.expiresAt <= frame.now) {
    refuse(
      state,
      conn,
      "invalid_token",
      "token: unknown, revoked or expired",
      message.ref,
      out,
    );
    return false;
  }
  if (conn.username === null) bind(state, conn, grant.username, out);
  else if (conn.username !== grant.username) {
    refuse(
      state,
      conn,
      "sender_mismatch",
      `token: belongs to another user than '${conn.username}'`,
      message.ref,
      out,
    );
    return false;
  }
  return true;
}

function tokenChecked(
  state: ChatState,
  event: Extract<Event, { type: "token_checked" }>,
  out: Effect[],
): void {
  // A lookup that started before a revocation answers after it: keep the revocation.
  if (event.grant !== undefined && !state.tokens.get(event.token)?.revoked) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
  }
  const waiters = state.tokenWaiters.get(event.token);
  state.tokenWaiters.delete(event.token);
  for (const id of waiters ?? []) {
    const conn = state.connections.get(id);
    if (!conn) continue;
    if (event.grant === undefined) {
      const frame = conn.queue.shift();
      const decoded = frame && state.decoder.decode(frame.text);
      const ref = decoded?.ok ? decoded.message.ref : undefined;
      refuse(
        state,
        conn,
        "unavailable",
        "the token could not be checked; try again",
        ref,
        out,
      );
    }
    if (state.connections.has(id)) resume(state, conn, event.now, out);
  }
}

function bind(
  state: ChatState,
  conn: Connection,
  username: string,
  out: Effect[],
): void {
  conn.username = username;
  let conns = state.users.get(username);
  if (!conns) {
    state.users.set(username, conns = new Set());
    // A user back before the last read answered gets that read's messages.
    if (state.settings.authEnabled && !state.offlineLoading.has(username)) {
      state.offlineLoading.add(username);
      out.push({ type: "load_offline", username });
    }
  }
  conns.add(conn.id);
}

/** Checks `sender_username` against the connection's username. */
function checkSender(
  state: ChatState,
  conn: Connection,
  sender: string,
  ref: string | undefined,
  out: Effect[],
): boolean {
  if (conn.username === null) {
    refuse(
      state,
      conn,
      "not_entered",
      "send Enter first: this connection has no username yet",
      ref,
      out,
    );
    return false;
  }
  if (sender !== conn.username) {
    refuse(
      state,
      conn,
      "sender_mismatch",
      `message_body.sender_username: this connection is '${conn.username}'`,
      ref,
      out,
    );
    return false;
  }
  return true;
}

/** The room a `Leave` or `GroupChat` is for, or `null` after an `Error`. */
function targetRoom(
  state: ChatState,
  conn: Connection,
  room: string | undefined,
  ref: string | undefined,
  out: Effect[],
): Room | null {
  let name = room;
  if (name === undefined) {
    if (conn.rooms.size !== 1) {
      refuse(
        state,
        conn,
        "room_required",
        conn.rooms.size === 0
          ? "message_body.room: required, this connection is in no room"
          : "message_body.room: required, this connection is in several rooms",
        ref,
        out,
      );
      return null;
    }
    name = conn.rooms.values().next().value as string;
  }
  const found = conn.rooms.has(name) ? state.rooms.get(name) : undefined;
  if (!found) {
    refuse(
      state,
      conn,
      "not_in_room",
      `message_body.room: not in room '${name}'`,
      ref,
      out,
    );
    return null;
  }
  return found;
}

function enter(
  state: ChatState,
  conn: Connection,
  body: EnterBody,
  ref: string | undefined,
  now: number,
  out: Effect[],
): void {
  const name = body.room ?? state.settings.defaultRoom;
  if (conn.username === null) {
    if (state.users.has(body.sender_username)) {
      refuse(
        state,
        conn,
        "username_taken",
        `message_body.sender_username: '${body.sender_username}' is taken`,
        ref,
        out,
      );
      return;
    }
  } else if (!checkSender(state, conn, body.sender_username, ref, out)) return;
  const already = conn.rooms.has(name);
  if (!already && conn.rooms.size >= state.settings.maxRoomsPerConnection) {
    refuse(
      state,
      conn,
      "too_many_rooms",
      `message_body.room: at most ${state.settings.maxRoomsPerConnection} rooms per connection`,
      ref,
      out,
    );
    return;
  }
  accept(conn);
  if (conn.username === null) bind(state, conn, body.sender_username, out);
  const username = conn.username as string;
  let room = state.rooms.get(name);
  if (!room) {
    const seq = state.seqs.get(name) ?? 0;
    room = {
      name,
      members: new Set(),
      users: new Map(),
      deliveredSeq: seq,
      held: new Map(),
    };
    state.rooms.set(name, room);
  }
  if (!already) {
    conn.rooms.add(name);
    pin(state, room, out);
    room.members.add(conn.id);
    const count = room.users.get(username) ?? 0;
    room.users.set(username, count + 1);
    if (count === 0) {
      toRoom(
        room,
        "Enter",
        { room: name, sender_username: username, timestamp: now },
        out,
        conn.id,
      );
    }
  }
  send(out, conn.id, "Presence", {
    room: name,
    members: [...room.users.keys()].sort(),
  });
  if (body.since === undefined && body.history === undefined) {
    ack(out, conn, ref, {});
    return;
  }
  const upTo = room.deliveredSeq;
  const query: HistoryQuery = body.since !== undefined
    ? { kind: "since", since: body.since, upTo }
    : { kind: "last", count: body.history as number, upTo };
  room.held.set(conn.id, []);
  conn.busy = true;
  out.push({
    type: "load_history",
    request: { conn: conn.id, room: name, ref, query },
  });
}

function leave(
  state: ChatState,
  conn: Connection,
  body: LeaveBody,
  ref: string | undefined,
  now: number,
  out: Effect[],
): void {
  if (!checkSender(state, conn, body.sender_username, ref, out)) return;
  const room = targetRoom(state, conn, body.room, ref, out);
  if (!room) return;
  accept(conn);
  exitRoom(state, conn, room, "left", now, out);
  ack(out, conn, ref, {});
}

function groupChat(
  state: ChatState,
  conn: Connection,
  body: GroupChatBody,
  ref: string | undefined,
  frame: QueuedFrame,
  out: Effect[],
): void {
  if (!checkSender(state, conn, body.sender_username, ref, out)) return;
  const room = targetRoom(state, conn, body.room, ref, out);
  if (!room) return;
  accept(conn);
  const seq = (state.seqs.get(room.name) ?? 0) + 1;
  state.seqs.set(room.name, seq);
  const message: StoredGroupChat = {
    id: frame.id,
    seq,
    room: room.name,
    sender_username: body.sender_username,
    content: body.content,
    timestamp: frame.now,
  };
  conn.busy = true;
  out.push({
    type: "persist",
    request: { conn: conn.id, ref, op: { kind: "group", message } },
  });
}

function privateChat(
  state: ChatState,
  conn: Connection,
  body: PrivateChatBody,
  ref: string | undefined,
  frame: QueuedFrame,
  out: Effect[],
): void {
  if (!checkSender(state, conn, body.sender_username, ref, out)) return;
  const online = state.users.has(body.target_username);
  if (!online && !state.settings.authEnabled) {
    refuse(
      state,
      conn,
      "user_not_found",
      `message_body.target_username: '${body.target_username}' is not connected`,
      ref,
      out,
    );
    return;
  }
  accept(conn);
  const message: StoredPrivateChat = {
    id: frame.id,
    sender_username: body.sender_username,
    target_username: body.target_username,
    content: body.content,
    timestamp: frame.now,
  };
  conn.busy = true;
  out.push({
    type: "persist",
    request: {
      conn: conn.id,
      ref,
      op: { kind: "private", message, delivered: online },
    },
  });
}

function history(
  state: ChatState,
  conn: Connection,
  body: HistoryBody,
  ref: string | undefined,
  out: Effect[],
): void {
  const room = conn.rooms.has(body.room)
    ? state.rooms.get(body.room)
    : undefined;
  if (!room) {
    refuse(
      state,
      conn,
      "not_in_room",
      `message_body.room: not in room '${body.room}'`,
      ref,
      out,
    );
    return;
  }
  accept(conn);
  const upTo = room.deliveredSeq;
  const before = body.before ?? upTo + 1;
  conn.busy = true;
  out.push({
    type: "load_history",
    request: {
      conn: conn.id,
      room: room.name,
      ref,
      query: { kind: "before", before, limit: body.limit, upTo },
    },
  });
}

function persisted(
  state: ChatState,
  event: Extract<Event, { type: "persisted" }>,
  out: Effect[],
): void {
  const { request, result } = event;
  const conn = request.conn === null
    ? undefined
    : state.connections.get(request.conn);
  const op = request.op;
  if (op.kind === "group") {
    const message = op.message;
    if (result.ok) {
      const room = state.rooms.get(message.room);
      if (room) {
        room.deliveredSeq = Math.max(room.deliveredSeq, message.seq);
        toRoom(room, "GroupChat", message, out, undefined, message.seq);
      }
      if (conn) {
        ack(out, conn, request.ref, {
          id: message.id,
          seq: message.seq,
          timestamp: message.timestamp,
        });
      }
    } else if (conn) {
      refuse(
        state,
        conn,
        "unavailable",
        "the message could not be stored; send it again",
        request.ref,
        out,
      );
    }
  } else if (op.kind === "private") {
    const message = op.message;
    if (result.ok) {
      // Stored for an offline target: a connection of the target that bound
      // meanwhile gets it from its offline load (read after this write), in
      // order with the older ones; sending it here too would duplicate it.
      const targets = state.users.get(message.target_username);
      const recipients = new Set<ConnId>(op.delivered ? targets : undefined);
      if (op.delivered && !targets && state.settings.authEnabled) {
        // The target left between send and commit: it gets it next time.
        out.push({
          type: "persist",
          request: { conn: null, op: { kind: "undelivered", message } },
        });
      }
      for (const id of state.users.get(message.sender_username) ?? []) {
        recipients.add(id);
      }
      if (recipients.size > 0) {
        out.push({
          type: "broadcast",
          conns: recipients,
          count: recipients.size,
          data: encode("PrivateChat", message),
          kind: "PrivateChat",
        });
      }
      if (conn) {
        ack(out, conn, request.ref, {
          id: message.id,
          timestamp: message.timestamp,
        });
      }
    } else if (conn) {
      if (result.reason === "unknown_user") {
        refuse(
          state,
          conn,
          "user_not_found",
          `message_body.target_username: '${message.target_username}' is not a known user`,
          request.ref,
          out,
        );
      } else {
        refuse(
          state,
          conn,
          "unavailable",
          "the message could not be stored; send it again",
          request.ref,
          out,
        );
      }
    }
  }
  if (conn && state.connections.has(conn.id)) {
    resume(state, conn, event.now, out);
  }
}

function historyLoaded(
  state: ChatState,
  event: Extract<Event, { type: "history_loaded" }>,
  out: Effect[],
): void {
  const { request, page } = event;
  const conn = state.connections.get(request.conn);
  const room = state.rooms.get(request.room);
  const held = room?.held.get(request.conn) ?? [];
  room?.held.delete(request.conn);
  if (!conn) return;
  if (page) {
    send(out, conn.id, "History", {
      room: request.room,
      messages: page.messages,
      complete: page.complete,
    });
  }
  // Sent even when the read failed: the connection is in the room anyway.
  const lastSent = page?.messages.at(-1)?.seq ?? 0;
  for (const frame of held) {
    if (frame.seq === 0 || frame.seq > lastSent) {
      out.push({
        type: "send",
        conn: conn.id,
        data: frame.data,
        kind: frame.kind,
      });
    }
  }
  if (!page) {
    refuse(
      state,
      conn,
      "unavailable",
      "history could not be read; try again",
      request.ref,
      out,
    );
  } else ack(out, conn, request.ref, {});
  if (state.connections.has(conn.id)) resume(state, conn, event.now, out);
}

function offlineLoaded(
  state: ChatState,
  event: Extract<Event, { type: "offline_loaded" }>,
  out: Effect[],
): void {
  state.offlineLoading.delete(event.username);
  const conns = state.users.get(event.username);
  if (!conns || event.messages.length === 0) return;
  for (const message of event.messages) {
    out.push({
      type: "broadcast",
      conns,
      count: conns.size,
      data: encode("PrivateChat", message),
      kind: "PrivateChat",
    });
  }
  out.push({
    type: "persist",
    request: {
      conn: null,
      op: { kind: "delivered", ids: event.messages.map((m) => m.id) },
    },
  });
}

function tick(state: ChatState, now: number): void {
  for (const [token, cached] of state.tokens) {
    if (now - cached.checkedAt > TOKEN_RECHECK_MS) state.tokens.delete(token);
  }
}

/** Sends a frame to every member of a room, holding it for those who wait for `History`. */
function toRoom(
  room: Room,
  type: ServerType,
  body: object,
  out: Effect[],
  except?: ConnId,
  seq = 0,
): void {
  const data = encode(type, body);
  let conns: Iterable<ConnId> = room.members;
  let count = room.members.size - (except === undefined ? 0 : 1);
  if (room.held.size > 0) {
    const live: ConnId[] = [];
    for (const id of room.members) {
      const held = room.held.get(id);
      if (held) {
        if (id !== except) held.push({ seq, data, kind: type });
      } else if (id !== except) live.push(id);
    }
    conns = live;
    count = live.length;
    except = undefined;
  }
  if (count <= 0) return;
  const effect: Effect = { type: "broadcast", conns, count, data, kind: type };
  if (except !== undefined) effect.except = except;
  out.push(effect);
}

/**
 * Called before `room.members` changes: a broadcast of this same event that
 * reads the live set (queued frames of a connection run in one event) gets
 * a copy of the set as it was when the broadcast was made.
 */
function pin(state: ChatState, room: Room, out: Effect[]): void {
  // Nothing is broadcast while draining; spares shutdown a scan per close.
  if (state.draining) return;
  for (let i = 0; i < out.length; i++) {
    const effect = out[i];
    if (effect?.type === "broadcast" && effect.conns === room.members) {
      out[i] = { ...effect, conns: [...room.members] };
    }
  }
}

function exitRoom(
  state: ChatState,
  conn: Connection,
  room: Room,
  reason: "left" | "disconnected",
  now: number,
  out: Effect[],
): void {
  const username = conn.username as string;
  conn.rooms.delete(room.name);
  pin(state, room, out);
  room.members.delete(conn.id);
  room.held.delete(conn.id);
  const count = (room.users.get(username) ?? 1) - 1;
  if (count > 0) room.users.set(username, count);
  else {
    room.users.delete(username);
    if (!state.draining) {
      toRoom(room, "Leave", {
        room: room.name,
        sender_username: username,
        timestamp: now,
        reason,
      }, out);
    }
  }
  if (room.members.size === 0) state.rooms.delete(room.name);
}

/** Forgets a connection: its rooms see `Leave`, its username is free. */
function drop(
  state: ChatState,
  conn: Connection,
  now: number,
  out: Effect[],
): void {
  for (const name of [...conn.rooms]) {
    const room = state.rooms.get(name);
    if (room) exitRoom(state, conn, room, "disconnected", now, out);
  }
  if (conn.username !== null) {
    const conns = state.users.get(conn.username);
    conns?.delete(conn.id);
    if (conns?.size === 0) state.users.delete(conn.username);
  }
  conn.queue.length = 0;
  state.connections.delete(conn.id);
}

function close(
  state: ChatState,
  conn: Connection,
  name: CloseName,
  now: number,
  out: Effect[],
  reason: string = CLOSE_CODES[name].reason,
): void {
  const { code } = CLOSE_CODES[name];
  out.push({ type: "close", conn: conn.id, code, reason });
  out.push({ type: "count", metric: "closes", label: String(code) });
  out.push({
    type: "log",
    level: "info",
    msg: "connection closed by server",
    fields: { connection: conn.publicId, code, reason },
  });
  drop(state, conn, now, out);
}

function accept(conn: Connection): void {
  conn.errorStreak = 0;
}

function send(
  out: Effect[],
  conn: ConnId,
  kind: ServerType,
  body: object,
): void {
  out.push({ type: "send", conn, data: encode(kind, body), kind });
}

function ack(
  out: Effect[],
  conn: Connection,
  ref: string | undefined,
  body: object,
): void {
  if (ref !== undefined) send(out, conn.id, "Ack", { ref, ...body });
}

/** Answers a refused message with `Error`; the streak may close the connection. */
function refuse(
  state: ChatState,
  conn: Connection,
  code: ErrorCode,
  message: string,
  ref: string | undefined,
  out: Effect[],
  streak = true,
): void {
  send(
    out,
    conn.id,
    "Error",
    ref === undefined ? { code, message } : { code, message, ref },
  );
  out.push({ type: "count", metric: "errors", label: code });
  if (!streak) return;
  conn.errorStreak++;
  if (conn.errorStreak >= state.settings.maxConsecutiveErrors) {
    close(state, conn, "policy", state.now, out, "too many consecutive errors");
  }
}
