/**
 * One node of a cluster: `Enter` through a cluster `join`, presence from
 * `part` and the bus, and room messages from every node delivered in `seq`
 * order without gaps or duplicates (waiting for a missing `seq`, then
 * reading it back from history). The bus and Redis are the runner's.
 *
 * @module
 */
import { admin, bannedUntil } from "./admin.ts";
import { encodeGroupChat } from "../wire/server_frames.ts";
import type { EnterBody } from "../wire/client_frames.ts";
import { revoked } from "./auth.ts";
import { gatherLocal, heard, heardFull, recount } from "./cluster_presence.ts";
import { record } from "./roster.ts";
import { bind } from "./binding.ts";
import { answerClosing, close, refuse } from "./closing.ts";
import { ack, deliverPrivate, goOn, send } from "./emit.ts";
import { deliverTyping } from "./typing_relay.ts";
import {
  addMember,
  announce,
  entered,
  forgetIfEmpty,
  openRoom,
  toRoom,
} from "./rooms.ts";
import {
  type BusMessage,
  type Connection,
  type Ctx,
  type Effect,
  type Event,
  MAX_PENDING,
  type Pending,
  type Room,
} from "./types.ts";

/**
 * Cluster `Enter`: the cluster decides the username, presence and the
 * room's `seq`, so the connection waits for `joined`. The room is opened
 * at once to catch the room's messages that other nodes send meanwhile.
 */
export function joinCluster(
  ctx: Ctx,
  conn: Connection,
  name: string,
  body: EnterBody,
  ref: string | undefined,
): void {
  const { state, out } = ctx;
  const now = state.now;
  const username = body.sender_username;
  const claim = conn.username === null ? "exclusive" : "none";
  if (claim === "exclusive") state.claiming.add(username);
  const room = openRoom(state, name, false);
  room.joining.set(username, (room.joining.get(username) ?? 0) + 1);
  conn.busy = true;
  out.push({
    type: "join",
    request: {
      conn: conn.id,
      room: name,
      username,
      claim,
      ref,
      since: body.since,
      history: body.history,
      timestamp: now,
      ...((room.users.get(username) ?? 0) > 0 ? { held: true } : {}),
    },
  });
}

/** Cluster: the answer to `join`; the `Enter` ends as a single node's would. */
export function joined(
  ctx: Ctx,
  event: Extract<Event, { type: "joined" }>,
): void {
  const { state, out } = ctx;
  const { request, result } = event;
  const { username } = request;
  if (request.claim === "exclusive") state.claiming.delete(username);
  const room = openRoom(state, request.room, false);
  const joining = (room.joining.get(username) ?? 1) - 1;
  if (joining > 0) room.joining.set(username, joining);
  else room.joining.delete(username);
  const conn = state.connections.get(request.conn);
  // The first join tells the room's seq; what arrived meanwhile goes out
  // once the joining connection is a member.
  const learned = result?.kind === "joined" && !room.known;
  if (learned) {
    room.known = true;
    room.deliveredSeq = result.seq;
  }
  if (!conn || conn.closing || result?.kind !== "joined") {
    // Closed while joining, or refused: take back what the cluster may have
    // recorded (a resync meanwhile records joins in flight too).
    if (result !== null && !room.users.has(username) && !joining) {
      out.push({
        type: "part",
        room: room.name,
        username,
        reason: "disconnected",
        timestamp: event.now,
        empty: room.members.size === 0 && room.joining.size === 0,
      });
      if (request.claim === "exclusive" && !state.users.has(username)) {
        out.push({ type: "release", username });
      }
    }
    if (learned) release(ctx, room, true);
    forgetIfEmpty(state, room);
    if (!conn) return;
    if (conn.closing) {
      // Closing meanwhile: the Enter is answered as the close says.
      answerClosing(ctx, conn, request.ref);
    } else if (result === null) {
      refuse(
        ctx,
        conn,
        "unavailable",
        "the cluster cannot be reached; send Enter again",
        request.ref,
      );
    } else {
      refuse(
        ctx,
        conn,
        "username_taken",
        `message_body.sender_username: '${username}' is taken`,
        request.ref,
      );
    }
    if (state.connections.has(conn.id)) goOn(ctx, conn);
    return;
  }
  if (conn.username === null) bind(ctx, conn, username, true);
  if (result.large) {
    room.large = true;
    recount(state, room, {
      count: result.count ?? result.members.length,
      version: result.version ?? 0,
    });
  } else if (!room.large) room.count = result.count ?? result.members.length;
  if (!conn.rooms.has(room.name)) {
    const before = addMember(ctx, conn, room);
    // The cluster, not this node's count, knows whether the user is new
    // there; but one already here is not, whatever Redis lost.
    if (result.isNew && before === 0) {
      // A large room's joins go out in this node's batch, not one by one.
      if (result.large) gatherLocal(state, room, username, true);
      else announce(room, username, request.timestamp, null, out, conn.id);
    }
  }
  // The cluster's member list, this user included (the join recorded it);
  // in a large room its count and a first page.
  send(
    out,
    conn.id,
    "Presence",
    result.large
      ? {
        room: room.name,
        members: result.members,
        count: room.count,
        more: (result.cursor ?? 0) !== 0,
        cursor: result.cursor ?? 0,
      }
      : { room: room.name, members: [...result.members].sort() },
  );
  // Lets it go on, unless `entered` makes it wait for history.
  goOn(ctx, conn);
  entered(ctx, conn, room, request, request.ref);
  if (learned) release(ctx, room, true);
  // Banned while the join was out: it ends as a ban ends a connection.
  if (!conn.closing && bannedUntil(ctx, username) !== null) {
    close(ctx, conn, "banned", undefined, {
      answer: "banned",
      message: "this user is banned; the message was not handled",
    }, "banned");
  }
}

/** Cluster: the answer to `part`; the room sees the user go if no node holds it. */
export function parted(
  ctx: Ctx,
  event: Extract<Event, { type: "parted" }>,
): void {
  const { state, out } = ctx;
  const room = state.rooms.get(event.room);
  const { result } = event;
  if (room && result?.large) recount(state, room, result);
  // `gone: null` (Redis away): this node's members saw the user go, so say so.
  if (
    !room || state.draining || event.gone === false ||
    room.users.has(event.username)
  ) {
    return;
  }
  // A large room's leaves go out in this node's batch, not one by one.
  if (result ? result.large : room.large) {
    gatherLocal(state, room, event.username, false);
  } else announce(room, event.username, event.timestamp, event.reason, out);
}

/** Cluster: a message from another node. */
export function fromBus(ctx: Ctx, message: BusMessage): void {
  const { state, out } = ctx;
  switch (message.kind) {
    case "group": {
      const room = state.rooms.get(message.message.room);
      if (room) arriveInOrder(ctx, room, { message: message.message });
      break;
    }
    case "private": {
      const { message: chat } = message;
      const paging = state.offlineLoading.has(chat.target_username);
      if (paging) {
        // Its target is still reading older messages here: kept behind
        // them, so the pager delivers it in order.
        out.push({
          type: "persist",
          request: { conn: null, op: { kind: "undelivered", message: chat } },
        });
      }
      deliverPrivate(ctx, chat, !paging);
      break;
    }
    case "enter":
    case "leave": {
      const room = state.rooms.get(message.room);
      if (!room || state.draining) return;
      if (room.large) {
        // A resync or a reaped node's users, in a room that is large here:
        // gathered, and counted until a newer count comes.
        const joining = message.kind === "enter";
        record(room.changes, message.username, joining);
        room.count = Math.max(0, room.count + (joining ? 1 : -1));
        state.presenceDue.add(room.name);
        return;
      }
      const reason = message.kind === "enter" ? null : message.reason;
      announce(room, message.username, message.timestamp, reason, out);
      break;
    }
    case "admin":
      admin(ctx, {
        type: "admin",
        now: state.now,
        id: null,
        request: message.request,
      });
      break;
    case "presence": {
      const room = state.rooms.get(message.batch.room);
      if (room && !state.draining) heard(state, room, message);
      break;
    }
    case "full": {
      const room = state.rooms.get(message.room);
      if (room && !state.draining) heardFull(ctx, room, message);
      break;
    }
    case "revoked":
      revoked(ctx, message.token);
      break;
    case "typing":
      deliverTyping(ctx, message.notice);
      break;
  }
}

/**
 * Cluster: a room message from this node's write or from another node, in
 * any order; members get them in `seq` order, without gaps or duplicates.
 */
export function arriveInOrder(ctx: Ctx, room: Room, pending: Pending): void {
  const { seq } = pending.message;
  if (room.known && seq <= room.deliveredSeq) {
    // Already delivered (a gap fill raced the bus): only the Ack is owed.
    if (pending.ack) finishAck(ctx, pending);
    return;
  }
  if (
    room.known && !pending.ack && room.pending.size >= MAX_PENDING &&
    !room.pending.has(seq)
  ) {
    // The buffer is full: MAX_PENDING messages wait behind a missing seq
    // (history unreadable meanwhile). This one is in history (a message is
    // stored before it is published), so it is let go and the next gap read
    // brings it back in order: the room stalls, it skips nothing. A message
    // this node wrote is kept (its writer's Ack waits on it; one per
    // connection at most).
    return;
  }
  room.pending.set(seq, pending);
  release(ctx, room);
}

/** Delivers the pending messages that are next in `seq` order. */
function release(
  ctx: Ctx,
  room: Room,
  /** The room just learned its seq: drop what arrived from before it. */
  stale = false,
): void {
  const { state, out } = ctx;
  const now = state.now;
  if (!room.known) return;
  const acked: Pending[] = [];
  for (const [seq, pending] of stale ? room.pending : []) {
    if (seq <= room.deliveredSeq) {
      room.pending.delete(seq);
      if (pending.ack) acked.push(pending);
    }
  }
  for (
    let next = room.pending.get(room.deliveredSeq + 1);
    next;
    next = room.pending.get(room.deliveredSeq + 1)
  ) {
    room.pending.delete(room.deliveredSeq + 1);
    room.deliveredSeq++;
    toRoom(
      room,
      "GroupChat",
      encodeGroupChat(next.message),
      out,
      undefined,
      room.deliveredSeq,
    );
    if (next.ack) acked.push(next);
  }
  room.gapSince = room.pending.size === 0 ? null : room.gapSince ?? now;
  // After the loop: a resumed connection may leave the room.
  for (const pending of acked) finishAck(ctx, pending);
}

/** Sends a cluster message's `Ack` and lets its sender go on. */
export function finishAck(ctx: Ctx, pending: Pending): void {
  const { state, out } = ctx;
  const conn = pending.ack && state.connections.get(pending.ack.conn);
  if (!conn || !pending.ack) return;
  const { message } = pending;
  ack(out, conn, pending.ack.ref, {
    id: message.id,
    seq: message.seq,
    timestamp: message.timestamp,
  });
  goOn(ctx, conn);
}

/**
 * Asks for every kept message of a room after `deliveredSeq`, the whole
 * range: a read up to the first pending message only would leave holes
 * above it unread. Records the highest `seq` known stored now: the read
 * proves which `seq`s up to it history no longer holds.
 */
export function fillGap(room: Room, out: Effect[]): void {
  room.filling = true;
  let bound = room.deliveredSeq;
  for (const seq of room.pending.keys()) if (seq > bound) bound = seq;
  out.push({
    type: "fill_gap",
    room: room.name,
    after: room.deliveredSeq,
    before: null,
    bound,
  });
}

/** Cluster: the answer to `fill_gap`; what history no longer holds is skipped. */
export function gapFilled(
  ctx: Ctx,
  event: Extract<Event, { type: "gap_filled" }>,
): void {
  const { state, out } = ctx;
  const room = state.rooms.get(event.room);
  if (!room) return;
  room.filling = false;
  if (event.messages === null) {
    if (room.pending.size > 0) room.gapSince = event.now;
    return;
  }
  let bound = event.bound;
  for (const message of event.messages) {
    if (message.seq > bound) bound = message.seq;
    if (message.seq > room.deliveredSeq && !room.pending.has(message.seq)) {
      room.pending.set(message.seq, { message });
    }
  }
  release(ctx, room);
  // The read saw every kept seq up to `bound` (all were stored before it
  // ran): a seq missing below it is one history no longer holds (trimmed,
  // or lost by Redis), so the room goes on without it. A hole above
  // `bound` may still come (the bus, or the next read).
  while (room.pending.size > 0 && room.deliveredSeq < bound) {
    const skipTo = Math.min(firstPending(room) - 1, bound);
    out.push({
      type: "log",
      level: "warn",
      msg: "history no longer holds missing messages; skipped",
      fields: { room: room.name, from: room.deliveredSeq + 1, to: skipTo },
    });
    room.deliveredSeq = skipTo;
    release(ctx, room);
  }
  if (room.pending.size > 0) room.gapSince = event.now;
}

/** The lowest `seq` waiting in a room (a loop: the map may be large). */
function firstPending(room: Room): number {
  let first = Infinity;
  for (const seq of room.pending.keys()) if (seq < first) first = seq;
  return first;
}
