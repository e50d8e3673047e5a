/**
 * Presence of a room, full or coalesced. A room with at most
 * `PRESENCE_FULL_LIMIT` members has full presence: a joiner's `Presence`
 * lists every member, and the others get one `Enter`/`Leave` per user
 * (`rooms.ts` announces them). Past the limit the room is large: joins and
 * leaves are gathered (`changes`) and flushed once per `tick` as one
 * `PresenceDiff`; a joiner's `Presence` carries the `count` and the first
 * page of names; `Members` pages through the rest by a cursor (the join
 * number). Below 90% of the limit the room goes back to full presence with a
 * full `Presence` to every member.
 *
 * Every operation here costs O(1) amortised per join or leave (the roster
 * is appended to and compacted in one pass when half dead); a page costs a
 * binary search and its names. It does not decide who may enter or leave
 * (`membership.ts`), nor send frames other than presence.
 *
 * @module
 */
import { encode, type PresenceBody } from "../wire/server_frames.ts";
import type { MembersRequestBody } from "../wire/client_frames.ts";
import { accept, ack, send } from "./emit.ts";
import { toRoom } from "./rooms.ts";
import { targetRoom } from "./membership.ts";
import { membersCluster } from "./cluster_presence.ts";
import {
  type ChatState,
  type Connection,
  type Ctx,
  PRESENCE_DIFF_NAMES,
  PRESENCE_FULL_LIMIT,
  PRESENCE_INTERVAL_MS,
  PRESENCE_PAGE,
  type Room,
  type Roster,
  type RosterEntry,
} from "./types.ts";

/** An empty roster. */
export function createRoster(): Roster {
  return { entries: [], index: new Map(), next: 1, dead: 0, first: null };
}

/** The limit of full presence for `state`. */
export function fullLimit(state: ChatState): number {
  return state.settings.presenceFullLimit ?? PRESENCE_FULL_LIMIT;
}

/** Below this many members a large room goes back to full presence: 90% of the limit. */
export function fullAgainBelow(limit: number): number {
  return Math.ceil(limit * 0.9);
}

/** Appends a user who is now in the room (their first connection there). */
export function rosterAdd(roster: Roster, name: string): void {
  if (roster.index.has(name)) return;
  const entry: RosterEntry = { n: roster.next++, name, live: true };
  roster.entries.push(entry);
  roster.index.set(name, entry);
  // A join lands at the end: only a first page not yet full changes.
  if (roster.first !== null && roster.first.names.length < PRESENCE_PAGE) {
    roster.first = null;
  } else if (roster.first !== null) roster.first.more = true;
}

/** Drops a user who is no longer in the room (their last connection left). */
export function rosterRemove(roster: Roster, name: string): void {
  const entry = roster.index.get(name);
  if (!entry) return;
  roster.index.delete(name);
  entry.live = false;
  roster.dead++;
  if (roster.first !== null && entry.n <= roster.first.last) {
    roster.first = null;
  }
  if (roster.dead > 32 && roster.dead * 2 > roster.entries.length) {
    roster.entries = roster.entries.filter((one) => one.live);
    roster.dead = 0;
  }
}

/**
 * Up to `limit` users who joined after join number `cursor`, in join order,
 * whether more follow, and the cursor for the next page.
 */
export function rosterPage(
  roster: Roster,
  cursor: number,
  limit: number,
): { names: string[]; more: boolean; cursor: number } {
  const { entries } = roster;
  // The first entry with n > cursor (entries are in n order).
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((entries[mid] as RosterEntry).n <= cursor) low = mid + 1;
    else high = mid;
  }
  const names: string[] = [];
  let last = cursor;
  let i = low;
  for (; i < entries.length && names.length < limit; i++) {
    const entry = entries[i] as RosterEntry;
    if (!entry.live) continue;
    names.push(entry.name);
    last = entry.n;
  }
  while (i < entries.length && !(entries[i] as RosterEntry).live) i++;
  return { names, more: i < entries.length, cursor: last };
}

/** The `Presence` a connection gets on entering `room`, full or a first page. */
export function presenceOf(room: Room): PresenceBody {
  if (!room.large) {
    return { room: room.name, members: [...room.users.keys()].sort() };
  }
  const { roster } = room;
  if (roster.first === null) {
    const page = rosterPage(roster, 0, PRESENCE_PAGE);
    roster.first = { names: page.names, last: page.cursor, more: page.more };
  }
  const { names, last, more } = roster.first;
  return {
    room: room.name,
    members: names,
    count: room.users.size,
    more,
    cursor: last,
  };
}

/**
 * A user joined (`true`) or left (`false`) a room: in a large room the
 * change waits for the next `tick`; returns whether it did (`false`: the
 * caller announces it as today). A join that takes the room past the limit
 * makes it large, and is the first change gathered.
 */
export function gather(
  state: ChatState,
  room: Room,
  username: string,
  joined: boolean,
): boolean {
  if (!room.large) {
    if (!joined || room.users.size <= fullLimit(state)) return false;
    room.large = true;
  }
  const before = room.changes.get(username);
  // Back to where it was at the last flush: nothing to tell.
  if (before !== undefined && before !== joined) room.changes.delete(username);
  else room.changes.set(username, joined);
  state.presenceDue.add(room.name);
  return true;
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
