/**
 * What a single node keeps of each room's `seq`: the last one assigned, while
 * the room is open or a `GroupChat` write of it is in flight. A room that is
 * empty and idle is forgotten (its `seq` stays in storage); when it opens
 * again its `seq` is read back (effect `load_seq`, answer `seq_loaded`)
 * while the `Enter` goes on at once: until the answer the room is not
 * `known`, a `GroupChat` into it waits for the read, and history reads reach
 * up to whatever storage holds. So the reducer's memory follows the rooms in
 * use, not the rooms ever used. A cluster node learns `seq`s from its
 * `join`s instead (`cluster.ts`); nothing here applies to it.
 *
 * @module
 */
import { refOf, refuse } from "./closing.ts";
import { goOn } from "./emit.ts";
import { openRoom } from "./rooms.ts";
import type {
  ChatState,
  Connection,
  Ctx,
  Event,
  QueuedFrame,
  Room,
  SeqWaiter,
} from "./types.ts";

/**
 * Single node: finds a room, or opens it; one whose `seq` is not kept is
 * opened not `known`, and its `seq` is read from storage.
 */
export function openLocal(ctx: Ctx, name: string): Room {
  const { state } = ctx;
  const open = state.rooms.get(name);
  if (open) return open;
  const known = state.seqs.has(name);
  const room = openRoom(state, name, known);
  if (!known) readSeq(ctx, name);
  return room;
}

/** Asks for a room's `seq`, unless a read of it is out already. */
export function readSeq(ctx: Ctx, name: string): void {
  if (ctx.state.seqWaiters.has(name)) return;
  ctx.state.seqWaiters.set(name, []);
  ctx.out.push({ type: "load_seq", room: name });
}

/**
 * A `GroupChat` into a room whose `seq` is not read yet: the frame goes back
 * to the front of its connection's queue, and the connection waits for the
 * read. Returns whether it waits.
 */
export function awaitSeq(
  ctx: Ctx,
  conn: Connection,
  room: Room,
  frame: QueuedFrame,
): boolean {
  if (ctx.state.settings.cluster || room.known) return false;
  readSeq(ctx, room.name);
  ctx.state.seqWaiters.get(room.name)?.push({ conn: conn.id, frame });
  conn.queue.unshift(frame);
  conn.busy = true;
  return true;
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

/** A `GroupChat` of `room` went to storage. */
export function writing(state: ChatState, room: string): void {
  state.writing.set(room, (state.writing.get(room) ?? 0) + 1);
}

/** The answer to a `GroupChat` write of `room` came back. */
export function written(state: ChatState, room: string): void {
  const left = (state.writing.get(room) ?? 1) - 1;
  if (left > 0) state.writing.set(room, left);
  else {
    state.writing.delete(room);
    forgetSeq(state, room);
  }
}

/**
 * Forgets a single node's `seq` of a room that is idle: not open, no write
 * in flight, no read of it out. Storage keeps it.
 */
export function forgetSeq(state: ChatState, room: string): void {
  if (
    !state.settings.cluster && !state.rooms.has(room) &&
    !state.writing.has(room) && !state.seqWaiters.has(room)
  ) {
    state.seqs.delete(room);
  }
}
