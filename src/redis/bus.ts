/**
 * The cluster bus: how one node hears the others and tells them what its
 * clients did, through Redis. The runner calls it for the reducer's cluster
 * effects (`join`, `part`, `claim`, `release`, `fill_gap`, `typing`,
 * `presence_batch`, `members_page`) and turns its answers and the other
 * nodes' messages into events.
 *
 * Every change to a room's shared state is one Lua script in the room's
 * hash slot, so it is atomic and its `SPUBLISH`es happen in script order: a
 * message is published once, on the room's sharded channel
 * (`chat:r{room}:bus`, in the room's slot), and a node listens on the
 * channels of the rooms where it has members (subscribed before its first
 * member's join runs, unsubscribed after its last member's part), of the
 * users it holds (`chat:u{folded}:bus`: private messages), and on one
 * control channel (`chat:{control}`: token revocations, admin actions). A
 * change that spans slots (a join: the node's lists, the user's claim, the
 * room) is one call per slot, ordered so that a node's own lists of rooms and
 * users always cover what it has elsewhere: reaping a dead node, or a
 * node's resync, reads those lists and visits each room and user. Pub/sub
 * is at most once, so what a node may have missed while a channel was lost
 * (its master died, its slot moved: see `sharded_subscriber.ts`) is read
 * back from the room's history once every channel is back (the
 * `bus_synced` event), and a `seq` missing for `GAP_WAIT_MS` is read back
 * too (the reducer's `fill_gap`): that also closes the join race, a message
 * published after the join read the room's `seq` but before the
 * subscription was live.
 *
 * A node proves it lives with a key that expires (`chat:alive:{id}`); every
 * node reaps the nodes whose key is gone: their users leave their rooms
 * (`Leave`, reason `disconnected`) and their usernames are free again. After
 * each reconnect a node sets its records in Redis to what it really holds
 * (Redis may have restarted, or reaped it during a long outage); the
 * reaping and that resync are in `node_records.ts`.
 *
 * Every script declares all its keys in `KEYS`, all in one slot (see
 * `src/redis/keys.ts`). Reaping is not atomic as a whole: a dead node that
 * comes back while another node reaps it may lose records, which its next
 * resync (after any outage) restores.
 *
 * Why this file is long: `RedisBus` is the one {@linkcode ClusterPort}, and
 * its heartbeat, sync state, channels and subscriber are used by every
 * method (a join waits for its channels; a failed one makes the node
 * resync); its scripts, channels, presence, node records and control
 * channel are files of their own already.
 *
 * @module
 */
import type { Logger } from "../runtime/log.ts";
import {
  parseStoredGroupChat,
  type StoredGroupChat,
  type TypingNotice,
} from "../wire/protocol.ts";
import {
  type AdminAction,
  type BusMessage,
  type Contributions,
  type JoinRequest,
  type JoinResult,
  type PartResult,
  PRESENCE_FULL_LIMIT,
  PRESENCE_PAGE,
  type PresenceBatch,
} from "../chat/reducer.ts";
import type { ClusterPort } from "../chat/cluster_port.ts";
import type { RedisConnection } from "./connection.ts";
import { KEYS, PAYLOAD } from "./keys.ts";
import { ShardedSubscriber } from "./sharded_subscriber.ts";
import { BusChannels } from "./bus_channels.ts";
import {
  busPayload,
  parseBusPayload,
  USER_CLAIM,
  USER_RELEASE,
  userKeys,
} from "./bus_scripts.ts";
import { forgetNode, reapDead, resyncRecords } from "./node_records.ts";
import { publishAdminAction, publishRevocation } from "./control_channel.ts";
import {
  joinCounted,
  membersPage,
  partCounted,
  publishBatch,
} from "./bus_presence.ts";

/** How often a node renews its heartbeat and reaps dead nodes. */
export const HEARTBEAT_MS = 1_000;

/** How long a node's heartbeat lives: a node silent this long is dead. */
export const NODE_TTL_MS = 5_000;

/** Waits for `promise`, at most `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]).finally(() => clearTimeout(timer));
}

/** How soon a node that could not subscribe at its start tries again. */
const RETRY_MS = 100;

/** How long a claim waits for its user's channel at most. */
const FOLLOW_WAIT_MS = 1000;

/** How many recent private payloads a node remembers, to drop the copy. */
const SEEN_PRIVATE = 10_000;

/** What the bus tells the runner. */
export interface BusListener {
  /** A message from another node. */
  message(message: BusMessage): void;
  /** The node is subscribed and its records are in sync again. */
  synced(): void;
  /** What the node holds now, to sync its records. */
  snapshot(): Contributions;
}

/** Settings of the bus; the defaults are the ones documented. */
export interface BusOptions {
  nodeId: string;
  log: Logger;
  /** `PRESENCE_FULL_LIMIT`: past it a room's presence is coalesced. */
  presenceFullLimit?: number;
  heartbeatMs?: number;
  nodeTtlMs?: number;
}

/** One node's link to the others, through Redis. */
export class RedisBus implements ClusterPort {
  #commands: RedisConnection;
  #subscriber: ShardedSubscriber;
  #listener: BusListener;
  #nodeId: string;
  #log: Logger;
  #heartbeatMs: number;
  #nodeTtlMs: number;
  #presenceFullLimit: number;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  /** The subscriber is subscribed and the records were synced since. */
  #synced = false;
  #syncing = false;
  /** The control channel is subscribed and no channel is lost. */
  #subscribed = false;
  #stopped = false;
  /** `Typing` notices published, for their nonces. */
  #typings = 0;
  #channels: BusChannels;
  /** Recent private payloads: one that came on two channels goes out once. */
  #seenPrivate = new Set<string>();
  /** Counts the subscriber's losses: a sync that spans one does not count. */
  #outages = 0;
  /**
   * Since when heartbeats have succeeded without a break while in sync. A
   * node reaps others only after a TTL of that: after an outage (or a Redis
   * that stopped answering) every heartbeat has expired, and the others
   * need a TTL to come back.
   */
  #healthySince: number | null = null;

  /**
   * Uses `commands` for scripts, and a `ShardedSubscriber` on it for the channels.
   * Call {@linkcode RedisBus.start} to subscribe and start the heartbeat.
   */
  constructor(
    commands: RedisConnection,
    listener: BusListener,
    options: BusOptions,
  ) {
    this.#commands = commands;
    this.#listener = listener;
    this.#nodeId = options.nodeId;
    this.#log = options.log;
    this.#heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this.#nodeTtlMs = options.nodeTtlMs ?? NODE_TTL_MS;
    this.#presenceFullLimit = options.presenceFullLimit ?? PRESENCE_FULL_LIMIT;
    this.#subscriber = new ShardedSubscriber(commands, {
      name: "subscriber",
      log: this.#log,
      onReady: () => this.#subscriberReady(),
      onDown: () => {
        this.#subscribed = false;
        this.#synced = false;
        this.#healthySince = null;
        this.#outages++;
      },
    });
    this.#channels = new BusChannels(this.#subscriber, this.#hear);
  }

  /** A payload on one of the node's channels. */
  #hear = (payload: string): void => {
    const parsed = parseBusPayload(payload);
    if (!parsed) {
      this.#log("warn", "unknown bus payload", { kind: payload[0] });
      return;
    }
    if (parsed.origin === this.#nodeId) return;
    if (parsed.message.kind === "private") {
      // To a user and from a user this node both holds: it came on both
      // users' channels.
      if (this.#seenPrivate.has(payload)) return;
      this.#seenPrivate.add(payload);
      if (this.#seenPrivate.size > SEEN_PRIVATE) {
        this.#seenPrivate.delete(this.#seenPrivate.values().next().value!);
      }
    }
    this.#listener.message(parsed.message);
  };

  /** This node's id in the cluster. */
  get nodeId(): string {
    return this.#nodeId;
  }

  /** Connected to Redis and in sync: cross-node delivery works. */
  get up(): boolean {
    return this.#commands.up && this.#subscriber.up && this.#subscribed &&
      this.#synced;
  }

  /** The sharded channels this node is subscribed to now (for tests). */
  get channels(): string[] {
    return this.#subscriber.channels;
  }

  /**
   * Starts the heartbeat and, once Redis answers, subscribes to the node's
   * channel and syncs; a node started while Redis is down does so when it
   * comes.
   */
  async start(): Promise<void> {
    this.#heartbeat = setInterval(() => this.#beat(), this.#heartbeatMs);
    if (this.#subscriber.up) await this.#subscriberReady();
  }

  /**
   * Subscribes to the control channel (again) and syncs: at the start, and
   * each time every lost channel is back (node-redis or the subscriber has
   * resubscribed them by now).
   */
  async #subscriberReady(): Promise<void> {
    if (this.#stopped || this.#readying) return;
    this.#readying = true;
    try {
      await this.#subscriber.subscribe(KEYS.control, this.#hear);
    } catch (error) {
      // Redis away: the next heartbeat tries again.
      const text = String(error);
      if (/unknown command/i.test(text)) {
        this.#log("error", "Redis 7.0 or later is needed (SSUBSCRIBE)", {
          error: text,
        });
      } else this.#log("debug", "cluster subscribe failed", { error: text });
      // Soon again (Redis not known yet, say), not only at the next heartbeat.
      clearTimeout(this.#retry);
      if (!this.#stopped) {
        this.#retry = setTimeout(() => this.#subscriberReady(), RETRY_MS);
      }
      return;
    } finally {
      this.#readying = false;
    }
    if (!this.#subscriber.up) return;
    this.#subscribed = true;
    this.#synced = false;
    await this.#sync();
  }

  #readying = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** The node put itself in `chat:nodes` once: a dead node is reaped only from there. */
  #listed = false;

  /** Renews the heartbeat, reaps dead nodes, and syncs when needed. */
  async #beat(): Promise<void> {
    if (!this.#subscribed) this.#subscriberReady();
    else if (!this.#synced) this.#sync();
    if (!this.#commands.up || !this.#synced) this.#healthySince = null;
    if (!this.#commands.up) return;
    const now = performance.now();
    const reap = this.#healthySince !== null &&
      now - this.#healthySince >= this.#nodeTtlMs;
    try {
      await this.#alive();
      const reaped = reap ? await reapDead(this.#commands, this.#nodeId) : 0;
      if (this.#synced) this.#healthySince ??= now;
      if (reaped > 0) {
        this.#log("warn", "reaped dead nodes", { nodes: reaped });
      }
    } catch (error) {
      this.#healthySince = null;
      this.#log("debug", "heartbeat failed", { error: String(error) });
    }
  }

  /** Renews this node's heartbeat and lists it among the nodes. */
  async #alive(): Promise<void> {
    await Promise.all([
      this.#commands.command([
        "SET",
        KEYS.alive(this.#nodeId),
        "1",
        "PX",
        String(this.#nodeTtlMs),
      ]),
      this.#commands.command(["SADD", KEYS.nodes, this.#nodeId]),
    ]);
    this.#listed = true;
  }

  /** Sets the node's records to what it holds, then lets the reducer fill gaps. */
  async #sync(): Promise<void> {
    if (this.#syncing || this.#stopped || !this.#subscribed) return;
    if (!this.#commands.up) return;
    this.#syncing = true;
    const outages = this.#outages;
    try {
      await resyncRecords(
        this.#commands,
        this.#nodeId,
        this.#listener.snapshot(),
        {
          alive: () => this.#alive(),
          channels: (rooms, users) => this.#channels.reconcile(rooms, users),
        },
      );
      if (outages !== this.#outages) return;
      this.#synced = true;
      this.#log("info", "cluster synced", { node: this.#nodeId });
      this.#listener.synced();
    } catch (error) {
      this.#log("warn", "cluster sync failed", { error: String(error) });
    } finally {
      this.#syncing = false;
    }
  }

  /**
   * Enters a user's connection into a room; rejects when Redis cannot be
   * reached. Up to three slots, in order: the node's lists, the user's
   * claim (exclusive claims only), the room.
   */
  async join(request: JoinRequest): Promise<JoinResult> {
    const { room, username } = request;
    const exclusive = request.claim === "exclusive";
    return await this.#channels.during(
      room,
      exclusive ? username : null,
      () => this.#join(request, exclusive),
    );
  }

  /**
   * {@linkcode RedisBus.join}. The room's and (on a first `Enter`) the
   * user's `SSUBSCRIBE` go first, and are waited for at most
   * {@linkcode FOLLOW_WAIT_MS}: a stalled subscriber must not hold the
   * `Enter` up. A message published between the join and the moment the
   * room's subscription is live (the join race) is read back from history
   * once it is (`#catchUp`, from the join's `seq`); a subscription that
   * failed makes the node resync, which reads every room back. Presence
   * (`Enter`, `Leave`) and `PrivateChat`s have no history: those published
   * in that window, only when the subscriber answers late, are missed.
   */
  async #join(request: JoinRequest, exclusive: boolean): Promise<JoinResult> {
    const { room, username } = request;
    const following = this.#channels.followRoom(room).then(
      (fresh) => fresh,
      () => null,
    );
    // Both channels live before the join and the claim run, so that no
    // Enter, Leave or PrivateChat after them is missed; but a stalled
    // subscriber holds them up at most FOLLOW_WAIT_MS.
    await within(
      Promise.all([
        following,
        exclusive ? this.#channels.followUser(username).catch(() => {}) : null,
      ]),
      FOLLOW_WAIT_MS,
    );
    try {
      const result = await this.#joinRoom(request, exclusive);
      following.then((fresh) => {
        if (fresh === null) this.#needSync("room subscription failed");
        else if (fresh && result.kind === "joined") {
          this.#catchUp(room, result.seq);
        }
      });
      return result;
    } catch (error) {
      // The channel may stay followed with no member: the resync drops it.
      this.#needSync("join failed");
      throw error;
    }
  }

  /** The calls of a join, in slot order (see {@linkcode RedisBus.join}). */
  async #joinRoom(
    request: JoinRequest,
    exclusive: boolean,
  ): Promise<JoinResult> {
    const { room, username } = request;
    const node = this.#nodeId;
    // Listed before it records anything, or a node killed before its first
    // heartbeat would hold its users' names for ever.
    if (!this.#listed) await this.#alive();
    await this.#commands.command(["SADD", KEYS.nodeRooms(node), room]);
    if (exclusive) {
      await this.#commands.command(["SADD", KEYS.nodeUsers(node), username]);
      const claimed = await USER_CLAIM.run(
        this.#commands,
        userKeys(username),
        [node, "1"],
      );
      if (Number(claimed) !== 1) return { kind: "taken" };
    }
    return await joinCounted(
      this.#commands,
      node,
      request,
      this.#presenceFullLimit,
      PRESENCE_PAGE,
    );
  }

  /** This node no longer holds the user in the room; `true` when no node does. */
  async part(
    room: string,
    username: string,
    reason: string,
    timestamp: number,
    empty: boolean,
  ): Promise<PartResult> {
    const node = this.#nodeId;
    const result = await partCounted(
      this.#commands,
      node,
      { room, username, reason, timestamp, empty },
      this.#presenceFullLimit,
    );
    if (empty) {
      await this.#commands.command(["SREM", KEYS.nodeRooms(node), room]);
      await this.#channels.unfollowRoom(room);
    }
    return result;
  }

  /** Tells the room's other nodes of this node's batch; see `bus_presence.ts`. */
  presenceBatch(
    batch: PresenceBatch,
  ): Promise<{ count: number; version: number }> {
    return publishBatch(this.#commands, this.#nodeId, batch);
  }

  /** A page of a room's members on every node (Redis's hash order). */
  members(
    room: string,
    cursor: number,
    limit: number,
  ): Promise<{ names: string[]; cursor: number; count: number }> {
    return membersPage(this.#commands, this.#nodeId, room, cursor, limit);
  }

  /**
   * What a room's channel missed before it was live: the room's stored
   * messages after `after` (the join's `seq`), handed on as if heard (the
   * reducer drops what it has).
   */
  async #catchUp(room: string, after: number): Promise<void> {
    try {
      for (const message of await this.fillGap(room, after, null)) {
        this.#listener.message({ kind: "group", message });
      }
    } catch (error) {
      this.#needSync(`catch-up failed: ${error}`);
    }
  }

  /** Something may have been missed: resync (and read every room back) at the next heartbeat. */
  #needSync(why: string): void {
    if (!this.#synced) return;
    this.#synced = false;
    this.#healthySince = null;
    this.#log("debug", "cluster resync needed", { why });
  }

  /** Records that this node holds a connection of `username`. */
  async claim(username: string): Promise<void> {
    const node = this.#nodeId;
    await this.#channels.during(null, username, async () => {
      if (!this.#listed) await this.#alive();
      await this.#channels.followUserWithin(username, FOLLOW_WAIT_MS);
      await this.#commands.command(["SADD", KEYS.nodeUsers(node), username]);
      await USER_CLAIM.run(this.#commands, userKeys(username), [node, "0"]);
    });
  }

  /** Records that this node holds no connection of `username`. */
  async release(username: string): Promise<void> {
    const node = this.#nodeId;
    await USER_RELEASE.run(this.#commands, userKeys(username), [node]);
    await this.#commands.command(["SREM", KEYS.nodeUsers(node), username]);
    await this.#channels.unfollowUser(username);
  }

  /** A room's stored messages with `after < seq < before` (no bound when `null`). */
  async fillGap(
    room: string,
    after: number,
    before: number | null,
  ): Promise<StoredGroupChat[]> {
    const members = await this.#commands.command<string[]>([
      "ZRANGE",
      KEYS.hist(room),
      `(${after}`,
      before === null ? "+inf" : `(${before}`,
      "BYSCORE",
    ]);
    // One entry another node wrote wrong is skipped, as if trimmed, rather
    // than failing every read of the gap.
    return members.flatMap((json) => {
      try {
        const message = parseStoredGroupChat(JSON.parse(json));
        return message ? [message] : [];
      } catch {
        return [];
      }
    });
  }

  /** Tells the other nodes of an administrator's action. */
  async admin(action: AdminAction): Promise<void> {
    await publishAdminAction(this.#commands, this.#nodeId, action);
  }

  /** Tells the other nodes that a token was revoked. */
  async revoked(token: string): Promise<void> {
    await publishRevocation(this.#commands, this.#nodeId, token);
  }

  /**
   * Publishes a `Typing` on its room's channel, or its target's channel: the
   * nodes following it (those with members there, or a connection of the
   * target) relay it; this node drops its own copy.
   */
  async typing(notice: TypingNotice): Promise<void> {
    const channel = notice.room !== undefined
      ? KEYS.roomChannel(notice.room)
      : KEYS.userChannel(notice.target_username);
    // Two notices may be equal (start, stop, start): a nonce keeps each
    // payload distinct, so no layer that drops repeats can swallow one.
    const nonce = `${this.#nodeId}/${++this.#typings}`;
    await this.#commands.command([
      "SPUBLISH",
      channel,
      busPayload(
        PAYLOAD.typing,
        this.#nodeId,
        JSON.stringify({ ...notice, nonce }),
      ),
    ]);
  }

  /** Leaves the cluster: stops the heartbeat, forgets the node's records, unsubscribes. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#retry);
    if (this.#commands.up) {
      await forgetNode(this.#commands, this.#nodeId).catch(
        (error) =>
          this.#log("warn", "cluster leave failed", { error: String(error) }),
      );
    }
    await this.#subscriber.close();
  }
}
