/**
 * Client frames and expected server frames for the reducer tables
 * (`tests/unit/reducer*_test.ts`): builders for what a client sends, and
 * the frames a connection should get, matched with patterns and `ANY`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { ErrorCode, LeaveReason } from "../../src/wire/codes.ts";
import type { StoredGroupChat } from "../../src/wire/server_frames.ts";

/** The time of everything before the event under test. */
export const T0 = 1_700_000_000_000;
/** The time of the event under test. */
export const WHEN_AT = T0 + 250;
/** The fresh id of the frame under test. */
export const WHEN_ID = "srv-when";

/** A server frame as a connection receives it. */
export type Frame = readonly [type: string, body: Body];

// ---------------------------------------------------------------------------
// Client frames

/** A frame body or envelope, as the tests build it. */
export type Body = Record<string, unknown>;

/** A client frame of `type` with `body`, plus `envelope` fields (`id`, `token`). */
export function message(type: string, body: Body, envelope: Body = {}): Body {
  return { message_type: type, message_body: body, ...envelope };
}

/** An `Enter` from `user`. */
export function enter(
  user: string,
  body: Body = {},
  envelope: Body = {},
): Body {
  return message("Enter", { sender_username: user, ...body }, envelope);
}

/** A `Leave` from `user`. */
export function leave(
  user: string,
  body: Body = {},
  envelope: Body = {},
): Body {
  return message("Leave", { sender_username: user, ...body }, envelope);
}

/** A `GroupChat` from `user`. */
export function say(
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

/** A `PrivateChat` from `user` to `target`. */
export function whisper(
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

/** A `History` request for `room`. */
export function askHistory(
  room: string,
  body: Body = {},
  envelope: Body = {},
): Body {
  return message("History", { room, ...body }, envelope);
}

/** The envelope of a message with a client id. */
export function withId(id: string): Body {
  return { id };
}

// ---------------------------------------------------------------------------
// Expected frames

/** Matches any value that is present. */
export const ANY = Symbol("any value");

/** The `Presence` frame of `room` with `members`. */
export function presence(room: string, members: string[]): Frame {
  return ["Presence", { room, members }];
}

/** The `Enter` frame a room's members get when `user` enters. */
export function entered(
  room: string,
  user: string,
  timestamp = WHEN_AT,
): Frame {
  return ["Enter", { room, sender_username: user, timestamp }];
}

/** The `Leave` frame a room's members get when `user` leaves. */
export function left(
  room: string,
  user: string,
  reason: LeaveReason,
  timestamp = WHEN_AT,
): Frame {
  return ["Leave", { room, sender_username: user, timestamp, reason }];
}

/** An `Ack` of `ref`, with `body`. */
export function ack(ref: string, body: Body = {}): Frame {
  return ["Ack", { ref, ...body }];
}

/** An `Error`; `message` may be a pattern the text must match. */
export function error(
  code: ErrorCode,
  ref?: string,
  message: RegExp | typeof ANY = ANY,
): Frame {
  return [
    "Error",
    ref === undefined ? { code, message } : { code, message, ref },
  ];
}

/** The fields of a `GroupChat` under test; the rest default to the event under test. */
export interface ChatFields {
  seq: number;
  content: string;
  sender?: string;
  room?: string;
  id?: string;
  timestamp?: number;
}

/** The stored `GroupChat` of `fields`. */
export function group(fields: ChatFields): StoredGroupChat {
  return {
    id: fields.id ?? WHEN_ID,
    seq: fields.seq,
    room: fields.room ?? "general",
    sender_username: fields.sender ?? "alice",
    content: fields.content,
    timestamp: fields.timestamp ?? WHEN_AT,
  };
}

/** The `GroupChat` frame of `fields`. */
export function groupFrame(fields: ChatFields): Frame {
  return ["GroupChat", { ...group(fields) }];
}

/** The `Ack` of the `GroupChat` of `fields`. */
export function groupAck(ref: string, fields: ChatFields): Frame {
  const stored = group(fields);
  return ack(ref, {
    id: stored.id,
    seq: stored.seq,
    timestamp: stored.timestamp,
  });
}

/** The `PrivateChat` frame from `sender` to `target`. */
export function privateFrame(
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
export function conform(actual: unknown, expected: unknown): unknown {
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

/** Whether `value` is a plain record. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Asserts `actual` frames match `expected` (patterns and `ANY` allowed). */
export function assertFrames(
  actual: readonly Frame[],
  expected: readonly Frame[],
  label: string,
): void {
  assert.deepEqual(conform(actual, expected), expected, label);
}
