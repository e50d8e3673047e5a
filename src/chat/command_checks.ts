/**
 * The checks every command about a room or a user shares: the message's
 * `sender_username` is the connection's username, and the room it names (or
 * the one room the connection is in) is one the connection is in. A check
 * that fails answers `Error` (`closing.ts`). It does not decide what a
 * command does (`membership.ts`, `commands.ts`, `typing.ts`,
 * `presence.ts`).
 *
 * @module
 */
import { refuse } from "./closing.ts";
import type { Connection, Ctx, Room } from "./types.ts";

/** Checks `sender_username` against the connection's username. */
export function checkSender(
  ctx: Ctx,
  conn: Connection,
  sender: string,
  ref: string | undefined,
): boolean {
  if (conn.username === null) {
    refuse(
      ctx,
      conn,
      "not_entered",
      "send Enter first: this connection has no username yet",
      ref,
    );
    return false;
  }
  if (sender !== conn.username) {
    refuse(
      ctx,
      conn,
      "sender_mismatch",
      `message_body.sender_username: this connection is '${conn.username}'`,
      ref,
    );
    return false;
  }
  return true;
}

/** The room a `Leave` or `GroupChat` is for, or `null` after an `Error`. */
export function targetRoom(
  ctx: Ctx,
  conn: Connection,
  room: string | undefined,
  ref: string | undefined,
): Room | null {
  const { state } = ctx;
  let name = room;
  if (name === undefined) {
    if (conn.rooms.size !== 1) {
      refuse(
        ctx,
        conn,
        "room_required",
        conn.rooms.size === 0
          ? "message_body.room: required, this connection is in no room"
          : "message_body.room: required, this connection is in several rooms",
        ref,
      );
      return null;
    }
    name = conn.rooms.values().next().value as string;
  }
  const found = conn.rooms.has(name) ? state.rooms.get(name) : undefined;
  if (!found) {
    refuse(
      ctx,
      conn,
      "not_in_room",
      `message_body.room: not in room '${name}'`,
      ref,
    );
    return null;
  }
  return found;
}
