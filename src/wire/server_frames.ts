/**
 * The frames the server sends: their types, the body of each, and their
 * encoders. No zod and no I/O, so the web and terminal clients import the
 * same types the server encodes with (`src/client/frames.ts` parses them).
 * Client frames and their validation are in `client_frames.ts`.
 *
 * @module
 */
import type { ErrorCode, LeaveReason } from "./codes.ts";

/** The message types the server sends. */
export const SERVER_TYPES = [
  "Welcome",
  "Presence",
  "PresenceDiff",
  "Members",
  "Enter",
  "Leave",
  "GroupChat",
  "PrivateChat",
  "History",
  "Ack",
  "Error",
  "Typing",
  "Deleted",
] as const;

/**
 * The body of a `Batch` frame (batched delivery, `?batch=1`): two or more
 * server frames, each as it would have come alone, in order. Not a
 * {@linkcode ServerType}: the reducer never sends one; the runner splices it
 * from frames already encoded (`src/runtime/frame_batcher.ts`).
 */
export interface BatchBody {
  frames: { message_type: ServerType; message_body: unknown }[];
}

/** A message type the server sends. */
export type ServerType = typeof SERVER_TYPES[number];

/** A `GroupChat` as stored and sent: the body of the server frame. */
export interface StoredGroupChat {
  id: string;
  seq: number;
  room: string;
  sender_username: string;
  content: string;
  timestamp: number;
}

/** A `PrivateChat` as stored and sent: the body of the server frame. */
export interface StoredPrivateChat {
  id: string;
  sender_username: string;
  target_username: string;
  content: string;
  timestamp: number;
}

/** The limits a server announces in `Welcome`. */
export interface ServerLimits {
  /** The largest frame, in bytes; a larger one closes the connection. */
  max_message_bytes: number;
  /** The longest `content`, in Unicode code points. */
  max_content_chars: number;
  /** The most rooms one connection may be in. */
  max_rooms: number;
  /** Sustained frames per second; 0 is no limit. */
  rate_limit_per_second: number;
  /** Frames that may be sent at once before the rate applies. */
  rate_limit_burst: number;
}

/** The body of `Welcome`, the first frame of every connection. */
export interface WelcomeBody {
  /** The server's name and version. */
  server: string;
  /** This connection's id. */
  connection_id: string;
  /** Whether messages need a token. */
  auth_required: boolean;
  /** Present when an upgrade token already bound the connection. */
  username?: string;
  /** The room of an `Enter` without `room`. */
  default_room: string;
  /** What the server accepts. */
  limits: ServerLimits;
}

/**
 * The body of `Presence`: who is in a room the connection entered. A room
 * with full presence lists every member, sorted, and has only these two
 * fields; a large room (coalesced presence) lists the first page in join
 * order and adds `count`, `more` and `cursor`.
 */
export interface PresenceBody {
  /** The room entered. */
  room: string;
  /** Usernames: every member, sorted; in a large room the first page, in join order. */
  members: string[];
  /** Large room: how many members it has. */
  count?: number;
  /** Large room: more members than `members` lists (ask with `Members`). */
  more?: boolean;
  /** Large room: the `cursor` of a `Members` request for the next page. */
  cursor?: number;
}

/**
 * The body of `PresenceDiff`: a large room's joins and leaves since the
 * last one, sent at most once a second.
 */
export interface PresenceDiffBody {
  /** The room. */
  room: string;
  /** How many members it has now. */
  count: number;
  /** Who joined, at most `PRESENCE_DIFF_NAMES` of them. */
  joined: string[];
  /** How many joined (more than `joined` lists when capped). */
  joined_count: number;
  /** Who left, at most `PRESENCE_DIFF_NAMES` of them. */
  left: string[];
  /** How many left (more than `left` lists when capped). */
  left_count: number;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** The body of a server `Members`: one page of a room's members, in join order. */
export interface MembersPage {
  /** The room. */
  room: string;
  /** Usernames, in join order. */
  members: string[];
  /** How many members the room has. */
  count: number;
  /** More members follow this page. */
  more: boolean;
  /** The `cursor` to ask for the next page with (the last one listed, or the one asked for). */
  cursor: number;
}

/** The body of a server `Enter`: someone joined a room. */
export interface EnterNotice {
  /** The room. */
  room: string;
  /** Who joined. */
  sender_username: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** The body of a server `Leave`: someone left a room. */
export interface LeaveNotice {
  /** The room. */
  room: string;
  /** Who left. */
  sender_username: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
  /**
   * `left` by a `Leave`; `disconnected` when the last connection closed;
   * `token_revoked` / `token_expired` when its token ended it.
   */
  reason: LeaveReason;
}

/** The body of a server `History`: the reply to a `History` request or to `Enter` with `history`/`since`. */
export interface HistoryReplyBody {
  /** The room. */
  room: string;
  /** Oldest first. */
  messages: StoredGroupChat[];
  /** `false` when the kept history did not reach back far enough. */
  complete: boolean;
}

/** The body of `Ack`; chat messages add `id`, `timestamp` and, in rooms, `seq`. */
export interface AckBody {
  /** The `id` of the message it answers. */
  ref: string;
  /** A chat message's server id. */
  id?: string;
  /** A room message's place in the room. */
  seq?: number;
  /** A chat message's time, in milliseconds since the epoch. */
  timestamp?: number;
}

/** The body of `Error`. */
export interface ErrorBody {
  /** What went wrong, as a code of `ERROR_CODES`. */
  code: ErrorCode;
  /** For people, naming the field at fault. */
  message: string;
  /** The `id` of the message it answers, when it had a valid one. */
  ref?: string;
}

/**
 * How long a client shows a `Typing` indicator unless it is renewed
 * (`expires_in_ms`), and how long the server counts it as showing.
 */
export const TYPING_EXPIRES_MS = 6_000;

/**
 * One `Typing` start per room or target per connection is relayed per this
 * interval, at most; a renewal sooner is dropped (counted, acknowledged).
 */
export const TYPING_INTERVAL_MS = 2_000;

/** How often a client that keeps typing sends `Typing` again. */
export const TYPING_RENEW_MS = 3_000;

/**
 * The body of a server `Typing`: `sender_username` is typing (`active`) in
 * `room` or to `target_username` (the receiver), or stopped. A client shows
 * it for `expires_in_ms` (0 when stopped) unless renewed or stopped sooner;
 * never stored. Exactly one of `room` and `target_username` is present.
 */
export type TypingNotice =
  & {
    /** Who is typing. */
    sender_username: string;
    /** `false`: stopped (sent a message, cleared the text, left or went away). */
    active: boolean;
    /** How long to show it, from its arrival; 0 when `active` is false. */
    expires_in_ms: number;
  }
  & (
    | { room: string; target_username?: undefined }
    | { target_username: string; room?: undefined }
  );

/**
 * The body of `Deleted`: an administrator deleted a message of a room; it
 * is gone from history and recovery, and clients remove it from view.
 */
export interface DeletedBody {
  /** The room. */
  room: string;
  /** The deleted message's server id. */
  id: string;
  /** Its `seq` in the room. */
  seq: number;
}

/** The body of each server frame, by `message_type`. */
export interface ServerBodies {
  Welcome: WelcomeBody;
  Presence: PresenceBody;
  PresenceDiff: PresenceDiffBody;
  Members: MembersPage;
  Enter: EnterNotice;
  Leave: LeaveNotice;
  GroupChat: StoredGroupChat;
  PrivateChat: StoredPrivateChat;
  History: HistoryReplyBody;
  Ack: AckBody;
  Error: ErrorBody;
  Typing: TypingNotice;
  Deleted: DeletedBody;
}

/**
 * Encodes one server frame; called once per broadcast, never per recipient.
 * The body is checked against the frame's type ({@linkcode ServerBodies}).
 */
export function encode<K extends ServerType>(
  type: K,
  body: ServerBodies[K],
): string {
  return JSON.stringify({ message_type: type, message_body: body });
}

const quote = JSON.stringify;

/**
 * `encode("GroupChat", message)`, the same text, about twice as fast
 * (`deno task bench:codec`): the busiest frame skips building and walking an
 * object. Strings still go through `JSON.stringify`, so escaping is the same.
 * `message` must be well formed: one from another node is checked by
 * {@linkcode parseStoredGroupChat} first.
 */
export function encodeGroupChat(message: StoredGroupChat): string {
  return '{"message_type":"GroupChat","message_body":{"id":' +
    quote(message.id) + ',"seq":' + message.seq + ',"room":' +
    quote(message.room) + ',"sender_username":' +
    quote(message.sender_username) + ',"content":' + quote(message.content) +
    ',"timestamp":' + message.timestamp + "}}";
}

/** `encode("PrivateChat", message)`, the same text; see {@linkcode encodeGroupChat}. */
export function encodePrivateChat(message: StoredPrivateChat): string {
  return '{"message_type":"PrivateChat","message_body":{"id":' +
    quote(message.id) + ',"sender_username":' +
    quote(message.sender_username) + ',"target_username":' +
    quote(message.target_username) + ',"content":' +
    quote(message.content) + ',"timestamp":' + message.timestamp + "}}";
}
