/**
 * Presence of a room, full or coalesced. A room with at most
 * `PRESENCE_FULL_LIMIT` members has full presence: a joiner's `Presence`
 * lists every member, and the others get one `Enter`/`Leave` per user
 * (`rooms.ts` announces them). Past the limit the room is large: joins and
 * leaves are gathered (`changes`, in `roster.ts`) and flushed here once per
 * `tick` as one `PresenceDiff`; a joiner's `Presence` carries the `count`
 * and the first page of names; `Members` pages through the rest by a cursor
 * (the join number). Below 90% of the limit the room goes back to full
 * presence with a full `Presence` to every member.
 *
 * The roster, the `Presence` body and the gathering are data kept in
 * `roster.ts`; this file sends the frames. It does not decide who may enter
 * or leave (`membership.ts`), nor send frames other than presence.
 *
 * @module
 */
import { encode } from "../wire/server_frames.ts";
import type { MembersRequestBody } from "../wire/client_frames.ts";
import { accept, ack, send } from "./emit.ts";
import { toRoom } from "./rooms.ts";
import { targetRoom } from "./command_checks.ts";
import { fullLimit, presenceOf, rosterPage } from "./roster.ts";
import { membersCluster } from "./cluster_presence.ts";
import {
  type Connection,
  type Ctx,
  PRESENCE_DIFF_NAMES,
  PRESENCE_INTERVAL_MS,
} from "./types.ts";

/** Below this many members a large room goes back to full presence: 90% of the limit. */
export function fullAgainBelow(limit: number): number {
  return Math.ceil(limit * 0.9);
}

/**
 * The `tick`: every large room with changes sends them as one
 * `PresenceDiff`; one that fell below 90% of the limit goes back to full
 * presence with a full `Presence` to every member instead.
 */
export function flushPresence(ctx: Ctx): void {
  const { state, out } = ctx;
  if (state.presenceDue.size === 0) return;
  const cluster = state.settings.cluster === true;
  if (cluster && state.now - state.presenceAt < PRESENCE_INTERVAL_MS) return;
  state.presenceAt = state.now;
  const below = fullAgainBelow(fullLimit(state));
  for (const name of state.presenceDue) {
    const room = state.rooms.get(name);
    if (!room || !room.large) continue;
    // A cluster node tells the others of its own joins and leaves.
    if (cluster && room.outgoing.size > 0) {
      const batch = tally(room.outgoing, { joined: 0, left: 0 });
      room.outgoing.clear();
      out.push({
        type: "presence_batch",
        batch: { room: name, ...batch },
      });
    }
    // In a cluster, Redis decides the way back (`full`, `cluster_presence.ts`).
    if (!cluster && room.users.size < below) {
      room.large = false;
      room.changes.clear();
      room.roster.first = null;
      const body = presenceOf(room);
      toRoom(room, "Presence", encode("Presence", body), out);
      continue;
    }
    const count = cluster ? room.count : room.users.size;
    const { unnamed } = room;
    if (
      room.changes.size === 0 && unnamed.joined === 0 && unnamed.left === 0 &&
      count === room.sentCount
    ) continue;
    const diff = tally(room.changes, unnamed);
    room.changes.clear();
    room.unnamed = { joined: 0, left: 0 };
    room.sentCount = count;
    toRoom(
      room,
      "PresenceDiff",
      encode("PresenceDiff", {
        room: room.name,
        count,
        ...diff,
        timestamp: state.now,
      }),
      out,
    );
  }
  state.presenceDue.clear();
}

/** The names (capped) and counts of `changes`, plus joins and leaves known only by number. */
function tally(
  changes: Map<string, boolean>,
  unnamed: { joined: number; left: number },
): {
  joined: string[];
  joined_count: number;
  left: string[];
  left_count: number;
} {
  const joined: string[] = [];
  const left: string[] = [];
  let joinedCount = unnamed.joined;
  let leftCount = unnamed.left;
  for (const [username, present] of changes) {
    if (present) {
      if (joined.length < PRESENCE_DIFF_NAMES) joined.push(username);
      joinedCount++;
    } else {
      if (left.length < PRESENCE_DIFF_NAMES) left.push(username);
      leftCount++;
    }
  }
  return { joined, joined_count: joinedCount, left, left_count: leftCount };
}

/** `Members`: one page of a room the connection is in, in join order. */
export function members(
  ctx: Ctx,
  conn: Connection,
  body: MembersRequestBody,
  ref: string | undefined,
): void {
  const { state, out } = ctx;
  const room = targetRoom(ctx, conn, body.room, ref);
  if (!room) return;
  if (state.settings.cluster) {
    membersCluster(ctx, conn, body, ref);
    return;
  }
  accept(conn);
  const page = rosterPage(room.roster, body.cursor, body.limit);
  send(out, conn.id, "Members", {
    room: room.name,
    members: page.names,
    count: room.users.size,
    more: page.more,
    cursor: page.cursor,
  });
  ack(out, conn, ref, {});
}
