/**
 * The chat core's data: the state the reducer owns, the events it is given,
 * the effects it returns, the settings it depends on, and the limits it
 * enforces. Types and constants only: the rules are in `reducer.ts` and the
 * handler modules beside it.
 *
 * Why this file is long (about 670 lines): `Event` and `Effect` are the
 * reducer's whole interface with the runner, and are kept in one place so
 * every variant is read beside the others.
 *
 * @module
 */
import type { ErrorCode, LeaveReason } from "../wire/codes.ts";
import type { Decoder } from "../wire/client_frames.ts";
import type {
  ServerType,
  StoredGroupChat,
  StoredPrivateChat,
  TypingNotice,
} from "../wire/server_frames.ts";
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
  /**
   * Members (users) a room may have with full presence
   * (`PRESENCE_FULL_LIMIT`, default {@linkcode PRESENCE_FULL_LIMIT}); above
   * it the room's presence is coalesced (`presence.ts`).
   */
  readonly presenceFullLimit?: number;
}

/** The default of `PRESENCE_FULL_LIMIT`. */
export const PRESENCE_FULL_LIMIT = 200;

/** Names a large room's `Presence` lists, and a `Members` page without `limit`. */
export const PRESENCE_PAGE = 100;

/**
 * The least time between two presence flushes: a cluster node ticks every
 * 100 ms, and still sends a large room's `PresenceDiff` and batch about once
 * a second (a single node ticks once a second).
 */
export const PRESENCE_INTERVAL_MS = 950;

/** Names of each kind (joined, left) one `PresenceDiff` lists, at most. */
export const PRESENCE_DIFF_NAMES = 100;

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

/**
 * Typing timings, from the wire (the clients share them): how long an
 * indicator shows, how often a start is relayed, how often clients renew.
 */
export {
  TYPING_EXPIRES_MS,
  TYPING_INTERVAL_MS,
  TYPING_RENEW_MS,
} from "../wire/server_frames.ts";

/** A frame that passed the arrival checks and waits for its turn. */
export type QueuedFrame = Extract<Event, { type: "frame" }>;

/**
 * A frame refused on arrival while earlier frames of its connection still
 * wait: its `Error` waits its turn too, so answers go out in the order sent.
 */
export interface QueuedRefusal {
  readonly type: "refusal";
  readonly code: ErrorCode;
  readonly message: string;
  readonly ref: string | undefined;
}

/** What waits on a connection: frames to handle, refusals to send. */
export type Queued = QueuedFrame | QueuedRefusal;

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
  /**
   * The `Typing` starts this connection had relayed, by `r:room` or
   * `u:target`, with when: the server relays the stop (a message, a
   * `Leave`, the close) while one has not expired. Kept small by
   * `typing.ts`.
   */
  readonly typing: Map<string, number>;
}

/** Frames held for a member whose `History` has not been sent yet. */
export interface Held {
  seq: number;
  data: string;
  kind: ServerType;
}

/** A cluster message that waits for the `seq`s before it, with the `Ack` it owes. */
export interface Pending {
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
  /** The room's users in join order, for paging (`presence.ts`). */
  readonly roster: Roster;
  /**
   * Coalesced presence: the room passed `PRESENCE_FULL_LIMIT` and has not
   * fallen below 90% of it since.
   */
  large: boolean;
  /**
   * Coalesced presence: users who joined (`true`) or left (`false`) since
   * the last `PresenceDiff`; one who came back to where they were is not
   * listed.
   */
  readonly changes: Map<string, boolean>;
  /** Cluster: joins and leaves other nodes told of past the names they listed. */
  unnamed: { joined: number; left: number };
  /** Cluster, large: this node's own joins and leaves for the next batch. */
  readonly outgoing: Map<string, boolean>;
  /** Cluster: the room's member count on every node, and its version. */
  count: number;
  countVersion: number;
  /** The count the last `PresenceDiff` told. */
  sentCount: number;
}

/** One user in a {@linkcode Roster}. */
export interface RosterEntry {
  /** The join number: the room's cursor for paging. */
  readonly n: number;
  readonly name: string;
  live: boolean;
}

/**
 * A room's users in join order: entries appended on a join, marked dead on
 * a leave and dropped in one pass once they are half the list, so a join
 * and a leave cost O(1) amortised and a page is found by binary search.
 */
export interface Roster {
  entries: RosterEntry[];
  readonly index: Map<string, RosterEntry>;
  /** The next join number (the first is 1). */
  next: number;
  /** Dead entries in `entries`. */
  dead: number;
  /** The first page (names and the last entry listed), until it changes. */
  first: { names: string[]; last: number; more: boolean } | null;
}

/** A `GroupChat` waiting for its room's `seq` from storage (its frame is back in the queue). */
export type SeqWaiter =
  /** A connection's `GroupChat`, put back at the front of its queue. */
  | { readonly conn: ConnId; readonly frame: QueuedFrame }
  /** An administrator's system message (`say`), handled again after the read. */
  | {
    readonly conn: null;
    readonly admin: number | null;
    readonly request: Extract<AdminRequest, { kind: "say" }>;
  };

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
  /** Rooms with coalesced presence changes waiting for the next `tick`. */
  readonly presenceDue: Set<string>;
  /** When presence was last flushed (a cluster node ticks ten times a second). */
  presenceAt: number;
  /**
   * Single node: the last `seq` assigned per room, kept while the room is
   * open or a write of it is in flight (`room_seqs.ts`).
   */
  readonly seqs: Map<string, number>;
  /** Single node: `GroupChat` writes in flight per room. */
  readonly writing: Map<string, number>;
  /** Single node: rooms whose `seq` is being read (`load_seq`), with the `GroupChat`s waiting for it. */
  readonly seqWaiters: Map<string, SeqWaiter[]>;
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
  /**
   * Banned usernames, folded, with when the ban ends (ms): their `Enter`
   * and tokens are refused until then (`banned`). Loaded from storage.
   */
  readonly bans: Map<string, number>;
  /** Cluster: usernames a first `Enter` is claiming from the cluster. */
  readonly claiming: Set<string>;
  draining: boolean;
  /** The runner reports an overload: chat messages are refused. */
  overloaded: boolean;
  /** The time of the event being reduced. */
  now: number;
  /**
   * The connections a handler let go on during the event being reduced (no
   * longer waiting for I/O): `reduce` handles their queued frames after the
   * event. Always empty between events; kept here so an event allocates no
   * list for it.
   */
  readonly ready: Connection[];
}

/** A write the reducer asks for, with what it needs to finish the message. */
export interface PersistRequest {
  readonly conn: ConnId | null;
  readonly ref?: string | undefined;
  readonly op: WriteOp;
  /** An administrator's system message: the request id its answer goes to. */
  readonly admin?: number;
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
    /**
     * Usernames in the room on every node, this one included; in a large
     * room only a first page (Redis's hash order).
     */
    members: string[];
    /** Members on every node (absent from an older bus: `members.length`). */
    count?: number;
    /** The room has coalesced presence in the cluster. */
    large?: boolean;
    /** Large: the version of `count` (newer counts win). */
    version?: number;
    /** Large: the cursor of the page after `members`; 0 when none follows. */
    cursor?: number;
  };

/** The cluster's answer to a `part`. */
export interface PartResult {
  /** The user is now in the room on no node. */
  gone: boolean;
  /** Members on every node now. */
  count: number;
  /** The room still has coalesced presence (its leaves are batched). */
  large: boolean;
  /** Large: the version of `count`. */
  version: number;
}

/** One node's joins and leaves of a large room in one tick, for the others. */
export interface PresenceBatch {
  room: string;
  /** At most `PRESENCE_DIFF_NAMES`. */
  joined: string[];
  joined_count: number;
  left: string[];
  left_count: number;
}

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
  | { kind: "revoked"; token: string }
  /** Someone on another node is typing in a room here, or to a user here. */
  | { kind: "typing"; notice: TypingNotice }
  /** An administrator's kick, ban, unban or deletion on another node. */
  | { kind: "admin"; request: AdminAction }
  /** Another node's batch of a large room's joins and leaves, and the count. */
  | {
    kind: "presence";
    batch: PresenceBatch;
    count: number;
    version: number;
  }
  /** A large room is back to full presence: every member, and the count. */
  | {
    kind: "full";
    room: string;
    members: string[];
    count: number;
    version: number;
  };

/**
 * What an administrator asks of the chat (`src/http/admin_api.ts`): reads
 * of this node's state, and actions. Bans and deletions are stored by the
 * API first; the reducer only applies them to live connections.
 */
export type AdminRequest =
  /** Rooms with members on this node, and rooms with a `seq`. */
  | { kind: "rooms" }
  /** A room's members on this node, by username, after `cursor`. */
  | { kind: "members"; room: string; cursor?: string; limit: number }
  /** A user's connections on this node. */
  | { kind: "user"; username: string }
  /** A system message to a room, from the reserved sender `system`. */
  | { kind: "say"; room: string; content: string; id: string }
  | AdminAction;

/** The admin requests that every node of a cluster applies (through the bus). */
export type AdminAction =
  /** Every connection of the user leaves its rooms (`kicked`) and is closed. */
  | { kind: "kick"; username: string }
  /** The user is banned until `until` (ms): kicked (`banned`), refused meanwhile. */
  | { kind: "ban"; username: string; until: number }
  | { kind: "unban"; username: string }
  /** A stored message was deleted: the room's members get `Deleted`. */
  | { kind: "deleted"; room: string; id: string; seq: number }
  /** The bans storage holds now (folded name → until): replaces the known ones. */
  | { kind: "bans"; bans: ReadonlyArray<readonly [string, number]> };

/** The reducer's answer to an {@linkcode AdminRequest}: an HTTP status and a JSON body. */
export interface AdminAnswer {
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>>;
}

/** A cluster `Members` read: the connection waits for it. */
export interface MembersRequest {
  readonly conn: ConnId;
  readonly room: string;
  readonly cursor: number;
  readonly limit: number;
  readonly ref?: string | undefined;
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
    /** What the cluster counted; absent when Redis could not be reached. */
    result?: PartResult;
  }
  /** Cluster: the answer to `presence_batch`: the room's count and its version; `null` when it failed. */
  | {
    type: "presence_counted";
    now: number;
    room: string;
    counted: { count: number; version: number } | null;
  }
  /** Cluster: the answer to `members_page`; `null` when Redis could not be reached. */
  | {
    type: "members_loaded";
    now: number;
    request: MembersRequest;
    page: { names: string[]; cursor: number; count: number } | null;
  }
  /** The answer to `load_seq`: the room's last `seq` in storage; `null` when the read failed. */
  | { type: "seq_loaded"; now: number; room: string; seq: number | null }
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
  /**
   * An administrator's request; `id` is where the answer goes (effect
   * `admin_reply`), `null` when nobody waits (a bus message, a ban reload).
   */
  | { type: "admin"; now: number; id: number | null; request: AdminRequest }
  | { type: "shutdown"; now: number };

/** A counter the runner keeps for `/metrics`. */
export type Metric = "frames_in" | "errors" | "closes" | "typing";

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
    /** The room whose members these are, for a room frame. */
    room?: string;
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
  /** Single node: read a room's last `seq` from storage; answered by `seq_loaded`. */
  | { type: "load_seq"; room: string }
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
  /** The answer to the `admin` event with this `id`. */
  | { type: "admin_reply"; id: number; answer: AdminAnswer }
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
  /** Cluster: tell the other nodes of a large room's joins and leaves of this tick. */
  | { type: "presence_batch"; batch: PresenceBatch }
  /** Cluster: read a page of a room's members from the cluster. */
  | { type: "members_page"; request: MembersRequest }
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
  }
  /**
   * Cluster: relay a `Typing` to the other nodes with members in its room,
   * or with a connection of its target; nothing comes back.
   */
  | { type: "typing"; notice: TypingNotice };

/** The result of {@linkcode reduce}. */
export type Transition = [ChatState, Effect[]];

/** What every handler works on while one event is reduced: the state and the effects going out. */
export interface Ctx {
  readonly state: ChatState;
  readonly out: Effect[];
}

/** The `Error` that frames still waiting get when the server closes their connection. */
export interface CloseAnswer {
  answer: ErrorCode;
  message: string;
}
