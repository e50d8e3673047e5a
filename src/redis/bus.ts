/**
 * The cluster bus: how one node hears the others and tells them what its
 * clients did, through Redis. The runner calls it for the reducer's cluster
 * effects (`join`, `part`, `claim`, `release`, `fill_gap`) and turns its
 * answers and the other nodes' messages into events.
 *
 * Every change to a room's shared state is one Lua script in the room's
 * hash slot, so it is atomic and its `PUBLISH`es happen in script order: a
 * message is published once per node with members in its room
 * (`KEYS.roomNodes`), on that node's own channel `chat:node:{id}`. A change
 * that spans slots (a join: the node's lists, the user's claim, the room)
 * is one call per slot, ordered so that a node's own lists of rooms and
 * users always cover what it has elsewhere: reaping a dead node, or a
 * node's resync, reads those lists and visits each room and user. Pub/sub is at most once, so what a node may have
 * missed while its subscriber was away is read back from the room's history
 * after every reconnect (the `bus_synced` event), and a `seq` missing for
 * `GAP_WAIT_MS` is read back too (the reducer's `fill_gap`).
 *
 * A node proves it lives with a key that expires (`chat:alive:{id}`); every
 * node reaps the nodes whose key is gone: their users leave their rooms
 * (`Leave`, reason `disconnected`) and their usernames are free again. After
 * each reconnect a node sets its records in Redis to what it really holds
 * (Redis may have restarted, or reaped it during a long outage).
 *
 * Every script declares all its keys in `KEYS`, all in one slot (see
 * `src/redis/keys.ts`). Reaping is not atomic as a whole: a dead node that
 * comes back while another node reaps it may lose records, which its next
 * resync (after any outage) restores.
 *
 * @module
 */
import type { Logger } from "../runtime/log.ts";
import {
  parseStoredGroupChat,
  type StoredGroupChat,
} from "../wire/protocol.ts";
import {
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
import { KEYS } from "./keys.ts";
import {
  parseBusPayload,
  REVOKE,
  ROOM_SYNC,
  roomKeys,
  USER_CLAIM,
  USER_RELEASE,
  userKeys,
} from "./bus_scripts.ts";
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

/** How long the mark of a reaped node lasts, for its return (a day). */
const REAPED_TTL_MS = 86_400_000;

/**
 * Tells every node but `from` that a token was revoked; for the token
 * command, which is no node (`from` is then its own name).
 */
export async function publishRevocation(
  connection: RedisConnection,
  from: string,
  token: string,
): Promise<void> {
  await REVOKE.run(connection, [KEYS.nodes], [from, token]);
}

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
  #subscriber: RedisConnection;
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
  #subscribed = false;
  /** The one `SUBSCRIBE`; node-redis repeats it by itself after a reconnect. */
  #subscription: Promise<void> | undefined;
  #stopped = false;
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
   * Uses `commands` for scripts and a duplicate of it for the node's channel.
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
    this.#subscriber = commands.duplicate("subscriber", {
      onReady: () => this.#subscriberReady(),
      onDown: () => {
        this.#subscribed = false;
        this.#synced = false;
        this.#healthySince = null;
        this.#outages++;
      },
    });
  }

  /** This node's id in the cluster. */
  get nodeId(): string {
    return this.#nodeId;
  }

  /** Connected to Redis and in sync: cross-node delivery works. */
  get up(): boolean {
    return this.#commands.up && this.#subscribed && this.#synced;
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

  /** The subscriber is (again) connected: node-redis has resubscribed by now. */
  async #subscriberReady(): Promise<void> {
    if (this.#stopped) return;
    this.#subscription ??= this.#subscriber.subscribe(
      KEYS.channel(this.#nodeId),
      (payload: string) => {
        const message = parseBusPayload(payload);
        if (message) this.#listener.message(message);
        else this.#log("warn", "unknown bus payload", { kind: payload[0] });
      },
    );
    try {
      await this.#subscription;
    } catch (error) {
      // Lost again before it answered: the next ready tries again.
      this.#subscription = undefined;
      this.#log("warn", "cluster subscribe failed", { error: String(error) });
      return;
    }
    this.#subscribed = true;
    this.#synced = false;
    await this.#sync();
  }

  /** Renews the heartbeat, reaps dead nodes, and syncs when needed. */
  async #beat(): Promise<void> {
    if (!this.#synced) this.#sync();
    if (!this.#commands.up || !this.#synced) this.#healthySince = null;
    if (!this.#commands.up) return;
    const now = performance.now();
    const reap = this.#healthySince !== null &&
      now - this.#healthySince >= this.#nodeTtlMs;
    try {
      await this.#alive();
      const reaped = reap ? await this.#reap() : 0;
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
  }

  /**
   * Forgets the nodes whose heartbeat is gone, marking them reaped first;
   * returns how many. Several nodes may reap one node at once: every step
   * is idempotent.
   */
  async #reap(): Promise<number> {
    const nodes = await this.#commands.command<string[]>([
      "SMEMBERS",
      KEYS.nodes,
    ]);
    const others = nodes.filter((node) => node !== this.#nodeId);
    const alive = await Promise.all(
      others.map((node) =>
        this.#commands.command<number>(["EXISTS", KEYS.alive(node)])
      ),
    );
    const dead = others.filter((_, i) => Number(alive[i]) === 0);
    for (const node of dead) {
      await this.#commands.command([
        "SET",
        KEYS.reaped(node),
        "1",
        "PX",
        String(REAPED_TTL_MS),
      ]);
      await this.#forget(node);
    }
    return dead.length;
  }

  /**
   * Removes a node's records, one slot at a time: its users leave their
   * rooms (`Leave`, reason `disconnected`) and their names are free, then
   * the node's own keys go. Its lists of rooms and users may hold more than
   * it has (they are written before the rooms and users): those steps do
   * nothing.
   */
  async #forget(node: string): Promise<void> {
    const [rooms, users] = await Promise.all([
      this.#commands.command<string[]>(["SMEMBERS", KEYS.nodeRooms(node)]),
      this.#commands.command<string[]>(["SMEMBERS", KEYS.nodeUsers(node)]),
    ]);
    await Promise.all([
      ...rooms.map((room) =>
        ROOM_SYNC.run(this.#commands, roomKeys(room, node), [
          node,
          room,
          "0",
          "0",
          "",
        ])
      ),
      ...users.map((user) =>
        USER_RELEASE.run(this.#commands, userKeys(user), [node])
      ),
    ]);
    await Promise.all([
      this.#commands.command([
        "DEL",
        KEYS.nodeRooms(node),
        KEYS.nodeUsers(node),
      ]),
      this.#commands.command(["DEL", KEYS.alive(node)]),
      this.#commands.command(["SREM", KEYS.nodes, node]),
    ]);
  }

  /**
   * Sets the node's records to what it holds. Its users' presence is
   * restored quietly: the other nodes were never told they left (Redis lost
   * the records, say it restarted empty), so an `Enter` would announce
   * users whose state did not change. Only a node that was reaped, whose
   * users' `Leave` the others got, announces them again. Entries it no
   * longer holds leave with a `Leave`: those users did go. One call per
   * room and per user, each in its slot; the node's lists of rooms and
   * users grow before and shrink after, so that they always cover what it
   * has in Redis.
   */
  async #resync(snapshot: Contributions): Promise<void> {
    const node = this.#nodeId;
    const announce = Number(
      await this.#commands.command(["DEL", KEYS.reaped(node)]),
    ) === 1;
    await this.#alive();
    const [oldRooms, oldUsers] = await Promise.all([
      this.#commands.command<string[]>(["SMEMBERS", KEYS.nodeRooms(node)]),
      this.#commands.command<string[]>(["SMEMBERS", KEYS.nodeUsers(node)]),
    ]);
    const users = new Set(snapshot.users);
    const inRoom = new Map<string, string[]>();
    for (const [room, user] of snapshot.presence) {
      const list = inRoom.get(room) ?? [];
      list.push(user);
      inRoom.set(room, list);
    }
    const seqs = new Map(snapshot.seqs);
    const rooms = new Set([...inRoom.keys(), ...seqs.keys()]);
    if (rooms.size > 0) {
      await this.#commands.command(["SADD", KEYS.nodeRooms(node), ...rooms]);
    }
    if (users.size > 0) {
      await this.#commands.command(["SADD", KEYS.nodeUsers(node), ...users]);
    }
    const staleUsers = oldUsers.filter((user) => !users.has(user));
    await Promise.all([
      ...[...new Set([...oldRooms, ...rooms])].map((room) =>
        ROOM_SYNC.run(this.#commands, roomKeys(room, node), [
          node,
          room,
          announce ? "1" : "0",
          rooms.has(room) ? "1" : "0",
          seqs.has(room) ? seqs.get(room)! : "",
          ...inRoom.get(room) ?? [],
        ])
      ),
      ...staleUsers.map((user) =>
        USER_RELEASE.run(this.#commands, userKeys(user), [node])
      ),
      ...[...users].map((user) =>
        USER_CLAIM.run(this.#commands, userKeys(user), [node, "0"])
      ),
    ]);
    const staleRooms = oldRooms.filter((room) => !rooms.has(room));
    if (staleRooms.length > 0) {
      await this.#commands.command([
        "SREM",
        KEYS.nodeRooms(node),
        ...staleRooms,
      ]);
    }
    if (staleUsers.length > 0) {
      await this.#commands.command([
        "SREM",
        KEYS.nodeUsers(node),
        ...staleUsers,
      ]);
    }
  }

  /** Sets the node's records to what it holds, then lets the reducer fill gaps. */
  async #sync(): Promise<void> {
    if (this.#syncing || this.#stopped || !this.#subscribed) return;
    if (!this.#commands.up) return;
    this.#syncing = true;
    const outages = this.#outages;
    try {
      await this.#resync(this.#listener.snapshot());
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
    const node = this.#nodeId;
    const exclusive = request.claim === "exclusive";
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

  /** Records that this node holds a connection of `username`. */
  async claim(username: string): Promise<void> {
    const node = this.#nodeId;
    await this.#commands.command(["SADD", KEYS.nodeUsers(node), username]);
    await USER_CLAIM.run(this.#commands, userKeys(username), [node, "0"]);
  }

  /** Records that this node holds no connection of `username`. */
  async release(username: string): Promise<void> {
    const node = this.#nodeId;
    await USER_RELEASE.run(this.#commands, userKeys(username), [node]);
    await this.#commands.command(["SREM", KEYS.nodeUsers(node), username]);
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

  /** Tells the other nodes that a token was revoked. */
  async revoked(token: string): Promise<void> {
    await publishRevocation(this.#commands, this.#nodeId, token);
  }

  /** Leaves the cluster: stops the heartbeat, forgets the node's records, unsubscribes. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    if (this.#commands.up) {
      await this.#forget(this.#nodeId).catch(
        (error) =>
          this.#log("warn", "cluster leave failed", { error: String(error) }),
      );
    }
    await this.#subscriber.close();
  }
}
