/**
 * Large rooms in a cluster. Redis counts a room's members on every node and
 * marks it large past `PRESENCE_FULL_LIMIT` (`src/redis/bus_presence.ts`);
 * then no node publishes its joins and leaves one by one: each gathers its
 * own (`outgoing`) and sends them once per tick as one batch, which tells
 * every other node the count with a version, so that all nodes keep the
 * newest count and agree. Each node flushes what it gathered, its own and
 * other nodes', to its members as one `PresenceDiff` per tick
 * (`presence.ts`). Back below 90% of the limit, Redis tells every node
 * (`full`) with the member list. `Members` pages are read from Redis.
 *
 * It does not decide single-node presence (`presence.ts`) nor join and
 * part a room (`cluster.ts`).
 *
 * @module
 */
import { encode } from "../wire/server_frames.ts";
import type { MembersRequestBody } from "../wire/client_frames.ts";
import { answerClosing, refuse } from "./closing.ts";
import { accept, ack, goOn, send } from "./emit.ts";
import { toRoom } from "./rooms.ts";
import { record } from "./roster.ts";
import type {
  BusMessage,
  ChatState,
  Connection,
  Ctx,
  Event,
  Room,
} from "./types.ts";

/** Keeps a count the cluster gave, if it is the newest this node heard. */
export function recount(
  state: ChatState,
  room: Room,
  counted: { count: number; version: number },
): void {
  if (counted.version < room.countVersion) return;
  room.countVersion = counted.version;
  room.count = counted.count;
  if (room.large && room.count !== room.sentCount) {
    state.presenceDue.add(room.name);
  }
}

/** A user of this node joined or left a large room: for its members, and for the other nodes. */
export function gatherLocal(
  state: ChatState,
  room: Room,
  username: string,
  joined: boolean,
): void {
  record(room.changes, username, joined);
  record(room.outgoing, username, joined);
  state.presenceDue.add(room.name);
}

/** Another node's batch, or its single `enter`/`leave` in a room that is large here. */
export function heard(
  state: ChatState,
  room: Room,
  message: Extract<BusMessage, { kind: "presence" }>,
): void {
  const { batch } = message;
  room.large = true;
  for (const name of batch.joined) record(room.changes, name, true);
  for (const name of batch.left) record(room.changes, name, false);
  room.unnamed.joined += Math.max(0, batch.joined_count - batch.joined.length);
  room.unnamed.left += Math.max(0, batch.left_count - batch.left.length);
  recount(state, room, message);
  state.presenceDue.add(room.name);
}

/** The room is full again in the cluster: every member here gets the whole list. */
export function heardFull(
  ctx: Ctx,
  room: Room,
  message: Extract<BusMessage, { kind: "full" }>,
): void {
  recount(ctx.state, room, message);
  room.large = false;
  room.changes.clear();
  room.outgoing.clear();
  room.unnamed = { joined: 0, left: 0 };
  const body = { room: room.name, members: [...message.members].sort() };
  toRoom(room, "Presence", encode("Presence", body), ctx.out);
}

/** Cluster `Members`: read from Redis; the connection waits. */
export function membersCluster(
  ctx: Ctx,
  conn: Connection,
  body: MembersRequestBody,
  ref: string | undefined,
): void {
  accept(conn);
  conn.busy = true;
  ctx.out.push({
    type: "members_page",
    request: {
      conn: conn.id,
      room: body.room,
      cursor: body.cursor,
      limit: body.limit,
      ref,
    },
  });
}

/** The answer to `members_page`: the page and its `Ack`, or `unavailable`. */
export function membersLoaded(
  ctx: Ctx,
  event: Extract<Event, { type: "members_loaded" }>,
): void {
  const { state, out } = ctx;
  const { request, page } = event;
  const conn = state.connections.get(request.conn);
  if (!conn) return;
  goOn(ctx, conn);
  if (conn.closing) {
    answerClosing(ctx, conn, request.ref);
    return;
  }
  if (page === null) {
    refuse(
      ctx,
      conn,
      "unavailable",
      "the cluster cannot be reached; send Members again",
      request.ref,
    );
    return;
  }
  send(out, conn.id, "Members", {
    room: request.room,
    members: page.names,
    count: page.count,
    more: page.cursor !== 0,
    cursor: page.cursor,
  });
  ack(out, conn, request.ref, {});
}
