/**
 * What the client tracks per room it is in: members (and, in a large room,
 * the count and the paging cursor), the `seq`s seen (to
 * drop duplicates), the highest `seq` (the `since` of a recovery) and the
 * `History` frames it expects on the current connection.
 *
 * Data shapes and a pure helper only: the `ChatClient` class in
 * `chat_client.ts` updates them as frames arrive.
 *
 * @module
 */
import type { HistoryReason } from "./client_types.ts";
import type { AckBody, StoredGroupChat } from "./frames.ts";
import type { Deferred } from "./pending.ts";

/** A `History` frame to come: the request it answers and why. */
export type HistoryExpectation = {
  id: string;
  reason: HistoryReason | "watermark";
};

/** One room the client is in (or entering). */
export interface RoomTrack {
  /** `history` asked for by the first `enter`. */
  history: number | undefined;
  /** The highest `seq` seen (or known to exist) in the room. */
  lastSeq: number | undefined;
  /** Every `seq` emitted, to drop duplicates. */
  seen: Set<number>;
  /** `enter()` calls waiting for the room's next `Ack`. */
  waiters: Deferred<AckBody>[];
  /** Accepted by the server at least once. */
  joined: boolean;
  /** `History` frames to come on this connection, in order. */
  expected: HistoryExpectation[];
  /**
   * Members, from `Presence`, `Enter` and `Leave`; in a large room, those
   * known so far: pages loaded, and `PresenceDiff`'s names.
   */
  members: Set<string>;
  /** A large room (coalesced presence): its member count; `undefined` otherwise. */
  count: number | undefined;
  /** A large room: members not loaded yet remain (page with `cursor`). */
  more: boolean;
  /** A large room: the `cursor` of the next `Members` page. */
  cursor: number;
}

/** The highest `seq` of `start` and `messages`. */
export function maxSeq(
  start: number | undefined,
  messages: StoredGroupChat[],
): number | undefined {
  let max = start;
  for (const message of messages) {
    if (max === undefined || message.seq > max) max = message.seq;
  }
  return max;
}
