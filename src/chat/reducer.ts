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
import {
  CLOSE_CODES,
  type CloseName,
  type ErrorCode,
  type LeaveReason,
} from "../wire/codes.ts";
import {
  type ClientMessage,
  createDecoder,
  type Decoder,
  encode,
  encodeGroupChat,
  encodePrivateChat,
  type EnterBody,
  type GroupChatBody,
  type HistoryBody,
  type LeaveBody,
  type PrivateChatBody,
  type ServerType,
  type StoredGroupChat,
  type StoredPrivateChat,
} from "../wire/protocol.ts";
import { foldName } from "../wire/names.ts";
import type {
  HistoryPage,
  HistoryQuery,
  StoredAs,
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
  /**
   * A connection with no username (not authenticated, or no `Enter` yet)
   * this long after it opened is closed with 1008; `0` or absent: never.
   */
  readonly authTimeoutMs?: number;
  /**
   * `PrivateChat`s that may wait for one offline user
   * (`MAX_OFFLINE_MESSAGES`); the next gets `inbox_full`. Absent: no cap.
   */
  readonly maxOfflineMessages?: number;
  /**
   * Bytes of one page of offline messages, at most (default
   * {@linkcode OFFLINE_PAGE_BYTES}); the runner keeps it well under
   * `MAX_BUFFERED_BYTES`.
   */
  readonly offlinePageBytes?: number;
  /**
   * One node of a cluster (`REDIS_URL`): `seq`, presence and username
   * ownership are decided by the cluster (effects `join`, `part`, `claim`,
   * `release`) and other nodes' messages arrive as `bus` events.
   */
  readonly cluster?: boolean;
}

/** Offline `PrivateChat`s read from storage at a time, for one page. */
export const OFFLINE_PAGE = 200;

/**
 * Bytes of encoded `PrivateChat`s in one offline page, at most (one message
 * at least; the last one may pass it): the next page is sent once this one
 * has left the send buffer.
 */
export const OFFLINE_PAGE_BYTES = 64 * 1024;

/** How long a cluster room waits for a missing `seq` before reading it back from history. */
export const GAP_WAIT_MS = 250;

/**
 * Messages a cluster room keeps waiting behind a missing `seq`, at most:
 * past that (history cannot be read, and the room goes on) it gives up the
 * missing ones rather than grow.
 */
export const MAX_PENDING = 1000;

/** A frame that passed the arrival checks and waits for its turn. */
type QueuedFrame = Extract<Event, { type: "frame" }>;

/**
 * A frame refused on arrival while earlier frames of its connection still
 * wait: its `Error` waits its turn too, so answers go out in the order sent.
 */
interface QueuedRefusal {
  readonly type: "refusal";
  readonly code: ErrorCode;
  readonly message: string;
  readonly ref: string | undefined;
}

/** What waits on a connection: frames to handle, refusals to send. */
type Queued = QueuedFrame | QueuedRefusal;

/**
 * Entries one connection may have waiting, refusals included; past that the
 * connection is closed with 1008 (every entry answered first).
 */
export const MAX_WAITING = 256;

/** A close the server decided; it waits for the I/O answer the connection is owed. */
export interface Closing {
  readonly code: number;
  readonly reason: string;
  /** The `Error` that frames still waiting get instead of being handled. */
  readonly answer: ErrorCode;
  readonly message: string;
}

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
  readonly queue: Queued[];
  /**
   * Tokens this connection was authenticated with (at upgrade, or in a
   * message): when any of them is revoked or expires, the connection ends.
   */
  readonly tokens: Set<string>;
  /**
   * Set when the server decided to close it: it has left its rooms and gets
   * no chat frame; the close goes out once the I/O answer it waits for has.
   */
  closing: Closing | null;
}

/** Frames held for a member whose `History` has not been sent yet. */
interface Held {
  seq: number;
  data: string;
  kind: ServerType;
}

/** A cluster message that waits for the `seq`s before it, with the `Ack` it owes. */
interface Pending {
  message: StoredGroupChat;
  ack?: { conn: ConnId; ref: string | undefined };
}

/** A room with at least one member (in a cluster: or a member joining). */
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
  /** Cluster: whether `deliveredSeq` is known yet (the first `joined` tells). */
  known: boolean;
  /** Cluster: messages that arrived ahead of a missing `seq`, by `seq`. */
  readonly pending: Map<number, Pending>;
  /** Cluster: since when a `seq` is missing; `null` when none is. */
  gapSince: number | null;
  /** Cluster: a `fill_gap` read is out. */
  filling: boolean;
  /**
   * Members that were replayed history up to a `seq` the room has not
   * delivered yet: they get no `GroupChat` with a `seq` at or below it.
   */
  readonly floors: Map<ConnId, number>;
  /** Cluster: `join`s in flight per username. */
  readonly joining: Map<string, number>;
}

/** A token lookup, remembered for {@linkcode TOKEN_RECHECK_MS}. */
export interface CachedToken {
  grant: TokenGrant | null;
  checkedAt: number;
  /** Revoked through the API: a lookup answered later must not undo it. */
  revoked?: boolean;
}

/** A token that live connections were authenticated with. */
export interface BoundToken {
  /** The connections it authenticated. */
  readonly conns: Set<ConnId>;
  /** When its grant ends. */
  expiresAt: number;
}

/** The whole state of the chat rules. */
export interface ChatState {
  readonly settings: ChatSettings;
  readonly decoder: Decoder;
  readonly connections: Map<ConnId, Connection>;
  /** Live connections per bound username. */
  readonly users: Map<string, Set<ConnId>>;
  /** Bound usernames by their folded form ({@linkcode foldName}). */
  readonly names: Map<string, string>;
  /** Connections with no username yet, with when they opened, oldest first. */
  readonly unbound: Map<ConnId, number>;
  readonly rooms: Map<string, Room>;
  /** Last `seq` assigned per room, whether or not the room has members. */
  readonly seqs: Map<string, number>;
  readonly tokens: Map<string, CachedToken>;
  /** Connections waiting for a token lookup, per token. */
  readonly tokenWaiters: Map<string, Set<ConnId>>;
  /**
   * Tokens of live connections: each has a timer (effect `token_timer`) at
   * its expiry or its next re-check, whichever comes first.
   */
  readonly bound: Map<string, BoundToken>;
  /**
   * Users whose offline messages are being delivered, a page at a time (a
   * read, or a page waiting to be written): one pager per user. While it
   * runs, new `PrivateChat`s to the user are stored and wait their turn.
   */
  readonly offlineLoading: Set<string>;
  /** Cluster: usernames a first `Enter` is claiming from the cluster. */
  readonly claiming: Set<string>;
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

/** A cluster `join`: enters a user's connection into a room on every node. */
export interface JoinRequest {
  readonly conn: ConnId;
  readonly room: string;
  readonly username: string;
  /**
   * `exclusive`: the first `Enter` of a connection binds a username no other
   * connection may hold (authentication off); `none`: already bound.
   */
  readonly claim: "exclusive" | "none";
  readonly ref?: string | undefined;
  readonly since?: number | undefined;
  readonly history?: number | undefined;
  readonly timestamp: number;
  /**
   * This node already has the user in the room (another connection): the
   * join announces nobody, even if Redis lost the record (restarted empty).
   */
  readonly held?: boolean;
}

/** The cluster's answer to a {@linkcode JoinRequest}. */
export type JoinResult =
  | { kind: "taken" }
  | {
    kind: "joined";
    /** The room's last `seq` when the node joined it. */
    seq: number;
    /** The user was in the room on no node before. */
    isNew: boolean;
    /** Usernames in the room on every node, this one included. */
    members: string[];
  };

/** What other nodes send this node through the cluster bus. */
export type BusMessage =
  | { kind: "group"; message: StoredGroupChat }
  | { kind: "private"; message: StoredPrivateChat }
  | { kind: "enter"; room: string; username: string; timestamp: number }
  | {
    kind: "leave";
    room: string;
    username: string;
    timestamp: number;
    reason: LeaveReason;
  }
  | { kind: "revoked"; token: string };

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
  /** A token's timer (effect `token_timer`) fired: its expiry or re-check is due. */
  | { type: "token_due"; now: number; token: string }
  | {
    type: "offline_loaded";
    now: number;
    username: string;
    messages: StoredPrivateChat[];
  }
  /**
   * The answer to `watch_written`: `written` when every watched connection
   * still open has written all it was sent (at least one was still open).
   */
  | {
    type: "offline_written";
    now: number;
    username: string;
    ids: string[];
    written: boolean;
  }
  /** The runner's event loop fell behind (`true`) or caught up (`false`). */
  | { type: "load"; now: number; overloaded: boolean }
  /** Cluster: the answer to a `join`; `null` when Redis could not be reached. */
  | {
    type: "joined";
    now: number;
    request: JoinRequest;
    result: JoinResult | null;
  }
  /** Cluster: the answer to a `part`; `gone` is `null` when Redis could not be reached. */
  | {
    type: "parted";
    now: number;
    room: string;
    username: string;
    reason: LeaveReason;
    timestamp: number;
    /** The user is now in the room on no node. */
    gone: boolean | null;
  }
  /** Cluster: a message from another node. */
  | { type: "bus"; now: number; message: BusMessage }
  /** Cluster: the answer to a `fill_gap` read; `null` when it failed. */
  | {
    type: "gap_filled";
    now: number;
    room: string;
    messages: StoredGroupChat[] | null;
    /** The `bound` of the `fill_gap` effect this answers. */
    bound: number;
  }
  /** Cluster: the node is connected and in sync with the cluster again. */
  | { type: "bus_synced"; now: number }
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
  /**
   * Arms the token's one timer for `at` (replacing the one armed before), or
   * cancels it (`null`); when it fires, the runner sends `token_due`.
   */
  | { type: "token_timer"; token: string; at: number | null }
  /** Read the oldest `limit` undelivered `PrivateChat`s to `username`. */
  | { type: "load_offline"; username: string; limit: number }
  /**
   * Answer `offline_written` once `conns` have written everything sent to
   * them so far (their send buffers drained), or have all closed.
   */
  | {
    type: "watch_written";
    username: string;
    conns: ConnId[];
    ids: string[];
  }
  | {
    type: "log";
    level: "debug" | "info" | "warn" | "error";
    msg: string;
    fields?: Record<string, unknown>;
  }
  | { type: "count"; metric: Metric; label: string }
  /** Cluster: enter a connection's user into a room on every node. */
  | { type: "join"; request: JoinRequest }
  /** Cluster: this node no longer holds `username` in `room`. */
  | {
    type: "part";
    room: string;
    username: string;
    reason: LeaveReason;
    timestamp: number;
    /** This node has no member left in the room. */
    empty: boolean;
  }
  /** Cluster: this node holds a connection of `username` (authentication on). */
  | { type: "claim"; username: string }
  /** Cluster: this node holds no connection of `username` any more. */
  | { type: "release"; username: string }
  /**
   * Cluster: read a room's messages with `after < seq < before` back from
   * history; `bound` is the highest `seq` known stored when it was asked,
   * handed back in `gap_filled`.
   */
  | {
    type: "fill_gap";
    room: string;
    after: number;
    before: number | null;
    bound: number;
  };

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
    names: new Map(),
    unbound: new Map(),
    rooms: new Map(),
    seqs: new Map(seqs),
    tokens: new Map(),
    tokenWaiters: new Map(),
    bound: new Map(),
    offlineLoading: new Set(),
    claiming: new Set(),
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
      if (
        conn && !conn.closing && admit(state, conn, event.now, event.size, out)
      ) {
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
      if (conn && !conn.closing) {
        close(state, conn, "policy", event.now, out, "slow consumer");
      }
      break;
    }
    case "tick":
      tick(state, event.now, out);
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
      revoked(state, event.token, event.now, out);
      break;
    case "token_due":
      tokenDue(state, event.token, event.now, out);
      break;
    case "offline_loaded":
      offlineLoaded(state, event, out);
      break;
    case "offline_written":
      offlineWritten(state, event, out);
      break;
    case "load":
      state.overloaded = event.overloaded;
      break;
    case "joined":
      joined(state, event, out);
      break;
    case "parted":
      parted(state, event, out);
      break;
    case "bus":
      fromBus(state, event.message, event.now, out);
      break;
    case "gap_filled":
      gapFilled(state, event, out);
      break;
    case "bus_synced":
      // Whatever the bus lost while it was away is in history.
      for (const room of state.rooms.values()) {
        if (room.known) fillGap(room, out);
      }
      break;
    case "shutdown":
      if (state.draining) {
        // Again, at the end of the grace: what still waits for I/O is
        // closed without that answer (its queued frames are answered).
        for (const conn of [...state.connections.values()]) {
          if (conn.closing) finishClose(state, conn, out);
        }
        break;
      }
      state.draining = true;
      for (const conn of [...state.connections.values()]) {
        close(state, conn, "going_away", event.now, out, undefined, {
          answer: "unavailable",
          message:
            "the server is shutting down; the message was not handled, send it again",
        });
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
    tokens: new Set(),
    closing: null,
  };
  state.connections.set(conn.id, conn);
  if (settings.authTimeoutMs) state.unbound.set(conn.id, event.now);
  if (event.token !== undefined && event.grant) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
    conn.token = event.token;
    bind(state, conn, event.grant.username, out);
    bindToken(state, conn, event.token, event.grant.expiresAt, out);
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
      const message =
        `more than ${settings.rateLimitPerSecond} messages a second; message dropped`;
      const ref = text === undefined ? undefined : refOf(state, text);
      // Not an error streak: a client sending too fast is told so for each
      // message, and closing it would leave its frames in flight unanswered
      // (the rate limit already makes a flood cheap; a reader too slow for
      // the answers is a slow consumer). Behind admitted frames that still
      // wait, the Error waits its turn, so answers go out in order.
      if (conn.busy) wait(state, conn, "rate_limited", message, ref, now, out);
      else refuse(state, conn, "rate_limited", message, ref, out, false);
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
  if (conn?.closing) {
    // The server is closing it, after the answer it waits for: this frame
    // is answered in its turn, not handled.
    const ref = refOf(state, event.text);
    const { answer, message } = conn.closing;
    if (ref !== undefined) {
      wait(state, conn, answer, message, ref, event.now, out);
    }
    return;
  }
  if (!conn || !admit(state, conn, event.now, event.size, out, event.text)) {
    return;
  }
  if (conn.busy) {
    // A burst the rate limit allows must fit in the queue.
    const bound = Math.max(MAX_QUEUED_FRAMES, state.settings.rateLimitBurst);
    let frames = 0;
    for (const entry of conn.queue) if (entry.type === "frame") frames++;
    if (frames >= bound) {
      wait(
        state,
        conn,
        "rate_limited",
        "too many messages waiting; message dropped",
        refOf(state, event.text),
        event.now,
        out,
      );
    } else conn.queue.push(event);
    return;
  }
  handle(state, conn, event, out);
}

/**
 * Queues the `Error` of a frame refused while earlier ones wait, so that it
 * goes out in order; it does not count toward the error streak. Past
 * {@linkcode MAX_WAITING} entries the connection is closed (1008), every
 * entry answered first.
 */
function wait(
  state: ChatState,
  conn: Connection,
  code: ErrorCode,
  message: string,
  ref: string | undefined,
  now: number,
  out: Effect[],
): void {
  conn.queue.push({ type: "refusal", code, message, ref });
  if (conn.queue.length > MAX_WAITING && !conn.closing) {
    close(state, conn, "policy", now, out, "too many messages waiting");
  }
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
    if (conn.closing) {
      finishClose(state, conn, out);
      return;
    }
    const next = conn.queue.shift();
    if (!next) break;
    if (next.type === "refusal") {
      refuse(state, conn, next.code, next.message, next.ref, out, false);
    } else handle(state, conn, { ...next, now }, out);
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
    // A token this connection holds ends it (its timer may not have fired yet).
    const held = conn.tokens.has(token);
    refuse(
      state,
      conn,
      "invalid_token",
      "token: unknown, revoked or expired",
      message.ref,
      out,
      !held,
    );
    if (held) endToken(state, token, frame.now, out);
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
  bindToken(state, conn, token, grant.expiresAt, out);
  return true;
}

function tokenChecked(
  state: ChatState,
  event: Extract<Event, { type: "token_checked" }>,
  out: Effect[],
): void {
  // A lookup that started before a revocation answers after it: keep the revocation.
  const revokedHere = state.tokens.get(event.token)?.revoked === true;
  if (event.grant !== undefined && !revokedHere) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
  }
  const bound = state.bound.get(event.token);
  if (bound) {
    if (revokedHere || event.grant === null) {
      // Revoked (by `deno task token revoke`) or expired: the connections
      // that hold it end before the frames waiting for this lookup run.
      endToken(state, event.token, event.now, out);
    } else if (event.grant === undefined) {
      // The store cannot tell now: keep the connections, ask again later.
      out.push({
        type: "token_timer",
        token: event.token,
        at: Math.min(bound.expiresAt, event.now + TOKEN_RECHECK_MS),
      });
    } else {
      bound.expiresAt = event.grant.expiresAt;
      armToken(state, event.token, out);
    }
  }
  const waiters = state.tokenWaiters.get(event.token);
  state.tokenWaiters.delete(event.token);
  for (const id of waiters ?? []) {
    const conn = state.connections.get(id);
    if (!conn) continue;
    if (event.grant === undefined && !conn.closing) {
      // The frame that waited for the lookup is first in the queue.
      const frame = conn.queue[0]?.type === "frame"
        ? conn.queue.shift() as QueuedFrame
        : undefined;
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

/** Records that `token` authenticated `conn`, arming the token's timer if new. */
function bindToken(
  state: ChatState,
  conn: Connection,
  token: string,
  expiresAt: number,
  out: Effect[],
): void {
  if (conn.tokens.has(token)) return;
  conn.tokens.add(token);
  let bound = state.bound.get(token);
  if (!bound) {
    state.bound.set(token, bound = { conns: new Set(), expiresAt });
    armToken(state, token, out);
  }
  bound.conns.add(conn.id);
}

/** Arms a bound token's timer: at its expiry or its next re-check, the earlier. */
function armToken(state: ChatState, token: string, out: Effect[]): void {
  const bound = state.bound.get(token);
  if (!bound) return;
  const checkedAt = state.tokens.get(token)?.checkedAt ?? state.now;
  const at = Math.min(bound.expiresAt, checkedAt + TOKEN_RECHECK_MS);
  out.push({ type: "token_timer", token, at });
}

/** Forgets the tokens a connection held; a token nobody holds loses its timer. */
function unbindTokens(state: ChatState, conn: Connection, out: Effect[]): void {
  for (const token of conn.tokens) {
    const bound = state.bound.get(token);
    bound?.conns.delete(conn.id);
    if (bound?.conns.size === 0) {
      state.bound.delete(token);
      out.push({ type: "token_timer", token, at: null });
    }
  }
  conn.tokens.clear();
}

/** A token was revoked (token API, or another node): its connections end now. */
function revoked(
  state: ChatState,
  token: string,
  now: number,
  out: Effect[],
): void {
  state.tokens.set(token, { grant: null, checkedAt: now, revoked: true });
  endToken(state, token, now, out);
}

/** A bound token's timer fired: it expired, or it is looked up again. */
function tokenDue(
  state: ChatState,
  token: string,
  now: number,
  out: Effect[],
): void {
  const bound = state.bound.get(token);
  if (!bound) return;
  const cached = state.tokens.get(token);
  if (bound.expiresAt <= now || (cached && !cached.grant)) {
    endToken(state, token, now, out);
  } else if (!cached || now - cached.checkedAt >= TOKEN_RECHECK_MS) {
    // Revoked by the command on the same database, the server not told:
    // a lookup tells. Its answer arms the timer again.
    if (!state.tokenWaiters.has(token)) {
      state.tokenWaiters.set(token, new Set());
      out.push({ type: "check_token", token });
    }
  } else armToken(state, token, out);
}

/**
 * Ends every connection `token` authenticated: each leaves its rooms (the
 * others see `Leave` with reason `token_revoked` or `token_expired`) and is
 * closed with 1008 once every frame it sent is answered.
 */
function endToken(
  state: ChatState,
  token: string,
  now: number,
  out: Effect[],
): void {
  const bound = state.bound.get(token);
  if (!bound) return;
  const name = bound.expiresAt <= now ? "token_expired" : "token_revoked";
  const why = name === "token_expired" ? "expired" : "revoked";
  for (const id of [...bound.conns]) {
    const conn = state.connections.get(id);
    if (!conn || conn.closing) continue;
    close(state, conn, name, now, out, undefined, {
      answer: "invalid_token",
      message: `token: ${why}; the connection is closed`,
    }, name);
  }
}

function bind(
  state: ChatState,
  conn: Connection,
  username: string,
  out: Effect[],
  claimed = false,
): void {
  conn.username = username;
  state.unbound.delete(conn.id);
  let conns = state.users.get(username);
  if (!conns) {
    state.users.set(username, conns = new Set());
    state.names.set(foldName(username), username);
    if (state.settings.cluster && !claimed) {
      out.push({ type: "claim", username });
    }
    // A user back while a pager runs gets its next pages.
    if (state.settings.authEnabled) startOffline(state, username, out);
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
    // One name however it is cased or written (NFKC): `Alice` is `alice`.
    const folded = foldName(body.sender_username);
    const holder = state.names.get(folded) ??
      [...state.claiming].find((name) => foldName(name) === folded);
    if (holder !== undefined) {
      refuse(
        state,
        conn,
        "username_taken",
        `message_body.sender_username: '${body.sender_username}' is taken${
          holder !== undefined && holder !== body.sender_username
            ? ` (as '${holder}')`
            : ""
        }`,
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
  if (state.settings.cluster) {
    joinCluster(state, conn, name, body, ref, now, out);
    return;
  }
  if (conn.username === null) bind(state, conn, body.sender_username, out);
  const username = conn.username as string;
  const room = openRoom(state, name, true);
  if (!already && addMember(state, conn, room, out) === 0) {
    announce(room, username, now, null, out, conn.id);
  }
  send(out, conn.id, "Presence", {
    room: name,
    members: [...room.users.keys()].sort(),
  });
  entered(state, conn, room, body, ref, out);
}

/** Finds a room, or opens it with the last `seq` the node knows (`known`) or none yet. */
function openRoom(state: ChatState, name: string, known: boolean): Room {
  let room = state.rooms.get(name);
  if (!room) {
    room = {
      name,
      members: new Set(),
      users: new Map(),
      deliveredSeq: known ? state.seqs.get(name) ?? 0 : 0,
      held: new Map(),
      known,
      pending: new Map(),
      gapSince: null,
      filling: false,
      floors: new Map(),
      joining: new Map(),
    };
    state.rooms.set(name, room);
  }
  return room;
}

/**
 * The end of an `Enter`: its `Ack`, or the history it asked for first.
 * A single node replays up to what it delivered (later writes reach the
 * member live); a cluster node, which may be behind the cluster, up to the
 * room's current `seq` in storage, and `historyLoaded` keeps what it
 * delivers later at or below the replay from that member.
 */
function entered(
  state: ChatState,
  conn: Connection,
  room: Room,
  body: { since?: number | undefined; history?: number | undefined },
  ref: string | undefined,
  out: Effect[],
): void {
  if (body.since === undefined && body.history === undefined) {
    ack(out, conn, ref, {});
    return;
  }
  const upTo = state.settings.cluster
    ? Number.MAX_SAFE_INTEGER
    : room.deliveredSeq;
  const query: HistoryQuery = body.since !== undefined
    ? { kind: "since", since: body.since, upTo }
    : { kind: "last", count: body.history as number, upTo };
  room.held.set(conn.id, []);
  conn.busy = true;
  out.push({
    type: "load_history",
    request: { conn: conn.id, room: room.name, ref, query },
  });
}

/**
 * Cluster `Enter`: the cluster decides the username, presence and the
 * room's `seq`, so the connection waits for `joined`. The room is opened
 * at once to catch the room's messages that other nodes send meanwhile.
 */
function joinCluster(
  state: ChatState,
  conn: Connection,
  name: string,
  body: EnterBody,
  ref: string | undefined,
  now: number,
  out: Effect[],
): void {
  const username = body.sender_username;
  const claim = conn.username === null ? "exclusive" : "none";
  if (claim === "exclusive") state.claiming.add(username);
  const room = openRoom(state, name, false);
  room.joining.set(username, (room.joining.get(username) ?? 0) + 1);
  conn.busy = true;
  out.push({
    type: "join",
    request: {
      conn: conn.id,
      room: name,
      username,
      claim,
      ref,
      since: body.since,
      history: body.history,
      timestamp: now,
      ...((room.users.get(username) ?? 0) > 0 ? { held: true } : {}),
    },
  });
}

function joined(
  state: ChatState,
  event: Extract<Event, { type: "joined" }>,
  out: Effect[],
): void {
  const { request, result } = event;
  const { username } = request;
  if (request.claim === "exclusive") state.claiming.delete(username);
  const room = openRoom(state, request.room, false);
  const joining = (room.joining.get(username) ?? 1) - 1;
  if (joining > 0) room.joining.set(username, joining);
  else room.joining.delete(username);
  const conn = state.connections.get(request.conn);
  // The first join tells the room's seq; what arrived meanwhile goes out
  // once the joining connection is a member.
  const learned = result?.kind === "joined" && !room.known;
  if (learned) {
    room.known = true;
    room.deliveredSeq = result.seq;
  }
  if (!conn || conn.closing || result?.kind !== "joined") {
    // Closed while joining, or refused: take back what the cluster may have
    // recorded (a resync meanwhile records joins in flight too).
    if (result !== null && !room.users.has(username) && !joining) {
      out.push({
        type: "part",
        room: room.name,
        username,
        reason: "disconnected",
        timestamp: event.now,
        empty: room.members.size === 0 && room.joining.size === 0,
      });
      if (request.claim === "exclusive" && !state.users.has(username)) {
        out.push({ type: "release", username });
      }
    }
    if (learned) release(state, room, event.now, out, true);
    forgetIfEmpty(state, room);
    if (!conn) return;
    if (conn.closing) {
      // Closing meanwhile: the Enter is answered as the close says.
      answerClosing(state, conn, request.ref, out);
    } else if (result === null) {
      refuse(
        state,
        conn,
        "unavailable",
        "the cluster cannot be reached; send Enter again",
        request.ref,
        out,
      );
    } else {
      refuse(
        state,
        conn,
        "username_taken",
        `message_body.sender_username: '${username}' is taken`,
        request.ref,
        out,
      );
    }
    if (state.connections.has(conn.id)) resume(state, conn, event.now, out);
    return;
  }
  if (conn.username === null) bind(state, conn, username, out, true);
  if (!conn.rooms.has(room.name)) {
    const before = addMember(state, conn, room, out);
    // The cluster, not this node's count, knows whether the user is new
    // there; but one already here is not, whatever Redis lost.
    if (result.isNew && before === 0) {
      announce(room, username, request.timestamp, null, out, conn.id);
    }
  }
  // The cluster's member list, this user included (the join recorded it).
  send(out, conn.id, "Presence", {
    room: room.name,
    members: [...result.members].sort(),
  });
  conn.busy = false;
  entered(state, conn, room, request, request.ref, out);
  if (learned) release(state, room, event.now, out, true);
  if (!conn.busy && state.connections.has(conn.id)) {
    resume(state, conn, event.now, out);
  }
}

function parted(
  state: ChatState,
  event: Extract<Event, { type: "parted" }>,
  out: Effect[],
): void {
  const room = state.rooms.get(event.room);
  // `gone: null` (Redis away): this node's members saw the user go, so say so.
  if (
    !room || state.draining || event.gone === false ||
    room.users.has(event.username)
  ) {
    return;
  }
  announce(room, event.username, event.timestamp, event.reason, out);
}

function fromBus(
  state: ChatState,
  message: BusMessage,
  now: number,
  out: Effect[],
): void {
  switch (message.kind) {
    case "group": {
      const room = state.rooms.get(message.message.room);
      if (room) arriveInOrder(state, room, { message: message.message }, out);
      break;
    }
    case "private": {
      const { message: chat } = message;
      const paging = state.offlineLoading.has(chat.target_username);
      if (paging) {
        // Its target is still reading older messages here: kept behind
        // them, so the pager delivers it in order.
        out.push({
          type: "persist",
          request: { conn: null, op: { kind: "undelivered", message: chat } },
        });
      }
      const recipients = new Set<ConnId>(
        paging ? undefined : state.users.get(chat.target_username),
      );
      for (const id of state.users.get(chat.sender_username) ?? []) {
        recipients.add(id);
      }
      if (recipients.size > 0) {
        out.push({
          type: "broadcast",
          conns: recipients,
          count: recipients.size,
          data: encodePrivateChat(chat),
          kind: "PrivateChat",
        });
      }
      break;
    }
    case "enter":
    case "leave": {
      const room = state.rooms.get(message.room);
      if (!room || state.draining) return;
      const reason = message.kind === "enter" ? null : message.reason;
      announce(room, message.username, message.timestamp, reason, out);
      break;
    }
    case "revoked":
      revoked(state, message.token, now, out);
      break;
  }
}

/**
 * Cluster: a room message from this node's write or from another node, in
 * any order; members get them in `seq` order, without gaps or duplicates.
 */
function arriveInOrder(
  state: ChatState,
  room: Room,
  pending: Pending,
  out: Effect[],
): void {
  const { seq } = pending.message;
  if (room.known && seq <= room.deliveredSeq) {
    // Already delivered (a gap fill raced the bus): only the Ack is owed.
    if (pending.ack) finishAck(state, pending, out);
    return;
  }
  room.pending.set(seq, pending);
  release(state, room, state.now, out);
  if (room.known && room.pending.size > MAX_PENDING) {
    skipGap(state, room, state.now, out);
  }
}

/** Delivers the pending messages that are next in `seq` order. */
function release(
  state: ChatState,
  room: Room,
  now: number,
  out: Effect[],
  /** The room just learned its seq: drop what arrived from before it. */
  stale = false,
): void {
  if (!room.known) return;
  const acked: Pending[] = [];
  for (const [seq, pending] of stale ? room.pending : []) {
    if (seq <= room.deliveredSeq) {
      room.pending.delete(seq);
      if (pending.ack) acked.push(pending);
    }
  }
  for (
    let next = room.pending.get(room.deliveredSeq + 1);
    next;
    next = room.pending.get(room.deliveredSeq + 1)
  ) {
    room.pending.delete(room.deliveredSeq + 1);
    room.deliveredSeq++;
    toRoom(
      room,
      "GroupChat",
      encodeGroupChat(next.message),
      out,
      undefined,
      room.deliveredSeq,
    );
    if (next.ack) acked.push(next);
  }
  room.gapSince = room.pending.size === 0 ? null : room.gapSince ?? now;
  // After the loop: a resumed connection may leave the room.
  for (const pending of acked) finishAck(state, pending, out);
}

/** Sends a cluster message's `Ack` and lets its sender go on. */
function finishAck(state: ChatState, pending: Pending, out: Effect[]): void {
  const conn = pending.ack && state.connections.get(pending.ack.conn);
  if (!conn || !pending.ack) return;
  const { message } = pending;
  ack(out, conn, pending.ack.ref, {
    id: message.id,
    seq: message.seq,
    timestamp: message.timestamp,
  });
  resume(state, conn, state.now, out);
}

/**
 * Asks for every kept message of a room after `deliveredSeq`, the whole
 * range: a read up to the first pending message only would leave holes
 * above it unread. Records the highest `seq` known stored now: the read
 * proves which `seq`s up to it history no longer holds.
 */
function fillGap(room: Room, out: Effect[]): void {
  room.filling = true;
  let bound = room.deliveredSeq;
  for (const seq of room.pending.keys()) if (seq > bound) bound = seq;
  out.push({
    type: "fill_gap",
    room: room.name,
    after: room.deliveredSeq,
    before: null,
    bound,
  });
}

function gapFilled(
  state: ChatState,
  event: Extract<Event, { type: "gap_filled" }>,
  out: Effect[],
): void {
  const room = state.rooms.get(event.room);
  if (!room) return;
  room.filling = false;
  if (event.messages === null) {
    if (room.pending.size > 0) room.gapSince = event.now;
    return;
  }
  let bound = event.bound;
  for (const message of event.messages) {
    if (message.seq > bound) bound = message.seq;
    if (message.seq > room.deliveredSeq && !room.pending.has(message.seq)) {
      room.pending.set(message.seq, { message });
    }
  }
  release(state, room, event.now, out);
  // The read saw every kept seq up to `bound` (all were stored before it
  // ran): a seq missing below it is one history no longer holds (trimmed,
  // or lost by Redis), so the room goes on without it. A hole above
  // `bound` may still come (the bus, or the next read).
  while (room.pending.size > 0 && room.deliveredSeq < bound) {
    const skipTo = Math.min(firstPending(room) - 1, bound);
    out.push({
      type: "log",
      level: "warn",
      msg: "history no longer holds missing messages; skipped",
      fields: { room: room.name, from: room.deliveredSeq + 1, to: skipTo },
    });
    room.deliveredSeq = skipTo;
    release(state, room, event.now, out);
  }
  if (room.pending.size > 0) room.gapSince = event.now;
}

/** Gives up the missing `seq`s before the first pending one, and goes on. */
function skipGap(
  state: ChatState,
  room: Room,
  now: number,
  out: Effect[],
): void {
  room.deliveredSeq = firstPending(room) - 1;
  release(state, room, now, out);
}

/** The lowest `seq` waiting in a room (a loop: the map may be large). */
function firstPending(room: Room): number {
  let first = Infinity;
  for (const seq of room.pending.keys()) if (seq < first) first = seq;
  return first;
}

/** Forgets a cluster room that has no members and nobody joining. */
function forgetIfEmpty(state: ChatState, room: Room): void {
  if (room.members.size === 0 && room.joining.size === 0) {
    state.rooms.delete(room.name);
  }
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
  // In a cluster, Redis gives the seq when it stores the message.
  let seq = 0;
  if (!state.settings.cluster) {
    seq = (state.seqs.get(room.name) ?? 0) + 1;
    state.seqs.set(room.name, seq);
  }
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
    request: {
      conn: conn.id,
      ref,
      // The client's id is the message's idempotency key: a resend after
      // an unknown outcome is not stored twice.
      op: ref === undefined
        ? { kind: "group", message }
        : { kind: "group", message, ref },
    },
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
  const { maxOfflineMessages } = state.settings;
  // In a cluster, the target may be on another node: the write tells.
  if (!online && !state.settings.authEnabled && !state.settings.cluster) {
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
      op: {
        kind: "private",
        message,
        // Behind older offline messages still being paged out: stored, and
        // delivered in order by the pager.
        delivered: online && !state.offlineLoading.has(body.target_username),
        ...(maxOfflineMessages === undefined
          ? {}
          : { maxWaiting: maxOfflineMessages }),
        ...(ref === undefined ? {} : { ref }),
      },
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
    if (result.ok && result.original) {
      // A resend of a message stored before: not stored again, and its
      // Ack is the first one's.
      resent(state, conn, request.ref, message, result.original, out);
      return;
    }
    if (result.ok && result.seq !== undefined) {
      // Cluster: delivered in seq order with other nodes' messages, and
      // acknowledged then; the connection waits until that.
      const room = state.rooms.get(message.room);
      const pending: Pending = {
        message: { ...message, seq: result.seq },
        ...(conn ? { ack: { conn: conn.id, ref: request.ref } } : {}),
      };
      if (room) arriveInOrder(state, room, pending, out);
      else if (conn) finishAck(state, pending, out);
      return;
    }
    if (result.ok) {
      const room = state.rooms.get(message.room);
      if (room) {
        room.deliveredSeq = Math.max(room.deliveredSeq, message.seq);
        toRoom(
          room,
          "GroupChat",
          encodeGroupChat(message),
          out,
          undefined,
          message.seq,
        );
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
        notStored(result),
        request.ref,
        out,
      );
    }
  } else if (op.kind === "private") {
    const message = op.message;
    if (result.ok && result.original) {
      // A resend: delivered when it was first stored; the first Ack again.
      if (conn) {
        const { id, timestamp } = result.original;
        ack(out, conn, request.ref, { id, timestamp });
      }
    } else if (result.ok) {
      // Stored for an offline target: a connection of the target that bound
      // meanwhile gets it from its offline load (read after this write), in
      // order with the older ones; sending it here too would duplicate it.
      const targets = state.users.get(message.target_username);
      // Cluster: not stored when another node holds the target; this
      // node's connections of the target get it live too.
      const recipients = new Set<ConnId>(
        op.delivered || result.remote ? targets : undefined,
      );
      if (
        !op.delivered && !result.remote && targets &&
        state.settings.authEnabled
      ) {
        // Stored while the target is online: its pager finished before
        // this write, so it runs again.
        startOffline(state, message.target_username, out);
      }
      if (
        op.delivered && !targets && state.settings.authEnabled &&
        !result.remote
      ) {
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
          data: encodePrivateChat(message),
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
      if (result.reason === "not_connected") {
        refuse(
          state,
          conn,
          "user_not_found",
          `message_body.target_username: '${message.target_username}' is not connected`,
          request.ref,
          out,
        );
      } else if (result.reason === "inbox_full") {
        refuse(
          state,
          conn,
          "inbox_full",
          `message_body.target_username: '${message.target_username}' has ${
            state.settings.maxOfflineMessages ?? "too many"
          } messages waiting; send it later`,
          request.ref,
          out,
        );
      } else if (result.reason === "unknown_user") {
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
          notStored(result),
          request.ref,
          out,
        );
      }
    }
  } else if (op.kind === "delivered" && op.username !== undefined) {
    // A page marked: the next one. Not marked (storage fails): the pager
    // stops rather than send the same page again and again; the user's next
    // connection starts from it.
    if (result.ok) nextOfflinePage(state, op.username, out);
    else state.offlineLoading.delete(op.username);
  } else if (op.kind === "undelivered") {
    const { message } = op;
    const targets = state.users.get(message.target_username);
    if (result.ok) {
      // Kept for later, but the target is (back) online: its pager takes it.
      if (targets) startOffline(state, message.target_username, out);
    } else if (targets) {
      // Not kept: better out of order than lost.
      out.push({
        type: "broadcast",
        conns: targets,
        count: targets.size,
        data: encodePrivateChat(message),
        kind: "PrivateChat",
      });
    }
  }
  if (conn && state.connections.has(conn.id)) {
    resume(state, conn, event.now, out);
  }
}

/** The text of an `unavailable` answer to a write that failed. */
function notStored(result: WriteResult): string {
  return result.ok === false && result.reason === "unknown"
    ? "storage did not answer in time: the message may have been stored; " +
      "send it again with the same id (it is never stored twice)"
    : "the message was not stored; send it again with the same id";
}

/**
 * Answers a `GroupChat` whose sender stored one with the same client `id`
 * before: the `Ack` of the first one, once it is delivered here (in a
 * cluster this node may not have delivered it yet).
 */
function resent(
  state: ChatState,
  conn: Connection | undefined,
  ref: string | undefined,
  message: StoredGroupChat,
  original: StoredAs,
  out: Effect[],
): void {
  const room = state.rooms.get(message.room);
  const ackTo = conn ? { conn: conn.id, ref } : undefined;
  const first: StoredGroupChat = { ...message, ...original };
  if (
    state.settings.cluster && room && ackTo &&
    !(room.known && original.seq <= room.deliveredSeq)
  ) {
    const waiting = room.pending.get(original.seq);
    if (!waiting) {
      arriveInOrder(state, room, { message: first, ack: ackTo }, out);
      return;
    }
    if (!waiting.ack) {
      waiting.ack = ackTo;
      return;
    }
  }
  if (conn) {
    ack(out, conn, ref, original);
    if (state.connections.has(conn.id)) resume(state, conn, state.now, out);
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
  const entry = room?.held.get(request.conn);
  const held = entry ?? [];
  room?.held.delete(request.conn);
  if (!conn) return;
  if (conn.closing) {
    // Closing meanwhile (a revoked token reads nothing more): no History.
    answerClosing(state, conn, request.ref, out);
    resume(state, conn, event.now, out);
    return;
  }
  if (page) {
    send(out, conn.id, "History", {
      room: request.room,
      messages: page.messages,
      complete: page.complete,
    });
  }
  // Sent even when the read failed: the connection is in the room anyway.
  // `since: N` means after N: nothing at or below N, nor below what the
  // page replayed, reaches the connection after it.
  const { query } = request;
  const lastSent = Math.max(
    page?.messages.at(-1)?.seq ?? 0,
    query.kind === "since" ? query.since : 0,
  );
  if (
    entry && room && lastSent > room.deliveredSeq && room.members.has(conn.id)
  ) {
    room.floors.set(conn.id, lastSent);
  }
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

/** Starts delivering a user's offline messages, unless that runs already. */
function startOffline(state: ChatState, username: string, out: Effect[]): void {
  if (state.offlineLoading.has(username)) return;
  state.offlineLoading.add(username);
  out.push({ type: "load_offline", username, limit: OFFLINE_PAGE });
}

/**
 * Sends one page of offline messages (at most {@linkcode OFFLINE_PAGE_BYTES})
 * and waits for it to be written; the pager ends at an empty read, or when
 * the user has gone (what was not written waits for the next connection).
 */
function offlineLoaded(
  state: ChatState,
  event: Extract<Event, { type: "offline_loaded" }>,
  out: Effect[],
): void {
  const conns = state.users.get(event.username);
  if (!conns || event.messages.length === 0) {
    state.offlineLoading.delete(event.username);
    return;
  }
  const ids: string[] = [];
  const budget = state.settings.offlinePageBytes ?? OFFLINE_PAGE_BYTES;
  let bytes = 0;
  for (const message of event.messages) {
    if (bytes >= budget) break;
    const data = encodePrivateChat(message);
    bytes += data.length;
    ids.push(message.id);
    out.push({
      type: "broadcast",
      conns,
      count: conns.size,
      data,
      kind: "PrivateChat",
    });
  }
  out.push({
    type: "watch_written",
    username: event.username,
    conns: [...conns],
    ids,
  });
}

/**
 * A page was written (marked delivered; the next one is read once that is
 * committed) or its connections closed first (it stays undelivered: sent
 * again next time).
 */
function offlineWritten(
  state: ChatState,
  event: Extract<Event, { type: "offline_written" }>,
  out: Effect[],
): void {
  if (event.written) {
    out.push({
      type: "persist",
      request: {
        conn: null,
        op: { kind: "delivered", ids: event.ids, username: event.username },
      },
    });
  } else nextOfflinePage(state, event.username, out);
}

/** Reads the next page while the user is online; otherwise the pager ends. */
function nextOfflinePage(
  state: ChatState,
  username: string,
  out: Effect[],
): void {
  if (state.users.has(username)) {
    out.push({ type: "load_offline", username, limit: OFFLINE_PAGE });
  } else state.offlineLoading.delete(username);
}

function tick(state: ChatState, now: number, out: Effect[]): void {
  const timeout = state.settings.authTimeoutMs;
  // Oldest first: stop at the first connection still within its time.
  for (const [id, opened] of state.unbound) {
    if (!timeout || now - opened < timeout) break;
    state.unbound.delete(id);
    const conn = state.connections.get(id);
    if (conn && conn.username === null) {
      close(
        state,
        conn,
        "policy",
        now,
        out,
        state.settings.authEnabled
          ? "no valid token in time"
          : "no Enter in time",
      );
    }
  }
  for (const [token, cached] of state.tokens) {
    if (now - cached.checkedAt > TOKEN_RECHECK_MS && !state.bound.has(token)) {
      state.tokens.delete(token);
    }
  }
  if (!state.settings.cluster) return;
  for (const room of state.rooms.values()) {
    if (
      room.gapSince !== null && !room.filling &&
      now - room.gapSince >= GAP_WAIT_MS
    ) {
      fillGap(room, out);
    }
  }
}

/** Sends a frame to every member of a room, holding it for those who wait for `History`. */
function toRoom(
  room: Room,
  type: ServerType,
  data: string,
  out: Effect[],
  except?: ConnId,
  seq = 0,
): void {
  let conns: Iterable<ConnId> = room.members;
  let count = room.members.size - (except === undefined ? 0 : 1);
  if (room.held.size > 0 || (seq > 0 && room.floors.size > 0)) {
    const live: ConnId[] = [];
    for (const id of room.members) {
      const held = room.held.get(id);
      const floor = seq > 0 ? room.floors.get(id) : undefined;
      if (floor !== undefined) {
        // Replayed already: the member's seqs go on after its floor.
        if (seq >= floor) room.floors.delete(id);
        if (seq <= floor) continue;
      }
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
 * Tells a room's members that `username` entered (`reason` null) or left;
 * `except` is the connection that caused it.
 */
function announce(
  room: Room,
  username: string,
  timestamp: number,
  reason: LeaveReason | null,
  out: Effect[],
  except?: ConnId,
): void {
  const body = { room: room.name, sender_username: username, timestamp };
  if (reason === null) {
    toRoom(room, "Enter", encode("Enter", body), out, except);
  } else {
    toRoom(
      room,
      "Leave",
      encode("Leave", { ...body, reason }),
      out,
      except,
    );
  }
}

/** Adds a connection to a room; its user's connections there before it. */
function addMember(
  state: ChatState,
  conn: Connection,
  room: Room,
  out: Effect[],
): number {
  const username = conn.username as string;
  conn.rooms.add(room.name);
  pin(state, room, out);
  room.members.add(conn.id);
  const before = room.users.get(username) ?? 0;
  room.users.set(username, before + 1);
  return before;
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
  reason: LeaveReason,
  now: number,
  out: Effect[],
): void {
  const username = conn.username as string;
  conn.rooms.delete(room.name);
  pin(state, room, out);
  room.members.delete(conn.id);
  room.held.delete(conn.id);
  room.floors.delete(conn.id);
  const count = (room.users.get(username) ?? 1) - 1;
  if (count > 0) room.users.set(username, count);
  else {
    room.users.delete(username);
    if (state.settings.cluster) {
      // The cluster tells whether the user is still in the room elsewhere.
      out.push({
        type: "part",
        room: room.name,
        username,
        reason,
        timestamp: now,
        empty: room.members.size === 0 && room.joining.size === 0,
      });
    } else if (!state.draining) announce(room, username, now, reason, out);
  }
  forgetIfEmpty(state, room);
}

/** Forgets a connection: its rooms see `Leave`, its username is free. */
function drop(
  state: ChatState,
  conn: Connection,
  now: number,
  out: Effect[],
): void {
  detach(state, conn, "disconnected", now, out);
  conn.queue.length = 0;
  state.connections.delete(conn.id);
}

/**
 * Takes a connection out of everything that sends it chat frames: its rooms
 * (the others see `Leave` with `reason`), its username, its tokens.
 */
function detach(
  state: ChatState,
  conn: Connection,
  reason: LeaveReason,
  now: number,
  out: Effect[],
): void {
  for (const name of [...conn.rooms]) {
    const room = state.rooms.get(name);
    if (room) exitRoom(state, conn, room, reason, now, out);
  }
  if (conn.username !== null) {
    const conns = state.users.get(conn.username);
    conns?.delete(conn.id);
    if (conns?.size === 0) {
      state.users.delete(conn.username);
      const folded = foldName(conn.username);
      if (state.names.get(folded) === conn.username) state.names.delete(folded);
      if (state.settings.cluster) {
        out.push({ type: "release", username: conn.username });
      }
    }
  }
  state.unbound.delete(conn.id);
  unbindTokens(state, conn, out);
}

/** The `Error` that frames still waiting get when the server closes their connection. */
interface CloseAnswer {
  answer: ErrorCode;
  message: string;
}

/**
 * Closes a connection the server gives up: it leaves its rooms at once and
 * gets no chat frame after that; every frame it sent is answered first (the
 * one waiting for I/O with its real answer, the ones queued behind with
 * `answer`), then the close goes out.
 */
function close(
  state: ChatState,
  conn: Connection,
  name: CloseName,
  now: number,
  out: Effect[],
  reason: string = CLOSE_CODES[name].reason,
  answer: CloseAnswer = {
    answer: "unavailable",
    message:
      `the connection is closing (${reason}); the message was not handled`,
  },
  leaveReason: LeaveReason = "disconnected",
): void {
  if (conn.closing) return;
  const { code } = CLOSE_CODES[name];
  conn.closing = { code, reason, ...answer };
  detach(state, conn, leaveReason, now, out);
  if (!conn.busy) finishClose(state, conn, out);
}

/**
 * Answers a frame of a closing connection that will not be handled: `Error`
 * with its `ref`; a frame without `id` gets nothing (the close tells).
 */
function answerClosing(
  state: ChatState,
  conn: Connection,
  ref: string | undefined,
  out: Effect[],
): void {
  const { answer, message } = conn.closing as Closing;
  if (ref !== undefined) refuse(state, conn, answer, message, ref, out, false);
}

/** Answers what still waits on a closing connection, then closes it. */
function finishClose(state: ChatState, conn: Connection, out: Effect[]): void {
  const closing = conn.closing as Closing;
  for (const entry of conn.queue.splice(0)) {
    if (entry.type === "refusal") {
      refuse(state, conn, entry.code, entry.message, entry.ref, out, false);
    } else answerClosing(state, conn, refOf(state, entry.text), out);
  }
  const { code, reason } = closing;
  out.push({ type: "close", conn: conn.id, code, reason });
  out.push({ type: "count", metric: "closes", label: String(code) });
  out.push({
    type: "log",
    level: "info",
    msg: "connection closed by server",
    fields: { connection: conn.publicId, code, reason },
  });
  state.connections.delete(conn.id);
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
  // `unavailable` is the server's fault (storage, cluster): not a streak.
  streak = code !== "unavailable",
): void {
  send(
    out,
    conn.id,
    "Error",
    ref === undefined ? { code, message } : { code, message, ref },
  );
  out.push({ type: "count", metric: "errors", label: code });
  if (!streak || conn.closing) return;
  conn.errorStreak++;
  if (conn.errorStreak >= state.settings.maxConsecutiveErrors) {
    close(state, conn, "policy", state.now, out, "too many consecutive errors");
  }
}

/** What this node holds, for the cluster to check its records against after a reconnect. */
export interface Contributions {
  /** Usernames with a connection on this node. */
  users: string[];
  /** `[room, username]` for every user in a room on this node. */
  presence: [string, string][];
  /** The last `seq` delivered in each room with members here. */
  seqs: [string, number][];
}

/**
 * Lists what this node holds in the cluster (see {@linkcode Contributions}),
 * joins in flight included: their records may already be in Redis.
 */
export function contributions(state: ChatState): Contributions {
  const presence: [string, string][] = [];
  const seqs: [string, number][] = [];
  for (const room of state.rooms.values()) {
    const usernames = new Set([...room.users.keys(), ...room.joining.keys()]);
    for (const username of usernames) presence.push([room.name, username]);
    if (room.known) seqs.push([room.name, room.deliveredSeq]);
  }
  const users = new Set([...state.users.keys(), ...state.claiming]);
  return { users: [...users], presence, seqs };
}
