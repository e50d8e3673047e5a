/**
 * Membership: `Enter` (binding the username on the first one) and `Leave`.
 * The checks of a message's sender and room are in `command_checks.ts`,
 * the cluster's part of an `Enter` in `cluster.ts`, rooms themselves (and
 * opening one) in `rooms.ts`, the `Presence` body in `roster.ts`.
 *
 * @module
 */
import { foldName, isReservedName } from "../wire/names.ts";
import { refuseBanned } from "./admin.ts";
import type { EnterBody, LeaveBody } from "../wire/client_frames.ts";
import { bind } from "./binding.ts";
import { refuse } from "./closing.ts";
import { joinCluster } from "./cluster.ts";
import { accept, ack, send } from "./emit.ts";
import { checkSender, targetRoom } from "./command_checks.ts";
import { addMember, announce, entered, exitRoom, openLocal } from "./rooms.ts";
import { roomKey, stopTyping } from "./typing_relay.ts";
import { gather, presenceOf } from "./roster.ts";
import type { Connection, Ctx } from "./types.ts";

/** `Enter`: binds the username on the first one, joins the room, sends `Presence`. */
export function enter(
  ctx: Ctx,
  conn: Connection,
  body: EnterBody,
  ref: string | undefined,
): void {
  const { state, out } = ctx;
  const now = state.now;
  const name = body.room ?? state.settings.defaultRoom;
  if (conn.username === null) {
    if (isReservedName(body.sender_username)) {
      refuse(
        ctx,
        conn,
        "name_reserved",
        `message_body.sender_username: '${body.sender_username}' is reserved for the server's own messages`,
        ref,
      );
      return;
    }
    if (refuseBanned(ctx, conn, body.sender_username, ref)) return;
    // One name however it is cased or written (NFKC): `Alice` is `alice`.
    const folded = foldName(body.sender_username);
    const holder = state.names.get(folded) ??
      [...state.claiming].find((name) => foldName(name) === folded);
    if (holder !== undefined) {
      refuse(
        ctx,
        conn,
        "username_taken",
        `message_body.sender_username: '${body.sender_username}' is taken${
          holder !== undefined && holder !== body.sender_username
            ? ` (as '${holder}')`
            : ""
        }`,
        ref,
      );
      return;
    }
  } else if (!checkSender(ctx, conn, body.sender_username, ref)) return;
  const already = conn.rooms.has(name);
  if (!already && conn.rooms.size >= state.settings.maxRoomsPerConnection) {
    refuse(
      ctx,
      conn,
      "too_many_rooms",
      `message_body.room: at most ${state.settings.maxRoomsPerConnection} rooms per connection`,
      ref,
    );
    return;
  }
  accept(conn);
  if (state.settings.cluster) {
    joinCluster(ctx, conn, name, body, ref);
    return;
  }
  if (conn.username === null) bind(ctx, conn, body.sender_username);
  const username = conn.username as string;
  const room = openLocal(ctx, name);
  if (
    !already && addMember(ctx, conn, room) === 0 &&
    !gather(state, room, username, true)
  ) {
    announce(room, username, now, null, out, conn.id);
  }
  send(out, conn.id, "Presence", presenceOf(room));
  entered(ctx, conn, room, body, ref);
}

/** `Leave`: the connection leaves one room; the others see it if it was its user's last. */
export function leave(
  ctx: Ctx,
  conn: Connection,
  body: LeaveBody,
  ref: string | undefined,
): void {
  const { out } = ctx;
  if (!checkSender(ctx, conn, body.sender_username, ref)) return;
  const room = targetRoom(ctx, conn, body.room, ref);
  if (!room) return;
  accept(conn);
  if (conn.typing.size > 0) stopTyping(ctx, conn, roomKey(room.name));
  exitRoom(ctx, conn, room, "left");
  ack(out, conn, ref, {});
}
