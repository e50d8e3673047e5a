/**
 * The chat commands: `GroupChat` and `PrivateChat` (each written before it
 * goes out) and `History` (a read). Their answers come back in
 * `answers.ts`.
 *
 * @module
 */
import type {
  GroupChatBody,
  HistoryRequestBody,
  PrivateChatBody,
} from "../wire/client_frames.ts";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../wire/server_frames.ts";
import type { WriteOp } from "./storage.ts";
import { refuse } from "./closing.ts";
import { accept } from "./emit.ts";
import { checkSender, targetRoom } from "./command_checks.ts";
import { roomKey, stopTyping, userKey } from "./typing_relay.ts";
import { awaitSeq, writing } from "./room_seqs.ts";
import type { Connection, Ctx, QueuedFrame } from "./types.ts";

/** `GroupChat`: numbered (single node) and written; the room gets it once stored. */
export function groupChat(
  ctx: Ctx,
  conn: Connection,
  body: GroupChatBody,
  ref: string | undefined,
  frame: QueuedFrame,
): void {
  const { state } = ctx;
  if (!checkSender(ctx, conn, body.sender_username, ref)) return;
  const room = targetRoom(ctx, conn, body.room, ref);
  if (!room) return;
  // A room opened again: its seq is read from storage first.
  if (awaitSeq(ctx, conn, room, frame)) return;
  accept(conn);
  // The message is what the indicator announced: it stops now.
  if (conn.typing.size > 0) stopTyping(ctx, conn, roomKey(room.name));
  // In a cluster, Redis gives the seq when it stores the message.
  let seq = 0;
  if (!state.settings.cluster) {
    seq = (state.seqs.get(room.name) ?? 0) + 1;
    state.seqs.set(room.name, seq);
    writing(state, room.name);
  }
  const message: StoredGroupChat = {
    id: frame.id,
    seq,
    room: room.name,
    sender_username: body.sender_username,
    content: body.content,
    timestamp: frame.now,
  };
  // The client's id is the message's idempotency key: a resend after an
  // unknown outcome is not stored twice.
  write(
    ctx,
    conn,
    ref,
    ref === undefined
      ? { kind: "group", message }
      : { kind: "group", message, ref },
  );
}

/** `PrivateChat`: written (kept for an offline target); delivered once stored. */
export function privateChat(
  ctx: Ctx,
  conn: Connection,
  body: PrivateChatBody,
  ref: string | undefined,
  frame: QueuedFrame,
): void {
  const { state } = ctx;
  if (!checkSender(ctx, conn, body.sender_username, ref)) return;
  const online = state.users.has(body.target_username);
  const { maxOfflineMessages } = state.settings;
  // In a cluster, the target may be on another node: the write tells.
  if (!online && !state.settings.authEnabled && !state.settings.cluster) {
    refuse(
      ctx,
      conn,
      "user_not_found",
      `message_body.target_username: '${body.target_username}' is not connected`,
      ref,
    );
    return;
  }
  accept(conn);
  if (conn.typing.size > 0) {
    stopTyping(ctx, conn, userKey(body.target_username));
  }
  const message: StoredPrivateChat = {
    id: frame.id,
    sender_username: body.sender_username,
    target_username: body.target_username,
    content: body.content,
    timestamp: frame.now,
  };
  write(ctx, conn, ref, {
    kind: "private",
    message,
    // Behind older offline messages still being paged out: stored, and
    // delivered in order by the pager.
    delivered: online && !state.offlineLoading.has(body.target_username),
    ...(maxOfflineMessages === undefined
      ? {}
      : { maxWaiting: maxOfflineMessages }),
    ...(ref === undefined ? {} : { ref }),
  });
}

/** Asks for a chat message's write; the connection waits for the answer. */
function write(
  ctx: Ctx,
  conn: Connection,
  ref: string | undefined,
  op: WriteOp,
): void {
  conn.busy = true;
  ctx.out.push({ type: "persist", request: { conn: conn.id, ref, op } });
}

/** `History`: a page of a room's messages before `before`, read from storage. */
export function history(
  ctx: Ctx,
  conn: Connection,
  body: HistoryRequestBody,
  ref: string | undefined,
): void {
  const { out } = ctx;
  const room = targetRoom(ctx, conn, body.room, ref);
  if (!room) return;
  accept(conn);
  // A room whose seq is still being read: whatever storage holds (nothing
  // of it is being written).
  const upTo = room.known ? room.deliveredSeq : Number.MAX_SAFE_INTEGER;
  const before = body.before ?? Math.min(upTo + 1, Number.MAX_SAFE_INTEGER);
  conn.busy = true;
  out.push({
    type: "load_history",
    request: {
      conn: conn.id,
      room: room.name,
      ref,
      query: { kind: "before", before, limit: body.limit, upTo },
    },
  });
}
