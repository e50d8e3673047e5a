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
 * Bookkeeping only, below the handlers: opening a room is `rooms.ts`'s
 * (`openLocal`), the answer `seq_loaded` is handled in `answers.ts`.
 *
 * @module
 */
import type { ChatState, Connection, Ctx, QueuedFrame, Room } from "./types.ts";

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
