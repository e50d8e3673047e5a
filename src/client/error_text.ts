/**
 * Every error a chat client can meet, in words a person understands: each
 * code of the server's `ERROR_CODES` and the client's own codes.
 *
 * @module
 */
import type { ErrorCode } from "../wire/codes.ts";

export type { ErrorCode };

/** Codes the client raises itself, never sent by the server. */
export type LocalErrorCode =
  /** The request was sent but the connection dropped before its answer. */
  | "disconnected"
  /** There was no connection to send the request on. */
  | "not_connected"
  /** No answer came within the request timeout. */
  | "timeout"
  /** The client was closed. */
  | "closed";

/** Any code a request of the client can fail with. */
export type ClientErrorCode = ErrorCode | LocalErrorCode;

/** One sentence for each server error code. */
export const SERVER_ERROR_TEXT: { readonly [code in ErrorCode]: string } = {
  invalid_json:
    "The server could not read that message. Reloading the page should fix it.",
  invalid_message: "The server did not accept that message.",
  unknown_type:
    "This app sent something the server does not understand. Reloading the page should fix it.",
  unsupported_frame: "The server only accepts text messages.",
  auth_required:
    "This server needs you to sign in. Paste the access token you were given.",
  invalid_token:
    "Your access token was not accepted: it is unknown, revoked or expired. Ask for a new one.",
  sender_mismatch: "You can only send messages under your own name.",
  username_taken:
    "Someone online is already using that name. Choose another one.",
  not_entered: "Choose a name and join a room first.",
  not_in_room:
    "You are not in that room. Join it again to send or read messages there.",
  room_required: "Choose a room to send your message to.",
  too_many_rooms:
    "You are in as many rooms as this server allows. Leave one to join another.",
  user_not_found: "That person is not online, so the message was not sent.",
  rate_limited:
    "You are sending messages too fast. Wait a moment, then try again.",
  unavailable:
    "The server could not confirm your message just now. It is sent again by itself.",
  inbox_full:
    "That person has too many messages waiting for them already, so this one was not sent. Try again after they have been online.",
  banned:
    "An administrator has banned this name for a while. The message says until when.",
  name_reserved:
    "That name is reserved for the server's own messages. Choose another one.",
};

/** One sentence for each code the client raises itself. */
export const LOCAL_ERROR_TEXT: { readonly [code in LocalErrorCode]: string } = {
  disconnected:
    "The connection dropped before the server confirmed this. If it got through, it will show up once you are back online.",
  not_connected: "You are offline, so this was not sent. Try again shortly.",
  timeout: "The server did not answer in time. Please try again.",
  closed: "The chat was closed.",
};

/** The details worth showing after the sentence: the field at fault. */
function detail(code: string, message: string | undefined): string {
  if (!message) return "";
  if (code === "invalid_message") {
    // "message_body.content: must be 1 to 4000 characters" → the reason.
    const reason = message.replace(/^message_body\./, "");
    const [field, ...rest] = reason.split(": ");
    const text = rest.join(": ");
    if (field === "content" && text) return ` The message ${text}.`;
    if (
      (field === "sender_username" || field === "target_username" ||
        field === "room") && text
    ) {
      return ` Names ${text}.`;
    }
    return ` (${message})`;
  }
  return "";
}

/**
 * The sentence for an error code, with the server's detail where it helps.
 * Unknown codes (from a newer server) get a general sentence and the
 * server's own message.
 *
 * @example
 * ```ts
 * import { describeError } from "./error_text.ts";
 * describeError("username_taken");
 * // "Someone online is already using that name. Choose another one."
 * describeError("invalid_message", "message_body.content: must be 1 to 4000 characters");
 * // "The server did not accept that message. The message must be 1 to 4000 characters."
 * ```
 */
export function describeError(code: string, message?: string): string {
  if (Object.hasOwn(SERVER_ERROR_TEXT, code)) {
    return SERVER_ERROR_TEXT[code as ErrorCode] + detail(code, message);
  }
  if (Object.hasOwn(LOCAL_ERROR_TEXT, code)) {
    return LOCAL_ERROR_TEXT[code as LocalErrorCode];
  }
  return message
    ? `Something went wrong: ${message}`
    : "Something went wrong. Please try again.";
}
