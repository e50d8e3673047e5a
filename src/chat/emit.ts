/**
 * The smallest steps every handler shares: sending one frame to one
 * connection, an `Ack`, a `PrivateChat` to its users' connections here,
 * resetting the error streak, and letting a
 * connection that waited for I/O go on. Effects only: no rule about who
 * gets what lives here (see `rooms.ts` for fan-out, `closing.ts` for
 * refusals).
 *
 * @module
 */
import {
  type AckBody,
  encode,
  encodePrivateChat,
  type ServerBodies,
  type ServerType,
  type StoredPrivateChat,
} from "../wire/server_frames.ts";
import type { Connection, ConnId, Ctx, Effect } from "./types.ts";

/** Sends one frame to one connection; its body is checked against its type. */
export function send<K extends ServerType>(
  out: Effect[],
  conn: ConnId,
  kind: K,
  body: ServerBodies[K],
): void {
  out.push({ type: "send", conn, data: encode(kind, body), kind });
}

/** Sends `Ack` for a message that carried an `id`; nothing without one. */
export function ack(
  out: Effect[],
  conn: Connection,
  ref: string | undefined,
  body: Omit<AckBody, "ref">,
): void {
  if (ref !== undefined) send(out, conn.id, "Ack", { ref, ...body });
}

/** A message was accepted: the connection's error streak starts again. */
export function accept(conn: Connection): void {
  conn.errorStreak = 0;
}

/**
 * The I/O answer a connection waited for has come: it no longer waits, and
 * `reduce` handles its queued frames (or finishes its close) after the
 * event. Handlers never handle another connection's frames themselves.
 */
export function goOn(ctx: Ctx, conn: Connection): void {
  conn.busy = false;
  ctx.state.ready.push(conn);
}

/**
 * Sends a `PrivateChat` to its sender's connections on this node and, with
 * `toTarget`, its target's: each connection once, in one broadcast.
 */
export function deliverPrivate(
  ctx: Ctx,
  message: StoredPrivateChat,
  toTarget: boolean,
): void {
  const { state, out } = ctx;
  const recipients = new Set<ConnId>(
    toTarget ? state.users.get(message.target_username) : undefined,
  );
  for (const id of state.users.get(message.sender_username) ?? []) {
    recipients.add(id);
  }
  if (recipients.size > 0) {
    out.push({
      type: "broadcast",
      conns: recipients,
      count: recipients.size,
      data: encodePrivateChat(message),
      kind: "PrivateChat",
    });
  }
}
