/**
 * The history paging rules every storage shares: which `seq`s a
 * {@linkcode HistoryQuery} asks for, when a page is complete, and how a page
 * is picked out of a room's kept messages. Pure functions; no storage and
 * no I/O here (the port itself is `storage.ts`).
 *
 * @module
 */
import type { StoredGroupChat } from "../wire/protocol.ts";
import type { HistoryPage, HistoryQuery } from "./storage.ts";

/** The `seq`s a query asks for; nothing when `first > last`. */
export function wantedRange(
  query: HistoryQuery,
): { first: number; last: number } {
  const { upTo } = query;
  if (query.kind === "since") return { first: query.since + 1, last: upTo };
  const last = query.kind === "last" ? upTo : Math.min(query.before - 1, upTo);
  const count = query.kind === "last" ? query.count : query.limit;
  return { first: count <= 0 ? last + 1 : Math.max(1, last - count + 1), last };
}

/**
 * Whether a page is complete, by the rule of `docs/protocol.md`: it is not
 * when a message the query asks for was trimmed away. `returned` is how many
 * messages the page holds; `trimmed` is the highest `seq` the room's trimming
 * ever removed (0 when it removed none). It does not count `seq`s: a `seq`
 * whose write failed was never stored, so its gap is no loss; only messages
 * that were stored and then trimmed make a page incomplete.
 */
export function isComplete(
  query: HistoryQuery,
  returned: number,
  trimmed: number,
): boolean {
  if (trimmed <= 0) return true;
  if (query.kind === "since") {
    return trimmed <= query.since || query.since >= query.upTo;
  }
  // The newest kept messages come first: a page that is short of its
  // limit went down past the oldest kept message, into what was trimmed.
  const limit = query.kind === "last" ? query.count : query.limit;
  const { last } = wantedRange(query);
  return limit <= 0 || last < 1 || returned >= limit;
}

/**
 * Picks a page out of a room's kept messages (ascending `seq`); `trimmed`
 * as in {@linkcode isComplete}, by default what lies below the oldest kept
 * message (right when the room has no gap).
 */
export function selectHistory(
  kept: readonly StoredGroupChat[],
  query: HistoryQuery,
  trimmed: number = (kept[0]?.seq ?? 1) - 1,
): HistoryPage {
  const visible = kept.filter((message) => message.seq <= query.upTo);
  let messages: StoredGroupChat[];
  if (query.kind === "since") {
    messages = visible.filter((message) => message.seq > query.since);
  } else {
    const count = query.kind === "last" ? query.count : query.limit;
    const older = query.kind === "last"
      ? visible
      : visible.filter((message) => message.seq < query.before);
    messages = count <= 0 ? [] : older.slice(-count);
  }
  return {
    messages,
    complete: isComplete(query, messages.length, trimmed),
  };
}
