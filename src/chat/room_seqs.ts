/**
 * What a single node keeps of each room's `seq`: the last one assigned, while
 * the room is open or a `GroupChat` write of it is in flight. A room that is
 * empty and idle is forgotten (its `seq` stays in storage), and an `Enter`
 * that opens it again first reads its `seq` back (effect `load_seq`, answer
 * `seq_loaded`), so the reducer's memory follows the rooms in use, not the
 * rooms ever used. A cluster node learns `seq`s from its `join`s instead
 * (`cluster.ts`); nothing here applies to it.
 *
 * @module
 */
import type { EnterBody } from "../wire/client_frames.ts";
import { answerClosing, refuse } from "./closing.ts";
import { goOn } from "./emit.ts";
import { enter } from "./membership.ts";
import type { ChatState, Connection, Ctx, Event } from "./types.ts";

/**
 * Whether an `Enter` into `room` must wait for the room's `seq` from
 * storage: it is not open and its `seq` is not kept. The connection then
 * waits, and the `Enter` is handled again once the `seq` is known.
 */
export function awaitSeq(
  ctx: Ctx,
  conn: Connection,
  room: string,
  body: EnterBody,
  ref: string | undefined,
): boolean {
  const { state, out } = ctx;
  if (
    state.settings.cluster || state.rooms.has(room) || state.seqs.has(room)
  ) {
    return false;
  }
  let waiters = state.seqWaiters.get(room);
  if (!waiters) {
    waiters = [];
    state.seqWaiters.set(room, waiters);
    out.push({ type: "load_seq", room });
  }
  waiters.push({ conn: conn.id, body, ref });
  conn.busy = true;
  return true;
}

/** The answer to `load_seq`: the `Enter`s that waited for it are handled again. */
export function seqLoaded(
  ctx: Ctx,
  event: Extract<Event, { type: "seq_loaded" }>,
): void {
  const { state } = ctx;
  const waiters = state.seqWaiters.get(event.room) ?? [];
  state.seqWaiters.delete(event.room);
  if (event.seq !== null && !state.seqs.has(event.room)) {
    state.seqs.set(event.room, event.seq);
  }
  for (const { conn: id, body, ref } of waiters) {
    const conn = state.connections.get(id);
    if (!conn) continue;
    goOn(ctx, conn);
    if (conn.closing) answerClosing(ctx, conn, ref);
    else if (event.seq === null) {
      refuse(
        ctx,
        conn,
        "unavailable",
        "the room could not be read from storage; send Enter again",
        ref,
      );
    } else enter(ctx, conn, body, ref);
  }
  forgetSeq(state, event.room);
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
 * in flight, nobody waiting for it. Storage keeps it.
 */
export function forgetSeq(state: ChatState, room: string): void {
  if (
    !state.settings.cluster && !state.rooms.has(room) &&
    !state.writing.has(room) && !state.seqWaiters.has(room)
  ) {
    state.seqs.delete(room);
  }
}
