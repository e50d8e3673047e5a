/**
 * Refusals and closes: `Error` answers (with the error streak), refusals
 * that wait their turn, and the server closing a connection after every
 * frame it sent is answered; a connection that closed is forgotten. Who is
 * refused for what is decided by the handlers.
 *
 * @module
 */
import {
  CLOSE_CODES,
  type CloseName,
  type ErrorCode,
  type LeaveReason,
} from "../wire/codes.ts";
import { foldName } from "../wire/names.ts";
import { unbindTokens } from "./binding.ts";
import { send } from "./emit.ts";
import { exitRoom } from "./rooms.ts";
import { stopAllTyping } from "./typing_relay.ts";
import {
  type ChatState,
  type CloseAnswer,
  type Closing,
  type Connection,
  type Ctx,
  MAX_WAITING,
} from "./types.ts";

/** Answers a refused message with `Error`; the streak may close the connection. */
export function refuse(
  ctx: Ctx,
  conn: Connection,
  code: ErrorCode,
  message: string,
  ref: string | undefined, // `unavailable` is the server's fault (storage, cluster): not a streak.
  streak = code !== "unavailable",
): void {
  const { state, out } = ctx;
  send(
    out,
    conn.id,
    "Error",
    ref === undefined ? { code, message } : { code, message, ref },
  );
  out.push({ type: "count", metric: "errors", label: code });
  if (!streak || conn.closing) return;
  conn.errorStreak++;
  if (conn.errorStreak >= state.settings.maxConsecutiveErrors) {
    close(ctx, conn, "policy", "too many consecutive errors");
  }
}

/**
 * Queues the `Error` of a frame refused while earlier ones wait, so that it
 * goes out in order; it does not count toward the error streak. Past
 * {@linkcode MAX_WAITING} entries the connection is closed (1008), every
 * entry answered first.
 */
export function wait(
  ctx: Ctx,
  conn: Connection,
  code: ErrorCode,
  message: string,
  ref: string | undefined,
): void {
  conn.queue.push({ type: "refusal", code, message, ref });
  if (conn.queue.length > MAX_WAITING && !conn.closing) {
    close(ctx, conn, "policy", "too many messages waiting");
  }
}

/** The `id` of a frame dropped before its turn, for the `ref` of its `Error`. */
export function refOf(state: ChatState, text: string): string | undefined {
  const decoded = state.decoder.decode(text);
  return decoded.ok ? decoded.message.ref : decoded.error.ref;
}

/**
 * Closes a connection the server gives up: it leaves its rooms at once and
 * gets no chat frame after that; every frame it sent is answered first (the
 * one waiting for I/O with its real answer, the ones queued behind with
 * `answer`), then the close goes out.
 */
export function close(
  ctx: Ctx,
  conn: Connection,
  name: CloseName,
  reason: string = CLOSE_CODES[name].reason,
  answer: CloseAnswer = {
    answer: "unavailable",
    message:
      `the connection is closing (${reason}); the message was not handled`,
  },
  leaveReason: LeaveReason = "disconnected",
): void {
  if (conn.closing) return;
  const { code } = CLOSE_CODES[name];
  conn.closing = { code, reason, ...answer };
  detach(ctx, conn, leaveReason);
  if (!conn.busy) finishClose(ctx, conn);
}

/**
 * Answers a frame of a closing connection that will not be handled: `Error`
 * with its `ref`; a frame without `id` gets nothing (the close tells).
 */
export function answerClosing(
  ctx: Ctx,
  conn: Connection,
  ref: string | undefined,
): void {
  const { answer, message } = conn.closing as Closing;
  if (ref !== undefined) refuse(ctx, conn, answer, message, ref, false);
}

/** Answers what still waits on a closing connection, then closes it. */
export function finishClose(ctx: Ctx, conn: Connection): void {
  const { state, out } = ctx;
  const closing = conn.closing as Closing;
  for (const entry of conn.queue.splice(0)) {
    if (entry.type === "refusal") {
      refuse(ctx, conn, entry.code, entry.message, entry.ref, false);
    } else answerClosing(ctx, conn, refOf(state, entry.text));
  }
  const { code, reason } = closing;
  out.push({ type: "close", conn: conn.id, code, reason });
  out.push({ type: "count", metric: "closes", label: String(code) });
  out.push({
    type: "log",
    level: "info",
    msg: "connection closed by server",
    fields: { connection: conn.publicId, code, reason },
  });
  state.connections.delete(conn.id);
}

/**
 * Takes a connection out of everything that sends it chat frames: its rooms
 * (the others see `Leave` with `reason`), its username, its tokens.
 */
function detach(ctx: Ctx, conn: Connection, reason: LeaveReason): void {
  const { state, out } = ctx;
  // Before it leaves: its indicators stop where they were shown.
  if (conn.username !== null) stopAllTyping(ctx, conn);
  for (const name of [...conn.rooms]) {
    const room = state.rooms.get(name);
    if (room) exitRoom(ctx, conn, room, reason);
  }
  if (conn.username !== null) {
    const conns = state.users.get(conn.username);
    conns?.delete(conn.id);
    if (conns?.size === 0) {
      state.users.delete(conn.username);
      const folded = foldName(conn.username);
      if (state.names.get(folded) === conn.username) state.names.delete(folded);
      if (state.settings.cluster) {
        out.push({ type: "release", username: conn.username });
      }
    }
  }
  state.unbound.delete(conn.id);
  unbindTokens(ctx, conn);
}

/** Forgets a connection: its rooms see `Leave`, its username is free. */
export function drop(ctx: Ctx, conn: Connection): void {
  const { state } = ctx;
  detach(ctx, conn, "disconnected");
  conn.queue.length = 0;
  state.connections.delete(conn.id);
}
