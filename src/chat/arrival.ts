/**
 * Frames arriving on a connection: the connection opening (`Welcome`), the
 * size and rate checks, the queue behind an I/O answer, and the dispatch of
 * a decoded frame to its command. It does not implement the commands
 * (`membership.ts`, `commands.ts`) nor authentication (`auth.ts`).
 *
 * @module
 */
import type { WelcomeBody } from "../wire/server_frames.ts";
import { bannedUntil } from "./admin.ts";
import { authenticate } from "./auth.ts";
import { bind, bindToken } from "./binding.ts";
import { close, refOf, refuse, wait } from "./closing.ts";
import { finishClose } from "./closing.ts";
import { groupChat, history, privateChat } from "./commands.ts";
import { send } from "./emit.ts";
import { enter, leave } from "./membership.ts";
import { typing } from "./typing.ts";
import { members } from "./presence.ts";
import {
  type Connection,
  type Ctx,
  type Event,
  MAX_QUEUED_FRAMES,
  type QueuedFrame,
} from "./types.ts";

/** A connection opened: its state, its token if it brought one, and `Welcome`. */
export function open(ctx: Ctx, event: Extract<Event, { type: "open" }>): void {
  const { state, out } = ctx;
  const { settings } = state;
  const conn: Connection = {
    id: event.conn,
    publicId: event.publicId,
    username: null,
    token: null,
    rooms: new Set(),
    allowance: settings.rateLimitBurst,
    refilledAt: event.now,
    errorStreak: 0,
    busy: false,
    queue: [],
    tokens: new Set(),
    closing: null,
    typing: new Map(),
  };
  state.connections.set(conn.id, conn);
  if (settings.authTimeoutMs) state.unbound.set(conn.id, event.now);
  if (event.token !== undefined && event.grant) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
    conn.token = event.token;
    bind(ctx, conn, event.grant.username);
    bindToken(ctx, conn, event.token, event.grant.expiresAt);
  }
  const welcome: WelcomeBody = {
    server: settings.serverName,
    connection_id: conn.publicId,
    auth_required: settings.authEnabled,
    default_room: settings.defaultRoom,
    limits: {
      max_message_bytes: settings.maxMessageBytes,
      max_content_chars: settings.maxContentChars,
      max_rooms: settings.maxRoomsPerConnection,
      rate_limit_per_second: settings.rateLimitPerSecond,
      rate_limit_burst: settings.rateLimitBurst,
    },
  };
  if (conn.username !== null) welcome.username = conn.username;
  send(out, conn.id, "Welcome", welcome);
  out.push({
    type: "log",
    level: "info",
    msg: "connection opened",
    fields: { connection: conn.publicId },
  });
  // A token of a user banned since the upgrade was checked.
  if (conn.username !== null && bannedUntil(ctx, conn.username) !== null) {
    close(ctx, conn, "banned", undefined, {
      answer: "banned",
      message: "this user is banned; the message was not handled",
    }, "banned");
  }
}

/**
 * Checks a frame's size and rate; `false` when it must go no further.
 * `text` is the frame's, to answer a dropped one with its `id` as `ref`.
 */
export function admit(
  ctx: Ctx,
  conn: Connection,
  size: number,
  text?: string,
): boolean {
  const { state } = ctx;
  const now = state.now;
  const { settings } = state;
  if (size > settings.maxMessageBytes) {
    close(ctx, conn, "too_big");
    return false;
  }
  if (settings.rateLimitPerSecond > 0) {
    const elapsed = Math.max(0, now - conn.refilledAt);
    conn.allowance = Math.min(
      settings.rateLimitBurst,
      conn.allowance + elapsed * settings.rateLimitPerSecond / 1000,
    );
    conn.refilledAt = now;
    if (conn.allowance < 1) {
      const message =
        `more than ${settings.rateLimitPerSecond} messages a second; message dropped`;
      const ref = text === undefined ? undefined : refOf(state, text);
      // Not an error streak: a client sending too fast is told so for each
      // message, and closing it would leave its frames in flight unanswered
      // (the rate limit already makes a flood cheap; a reader too slow for
      // the answers is a slow consumer). Behind admitted frames that still
      // wait, the Error waits its turn, so answers go out in order.
      if (conn.busy) wait(ctx, conn, "rate_limited", message, ref);
      else refuse(ctx, conn, "rate_limited", message, ref, false);
      return false;
    }
    conn.allowance -= 1;
  }
  return true;
}

/** A text frame arrived: admitted, queued behind an I/O answer, or handled now. */
export function arrive(ctx: Ctx, event: QueuedFrame): void {
  const { state } = ctx;
  const conn = state.connections.get(event.conn);
  if (conn?.closing) {
    // The server is closing it, after the answer it waits for: this frame
    // is answered in its turn, not handled.
    const ref = refOf(state, event.text);
    const { answer, message } = conn.closing;
    if (ref !== undefined) {
      wait(ctx, conn, answer, message, ref);
    }
    return;
  }
  if (!conn || !admit(ctx, conn, event.size, event.text)) {
    return;
  }
  if (conn.busy) {
    // A burst the rate limit allows must fit in the queue.
    const bound = Math.max(MAX_QUEUED_FRAMES, state.settings.rateLimitBurst);
    let frames = 0;
    for (const entry of conn.queue) if (entry.type === "frame") frames++;
    if (frames >= bound) {
      wait(
        ctx,
        conn,
        "rate_limited",
        "too many messages waiting; message dropped",
        refOf(state, event.text),
      );
    } else conn.queue.push(event);
    return;
  }
  handle(ctx, conn, event);
}

/** Decodes and authenticates one frame, then hands it to its command. */
function handle(ctx: Ctx, conn: Connection, frame: QueuedFrame): void {
  const { state, out } = ctx;
  const decoded = state.decoder.decode(frame.text);
  if (!decoded.ok) {
    out.push({ type: "count", metric: "frames_in", label: "invalid" });
    const { code, message, ref } = decoded.error;
    refuse(ctx, conn, code, message, ref);
    return;
  }
  const message = decoded.message;
  if (
    state.settings.authEnabled &&
    !authenticate(ctx, conn, message, frame)
  ) {
    return;
  }
  out.push({ type: "count", metric: "frames_in", label: message.type });
  if (
    state.overloaded &&
    (message.type === "GroupChat" || message.type === "PrivateChat")
  ) {
    // Shed load cheaply instead of queueing it; the server's fault, so it
    // does not count toward the connection's error streak.
    refuse(
      ctx,
      conn,
      "rate_limited",
      "the server is overloaded; message dropped, try again shortly",
      message.ref,
      false,
    );
    return;
  }
  switch (message.type) {
    case "Enter":
      enter(ctx, conn, message.body, message.ref);
      break;
    case "Leave":
      leave(ctx, conn, message.body, message.ref);
      break;
    case "GroupChat":
      groupChat(ctx, conn, message.body, message.ref, frame);
      break;
    case "PrivateChat":
      privateChat(ctx, conn, message.body, message.ref, frame);
      break;
    case "History":
      history(ctx, conn, message.body, message.ref);
      break;
    case "Typing":
      typing(ctx, conn, message.body, message.ref);
      break;
    case "Members":
      members(ctx, conn, message.body, message.ref);
      break;
  }
}

/** Handles queued frames until the connection waits again. */
export function resume(ctx: Ctx, conn: Connection): void {
  const { state } = ctx;
  const now = state.now;
  while (!conn.busy && state.connections.has(conn.id)) {
    if (conn.closing) {
      finishClose(ctx, conn);
      return;
    }
    const next = conn.queue.shift();
    if (!next) break;
    if (next.type === "refusal") {
      refuse(ctx, conn, next.code, next.message, next.ref, false);
    } else handle(ctx, conn, { ...next, now });
  }
}
