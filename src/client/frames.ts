/**
 * The server frames as typed values, and a parser that turns one text frame
 * into one of them. The bodies are the server's own types
 * (`src/wire/server_frames.ts`). No I/O; runs in browsers, Deno and Node.
 *
 * @module
 */
import type { ErrorCode } from "../wire/codes.ts";
import type {
  AckBody,
  DeletedBody,
  EnterNotice,
  ErrorBody,
  HistoryReplyBody,
  LeaveNotice,
  MembersPage,
  PresenceBody,
  PresenceDiffBody,
  StoredGroupChat,
  StoredPrivateChat,
  TypingNotice,
  WelcomeBody,
} from "../wire/server_frames.ts";

export type { ErrorCode };
export type * from "../wire/server_frames.ts";

/** One server frame, parsed: a discriminated union on `type`. */
export type ServerFrame =
  | { type: "welcome"; body: WelcomeBody }
  | { type: "presence"; body: PresenceBody }
  /** A large room's joins and leaves of the last second, and its count. */
  | { type: "presence_diff"; body: PresenceDiffBody }
  /** One page of a room's members, answering `Members`. */
  | { type: "members"; body: MembersPage }
  | { type: "enter"; body: EnterNotice }
  | { type: "leave"; body: LeaveNotice }
  | { type: "group_chat"; body: StoredGroupChat }
  | { type: "private_chat"; body: StoredPrivateChat }
  | { type: "history"; body: HistoryReplyBody }
  | { type: "ack"; body: AckBody }
  | { type: "error"; body: ErrorBody }
  | { type: "typing"; body: TypingNotice }
  /** An administrator deleted a room's message: remove it from view. */
  | { type: "deleted"; body: DeletedBody }
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

function isStrings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every(isString);
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

function isTypingNotice(value: Fields): boolean {
  return isString(value.sender_username) && typeof value.active === "boolean" &&
    isNumber(value.expires_in_ms) &&
    isString(value.room) !== isString(value.target_username);
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
    case "PresenceDiff":
      return isString(body.room) && isNumber(body.count) &&
          isStrings(body.joined) && isStrings(body.left)
        ? { type: "presence_diff", body: body as unknown as PresenceDiffBody }
        : null;
    case "Members":
      return isString(body.room) && isStrings(body.members) &&
          isNumber(body.count) && isNumber(body.cursor)
        ? { type: "members", body: body as unknown as MembersPage }
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
    case "Typing":
      return isTypingNotice(body)
        ? { type: "typing", body: body as unknown as TypingNotice }
        : null;
    case "Deleted":
      return isString(body.room) && isString(body.id) && isNumber(body.seq)
        ? {
          type: "deleted",
          body: { room: body.room, id: body.id, seq: body.seq },
        }
        : null;
    default:
      return null;
  }
}

/**
 * Parses one text frame from the server into the frames it holds: one, or
 * for a `Batch` (batched delivery, `?batch=1`) each of its `frames` in order.
 * Never throws: what it cannot read becomes `{ type: "unknown" }`, and a
 * `Batch` whose `frames` is not a list is one unknown frame.
 *
 * @example
 * ```ts
 * import { parseServerFrames } from "./frames.ts";
 * const frames = parseServerFrames(
 *   '{"message_type":"Batch","message_body":{"frames":[' +
 *     '{"message_type":"Ack","message_body":{"ref":"c-1"}},' +
 *     '{"message_type":"Ack","message_body":{"ref":"c-2"}}]}}',
 * );
 * console.log(frames.length); // 2
 * ```
 */
export function parseServerFrames(text: string): ServerFrame[] {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return [{ type: "unknown", text }];
  }
  if (
    isObject(frame) && frame.message_type === "Batch" &&
    isObject(frame.message_body)
  ) {
    const inner = frame.message_body.frames;
    if (!Array.isArray(inner)) return [{ type: "unknown", text }];
    return inner.map((one) => fromValue(one, () => JSON.stringify(one)));
  }
  return [fromValue(frame, () => text)];
}

/** One parsed envelope as a frame; `text` gives the text of an unknown one. */
function fromValue(frame: unknown, text: () => string): ServerFrame {
  if (
    !isObject(frame) || !isString(frame.message_type) ||
    !isObject(frame.message_body)
  ) {
    return { type: "unknown", text: text() };
  }
  return check(frame.message_body, frame.message_type) ??
    { type: "unknown", text: text() };
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
  return fromValue(frame, () => text);
}
