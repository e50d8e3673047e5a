/**
 * The client's public types: its events ({@linkcode ChatEvent}), its
 * connection and send states, the options of {@linkcode ChatClientOptions}
 * and of each request, the acknowledgements, and {@linkcode ChatError}.
 *
 * Types only (and the error class): no socket, no timer, no state. Import
 * them from `chat_client.ts`, which re-exports every one of them.
 *
 * @module
 */
import type { BackoffOptions } from "./backoff.ts";
import { type ClientErrorCode, describeError } from "./error_text.ts";
import type { ErrorBody, HistoryReplyBody, ServerFrame } from "./frames.ts";
import type { TypingPlace } from "./typing_track.ts";

/**
 * Where the client stands:
 * - `idle`: created, {@linkcode ChatClient.connect} not called yet;
 * - `connecting`: a socket is opening (first time or a retry);
 * - `open`: the server's `Welcome` arrived; requests can be sent;
 * - `reconnecting`: the connection dropped; the next attempt is scheduled;
 * - `closed`: {@linkcode ChatClient.close} was called; final.
 */
export type ConnectionState =
  | "idle"
  | "connecting"
  | "open"
  | "reconnecting"
  | "closed";

/** Where a chat message stands; see the `send_state` event. */
export type SendState = "unknown" | "acked" | "failed";

/** Why a `History` frame came: which request it answers. */
export type HistoryReason =
  /** `enter` with `history`. */
  | "enter"
  /** Re-entering after a reconnect, with `since`: what was missed. */
  | "recovery"
  /** A {@linkcode ChatClient.history} request for older messages. */
  | "request";

/**
 * Everything a client reports, as a discriminated union on `type`. One
 * event per server frame (`welcome` … `error`, `unknown` for a frame it
 * cannot read), plus `state` for the connection.
 *
 * Room messages are deduplicated: a `group_chat` is emitted once per `seq`
 * and room, and a `history` event holds only messages not emitted before.
 */
export type ChatEvent =
  | Exclude<ServerFrame, { type: "history" | "error" }>
  | { type: "history"; body: HistoryReplyBody; reason: HistoryReason }
  | {
    type: "error";
    body: ErrorBody;
    /** Whether a request's promise was rejected with it too. */
    handled: boolean;
  }
  | {
    /**
     * A chat message's outcome: `unknown` (sent, not answered yet after a
     * drop, a timeout or `unavailable`: it will be sent again with the same
     * `id`), then `acked` or `failed` (refused for good).
     */
    type: "send_state";
    /** The message's client `id` (the `ref` of its answer). */
    id: string;
    state: SendState;
  }
  | {
    /**
     * Who is typing in a room, or whether the other user of a direct
     * conversation is typing, changed: someone started, stopped, sent a
     * message, left, or their indicator expired. `usernames` is everyone
     * shown typing there now, sorted.
     */
    type: "typers";
    place: TypingPlace;
    usernames: string[];
  }
  | {
    type: "state";
    state: ConnectionState;
    /** Failed attempts since the last good connection. */
    attempt: number;
    /** With `reconnecting`: milliseconds until the next attempt. */
    delayMs?: number;
    /** With `reconnecting`: the close code of the connection that dropped. */
    closeCode?: number;
  };

/** The `type` of a {@linkcode ChatEvent}. */
export type ChatEventType = ChatEvent["type"];

/** The event of one `type`. */
export type ChatEventOf<T extends ChatEventType> = Extract<
  ChatEvent,
  { type: T }
>;

/** A request refused by the server, or lost on the way. */
export class ChatError extends Error {
  /** A server `Error.code`, or one of the client's own codes. */
  readonly code: ClientErrorCode;
  /** The `id` of the request. */
  readonly ref: string | undefined;
  /** The server's own message, naming the field at fault. */
  readonly detail: string | undefined;

  /** Builds an error; `message` is the sentence for people. */
  constructor(code: ClientErrorCode, detail?: string, ref?: string) {
    super(describeError(code, detail));
    this.name = "ChatError";
    this.code = code;
    this.ref = ref;
    this.detail = detail;
  }
}

/** What the `Ack` of a `GroupChat` tells. */
export interface GroupChatAck {
  /** The message's server id. */
  id: string;
  /** Its place in the room. */
  seq: number;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** What the `Ack` of a `PrivateChat` tells. */
export interface PrivateChatAck {
  /** The message's server id. */
  id: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** Options of {@linkcode ChatClient.enter}. */
export interface EnterOptions {
  /**
   * How many recent messages to receive as a `history` event (0 to 100).
   * Only for the first entry: once the client saw a message of the room, it
   * asks with `since` instead.
   */
  history?: number;
  /**
   * The highest `seq` already shown from this room (e.g. before a page
   * reload): the first `Enter` asks with `since` for what came after, as a
   * `history` event with reason `recovery`, instead of `history`. Ignored
   * when the client is already in the room.
   */
  since?: number;
}

/** Options of {@linkcode ChatClient.history}. */
export interface HistoryOptions {
  /** Only messages with a smaller `seq`; without it, the newest. */
  before?: number;
  /** 1 to 100; the server's default is 50. */
  limit?: number;
}

/** The WebSocket constructor the client uses; the global one by default. */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** Options of {@linkcode ChatClient}. */
export interface ChatClientOptions {
  /** The server's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`. */
  url: string | URL;
  /**
   * The name to enter rooms with. With an upgrade token the server's
   * `Welcome.username` replaces it.
   */
  username?: string;
  /** A token: sent as `?token=` at upgrade and with every message. */
  token?: string;
  /** Reconnect after a drop; default `true`. */
  reconnect?: boolean;
  /**
   * Ask for batched delivery (`?batch=1`, see "Batched delivery" in
   * `docs/protocol.md`); default `true`. `Batch` frames are unpacked:
   * listeners see each frame as if it had come alone.
   */
  batch?: boolean;
  /** Reconnect delays; defaults in {@linkcode DEFAULT_BACKOFF}. */
  backoff?: Partial<BackoffOptions>;
  /** How long a request waits for its answer; default 15 s. */
  requestTimeoutMs?: number;
  /** For runtimes without a global `WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Random numbers in [0, 1) for the jitter; `Math.random` by default. */
  random?: () => number;
}

/** A listener of events of type `T`. */
export type ChatListener<T extends ChatEventType> = (
  event: ChatEventOf<T>,
) => void;

/** Options of {@linkcode ChatClient.groupChat} and {@linkcode ChatClient.privateChat}. */
export interface SendOptions {
  /** Told when the outcome becomes unknown, and when it is `acked` or `failed`. */
  onState?: (state: SendState) => void;
}
