/**
 * The cluster port: what the effects runner asks of the other nodes of a
 * cluster, stated by the core and implemented by an adapter (today
 * `RedisBus` in `src/redis/bus.ts`), as centrifuge's `Broker` states what a
 * broker must do. The reducer never sees the port: it asks through the
 * effects `join`, `part`, `claim`, `release`, `fill_gap` and `typing`, and the runner
 * feeds each answer back as an event (`joined`, `parted`, `gap_filled`).
 *
 * What arrives from other nodes goes the other way, through the runner
 * (`Runner.hear`, `Runner.synced`), and is no part of this port. It holds
 * no implementation and does no I/O itself.
 *
 * @module
 */
import type { LeaveReason } from "../wire/codes.ts";
import type { StoredGroupChat, TypingNotice } from "../wire/protocol.ts";
import type {
  AdminAction,
  JoinRequest,
  JoinResult,
  PartResult,
  PresenceBatch,
} from "./reducer.ts";

export type { PresenceBatch };

/**
 * What the runner needs of the cluster. Every method rejects when the
 * cluster cannot be reached or answers with an error; the runner logs the
 * failure and hands the reducer `null` where an answer was owed. A call
 * that rejects may or may not have taken effect: the adapter mends that
 * when it is in sync again (it then calls `Runner.synced`).
 */
export interface ClusterPort {
  /**
   * Enters a user's connection into a room on every node, atomically:
   * `taken` when the request claims a username (`claim: "exclusive"`) that
   * another node's connection holds; otherwise `joined` with the room's last
   * `seq`, whether the user was in the room on no node before (then the
   * adapter has announced the `enter` to the other nodes), and the room's
   * members on every node.
   */
  join(request: JoinRequest): Promise<JoinResult>;
  /**
   * This node no longer holds `username` in `room` (`empty`: it holds no
   * member of the room at all). Resolves with `gone` when no node holds the
   * user there any more; the adapter has then announced the `leave` with
   * `reason` and `timestamp` to the other nodes, unless the room is large
   * (the node batches it). A large room that falls below 90% of
   * `PRESENCE_FULL_LIMIT` is full again, and every node hears `full`.
   */
  part(
    room: string,
    username: string,
    reason: LeaveReason,
    timestamp: number,
    empty: boolean,
  ): Promise<PartResult>;
  /**
   * Tells the other nodes with members in a large room of this node's
   * joins and leaves of one tick (bus message `presence`); resolves with the
   * room's count and its version.
   */
  presenceBatch(batch: PresenceBatch): Promise<{
    count: number;
    version: number;
  }>;
  /**
   * A page of a room's members on every node, after `cursor` (0: the
   * start), about `limit` names; the cursor that follows is 0 at the end.
   */
  members(
    room: string,
    cursor: number,
    limit: number,
  ): Promise<{ names: string[]; cursor: number; count: number }>;
  /** Records that this node holds a connection of `username`. */
  claim(username: string): Promise<void>;
  /** Records that this node holds no connection of `username` any more. */
  release(username: string): Promise<void>;
  /**
   * A room's stored messages with `after < seq < before` (no upper bound
   * when `before` is `null`), oldest first: what this node missed of the
   * room's fan-out. A stored entry it cannot read is left out, as if
   * trimmed.
   */
  fillGap(
    room: string,
    after: number,
    before: number | null,
  ): Promise<StoredGroupChat[]>;
  /**
   * Tells the other nodes that a token was revoked, so that they close its
   * connections at once rather than when their cached check expires.
   */
  revoked(token: string): Promise<void>;
  /**
   * Tells the other nodes with members in the notice's room, or with a
   * connection of its target, that someone is typing (or stopped). At most
   * once, nothing stored: a lost one expires in the clients by itself.
   */
  typing(notice: TypingNotice): Promise<void>;
  /**
   * Tells the other nodes of an administrator's action (kick, ban, unban,
   * a deleted message), which each applies to its own connections.
   */
  admin(action: AdminAction): Promise<void>;
}
