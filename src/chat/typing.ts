/**
 * The `Typing` command: a connection says its user is typing (or stopped)
 * in a room it is in, or to a user. The checks are those of a message
 * (`sender_mismatch`, `not_in_room`, `room_required`; to a user, what a
 * `PrivateChat` gets for a target that is not connected, when nothing would
 * be kept for them), then the start is relayed at most once per
 * {@linkcode TYPING_INTERVAL_MS} per room or target per connection: a
 * renewal sooner is dropped without an `Error` (it tells the others nothing
 * new) and counted (`chat_typing_total{result="throttled"}`). A frame with
 * an `id` gets its `Ack` either way. Nothing is stored or waits for I/O.
 * The relaying itself is in `typing_relay.ts`.
 *
 * @module
 */
import type { TypingBody } from "../wire/client_frames.ts";
import { refuse } from "./closing.ts";
import { accept, ack } from "./emit.ts";
import { checkSender, targetRoom } from "./command_checks.ts";
import { relayTyping, roomKey, stopTyping, userKey } from "./typing_relay.ts";
import {
  type Connection,
  type Ctx,
  TYPING_EXPIRES_MS,
  TYPING_INTERVAL_MS,
} from "./types.ts";

/** Past this many remembered indicators, a connection's expired ones are forgotten. */
const PRUNE_AT = 16;

/** `Typing`: checked like a message, then relayed (throttled) or its stop. */
export function typing(
  ctx: Ctx,
  conn: Connection,
  body: TypingBody,
  ref: string | undefined,
): void {
  const { state, out } = ctx;
  const now = state.now;
  if (!checkSender(ctx, conn, body.sender_username, ref)) return;
  let key: string;
  let large = false;
  const target = body.target_username;
  if (target !== undefined) {
    // As a PrivateChat: with authentication off, a single node keeps
    // nothing for a user who is not connected. Otherwise the user may be
    // offline or on another node: the indicator reaches whoever is there.
    if (
      !state.users.has(target) && !state.settings.authEnabled &&
      !state.settings.cluster
    ) {
      refuse(
        ctx,
        conn,
        "user_not_found",
        `message_body.target_username: '${target}' is not connected`,
        ref,
      );
      return;
    }
    key = userKey(target);
  } else {
    const room = targetRoom(ctx, conn, body.room, ref);
    if (!room) return;
    key = roomKey(room.name);
    large = room.large;
  }
  accept(conn);
  let result: string;
  if (!body.active) {
    result = stopTyping(ctx, conn, key) ? "stopped" : "idle";
  } else if (state.overloaded) {
    // A hint, shed first when the server is behind: no Error for it.
    result = "shed";
  } else if (large) {
    // A large room (coalesced presence) shows no typing: thousands typing
    // would be a frame per member each, for a line nobody could read.
    result = "large_room";
  } else {
    const last = conn.typing.get(key);
    if (last !== undefined && now - last < TYPING_INTERVAL_MS) {
      result = "throttled";
    } else {
      if (conn.typing.size >= PRUNE_AT) prune(conn, now);
      conn.typing.set(key, now);
      relayTyping(ctx, conn, key, true);
      result = "relayed";
    }
  }
  out.push({ type: "count", metric: "typing", label: result });
  ack(out, conn, ref, {});
}

/** Forgets a connection's indicators that have expired. */
function prune(conn: Connection, now: number): void {
  for (const [key, at] of conn.typing) {
    if (now - at >= TYPING_EXPIRES_MS) conn.typing.delete(key);
  }
}
