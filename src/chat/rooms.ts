/**
 * Rooms: opening one (on a single node, with its `seq` read back if it is
 * not kept), members entering and leaving it, and sending a frame to its
 * members (holding it for those whose `History` is not out yet, and keeping
 * replayed `seq`s from them). It does not decide who may enter or leave
 * (`membership.ts`), nor the order of cluster messages (`cluster.ts`), nor
 * when a large room's presence goes out (`presence.ts`); the roster and
 * the `seq`s it keeps are data of `roster.ts` and `room_seqs.ts`.
 *
 * @module
 */
import type { LeaveReason } from "../wire/codes.ts";
import { encode, type ServerType } from "../wire/server_frames.ts";
import type { HistoryQuery } from "./storage.ts";
import { ack } from "./emit.ts";
import { createRoster, gather, rosterAdd, rosterRemove } from "./roster.ts";
import { forgetSeq, readSeq } from "./room_seqs.ts";
import type {
  ChatState,
  Connection,
  ConnId,
  Ctx,
  Effect,
  Room,
} from "./types.ts";

/** Finds a room, or opens it with the last `seq` the node knows (`known`) or none yet. */
export function openRoom(state: ChatState, name: string, known: boolean): Room {
  let room = state.rooms.get(name);
  if (!room) {
    room = {
      name,
      members: new Set(),
      users: new Map(),
      deliveredSeq: known ? state.seqs.get(name) ?? 0 : 0,
      held: new Map(),
      known,
      pending: new Map(),
      gapSince: null,
      filling: false,
      floors: new Map(),
      joining: new Map(),
      roster: createRoster(),
      large: false,
      changes: new Map(),
      unnamed: { joined: 0, left: 0 },
      outgoing: new Map(),
      count: 0,
      countVersion: 0,
      sentCount: 0,
    };
    state.rooms.set(name, room);
  }
  return room;
}

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

/**
 * The end of an `Enter`: its `Ack`, or the history it asked for first.
 * A single node replays up to what it delivered (later writes reach the
 * member live); a cluster node, which may be behind the cluster, up to the
 * room's current `seq` in storage, and `historyLoaded` keeps what it
 * delivers later at or below the replay from that member.
 */
export function entered(
  ctx: Ctx,
  conn: Connection,
  room: Room,
  body: { since?: number | undefined; history?: number | undefined },
  ref: string | undefined,
): void {
  const { state, out } = ctx;
  if (body.since === undefined && body.history === undefined) {
    ack(out, conn, ref, {});
    return;
  }
  const upTo = state.settings.cluster || !room.known
    ? Number.MAX_SAFE_INTEGER
    : room.deliveredSeq;
  const query: HistoryQuery = body.since !== undefined
    ? { kind: "since", since: body.since, upTo }
    : { kind: "last", count: body.history as number, upTo };
  room.held.set(conn.id, []);
  conn.busy = true;
  out.push({
    type: "load_history",
    request: { conn: conn.id, room: room.name, ref, query },
  });
}

/** Sends a frame to every member of a room, holding it for those who wait for `History`. */
export function toRoom(
  room: Room,
  type: ServerType,
  data: string,
  out: Effect[],
  except?: ConnId,
  seq = 0,
): void {
  let conns: Iterable<ConnId> = room.members;
  let count = room.members.size - (except === undefined ? 0 : 1);
  if (room.held.size > 0 || (seq > 0 && room.floors.size > 0)) {
    const live: ConnId[] = [];
    for (const id of room.members) {
      const held = room.held.get(id);
      const floor = seq > 0 ? room.floors.get(id) : undefined;
      if (floor !== undefined) {
        // Replayed already: the member's seqs go on after its floor.
        if (seq >= floor) room.floors.delete(id);
        if (seq <= floor) continue;
      }
      if (held) {
        if (id !== except) held.push({ seq, data, kind: type });
      } else if (id !== except) live.push(id);
    }
    conns = live;
    count = live.length;
    except = undefined;
  }
  if (count <= 0) return;
  const effect: Effect = {
    type: "broadcast",
    conns,
    count,
    data,
    kind: type,
    room: room.name,
  };
  if (except !== undefined) effect.except = except;
  out.push(effect);
}

/**
 * Tells a room's members that `username` entered (`reason` null) or left;
 * `except` is the connection that caused it.
 */
export function announce(
  room: Room,
  username: string,
  timestamp: number,
  reason: LeaveReason | null,
  out: Effect[],
  except?: ConnId,
): void {
  const body = { room: room.name, sender_username: username, timestamp };
  if (reason === null) {
    toRoom(room, "Enter", encode("Enter", body), out, except);
  } else {
    toRoom(
      room,
      "Leave",
      encode("Leave", { ...body, reason }),
      out,
      except,
    );
  }
}

/** Adds a connection to a room; its user's connections there before it. */
export function addMember(ctx: Ctx, conn: Connection, room: Room): number {
  const username = conn.username as string;
  conn.rooms.add(room.name);
  pin(ctx, room);
  room.members.add(conn.id);
  const before = room.users.get(username) ?? 0;
  room.users.set(username, before + 1);
  if (before === 0) rosterAdd(room.roster, username);
  return before;
}

/**
 * Called before `room.members` changes: a broadcast of this same event that
 * reads the live set (queued frames of a connection run in one event) gets
 * a copy of the set as it was when the broadcast was made.
 */
function pin(ctx: Ctx, room: Room): void {
  const { state, out } = ctx;
  // Nothing is broadcast while draining; spares shutdown a scan per close.
  if (state.draining) return;
  for (let i = 0; i < out.length; i++) {
    const effect = out[i];
    if (effect?.type === "broadcast" && effect.conns === room.members) {
      out[i] = { ...effect, conns: [...room.members] };
    }
  }
}

/** Takes a connection out of a room; the others see it go if it was its user's last. */
export function exitRoom(
  ctx: Ctx,
  conn: Connection,
  room: Room,
  reason: LeaveReason,
): void {
  const { state, out } = ctx;
  const now = state.now;
  const username = conn.username as string;
  conn.rooms.delete(room.name);
  pin(ctx, room);
  room.members.delete(conn.id);
  room.held.delete(conn.id);
  room.floors.delete(conn.id);
  const count = (room.users.get(username) ?? 1) - 1;
  if (count > 0) room.users.set(username, count);
  else {
    room.users.delete(username);
    rosterRemove(room.roster, username);
    if (state.settings.cluster) {
      // The cluster tells whether the user is still in the room elsewhere.
      out.push({
        type: "part",
        room: room.name,
        username,
        reason,
        timestamp: now,
        empty: room.members.size === 0 && room.joining.size === 0,
      });
    } else if (!state.draining && !gather(state, room, username, false)) {
      announce(room, username, now, reason, out);
    }
  }
  forgetIfEmpty(state, room);
}

/**
 * Forgets a room that has no members and nobody joining; a single node
 * also forgets its `seq` once no write of it is in flight (`room_seqs.ts`).
 */
export function forgetIfEmpty(state: ChatState, room: Room): void {
  if (room.members.size === 0 && room.joining.size === 0) {
    state.rooms.delete(room.name);
    forgetSeq(state, room.name);
  }
}
