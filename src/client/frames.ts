/**
 * The server frames as typed values, and a parser that turns one text frame
 * into one of them. No I/O; runs in browsers, Deno and Node.
 *
 * @module
 */
import type { ErrorCode } from "../wire/codes.ts";
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";

export type { ErrorCode, StoredGroupChat, StoredPrivateChat };

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

/** The body of `Presence`: who is in a room the connection entered. */
export interface PresenceBody {
  /** The room entered. */
  room: string;
  /** Usernames, sorted. */
  members: string[];
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
  reason: "left" | "disconnected" | "token_revoked" | "token_expired";
}

/** The body of a server `History`. */
export interface HistoryBody {
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

/** One server frame, parsed: a discriminated union on `type`. */
export type ServerFrame =
  | { type: "welcome"; body: WelcomeBody }
  | { type: "presence"; body: PresenceBody }
  | { type: "enter"; body: EnterNotice }
  | { type: "leave"; body: LeaveNotice }
  | { type: "group_chat"; body: StoredGroupChat }
  | { type: "private_chat"; body: StoredPrivateChat }
  | { type: "history"; body: HistoryBody }
  | { type: "ack"; body: AckBody }
  | { type: "error"; body: ErrorBody }
  /** Not JSON, not an envelope, or a type or shape this client does not know. */
  | { type: "unknown"; text: string };

type Fields = Record<string, unknown>;

function isObject(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isString(value: unknown): value is string {
  return typeof value === "string";
}

function isNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

function isGroupChat(value: unknown): value is StoredGroupChat {
  return isObject(value) && isString(value.id) && isNumber(value.seq) &&
    isString(value.room) && isString(value.sender_username) &&
    isString(value.content) && isNumber(value.timestamp);
}

function isPrivateChat(value: unknown): value is StoredPrivateChat {
  return isObject(value) && isString(value.id) &&
    isString(value.sender_username) && isString(value.target_username) &&
    isString(value.content) && isNumber(value.timestamp);
}

function check(body: Fields, type: string): ServerFrame | null {
  switch (type) {
    case "Welcome":
      return isString(body.connection_id) && isString(body.default_room) &&
          typeof body.auth_required === "boolean" && isObject(body.limits)
        ? { type: "welcome", body: body as unknown as WelcomeBody }
        : null;
    case "Presence":
      return isString(body.room) && Array.isArray(body.members) &&
          body.members.every(isString)
        ? { type: "presence", body: body as unknown as PresenceBody }
        : null;
    case "Enter":
      return isString(body.room) && isString(body.sender_username)
        ? { type: "enter", body: body as unknown as EnterNotice }
        : null;
    case "Leave":
      return isString(body.room) && isString(body.sender_username)
        ? { type: "leave", body: body as unknown as LeaveNotice }
        : null;
    case "GroupChat":
      return isGroupChat(body) ? { type: "group_chat", body } : null;
    case "PrivateChat":
      return isPrivateChat(body) ? { type: "private_chat", body } : null;
    case "History":
      return isString(body.room) && Array.isArray(body.messages) &&
          body.messages.every(isGroupChat)
        ? {
          type: "history",
          body: {
            room: body.room,
            messages: body.messages,
            complete: body.complete !== false,
          },
        }
        : null;
    case "Ack":
      return isString(body.ref)
        ? { type: "ack", body: body as unknown as AckBody }
        : null;
    case "Error":
      return isString(body.code)
        ? {
          type: "error",
          body: {
            code: body.code as ErrorCode,
            message: isString(body.message) ? body.message : "",
            ...(isString(body.ref) ? { ref: body.ref } : {}),
          },
        }
        : null;
    default:
      return null;
  }
}

/**
 * Parses one text frame from the server. Never throws: anything it cannot
 * read becomes `{ type: "unknown" }`.
 *
 * @example
 * ```ts
 * import { parseServerFrame } from "./frames.ts";
 * const frame = parseServerFrame(
 *   '{"message_type":"Ack","message_body":{"ref":"c-1"}}',
 * );
 * if (frame.type === "ack") console.log(frame.body.ref); // "c-1"
 * ```
 */
export function parseServerFrame(text: string): ServerFrame {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return { type: "unknown", text };
  }
  if (
    !isObject(frame) || !isString(frame.message_type) ||
    !isObject(frame.message_body)
  ) {
    return { type: "unknown", text };
  }
  return check(frame.message_body, frame.message_type) ??
    { type: "unknown", text };
}
