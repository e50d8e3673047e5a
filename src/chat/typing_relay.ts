/**
 * Relaying typing indicators: a `Typing` start or stop of one connection
 * sent to this node's recipients (a room's members of other users, or a
 * target's connections) and, in a cluster, to the other nodes (effect
 * `typing`); the stop owed when a connection that is shown typing sends a
 * message, leaves a room or goes away; `Typing` heard from another node.
 * It does not decode or check the `Typing` command (`typing.ts`), and
 * stores nothing: an indicator lives in the clients, for `expires_in_ms`.
 *
 * @module
 */
import { encode, type TypingNotice } from "../wire/server_frames.ts";
import {
  type Connection,
  type ConnId,
  type Ctx,
  TYPING_EXPIRES_MS,
} from "./types.ts";

/** The key of a connection's indicator in a room, in `Connection.typing`. */
export function roomKey(room: string): string {
  return `r:${room}`;
}

/** The key of a connection's indicator to a user, in `Connection.typing`. */
export function userKey(target: string): string {
  return `u:${target}`;
}

/**
 * Relays a start or a stop of `conn`'s indicator under `key` here and, in a
 * cluster, to the other nodes.
 */
export function relayTyping(
  ctx: Ctx,
  conn: Connection,
  key: string,
  active: boolean,
): void {
  const { state, out } = ctx;
  const sender = conn.username as string;
  const name = key.slice(2);
  const expires = active ? TYPING_EXPIRES_MS : 0;
  const notice: TypingNotice = key.startsWith("r:")
    ? { room: name, sender_username: sender, active, expires_in_ms: expires }
    : {
      sender_username: sender,
      target_username: name,
      active,
      expires_in_ms: expires,
    };
  deliverTyping(ctx, notice, conn.id);
  if (state.settings.cluster && !state.draining) {
    out.push({ type: "typing", notice });
  }
}

/**
 * Sends a `Typing` to this node's recipients: in a room, every member whose
 * user is not the sender (the sender's own other connections are not told:
 * they know); to a user, every connection of the target but `except`.
 */
export function deliverTyping(
  ctx: Ctx,
  notice: TypingNotice,
  except?: ConnId,
): void {
  const { state, out } = ctx;
  if (state.draining) return;
  const recipients: ConnId[] = [];
  if (notice.room !== undefined) {
    for (const id of state.rooms.get(notice.room)?.members ?? []) {
      const member = state.connections.get(id);
      if (member && member.username !== notice.sender_username) {
        recipients.push(id);
      }
    }
  } else {
    for (const id of state.users.get(notice.target_username) ?? []) {
      if (id !== except) recipients.push(id);
    }
  }
  if (recipients.length === 0) return;
  out.push({
    type: "broadcast",
    conns: recipients,
    count: recipients.length,
    data: encode("Typing", notice),
    kind: "Typing",
  });
}

/**
 * Ends `conn`'s indicator under `key`: relays the stop when one is still
 * shown (started less than {@linkcode TYPING_EXPIRES_MS} ago); `true` then.
 */
export function stopTyping(ctx: Ctx, conn: Connection, key: string): boolean {
  const at = conn.typing.get(key);
  if (at === undefined) return false;
  conn.typing.delete(key);
  if (ctx.state.now - at >= TYPING_EXPIRES_MS) return false;
  relayTyping(ctx, conn, key, false);
  return true;
}

/** Ends every indicator of a connection that goes away. */
export function stopAllTyping(ctx: Ctx, conn: Connection): void {
  for (const key of [...conn.typing.keys()]) stopTyping(ctx, conn, key);
}
