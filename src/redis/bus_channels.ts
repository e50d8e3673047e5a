/**
 * Which sharded channels one node of the cluster bus follows: a room's
 * (`KEYS.roomChannel`) while it has members there or a join on its way,
 * a user's (`KEYS.userChannel`) while it holds the user or a claim is on
 * its way. A channel is subscribed before the join or claim that needs it
 * runs, and unsubscribed after the part or release that ends it; the
 * node's resync sets the lot to what the node holds
 * ({@linkcode BusChannels.reconcile}).
 *
 * It does not parse payloads (the bus's `hear` does) or know where a
 * channel lives (`ShardedSubscriber` does).
 *
 * @module
 */
import type { PayloadListener } from "./connection.ts";
import { KEYS } from "./keys.ts";
import type { ShardedSubscriber } from "./sharded_subscriber.ts";

/** Adds `by` to the count of `key` in `counts`, forgetting it at 0. */
function count(counts: Map<string, number>, key: string, by: number): void {
  const next = (counts.get(key) ?? 0) + by;
  if (next > 0) counts.set(key, next);
  else counts.delete(key);
}

/** The room and user channels of one node; see the module documentation. */
export class BusChannels {
  #subscriber: ShardedSubscriber;
  #hear: PayloadListener;
  /** Rooms whose channel this node follows. */
  #rooms = new Set<string>();
  /** Users whose channel this node follows. */
  #users = new Set<string>();
  /** Joins in flight, by room: their channel stays. */
  #joining = new Map<string, number>();
  /** Claims in flight, by username: their channel stays. */
  #claiming = new Map<string, number>();

  /** Subscribes through `subscriber`, every channel to `hear`. */
  constructor(subscriber: ShardedSubscriber, hear: PayloadListener) {
    this.#subscriber = subscriber;
    this.#hear = hear;
  }

  /**
   * Runs `work` (a join) with `room`'s channel, and `username`'s when
   * `claim`, kept followed until it ends.
   */
  async during<T>(
    room: string | null,
    username: string | null,
    work: () => Promise<T>,
  ): Promise<T> {
    if (room !== null) count(this.#joining, room, 1);
    if (username !== null) count(this.#claiming, username, 1);
    try {
      return await work();
    } finally {
      if (room !== null) count(this.#joining, room, -1);
      if (username !== null) count(this.#claiming, username, -1);
    }
  }

  /**
   * Follows a room's channel; resolves once it is live: `true` when this
   * call subscribed it.
   */
  followRoom(room: string): Promise<boolean> {
    this.#rooms.add(room);
    return this.#subscriber.subscribe(KEYS.roomChannel(room), this.#hear);
  }

  /** Stops following a room's channel, unless a join is on its way. */
  async unfollowRoom(room: string): Promise<void> {
    if (this.#joining.has(room) || !this.#rooms.delete(room)) return;
    await this.#subscriber.unsubscribe(KEYS.roomChannel(room));
  }

  /** Follows a user's channel; resolves once it is live. */
  async followUser(username: string): Promise<void> {
    this.#users.add(username);
    await this.#subscriber.subscribe(KEYS.userChannel(username), this.#hear);
  }

  /**
   * Follows a user's channel, waiting for it at most `ms`: a subscriber that
   * answers late (its connection stalled) must not hold a claim up.
   */
  async followUserWithin(username: string, ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.followUser(username),
      new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
    ]).finally(() => clearTimeout(timer));
  }

  /** Stops following a user's channel, unless a claim is on its way. */
  async unfollowUser(username: string): Promise<void> {
    if (this.#claiming.has(username) || !this.#users.delete(username)) return;
    const channel = KEYS.userChannel(username);
    // Another name of the same folded form shares the channel.
    for (const other of this.#users) {
      if (KEYS.userChannel(other) === channel) return;
    }
    await this.#subscriber.unsubscribe(channel);
  }

  /**
   * Follows exactly `rooms` and `users` (and what joins and claims in
   * flight need): the new ones first, then the others go.
   */
  async reconcile(
    rooms: ReadonlySet<string>,
    users: ReadonlySet<string>,
  ): Promise<void> {
    await Promise.all([
      ...[...rooms].map((room) => this.followRoom(room)),
      ...[...users].map((user) => this.followUser(user)),
    ]);
    await Promise.all([
      ...[...this.#rooms].filter((room) => !rooms.has(room)).map((room) =>
        this.unfollowRoom(room)
      ),
      ...[...this.#users].filter((user) => !users.has(user)).map((user) =>
        this.unfollowUser(user)
      ),
    ]);
  }
}
