/**
 * A typed client for the chat server's WebSocket protocol. It uses only web
 * platform APIs (`WebSocket`, timers), so the same module runs in browsers,
 * in Deno and in Node 22 or later.
 *
 * Why this file is long: the `ChatClient` class is one
 * state machine (connection, rooms, requests in flight, resends) whose
 * handlers all read and change the same private fields; splitting its
 * methods across files would mean exposing that state.
 *
 * - one typed send helper per client message, each returning a promise that
 *   resolves on the message's `Ack` and rejects with a {@linkcode ChatError}
 *   on its `Error` (matched by `id`/`ref`, generated for you);
 * - every server frame is parsed into a typed {@linkcode ChatEvent};
 * - when the connection drops it reconnects with jittered exponential
 *   backoff and enters its rooms again with `since` set to the last `seq` it
 *   saw in each room, so no message is missed; messages are deduplicated by
 *   `seq` per room, so none is shown twice;
 * - a chat message whose outcome is unknown (the connection dropped, no
 *   answer in time, or `unavailable`) is sent again with the same `id`
 *   until the server answers it: the server stores an `id` once per user,
 *   so a resend is never a duplicate. A `send_state` event tells when a
 *   message's outcome is unknown and when it is settled.
 *
 * @example
 * ```ts
 * import { ChatClient } from "./chat_client.ts";
 *
 * const client = new ChatClient({ url: "ws://127.0.0.1:8080/ws", username: "alice" });
 * client.on("group_chat", ({ body }) => {
 *   console.log(`[${body.room}] ${body.sender_username}: ${body.content}`);
 * });
 * await client.connect();
 * await client.enter("general", { history: 20 });
 * const { seq } = await client.groupChat("general", "hello");
 * await client.close();
 * ```
 *
 * Typing indicators: {@linkcode ChatClient.typing} (call it on every
 * keystroke; it sends at most one `Typing` every 3 seconds) and the
 * `typers` event with {@linkcode ChatClient.typers}, whose indicators
 * expire by themselves.
 *
 * The public types live in `client_types.ts`, the bookkeeping of requests
 * in flight in `pending.ts`, the per-room tracking in `room_track.ts`,
 * typing indicators in `typing_track.ts` and
 * the event listeners in `listeners.ts`;
 * this module re-exports every public name, so import from here.
 *
 * @module
 */
import { NAME_PATTERN, usernameProblem } from "../wire/names.ts";
import {
  backoffDelay,
  type BackoffOptions,
  DEFAULT_BACKOFF,
} from "./backoff.ts";
import type { LocalErrorCode } from "./error_text.ts";
import {
  type ChatClientOptions,
  ChatError,
  type ChatEvent,
  type ChatEventType,
  type ChatListener,
  type ConnectionState,
  type EnterOptions,
  type GroupChatAck,
  type HistoryOptions,
  type PrivateChatAck,
  type SendOptions,
  type SendState,
  type WebSocketConstructor,
} from "./client_types.ts";
import {
  type Deferred,
  deferred,
  MAX_RESEND_DELAY_MS,
  type Pending,
  randomId,
  type Resend,
  type Timer,
} from "./pending.ts";
import {
  type HistoryExpectation,
  maxSeq,
  type RoomTrack,
} from "./room_track.ts";
import { Listeners } from "./listeners.ts";
import { type TypingPlace, TypingTrack } from "./typing_track.ts";
import {
  type AckBody,
  type DeletedBody,
  type EnterNotice,
  type ErrorBody,
  type HistoryReplyBody,
  type LeaveNotice,
  type MembersPage,
  parseServerFrames,
  type PresenceBody,
  type PresenceDiffBody,
  type ServerFrame,
  type StoredGroupChat,
  type StoredPrivateChat,
  type TypingNotice,
  type WelcomeBody,
} from "./frames.ts";

export type { TypingPlace };
export type {
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
};
export type { BackoffOptions } from "./backoff.ts";
export type {
  ClientErrorCode,
  ErrorCode,
  LocalErrorCode,
} from "./error_text.ts";

export { NAME_PATTERN, usernameProblem };
export { ChatError };
export type {
  ChatClientOptions,
  ChatEvent,
  ChatEventOf,
  ChatEventType,
  ChatListener,
  ConnectionState,
  EnterOptions,
  GroupChatAck,
  HistoryOptions,
  HistoryReason,
  PrivateChatAck,
  SendOptions,
  SendState,
  WebSocketConstructor,
} from "./client_types.ts";

/** Whether the server would take `name` as a room or a `target_username`. */
export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/** `WebSocket.CLOSED`, without needing the global. */
const CLOSED = 3;

/** The close code the client uses when it drops a connection on purpose. */
const RETRY_CLOSE_CODE = 4000;

/**
 * A chat connection that survives drops. Create it, register listeners with
 * {@linkcode ChatClient.on}, call {@linkcode ChatClient.connect}, then enter
 * rooms and send. {@linkcode ChatClient.close} ends it for good.
 */
export class ChatClient {
  #url: URL;
  #username: string | undefined;
  #token: string | undefined;
  #reconnect: boolean;
  #backoff: BackoffOptions;
  #timeoutMs: number;
  #WebSocket: WebSocketConstructor;
  #random: () => number;
  #batch: boolean;

  #state: ConnectionState = "idle";
  #socket: WebSocket | null = null;
  #welcome: WelcomeBody | undefined;
  /** The last `Members` page, for the `Ack` right behind it. */
  #membersPage: MembersPage | undefined;
  #attempt = 0;
  #retryTimer: Timer | undefined;
  #listeners = new Listeners();
  #rooms = new Map<string, RoomTrack>();
  #pending = new Map<string, Pending>();
  #connectWaiters: Deferred<WelcomeBody>[] = [];
  #prefix: string;
  #counter = 0;
  #typing = new TypingTrack((place, usernames) =>
    this.#emit({ type: "typers", place, usernames })
  );
  /** Ids of `Typing` frames sent, whose answers are not shown as errors. */
  #typingIds = new Set<string>();

  /** Sets the client up; nothing is sent before {@linkcode ChatClient.connect}. */
  constructor(options: ChatClientOptions) {
    this.#url = new URL(options.url);
    this.#username = options.username;
    this.#token = options.token;
    this.#reconnect = options.reconnect ?? true;
    this.#batch = options.batch ?? true;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#timeoutMs = options.requestTimeoutMs ?? 15_000;
    const ctor = options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) {
      throw new TypeError(
        "no WebSocket in this runtime: pass options.WebSocket",
      );
    }
    this.#WebSocket = ctor;
    this.#random = options.random ?? Math.random;
    // Ids are idempotency keys for a day: unique per client, whatever the page.
    this.#prefix = `c${randomId()}`;
  }

  /** Where the client stands. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The last `Welcome`, once one arrived. */
  get welcome(): WelcomeBody | undefined {
    return this.#welcome;
  }

  /** The name used as `sender_username`. */
  get username(): string | undefined {
    return this.#username;
  }

  /** Changes the name; takes effect with the next `Enter` of a new connection. */
  set username(name: string | undefined) {
    this.#username = name;
  }

  /** The rooms the client is in (or entering), in the order entered. */
  get rooms(): string[] {
    return [...this.#rooms.keys()];
  }

  /**
   * The members of a room the client is in, sorted (`order: "known"`: in
   * the order the client learned of them, a large room's pages in join
   * order); in a large room, the ones known so far (see
   * {@linkcode ChatClient.loadMembers}).
   */
  members(room: string, options: { order?: "name" | "known" } = {}): string[] {
    const known = [...(this.#rooms.get(room)?.members ?? [])];
    return options.order === "known" ? known : known.sort();
  }

  /** How many members a room has (a large room's count, from the server). */
  memberCount(room: string): number {
    const track = this.#rooms.get(room);
    return track?.count ?? track?.members.size ?? 0;
  }

  /**
   * Whether a room is large (coalesced presence: a count, `presence_diff`
   * events, members loaded a page at a time).
   */
  isLarge(room: string): boolean {
    return this.#rooms.get(room)?.count !== undefined;
  }

  /** Whether a large room has members not loaded yet. */
  hasMoreMembers(room: string): boolean {
    return this.#rooms.get(room)?.more ?? false;
  }

  /**
   * Loads the next page of a room's members (after the ones loaded so far);
   * they join {@linkcode ChatClient.members}. Resolves with the page.
   */
  loadMembers(room: string, limit?: number): Promise<MembersPage> {
    const track = this.#rooms.get(room);
    const body: Record<string, unknown> = {
      room,
      cursor: track?.cursor ?? 0,
    };
    if (limit !== undefined) body.limit = limit;
    return this.#request<MembersPage>(
      "Members",
      body,
      undefined,
      (_id, deferred, timer) => ({ kind: "members", room, deferred, timer }),
    );
  }

  /** The highest `seq` seen in a room, the `since` of the next recovery. */
  lastSeq(room: string): number | undefined {
    return this.#rooms.get(room)?.lastSeq;
  }

  /**
   * Changes the token for the next connection (`undefined` removes it).
   * Call {@linkcode ChatClient.reconnectNow} with `force` to use it at once.
   */
  setToken(token: string | undefined): void {
    this.#token = token;
  }

  /**
   * Registers a listener for one event type, or `"*"` for all; returns a
   * function that removes it.
   */
  on<T extends ChatEventType>(type: T, listener: ChatListener<T>): () => void;
  /** Registers a listener for every event. */
  on(type: "*", listener: (event: ChatEvent) => void): () => void;
  on(type: string, listener: (event: never) => void): () => void {
    return this.#listeners.add(type, listener as (event: ChatEvent) => void);
  }

  /**
   * Opens the connection (once; later calls only wait) and resolves with the
   * server's `Welcome`. Keeps retrying with backoff until it gets one, unless
   * `reconnect` is off; rejects when the client is closed first.
   */
  connect(): Promise<WelcomeBody> {
    if (this.#state === "closed") {
      return Promise.reject(new ChatError("closed"));
    }
    if (this.#state === "open" && this.#welcome) {
      return Promise.resolve(this.#welcome);
    }
    const { promise, resolve, reject } = deferred<WelcomeBody>();
    this.#connectWaiters.push({ resolve, reject });
    if (this.#state === "idle") this.#open();
    return promise;
  }

  /**
   * Retries at once instead of waiting for the backoff. With `force`, also
   * drops an open connection and opens a new one (e.g. after
   * {@linkcode ChatClient.setToken}).
   */
  reconnectNow(options: { force?: boolean } = {}): void {
    if (this.#state === "closed") return;
    if (this.#state === "idle") {
      this.#open();
      return;
    }
    if (this.#state === "reconnecting") {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#open();
      return;
    }
    if (options.force && this.#socket) {
      const old = this.#socket;
      this.#socket = null; // its close event is ignored from here on
      old.close(RETRY_CLOSE_CODE, "reconnecting");
      this.#forget();
      this.#open();
    }
  }

  /**
   * Enters a room, and keeps it entered across reconnects until
   * {@linkcode ChatClient.leave}. Resolves on the `Ack`; when offline, once
   * the client is back and the room entered. Rejects with a
   * {@linkcode ChatError} (e.g. `username_taken`), and then the room is
   * forgotten.
   */
  enter(room: string, options: EnterOptions = {}): Promise<AckBody> {
    if (this.#state === "closed") {
      return Promise.reject(new ChatError("closed"));
    }
    const { promise, resolve, reject } = deferred<AckBody>();
    let track = this.#rooms.get(room);
    if (!track) {
      track = {
        history: options.history,
        lastSeq: options.since,
        seen: new Set(),
        waiters: [],
        joined: false,
        expected: [],
        members: new Set(),
        count: undefined,
        more: false,
        cursor: 0,
      };
      this.#rooms.set(room, track);
    }
    track.waiters.push({ resolve, reject });
    if (this.#state === "open") this.#sendEnter(room, track, false);
    return promise;
  }

  /** Leaves a room and stops re-entering it. Resolves on the `Ack`. */
  leave(room: string): Promise<AckBody> {
    const track = this.#rooms.get(room);
    this.#rooms.delete(room);
    if (track) {
      const error = new ChatError("not_in_room", "left before entering");
      for (const waiter of track.waiters) waiter.reject(error);
    }
    if (this.#state !== "open") {
      // The server forgot the connection's rooms when it dropped.
      return track
        ? Promise.resolve({ ref: "" })
        : Promise.reject(new ChatError("not_connected"));
    }
    return this.#request<AckBody>(
      "Leave",
      { room },
      undefined,
      (_id, deferred, timer) => ({
        kind: "leave",
        deferred,
        timer,
      }),
    );
  }

  /**
   * Sends `content` to a room. Resolves with the message's `seq` and `id`
   * once the server acknowledges it; until then it is sent again with the
   * same `id` after a drop, a timeout or `unavailable` (see `send_state`).
   * Rejects on a refusal (e.g. `not_in_room`), and with `closed` when the
   * client is closed first (the outcome is then unknown).
   */
  groupChat(
    room: string,
    content: string,
    options: SendOptions = {},
  ): Promise<GroupChatAck> {
    this.#typing.sent({ room });
    return this.#request<GroupChatAck>(
      "GroupChat",
      { room, content },
      options.onState,
      (_id, deferred, timer, resend) => ({
        kind: "group_chat",
        deferred,
        timer,
        resend: resend!,
      }),
    );
  }

  /**
   * Sends `content` to every connection of `target`; resent like
   * {@linkcode ChatClient.groupChat} until answered.
   */
  privateChat(
    target: string,
    content: string,
    options: SendOptions = {},
  ): Promise<PrivateChatAck> {
    this.#typing.sent({ user: target });
    return this.#request<PrivateChatAck>(
      "PrivateChat",
      { target_username: target, content },
      options.onState,
      (_id, deferred, timer, resend) => ({
        kind: "private_chat",
        deferred,
        timer,
        resend: resend!,
      }),
    );
  }

  /**
   * Says this user is typing in `room` (`active` false: stopped, e.g. the
   * text was cleared). Call it on every keystroke: a start goes out at most
   * every 3 seconds per room, a stop only while a start is shown; sending a
   * message ends the indicator by itself. Does nothing while not connected
   * or not in the room. A refusal is not shown (the `error` event says
   * `handled`).
   */
  typing(room: string, active = true): void {
    if (this.#rooms.has(room)) this.#sendTyping({ room }, active);
  }

  /** As {@linkcode ChatClient.typing}, to `user` in a direct conversation. */
  typingTo(user: string, active = true): void {
    this.#sendTyping({ user }, active);
  }

  /**
   * The usernames shown typing in a room (`{ room }`), or `[user]` while
   * `user` is typing to this client (`{ user }`); see the `typers` event.
   */
  typers(place: TypingPlace): string[] {
    return this.#typing.usernames(place);
  }

  /** The client ids of chat messages sent and not answered yet, oldest first. */
  get unsettled(): string[] {
    return [...this.#pending].flatMap(([id, pending]) =>
      "resend" in pending ? [id] : []
    );
  }

  /**
   * Asks for older messages of a room the client is in. Resolves with the
   * whole `History` body; the `history` event carries the ones not seen
   * before.
   */
  history(
    room: string,
    options: HistoryOptions = {},
  ): Promise<HistoryReplyBody> {
    const body: Record<string, unknown> = { room };
    if (options.before !== undefined) body.before = options.before;
    if (options.limit !== undefined) body.limit = options.limit;
    return this.#request<HistoryReplyBody>(
      "History",
      body,
      undefined,
      (id, deferred, timer) => {
        this.#rooms.get(room)?.expected.push({ id, reason: "request" });
        return { kind: "history", room, deferred, timer };
      },
    );
  }

  /**
   * Closes the connection for good: pending requests reject with `closed`.
   * Resolves once the socket is closed.
   */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const socket = this.#socket;
    this.#socket = null;
    this.#setState("closed");
    this.#failPending("closed", true);
    this.#typing.clear();
    for (const waiter of this.#connectWaiters) {
      waiter.reject(new ChatError("closed"));
    }
    this.#connectWaiters = [];
    if (socket && socket.readyState !== CLOSED) {
      const closed = new Promise<void>((resolve) => {
        socket.addEventListener("close", () => resolve(), { once: true });
      });
      socket.close(1000, "bye");
      await closed;
    }
  }

  /** Closes, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---------------------------------------------------------------- internals

  #emit(event: ChatEvent): void {
    this.#listeners.emit(event);
  }

  #setState(state: ConnectionState, extra: {
    delayMs?: number;
    closeCode?: number;
  } = {}): void {
    this.#state = state;
    this.#emit({ type: "state", state, attempt: this.#attempt, ...extra });
  }

  #nextId(): string {
    return `${this.#prefix}-${++this.#counter}`;
  }

  #open(): void {
    const url = new URL(this.#url);
    if (this.#token) url.searchParams.set("token", this.#token);
    if (this.#batch) url.searchParams.set("batch", "1");
    this.#setState("connecting");
    let socket: WebSocket;
    try {
      socket = new this.#WebSocket(url.href);
    } catch (error) {
      const failed = error instanceof Error ? error : new Error(String(error));
      this.#setState("closed");
      for (const waiter of this.#connectWaiters) waiter.reject(failed);
      this.#connectWaiters = [];
      return;
    }
    this.#socket = socket;
    socket.addEventListener("message", (event: MessageEvent) => {
      if (this.#socket !== socket) return;
      if (typeof event.data === "string") this.#receive(event.data, socket);
    });
    socket.addEventListener("close", (event: CloseEvent) => {
      if (this.#socket !== socket) return;
      this.#dropped(event.code);
    });
  }

  /** Forgets what belonged to the connection that is gone. */
  #forget(): void {
    this.#welcome = undefined;
    // The server sent the stops to the others; ours are gone with the socket.
    this.#typing.clear();
    this.#typingIds.clear();
    this.#failPending("disconnected", false);
    for (const track of this.#rooms.values()) {
      track.expected = [];
      track.members.clear();
    }
  }

  #dropped(code: number): void {
    this.#socket = null;
    this.#forget();
    if (!this.#reconnect) {
      this.#setState("closed");
      this.#failPending("closed", true);
      for (const waiter of this.#connectWaiters) {
        waiter.reject(new ChatError("disconnected"));
      }
      this.#connectWaiters = [];
      return;
    }
    const delayMs = backoffDelay(this.#attempt, this.#backoff, this.#random);
    this.#attempt++;
    // The timer first: a listener of the state may call reconnectNow(),
    // which must cancel it (else a second socket opens after the delay).
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#open();
    }, delayMs);
    this.#setState("reconnecting", { delayMs, closeCode: code });
  }

  /**
   * Rejects what waits for an answer; room entries only when `rooms`. Chat
   * messages stay, to be sent again, unless the client closes (`rooms`).
   */
  #failPending(code: LocalErrorCode, rooms: boolean): void {
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      if ("resend" in pending && !rooms) {
        this.#unknown(id, pending.resend);
        continue;
      }
      this.#pending.delete(id);
      if (pending.kind !== "enter") {
        pending.deferred.reject(new ChatError(code, undefined, id));
      }
      if ("resend" in pending) this.#sendState(id, pending.resend, "failed");
    }
    if (rooms) {
      for (const track of this.#rooms.values()) {
        for (const waiter of track.waiters) waiter.reject(new ChatError(code));
        track.waiters = [];
      }
    }
  }

  #send(type: string, body: Record<string, unknown>, id: string): void {
    const frame: Record<string, unknown> = {
      message_type: type,
      message_body: body,
      id,
    };
    if (this.#token) frame.token = this.#token;
    this.#socket?.send(JSON.stringify(frame));
  }

  #sendTyping(place: TypingPlace, active: boolean): void {
    if (
      this.#state !== "open" || !this.#socket || this.#username === undefined
    ) {
      return;
    }
    const go = active ? this.#typing.start(place) : this.#typing.stop(place);
    if (!go) return;
    const id = this.#nextId();
    this.#typingIds.add(id);
    this.#send("Typing", {
      sender_username: this.#username,
      ...(place.room !== undefined
        ? { room: place.room }
        : { target_username: place.user }),
      ...(active ? {} : { active: false }),
    }, id);
  }

  #timer(id: string): Timer {
    return setTimeout(() => this.#timedOut(id), this.#timeoutMs);
  }

  #timedOut(id: string): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    if ("resend" in pending) {
      // No answer: it may have been stored. The same id again is safe.
      this.#unknown(id, pending.resend);
      this.#resend(id, pending);
      return;
    }
    this.#pending.delete(id);
    const error = new ChatError("timeout", undefined, id);
    if (pending.kind === "enter") {
      const track = this.#rooms.get(pending.room);
      if (!track) return;
      for (const waiter of track.waiters) waiter.reject(error);
      track.waiters = [];
    } else {
      pending.deferred.reject(error);
    }
  }

  /** Reports a chat message's outcome as unknown, once. */
  #unknown(id: string, resend: Resend): void {
    if (resend.unknown) return;
    resend.unknown = true;
    this.#sendState(id, resend, "unknown");
  }

  #sendState(id: string, resend: Resend, state: SendState): void {
    try {
      resend.onState?.(state);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
    this.#emit({ type: "send_state", id, state });
  }

  /** Sends a chat message again with its id, now or once connected. */
  #resend(id: string, pending: Extract<Pending, { resend: Resend }>): void {
    clearTimeout(pending.timer);
    if (this.#state !== "open" || !this.#socket) return;
    pending.resend.attempts++;
    pending.timer = this.#timer(id);
    this.#send(pending.resend.type, pending.resend.body, id);
  }

  /** After a reconnect: every chat message not answered yet, in order. */
  #resendAll(): void {
    for (const [id, pending] of this.#pending) {
      if ("resend" in pending) this.#resend(id, pending);
    }
  }

  #request<T>(
    type: string,
    body: Record<string, unknown>,
    onState: ((state: SendState) => void) | undefined,
    make: (
      id: string,
      deferred: Deferred<T>,
      timer: Timer,
      resend?: Resend,
    ) => Pending,
  ): Promise<T> {
    if (this.#state !== "open" || !this.#socket) {
      return Promise.reject(
        new ChatError(this.#state === "closed" ? "closed" : "not_connected"),
      );
    }
    if (type !== "History" && type !== "Members") {
      if (this.#username === undefined) {
        return Promise.reject(new ChatError("not_entered"));
      }
      body = { sender_username: this.#username, ...body };
    }
    const id = this.#nextId();
    const { promise, resolve, reject } = deferred<T>();
    const resend = type === "GroupChat" || type === "PrivateChat"
      ? { type, body, attempts: 1, unknown: false, onState }
      : undefined;
    this.#pending.set(
      id,
      make(id, { resolve, reject }, this.#timer(id), resend),
    );
    this.#send(type, body, id);
    return promise;
  }

  #sendEnter(room: string, track: RoomTrack, rejoin: boolean): void {
    if (this.#username === undefined) {
      const error = new ChatError("not_entered", "no username set");
      for (const waiter of track.waiters) waiter.reject(error);
      track.waiters = [];
      if (!track.joined) this.#rooms.delete(room);
      return;
    }
    const id = this.#nextId();
    const body: Record<string, unknown> = {
      sender_username: this.#username,
      room,
    };
    let reason: HistoryExpectation["reason"];
    if (track.lastSeq !== undefined) {
      body.since = track.lastSeq;
      reason = "recovery";
    } else if (track.history !== undefined && track.history > 0) {
      body.history = track.history;
      reason = "enter";
    } else {
      // One message tells the room's last seq, so that a reconnect can ask
      // for exactly what came after; it is not shown.
      body.history = 1;
      reason = "watermark";
    }
    track.expected.push({ id, reason });
    this.#pending.set(id, {
      kind: "enter",
      room,
      rejoin,
      timer: this.#timer(id),
    });
    this.#send("Enter", body, id);
  }

  #receive(text: string, socket: WebSocket): void {
    // A `Batch` (asked for with `?batch=1`) is its frames, one at a time,
    // as long as a listener has not dropped the connection meanwhile.
    for (const frame of parseServerFrames(text)) {
      if (this.#socket !== socket) return;
      this.#handle(frame);
    }
  }

  #handle(frame: ServerFrame): void {
    switch (frame.type) {
      case "welcome": {
        this.#welcome = frame.body;
        if (frame.body.username) this.#username = frame.body.username;
        if (this.#rooms.size === 0) this.#attempt = 0;
        this.#setState("open");
        this.#emit(frame);
        const waiters = this.#connectWaiters;
        this.#connectWaiters = [];
        for (const waiter of waiters) waiter.resolve(frame.body);
        for (const [room, track] of this.#rooms) {
          this.#sendEnter(room, track, track.joined);
        }
        // After the Enters: the server answers a connection's frames in order.
        this.#resendAll();
        return;
      }
      case "presence": {
        const track = this.#rooms.get(frame.body.room);
        if (track) {
          const { members, count, more, cursor } = frame.body;
          track.members = new Set(members);
          track.count = count;
          track.more = count !== undefined && more === true;
          track.cursor = cursor ?? 0;
        }
        this.#emit(frame);
        return;
      }
      case "presence_diff": {
        const track = this.#rooms.get(frame.body.room);
        if (track) {
          track.count = frame.body.count;
          for (const name of frame.body.joined) track.members.add(name);
          for (const name of frame.body.left) track.members.delete(name);
        }
        this.#emit(frame);
        return;
      }
      case "members": {
        const track = this.#rooms.get(frame.body.room);
        if (track) {
          for (const name of frame.body.members) track.members.add(name);
          track.more = frame.body.more;
          track.cursor = frame.body.cursor;
          if (track.count !== undefined) track.count = frame.body.count;
        }
        this.#membersPage = frame.body;
        this.#emit(frame);
        return;
      }
      case "enter":
        this.#rooms.get(frame.body.room)?.members.add(
          frame.body.sender_username,
        );
        this.#emit(frame);
        return;
      case "leave":
        this.#rooms.get(frame.body.room)?.members.delete(
          frame.body.sender_username,
        );
        this.#typing.ended(
          { room: frame.body.room },
          frame.body.sender_username,
        );
        this.#emit(frame);
        return;
      case "group_chat": {
        const track = this.#rooms.get(frame.body.room);
        if (track) {
          if (track.seen.has(frame.body.seq)) return;
          track.seen.add(frame.body.seq);
          track.lastSeq = maxSeq(track.lastSeq, [frame.body]);
        }
        // Their message is what the indicator announced.
        this.#typing.ended(
          { room: frame.body.room },
          frame.body.sender_username,
        );
        this.#emit(frame);
        return;
      }
      case "private_chat":
        this.#typing.ended(
          { user: frame.body.sender_username },
          frame.body.sender_username,
        );
        this.#emit(frame);
        return;
      case "typing":
        this.#typing.heard(frame.body);
        this.#emit(frame);
        return;
      case "deleted":
        // `deleted`: the app removes the message from view; its `seq`
        // stays seen, so no recovery brings it back.
        this.#emit(frame);
        return;
      case "history":
        this.#history(frame.body);
        return;
      case "ack":
        this.#ack(frame.body);
        this.#emit(frame);
        return;
      case "error":
        this.#error(frame.body);
        return;
      case "unknown":
        this.#emit(frame);
        return;
    }
  }

  #history(body: HistoryReplyBody): void {
    const track = this.#rooms.get(body.room);
    if (!track) {
      this.#emit({ type: "history", body, reason: "request" });
      return;
    }
    const expected = track.expected.shift();
    const reason = expected?.reason ?? "request";
    if (expected) {
      const pending = this.#pending.get(expected.id);
      if (pending?.kind === "history") pending.result = body;
    }
    if (reason === "watermark") {
      track.lastSeq = maxSeq(track.lastSeq ?? 0, body.messages);
      return;
    }
    const fresh = body.messages.filter((message) => {
      if (track.seen.has(message.seq)) return false;
      track.seen.add(message.seq);
      return true;
    });
    if (reason === "request") {
      if (track.lastSeq !== undefined) {
        track.lastSeq = maxSeq(track.lastSeq, body.messages);
      }
    } else {
      // An entry's history reaches up to the room's last message.
      track.lastSeq = maxSeq(track.lastSeq ?? 0, body.messages);
    }
    this.#emit({ type: "history", body: { ...body, messages: fresh }, reason });
  }

  #ack(body: AckBody): void {
    if (this.#typingIds.delete(body.ref)) return;
    const pending = this.#pending.get(body.ref);
    if (!pending) return;
    this.#pending.delete(body.ref);
    clearTimeout(pending.timer);
    switch (pending.kind) {
      case "enter": {
        const track = this.#rooms.get(pending.room);
        if (!track) return;
        track.joined = true;
        this.#attempt = 0;
        const waiters = track.waiters;
        track.waiters = [];
        for (const waiter of waiters) waiter.resolve(body);
        return;
      }
      case "leave":
        pending.deferred.resolve(body);
        return;
      case "group_chat":
        pending.deferred.resolve({
          id: body.id ?? "",
          seq: body.seq ?? 0,
          timestamp: body.timestamp ?? 0,
        });
        this.#sendState(body.ref, pending.resend, "acked");
        return;
      case "private_chat":
        pending.deferred.resolve({
          id: body.id ?? "",
          timestamp: body.timestamp ?? 0,
        });
        this.#sendState(body.ref, pending.resend, "acked");
        return;
      case "members": {
        // The page came just before its Ack (one reducer step).
        const page = this.#membersPage;
        this.#membersPage = undefined;
        pending.deferred.resolve(
          page?.room === pending.room ? page : {
            room: pending.room,
            members: [],
            count: this.memberCount(pending.room),
            more: false,
            cursor: 0,
          },
        );
        return;
      }
      case "history":
        pending.deferred.resolve(
          pending.result ??
            { room: pending.room, messages: [], complete: true },
        );
        return;
    }
  }

  #error(body: ErrorBody): void {
    if (body.ref !== undefined && this.#typingIds.delete(body.ref)) {
      // A typing hint refused (the user went offline, say): nothing to show.
      this.#emit({ type: "error", body, handled: true });
      return;
    }
    const pending = body.ref === undefined
      ? undefined
      : this.#pending.get(body.ref);
    if (!pending || body.ref === undefined) {
      this.#emit({ type: "error", body, handled: false });
      return;
    }
    if ("resend" in pending && body.code === "unavailable") {
      // Not stored, or not known to be: the same id again, after a while.
      const id = body.ref;
      const { resend } = pending;
      this.#unknown(id, resend);
      this.#emit({ type: "error", body, handled: true });
      clearTimeout(pending.timer);
      const delay = Math.min(
        MAX_RESEND_DELAY_MS,
        250 * 2 ** Math.min(resend.attempts, 8),
      );
      pending.timer = setTimeout(() => this.#resend(id, pending), delay);
      return;
    }
    this.#pending.delete(body.ref);
    clearTimeout(pending.timer);
    const error = new ChatError(body.code, body.message, body.ref);
    if (pending.kind !== "enter") {
      if (pending.kind === "history") {
        const track = this.#rooms.get(pending.room);
        if (track) {
          track.expected = track.expected.filter((e) => e.id !== body.ref);
        }
      }
      pending.deferred.reject(error);
      if ("resend" in pending) {
        this.#sendState(body.ref, pending.resend, "failed");
      }
      this.#emit({ type: "error", body, handled: true });
      return;
    }
    const track = this.#rooms.get(pending.room);
    if (!track) {
      this.#emit({ type: "error", body, handled: false });
      return;
    }
    track.expected = track.expected.filter((e) => e.id !== body.ref);
    if (pending.rejoin && body.code === "username_taken") {
      // The server still holds the name for the connection that dropped:
      // try again later, keeping every room.
      this.#emit({ type: "error", body, handled: false });
      this.#socket?.close(RETRY_CLOSE_CODE, "username still held");
      return;
    }
    const waiters = track.waiters;
    track.waiters = [];
    this.#rooms.delete(pending.room);
    for (const waiter of waiters) waiter.reject(error);
    this.#emit({ type: "error", body, handled: waiters.length > 0 });
  }
}
