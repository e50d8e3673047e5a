/**
 * The one table of error codes and close codes, shared by the reducer, the
 * runner, the docs and the tests. A code is added here or nowhere.
 *
 * @module
 */

/** Every `Error.code` the server sends, with when it is sent. */
export const ERROR_CODES = {
  invalid_json: "the frame is not a JSON object",
  invalid_message:
    "a field is missing, of the wrong type, or out of bounds; the message names the field",
  unknown_type: "message_type is not one of the client types",
  unsupported_frame: "a binary frame",
  auth_required: "authentication is on and the message has no token",
  invalid_token: "the token is unknown, revoked or expired",
  sender_mismatch: "sender_username is not the connection's username",
  username_taken: "another live connection holds that username",
  not_entered: "the connection has no username yet (send Enter first)",
  not_in_room:
    "GroupChat, Leave, History or Typing for a room the connection is not in",
  room_required:
    "room omitted while the connection is in several rooms, or in none",
  too_many_rooms: "more than MAX_ROOMS_PER_CONNECTION rooms",
  user_not_found:
    "PrivateChat (or Typing) to a username with no live connection (and no offline delivery for it)",
  rate_limited:
    "more messages than the connection's rate allows; the message is dropped",
  unavailable:
    "storage or Redis failed: the message was not stored, or its outcome is unknown; send it again with the same id",
  inbox_full:
    "PrivateChat to an offline user who already has MAX_OFFLINE_MESSAGES waiting; the message is not stored",
  banned:
    "the username is banned by an administrator until the time the message names (Enter, or a token of that user)",
  name_reserved:
    "Enter with a username reserved for the server (`system`, the sender of administrators' messages)",
} as const;

/** A code of {@linkcode ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Every WebSocket close code the server uses, with its reason text. */
export const CLOSE_CODES = {
  /** The server shuts down. */
  going_away: { code: 1001, reason: "server shutting down" },
  /** Too many consecutive errors, or a slow consumer. */
  policy: { code: 1008, reason: "policy violation" },
  /** The connection's token was revoked. */
  token_revoked: { code: 1008, reason: "token revoked" },
  /** The connection's token expired. */
  token_expired: { code: 1008, reason: "token expired" },
  /** An administrator kicked the user (`POST /api/users/<name>/kick`). */
  kicked: { code: 1008, reason: "kicked by an administrator" },
  /** An administrator banned the user (`POST /api/users/<name>/ban`). */
  banned: { code: 1008, reason: "banned by an administrator" },
  /** A frame over `MAX_MESSAGE_BYTES`. */
  too_big: { code: 1009, reason: "message too big" },
  /** The server is overloaded. */
  try_again_later: { code: 1013, reason: "server overloaded" },
} as const;

/** A name of {@linkcode CLOSE_CODES}. */
export type CloseName = keyof typeof CLOSE_CODES;

/** Every `Leave.reason` the server sends, with when it is sent. */
export const LEAVE_REASONS = {
  left: "the user sent Leave (their last connection in the room)",
  disconnected: "the user's last connection in the room closed",
  token_revoked:
    "the token of the user's last connection in the room was revoked; the connection was closed",
  token_expired:
    "the token of the user's last connection in the room expired; the connection was closed",
  kicked:
    "an administrator kicked the user: every connection of the user left its rooms and was closed",
  banned:
    "an administrator banned the user: every connection of the user left its rooms and was closed",
} as const;

/** A reason of {@linkcode LEAVE_REASONS}. */
export type LeaveReason = keyof typeof LEAVE_REASONS;
