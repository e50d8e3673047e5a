/**
 * The frames that come in from outside: the client frames, their shapes and
 * their validation (zod), and the stored messages another cluster node sends.
 * Pure functions only; `docs/protocol.md` is the prose. What the server
 * sends is in `server_frames.ts` (zod-free, shared with the clients).
 *
 * @module
 */
import { z } from "zod";
import type { ErrorCode } from "./codes.ts";
import type {
  StoredGroupChat,
  StoredPrivateChat,
  TypingNotice,
} from "./server_frames.ts";
import {
  isSingleScript,
  NAME_PATTERN,
  NAME_RULE,
  SCRIPT_RULE,
} from "./names.ts";

export { NAME_PATTERN };

/** The message types a client may send. */
export const CLIENT_TYPES = [
  "Enter",
  "Leave",
  "GroupChat",
  "PrivateChat",
  "History",
  "Typing",
  "Members",
] as const;

/** A message type a client may send. */
export type ClientType = typeof CLIENT_TYPES[number];

/** The most messages a `History` frame or a `history: K` asks for. */
export const MAX_HISTORY_LIMIT = 100;

/** The `limit` of a `History` request that names none. */
export const DEFAULT_HISTORY_LIMIT = 50;

/** Limits that validation depends on. */
export interface ProtocolLimits {
  /** Longest `content`, in Unicode code points. */
  readonly maxContentChars: number;
}

/** A validated `Enter` body. */
export interface EnterBody {
  sender_username: string;
  room?: string | undefined;
  history?: number | undefined;
  since?: number | undefined;
}

/** A validated `Leave` body. */
export interface LeaveBody {
  sender_username: string;
  room?: string | undefined;
}

/** A validated `GroupChat` body. */
export interface GroupChatBody {
  sender_username: string;
  content: string;
  room?: string | undefined;
}

/** A validated `PrivateChat` body. */
export interface PrivateChatBody {
  sender_username: string;
  target_username: string;
  content: string;
}

/** A validated `History` request body (the reply is `HistoryReplyBody`). */
export interface HistoryRequestBody {
  room: string;
  before?: number | undefined;
  limit: number;
}

/**
 * A validated `Typing` body: the sender is typing (`active`, the default) or
 * stopped, in `room` (or the connection's only room) or to
 * `target_username`; never both.
 */
export interface TypingBody {
  sender_username: string;
  room?: string | undefined;
  target_username?: string | undefined;
  active: boolean;
}

/** The most names a `Members` request asks for. */
export const MAX_MEMBERS_LIMIT = 500;

/** The `limit` of a `Members` request that names none. */
export const DEFAULT_MEMBERS_LIMIT = 100;

/** A validated `Members` request body (the reply is `MembersPage`). */
export interface MembersRequestBody {
  room: string;
  /** The page starts after this join number; 0 is the start. */
  cursor: number;
  limit: number;
}

/** A client frame that passed validation. */
export type ClientMessage =
  | { type: "Enter"; body: EnterBody; token: unknown; ref?: string }
  | { type: "Leave"; body: LeaveBody; token: unknown; ref?: string }
  | { type: "GroupChat"; body: GroupChatBody; token: unknown; ref?: string }
  | {
    type: "PrivateChat";
    body: PrivateChatBody;
    token: unknown;
    ref?: string;
  }
  | { type: "History"; body: HistoryRequestBody; token: unknown; ref?: string }
  | { type: "Typing"; body: TypingBody; token: unknown; ref?: string }
  | { type: "Members"; body: MembersRequestBody; token: unknown; ref?: string };

/** Why a client frame was refused, with the `ref` to answer it with. */
export interface DecodeError {
  code: ErrorCode;
  message: string;
  ref?: string;
}

/** The outcome of {@linkcode Decoder.decode}. */
export type DecodeResult =
  | { ok: true; message: ClientMessage }
  | { ok: false; error: DecodeError };

/** Decodes and validates client frames under fixed limits. */
export interface Decoder {
  /** Parses one text frame. Never throws. */
  decode(text: string): DecodeResult;
}

function codePointLength(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/**
 * Whether `text` holds a lone surrogate: one half of a UTF-16 pair without
 * the other. JSON can carry one (`"\ud800"`) but UTF-8, and so the database,
 * cannot: it would come back as U+FFFD, so such content is refused at send.
 */
export function hasLoneSurrogate(text: string): boolean {
  return !text.isWellFormed();
}

/** The `invalid_message` text for content with a lone surrogate. */
export const LONE_SURROGATE =
  "must not contain a lone surrogate (\ud800 to \udfff without its pair)";

const name = z.string().regex(NAME_PATTERN, NAME_RULE);
/** The username an `Enter` binds: a name of one script (TS #39). */
const username = name.refine(isSingleScript, SCRIPT_RULE);
/** A whole number from `min` to `max`, whose error states those bounds. */
function bounded(min: number, max: number) {
  // The range first: z.int() alone reports 1e308 against 2^53 - 1.
  return z.number().min(min).max(max).pipe(z.int());
}

/**
 * Anything but whitespace, invisible format characters (U+200B, U+202E,
 * ...), default-ignorable code points (the Hangul fillers U+3164, U+115F,
 * U+1160, U+FFA0, variation selectors, ...) and the blank braille pattern
 * U+2800, which fonts draw as nothing.
 */
const VISIBLE =
  /[^\p{White_Space}\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]/u;

/**
 * Whether `content` shows nothing: empty once whitespace and invisible
 * format characters are removed. Such content is refused.
 */
export function isBlankContent(content: string): boolean {
  return !VISIBLE.test(content);
}
const seq = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const ref = z.string().min(1, "must be 1 to 64 characters").max(
  64,
  "must be 1 to 64 characters",
);

/** `content` that storage gives back exactly as sent. */
function storable(content: z.ZodType<string>): z.ZodType<string> {
  return content.refine((text) => !hasLoneSurrogate(text), LONE_SURROGATE);
}

function bodySchemas(limits: ProtocolLimits) {
  const max = limits.maxContentChars;
  const content = z.string().refine(
    (text) =>
      text.length > 0 &&
      (text.length <= max || codePointLength(text) <= max),
    `must be 1 to ${max} characters`,
  ).refine(
    (text) => !isBlankContent(text),
    "must contain something visible, not only spaces or invisible characters",
  );
  return {
    Enter: z.object({
      sender_username: username,
      room: name.optional(),
      history: bounded(0, MAX_HISTORY_LIMIT).optional(),
      since: seq.optional(),
    }),
    Leave: z.object({ sender_username: name, room: name.optional() }),
    GroupChat: z.object({
      sender_username: name,
      content: storable(content),
      room: name.optional(),
    }),
    PrivateChat: z.object({
      sender_username: name,
      target_username: name,
      content: storable(content),
    }),
    History: z.object({
      room: name,
      before: seq.optional(),
      limit: bounded(1, MAX_HISTORY_LIMIT).default(
        DEFAULT_HISTORY_LIMIT,
      ),
    }),
    Typing: z.object({
      sender_username: name,
      room: name.optional(),
      target_username: name.optional(),
      active: z.boolean().default(true),
    }).refine(
      (body) => body.room === undefined || body.target_username === undefined,
      "give room or target_username, not both",
    ),
    Members: z.object({
      room: name,
      cursor: seq.default(0),
      limit: bounded(1, MAX_MEMBERS_LIMIT).default(DEFAULT_MEMBERS_LIMIT),
    }),
  } as const;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = ["message_body", ...issue.path.map(String)].join(".");
  if (issue.code === "invalid_type" && issue.input === undefined) {
    return `${path}: required`;
  }
  if (issue.code === "invalid_type") {
    return `${path}: must be ${
      issue.expected === "int" || issue.expected === "number"
        ? "an integer"
        : `a ${issue.expected}`
    }`;
  }
  if (issue.code === "too_small" || issue.code === "too_big") {
    const bounds = issue as { minimum?: unknown; maximum?: unknown };
    const limit = issue.code === "too_small"
      ? `at least ${bounds.minimum}`
      : `at most ${bounds.maximum}`;
    return `${path}: must be ${limit}`;
  }
  return `${path}: ${issue.message}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Builds a {@linkcode Decoder} for the given limits. */
export function createDecoder(limits: ProtocolLimits): Decoder {
  const schemas = bodySchemas(limits);
  const types = new Set<string>(CLIENT_TYPES);
  return {
    decode(text: string): DecodeResult {
      let frame: unknown;
      try {
        frame = JSON.parse(text);
      } catch {
        return fail("invalid_json", "the frame is not valid JSON");
      }
      if (!isPlainObject(frame)) {
        return fail("invalid_json", "the frame is not a JSON object");
      }
      const id = frame.id;
      let reference: string | undefined;
      if (id !== undefined) {
        const checked = ref.safeParse(id);
        if (!checked.success) {
          return fail(
            "invalid_message",
            "id: must be a string of 1 to 64 characters",
          );
        }
        reference = checked.data;
      }
      const type = frame.message_type;
      if (typeof type !== "string") {
        return fail(
          "invalid_message",
          type === undefined
            ? "message_type: required"
            : "message_type: must be a string",
          reference,
        );
      }
      if (!types.has(type)) {
        return fail(
          "unknown_type",
          `message_type: '${type.slice(0, 40)}' is not one of ${
            CLIENT_TYPES.join(", ")
          }`,
          reference,
        );
      }
      const body = frame.message_body;
      if (!isPlainObject(body)) {
        return fail(
          "invalid_message",
          body === undefined
            ? "message_body: required"
            : "message_body: must be an object",
          reference,
        );
      }
      const parsed = schemas[type as ClientType].safeParse(body, {
        reportInput: true,
      });
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return fail(
          "invalid_message",
          issue ? describeIssue(issue) : "message_body: invalid",
          reference,
        );
      }
      const message = {
        type,
        body: parsed.data,
        token: frame.token,
      } as ClientMessage;
      if (reference !== undefined) message.ref = reference;
      return { ok: true, message };
    },
  };
}

function fail(code: ErrorCode, message: string, ref?: string): DecodeResult {
  return {
    ok: false,
    error: ref === undefined ? { code, message } : { code, message, ref },
  };
}

const storedGroupChat = z.object({
  id: z.string(),
  seq: z.number().int().nonnegative(),
  room: z.string(),
  sender_username: z.string(),
  content: z.string(),
  timestamp: z.number(),
});

const storedPrivateChat = z.object({
  id: z.string(),
  sender_username: z.string(),
  target_username: z.string(),
  content: z.string(),
  timestamp: z.number(),
});

const typingNotice = z.object({
  sender_username: z.string(),
  room: z.string().optional(),
  target_username: z.string().optional(),
  active: z.boolean(),
  expires_in_ms: z.number().int().nonnegative(),
}).refine((notice) =>
  (notice.room === undefined) !== (notice.target_username === undefined)
);

/**
 * A {@linkcode TypingNotice} from another node, with exactly its fields (a
 * room or a target, not both); `null` when it is not one.
 */
export function parseTypingNotice(value: unknown): TypingNotice | null {
  const parsed = typingNotice.safeParse(value);
  if (!parsed.success) return null;
  const { room, target_username, ...rest } = parsed.data;
  return room === undefined
    ? { ...rest, target_username: target_username as string }
    : { ...rest, room };
}

/**
 * A {@linkcode StoredGroupChat} from outside this process (another node),
 * with exactly its fields; `null` when a field is missing or of another type.
 */
export function parseStoredGroupChat(value: unknown): StoredGroupChat | null {
  const parsed = storedGroupChat.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/** A {@linkcode StoredPrivateChat} from outside; see {@linkcode parseStoredGroupChat}. */
export function parseStoredPrivateChat(
  value: unknown,
): StoredPrivateChat | null {
  const parsed = storedPrivateChat.safeParse(value);
  return parsed.success ? parsed.data : null;
}
