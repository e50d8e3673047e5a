/**
 * The answers of storage: a write (`persisted`: the message goes out, its
 * sender gets `Ack` or `Error`), a history read (`history_loaded`) and a
 * single node's read of a room's `seq` (`seq_loaded`: the room is known,
 * the messages that waited go on). Offline pages are in `offline.ts`,
 * cluster ordering in `cluster.ts`, what is kept of each `seq` in
 * `room_seqs.ts`.
 *
 * @module
 */
import {
  encodeGroupChat,
  encodePrivateChat,
  type StoredGroupChat,
} from "../wire/server_frames.ts";
import type { StoredAs, WriteResult } from "./storage.ts";
import { answerClosing, refOf, refuse } from "./closing.ts";
import { arriveInOrder, finishAck } from "./cluster.ts";
import { ack, deliverPrivate, goOn, send } from "./emit.ts";
import { nextOfflinePage, startOffline } from "./offline.ts";
import { toRoom } from "./rooms.ts";
import { forgetSeq, written } from "./room_seqs.ts";
import type { Connection, Ctx, Event, Pending, SeqWaiter } from "./types.ts";

/** The answer to `persist`: the message goes out and its sender gets `Ack` or `Error`. */
export function persisted(
  ctx: Ctx,
  event: Extract<Event, { type: "persisted" }>,
): void {
  const { state, out } = ctx;
  const { request, result } = event;
  const conn = request.conn === null
    ? undefined
    : state.connections.get(request.conn);
  const op = request.op;
  if (op.kind === "group") {
    const message = op.message;
    if (!state.settings.cluster) written(state, message.room);
    if (request.admin !== undefined) {
      // An administrator's system message: the API waits for its outcome.
      out.push({
        type: "admin_reply",
        id: request.admin,
        answer: result.ok
          ? {
            status: 201,
            body: {
              id: message.id,
              room: message.room,
              seq: result.seq ?? message.seq,
              timestamp: message.timestamp,
            },
          }
          : {
            status: 503,
            body: {
              error: "storage unavailable; the message was not stored",
              code: "unavailable",
            },
          },
      });
    }
    if (result.ok && result.original) {
      // A resend of a message stored before: not stored again, and its
      // Ack is the first one's.
      resent(ctx, conn, request.ref, message, result.original);
      return;
    }
    if (result.ok && result.seq !== undefined) {
      // Cluster: delivered in seq order with other nodes' messages, and
      // acknowledged then; the connection waits until that.
      const room = state.rooms.get(message.room);
      const pending: Pending = {
        message: { ...message, seq: result.seq },
        ...(conn ? { ack: { conn: conn.id, ref: request.ref } } : {}),
      };
      if (room) arriveInOrder(ctx, room, pending);
      else if (conn) finishAck(ctx, pending);
      return;
    }
    if (result.ok) {
      const room = state.rooms.get(message.room);
      if (room) {
        room.deliveredSeq = Math.max(room.deliveredSeq, message.seq);
        toRoom(
          room,
          "GroupChat",
          encodeGroupChat(message),
          out,
          undefined,
          message.seq,
        );
      }
      if (conn) {
        ack(out, conn, request.ref, {
          id: message.id,
          seq: message.seq,
          timestamp: message.timestamp,
        });
      }
    } else if (conn) {
      refuse(ctx, conn, "unavailable", notStored(result), request.ref);
    }
  } else if (op.kind === "private") {
    const message = op.message;
    if (result.ok && result.original) {
      // A resend: delivered when it was first stored; the first Ack again.
      if (conn) {
        const { id, timestamp } = result.original;
        ack(out, conn, request.ref, { id, timestamp });
      }
    } else if (result.ok) {
      // Stored for an offline target: a connection of the target that bound
      // meanwhile gets it from its offline load (read after this write), in
      // order with the older ones; sending it here too would duplicate it.
      const targets = state.users.get(message.target_username);
      if (
        !op.delivered && !result.remote && targets &&
        state.settings.authEnabled
      ) {
        // Stored while the target is online: its pager finished before
        // this write, so it runs again.
        startOffline(ctx, message.target_username);
      }
      if (
        op.delivered && !targets && state.settings.authEnabled &&
        !result.remote
      ) {
        // The target left between send and commit: it gets it next time.
        out.push({
          type: "persist",
          request: { conn: null, op: { kind: "undelivered", message } },
        });
      }
      // Cluster: not stored when another node holds the target; this
      // node's connections of the target get it live too.
      deliverPrivate(ctx, message, op.delivered || result.remote === true);
      if (conn) {
        ack(out, conn, request.ref, {
          id: message.id,
          timestamp: message.timestamp,
        });
      }
    } else if (conn) {
      if (result.reason === "not_connected") {
        refuse(
          ctx,
          conn,
          "user_not_found",
          `message_body.target_username: '${message.target_username}' is not connected`,
          request.ref,
        );
      } else if (result.reason === "inbox_full") {
        refuse(
          ctx,
          conn,
          "inbox_full",
          `message_body.target_username: '${message.target_username}' has ${
            state.settings.maxOfflineMessages ?? "too many"
          } messages waiting; send it later`,
          request.ref,
        );
      } else if (result.reason === "unknown_user") {
        refuse(
          ctx,
          conn,
          "user_not_found",
          `message_body.target_username: '${message.target_username}' is not a known user`,
          request.ref,
        );
      } else {
        refuse(ctx, conn, "unavailable", notStored(result), request.ref);
      }
    }
  } else if (op.kind === "delivered" && op.username !== undefined) {
    // A page marked: the next one. Not marked (storage fails): the pager
    // stops rather than send the same page again and again; the user's next
    // connection starts from it.
    if (result.ok) nextOfflinePage(ctx, op.username);
    else state.offlineLoading.delete(op.username);
  } else if (op.kind === "undelivered") {
    const { message } = op;
    const targets = state.users.get(message.target_username);
    if (result.ok) {
      // Kept for later, but the target is (back) online: its pager takes it.
      if (targets) startOffline(ctx, message.target_username);
    } else if (targets) {
      // Not kept: better out of order than lost.
      out.push({
        type: "broadcast",
        conns: targets,
        count: targets.size,
        data: encodePrivateChat(message),
        kind: "PrivateChat",
      });
    }
  }
  if (conn && state.connections.has(conn.id)) {
    goOn(ctx, conn);
  }
}

/** The text of an `unavailable` answer to a write that failed. */
function notStored(result: WriteResult): string {
  return result.ok === false && result.reason === "unknown"
    ? "storage did not answer in time: the message may have been stored; " +
      "send it again with the same id (it is never stored twice)"
    : "the message was not stored; send it again with the same id";
}

/**
 * Answers a `GroupChat` whose sender stored one with the same client `id`
 * before: the `Ack` of the first one, once it is delivered here (in a
 * cluster this node may not have delivered it yet).
 */
function resent(
  ctx: Ctx,
  conn: Connection | undefined,
  ref: string | undefined,
  message: StoredGroupChat,
  original: StoredAs,
): void {
  const { state, out } = ctx;
  const room = state.rooms.get(message.room);
  const ackTo = conn ? { conn: conn.id, ref } : undefined;
  const first: StoredGroupChat = { ...message, ...original };
  if (
    state.settings.cluster && room && ackTo &&
    !(room.known && original.seq <= room.deliveredSeq)
  ) {
    const waiting = room.pending.get(original.seq);
    if (!waiting) {
      arriveInOrder(ctx, room, { message: first, ack: ackTo });
      return;
    }
    if (!waiting.ack) {
      waiting.ack = ackTo;
      return;
    }
  }
  if (conn) {
    ack(out, conn, ref, original);
    if (state.connections.has(conn.id)) goOn(ctx, conn);
  }
}

/** The answer to `load_history`: `History`, then what the room sent meanwhile. */
export function historyLoaded(
  ctx: Ctx,
  event: Extract<Event, { type: "history_loaded" }>,
): void {
  const { state, out } = ctx;
  const { request, page } = event;
  const conn = state.connections.get(request.conn);
  const room = state.rooms.get(request.room);
  const entry = room?.held.get(request.conn);
  const held = entry ?? [];
  room?.held.delete(request.conn);
  if (!conn) return;
  if (conn.closing) {
    // Closing meanwhile (a revoked token reads nothing more): no History.
    answerClosing(ctx, conn, request.ref);
    goOn(ctx, conn);
    return;
  }
  if (page) {
    send(out, conn.id, "History", {
      room: request.room,
      messages: page.messages,
      complete: page.complete,
    });
  }
  // Sent even when the read failed: the connection is in the room anyway.
  // `since: N` means after N: nothing at or below N, nor below what the
  // page replayed, reaches the connection after it.
  const { query } = request;
  const lastSent = Math.max(
    page?.messages.at(-1)?.seq ?? 0,
    query.kind === "since" ? query.since : 0,
  );
  if (
    entry && room && lastSent > room.deliveredSeq && room.members.has(conn.id)
  ) {
    room.floors.set(conn.id, lastSent);
  }
  for (const frame of held) {
    if (frame.seq === 0 || frame.seq > lastSent) {
      out.push({
        type: "send",
        conn: conn.id,
        data: frame.data,
        kind: frame.kind,
      });
    }
  }
  if (!page) {
    refuse(
      ctx,
      conn,
      "unavailable",
      "history could not be read; try again",
      request.ref,
    );
  } else ack(out, conn, request.ref, {});
  if (state.connections.has(conn.id)) goOn(ctx, conn);
}

/**
 * The answer to `load_seq`: the room is known; the messages that waited go
 * on. Returns the administrators' system messages that waited, for the
 * caller to handle again (or to answer, when the read failed).
 */
export function seqLoaded(
  ctx: Ctx,
  event: Extract<Event, { type: "seq_loaded" }>,
): Extract<SeqWaiter, { conn: null }>[] {
  const { state } = ctx;
  const waiters = state.seqWaiters.get(event.room) ?? [];
  state.seqWaiters.delete(event.room);
  const room = state.rooms.get(event.room);
  if (event.seq !== null) {
    state.seqs.set(
      event.room,
      Math.max(state.seqs.get(event.room) ?? 0, event.seq),
    );
    if (room && !room.known) {
      room.known = true;
      room.deliveredSeq = Math.max(room.deliveredSeq, event.seq);
    }
  }
  const admins: Extract<SeqWaiter, { conn: null }>[] = [];
  for (const waiter of waiters) {
    if (waiter.conn === null) {
      admins.push(waiter);
      continue;
    }
    const { conn: id, frame } = waiter;
    const conn = state.connections.get(id);
    if (!conn) continue;
    if (event.seq === null) {
      // Not handled: answered, and the next message reads again.
      const at = conn.queue.indexOf(frame);
      if (at >= 0) conn.queue.splice(at, 1);
      goOn(ctx, conn);
      if (!conn.closing) {
        refuse(
          ctx,
          conn,
          "unavailable",
          "the room could not be read from storage; the message was not stored, send it again",
          refOf(state, frame.text),
        );
      }
    } else goOn(ctx, conn);
  }
  // Kept for the system messages that waited: each is handled again at
  // once and writes, which keeps the room's `seq` until its answer.
  if (admins.length === 0 || event.seq === null) forgetSeq(state, event.room);
  return admins;
}
