/**
 * A room's presence as data: the roster of its users in join order (added
 * to, removed from, read a page at a time), the `Presence` a joiner gets
 * (the whole list, or a large room's count and first page), the limit of
 * full presence, and a join or leave gathered for the next `tick` once the
 * room is large. Every operation here costs O(1) amortised per join or
 * leave (the roster is appended to and compacted in one pass when half
 * dead); a page costs a binary search and its names.
 *
 * It sends nothing and decides nothing about who is in a room: flushing the
 * gathered changes and answering `Members` are `presence.ts`'s, members
 * entering and leaving `rooms.ts`'s.
 *
 * @module
 */
import type { PresenceBody } from "../wire/server_frames.ts";
import {
  type ChatState,
  PRESENCE_FULL_LIMIT,
  PRESENCE_PAGE,
  type Room,
  type Roster,
  type RosterEntry,
} from "./types.ts";

/**
 * Notes in `changes` a user who joined (`true`) or left; one back to where
 * they were at the last flush cancels out (nothing to tell).
 */
export function record(
  changes: Map<string, boolean>,
  username: string,
  joined: boolean,
): void {
  const before = changes.get(username);
  if (before !== undefined && before !== joined) changes.delete(username);
  else changes.set(username, joined);
}

/** An empty roster. */
export function createRoster(): Roster {
  return { entries: [], index: new Map(), next: 1, dead: 0, first: null };
}

/** The limit of full presence for `state`. */
export function fullLimit(state: ChatState): number {
  return state.settings.presenceFullLimit ?? PRESENCE_FULL_LIMIT;
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
  record(room.changes, username, joined);
  state.presenceDue.add(room.name);
  return true;
}
