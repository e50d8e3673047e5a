/**
 * The cluster bus: how one node hears the others and tells them what its
 * clients did, through Redis. The runner calls it for the reducer's cluster
 * effects (`join`, `part`, `claim`, `release`, `fill_gap`) and turns its
 * answers and the other nodes' messages into events.
 *
 * Every change to shared state is one Lua script, so it is atomic and its
 * `PUBLISH`es happen in script order: a message is published once per node
 * with members in its room (`chat:roomnodes:{room}`), on that node's own
 * channel `chat:node:{id}`. Pub/sub is at most once, so what a node may have
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
 * Redis Cluster is not supported: the scripts touch keys they compute.
 *
 * @module
 */
import { LEAVE_REASONS, type LeaveReason } from "../wire/codes.ts";
import type { Logger } from "../runtime/log.ts";
import { foldName } from "../wire/names.ts";
import {
  parseStoredGroupChat,
  parseStoredPrivateChat,
  type StoredGroupChat,
} from "../wire/protocol.ts";
import type {
  BusMessage,
  Contributions,
  JoinRequest,
  JoinResult,
} from "../chat/reducer.ts";
import type { ClusterPort } from "../chat/cluster_port.ts";
import { type RedisConnection, RedisScript } from "./connection.ts";
import { KEYS, LUA, PAYLOAD } from "./storage.ts";

/** How often a node renews its heartbeat and reaps dead nodes. */
export const HEARTBEAT_MS = 1_000;

/** How long a node's heartbeat lives: a node silent this long is dead. */
export const NODE_TTL_MS = 5_000;

/** A snapshot as `RESYNC` takes it: with the folded form of each username. */
function withNames(snapshot: Contributions): string {
  const names = [...new Set(snapshot.users.map(foldName))];
  return JSON.stringify({ ...snapshot, names });
}

/** How long the mark of a reaped node lasts, for its return (a day). */
const REAPED_TTL_MS = 86_400_000;

/** Lua shared by the scripts below: joining, leaving, forgetting a node. */
const LIB = `
local function publish_except(room, except, payload)
  for _, n in ipairs(redis.call('SMEMBERS', ${LUA.roomNodes} .. room)) do
    if n ~= except then redis.call('PUBLISH', ${LUA.channel} .. n, payload) end
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function join(node, room, user, ts, quiet)
  redis.call('SADD', ${LUA.roomNodes} .. room, node)
  if redis.call('SADD', ${LUA.nodePresence} .. node, room .. '\\n' .. user) == 0 then return 0 end
  if redis.call('HINCRBY', ${LUA.presence} .. room, user, 1) ~= 1 then return 0 end
  if quiet then return 1 end
  publish_except(room, node, ${LUA.enter} .. cjson.encode({room = room, sender_username = user, timestamp = ts}))
  return 1
end
local function part(node, room, user, reason, ts)
  if redis.call('SREM', ${LUA.nodePresence} .. node, room .. '\\n' .. user) == 0 then return 0 end
  if redis.call('HINCRBY', ${LUA.presence} .. room, user, -1) > 0 then return 0 end
  redis.call('HDEL', ${LUA.presence} .. room, user)
  publish_except(room, node, ${LUA.leave} .. cjson.encode({room = room, sender_username = user, timestamp = ts, reason = reason}))
  return 1
end
local function split(entry)
  local nl = string.find(entry, '\\n', 1, true)
  return string.sub(entry, 1, nl - 1), string.sub(entry, nl + 1)
end
local function forget_node(node)
  local ts = now_ms()
  for _, entry in ipairs(redis.call('SMEMBERS', ${LUA.nodePresence} .. node)) do
    local room, user = split(entry)
    part(node, room, user, 'disconnected', ts)
    redis.call('SREM', ${LUA.roomNodes} .. room, node)
  end
  for _, user in ipairs(redis.call('SMEMBERS', ${LUA.nodeUsers} .. node)) do
    redis.call('SREM', ${LUA.userNodes} .. user, node)
  end
  for _, name in ipairs(redis.call('SMEMBERS', ${LUA.nodeNames} .. node)) do
    redis.call('SREM', ${LUA.nameNodes} .. name, node)
  end
  redis.call('DEL', ${LUA.nodePresence} .. node, ${LUA.nodeUsers} .. node, ${LUA.nodeNames} .. node, ${LUA.alive} .. node)
  redis.call('SREM', ${LUA.nodes}, node)
end
`;

/**
 * ARGV: node, room, user, claim (`exclusive`|`none`), timestamp, the user's
 * folded name: an exclusive claim is refused while another node holds any
 * name of the same folded form (`Alice` and `alice` are one name), held
 * (`1`: the node already has the user in the room, so nobody is announced).
 */
const JOIN = new RedisScript(`${LIB}
local node, room, user, claim = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local folded = ARGV[6]
if claim == 'exclusive' then
  for _, n in ipairs(redis.call('SMEMBERS', ${LUA.userNodes} .. user)) do
    if n ~= node then return {'taken'} end
  end
  for _, n in ipairs(redis.call('SMEMBERS', ${LUA.nameNodes} .. folded)) do
    if n ~= node then return {'taken'} end
  end
  redis.call('SADD', ${LUA.userNodes} .. user, node)
  redis.call('SADD', ${LUA.nodeUsers} .. node, user)
  redis.call('SADD', ${LUA.nameNodes} .. folded, node)
  redis.call('SADD', ${LUA.nodeNames} .. node, folded)
end
local new = join(node, room, user, tonumber(ARGV[5]), ARGV[7] == '1')
local seq = tonumber(redis.call('GET', ${LUA.seq} .. room) or '0')
return {'joined', seq, new, redis.call('HKEYS', ${LUA.presence} .. room)}
`);

/** ARGV: node, room, user, reason, timestamp, empty (`1`: no member left here). */
const PART = new RedisScript(`${LIB}
local node, room = ARGV[1], ARGV[2]
local gone = part(node, room, ARGV[3], ARGV[4], tonumber(ARGV[5]))
if ARGV[6] == '1' then redis.call('SREM', ${LUA.roomNodes} .. room, node) end
return gone
`);

/** ARGV: node, user, folded user. */
const CLAIM = new RedisScript(`
redis.call('SADD', ${LUA.userNodes} .. ARGV[2], ARGV[1])
redis.call('SADD', ${LUA.nodeUsers} .. ARGV[1], ARGV[2])
redis.call('SADD', ${LUA.nameNodes} .. ARGV[3], ARGV[1])
redis.call('SADD', ${LUA.nodeNames} .. ARGV[1], ARGV[3])
return 1
`);

/** ARGV: node, user, folded user. */
const RELEASE = new RedisScript(`
redis.call('SREM', ${LUA.userNodes} .. ARGV[2], ARGV[1])
redis.call('SREM', ${LUA.nodeUsers} .. ARGV[1], ARGV[2])
redis.call('SREM', ${LUA.nameNodes} .. ARGV[3], ARGV[1])
redis.call('SREM', ${LUA.nodeNames} .. ARGV[1], ARGV[3])
return 1
`);

/** ARGV: node, ttl, reap (`1`). Renews the node's heartbeat and forgets dead nodes. */
const HEARTBEAT = new RedisScript(`${LIB}
local node = ARGV[1]
redis.call('SET', ${LUA.alive} .. node, '1', 'PX', ARGV[2])
redis.call('SADD', ${LUA.nodes}, node)
local reaped = 0
if ARGV[3] ~= '1' then return 0 end
for _, n in ipairs(redis.call('SMEMBERS', ${LUA.nodes})) do
  if n ~= node and redis.call('EXISTS', ${LUA.alive} .. n) == 0 then
    forget_node(n)
    redis.call('SET', ${LUA.reaped} .. n, '1', 'PX', ${REAPED_TTL_MS})
    reaped = reaped + 1
  end
end
return reaped
`);

/**
 * ARGV: node, ttl, JSON of Contributions. Sets the node's records to what it
 * holds. Its users' presence is restored quietly: the other nodes were never
 * told they left (Redis lost the records, say it restarted empty), so an
 * `Enter` would announce users whose state did not change. Only a node that
 * was reaped, whose users' `Leave` the others got, announces them again.
 * Entries it no longer holds leave with a `Leave`: those users did go.
 */
const RESYNC = new RedisScript(`${LIB}
local node = ARGV[1]
local announce = redis.call('DEL', ${LUA.reaped} .. node) == 1
redis.call('SET', ${LUA.alive} .. node, '1', 'PX', ARGV[2])
redis.call('SADD', ${LUA.nodes}, node)
local want = cjson.decode(ARGV[3])
local users = {}
for _, u in ipairs(want.users) do users[u] = true end
for _, u in ipairs(redis.call('SMEMBERS', ${LUA.nodeUsers} .. node)) do
  if not users[u] then
    redis.call('SREM', ${LUA.userNodes} .. u, node)
    redis.call('SREM', ${LUA.nodeUsers} .. node, u)
  end
end
for u in pairs(users) do
  redis.call('SADD', ${LUA.userNodes} .. u, node)
  redis.call('SADD', ${LUA.nodeUsers} .. node, u)
end
local names = {}
for _, f in ipairs(want.names) do names[f] = true end
for _, f in ipairs(redis.call('SMEMBERS', ${LUA.nodeNames} .. node)) do
  if not names[f] then
    redis.call('SREM', ${LUA.nameNodes} .. f, node)
    redis.call('SREM', ${LUA.nodeNames} .. node, f)
  end
end
for f in pairs(names) do
  redis.call('SADD', ${LUA.nameNodes} .. f, node)
  redis.call('SADD', ${LUA.nodeNames} .. node, f)
end
local ts = now_ms()
local entries, rooms = {}, {}
for _, p in ipairs(want.presence) do
  entries[p[1] .. '\\n' .. p[2]] = p
  rooms[p[1]] = true
end
for _, entry in ipairs(redis.call('SMEMBERS', ${LUA.nodePresence} .. node)) do
  if not entries[entry] then
    local room, user = split(entry)
    part(node, room, user, 'disconnected', ts)
    if not rooms[room] then redis.call('SREM', ${LUA.roomNodes} .. room, node) end
  end
end
for _, p in pairs(entries) do join(node, p[1], p[2], ts, not announce) end
for _, pair in ipairs(want.seqs) do
  local key = ${LUA.seq} .. pair[1]
  if tonumber(redis.call('GET', key) or '0') < pair[2] then
    redis.call('SET', key, string.format('%d', pair[2]))
  end
  redis.call('SADD', ${LUA.roomNodes} .. pair[1], node)
end
return 1
`);

/** ARGV: node. The node leaves the cluster: its users leave their rooms. */
const FORGET = new RedisScript(`${LIB}
forget_node(ARGV[1])
return 1
`);

/** ARGV: node, token. Tells every other node a token is revoked. */
const REVOKE = new RedisScript(`
for _, n in ipairs(redis.call('SMEMBERS', ${LUA.nodes})) do
  if n ~= ARGV[1] then redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.revoked} .. ARGV[2]) end
end
return 1
`);

/**
 * Tells every node but `from` that a token was revoked; for the token
 * command, which is no node (`from` is then its own name).
 */
export async function publishRevocation(
  connection: RedisConnection,
  from: string,
  token: string,
): Promise<void> {
  await REVOKE.run(connection, [from, token]);
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
  heartbeatMs?: number;
  nodeTtlMs?: number;
}

/**
 * Parses a payload of a node channel; `null` when it is not one of ours or a
 * message lacks a field (a node of another version, say).
 */
export function parseBusPayload(payload: string): BusMessage | null {
  const kind = payload[0];
  const rest = payload.slice(1);
  try {
    switch (kind) {
      case PAYLOAD.group: {
        const message = parseStoredGroupChat(JSON.parse(rest));
        return message && { kind: "group", message };
      }
      case PAYLOAD.private: {
        const message = parseStoredPrivateChat(JSON.parse(rest));
        return message && { kind: "private", message };
      }
      case PAYLOAD.enter:
      case PAYLOAD.leave: {
        const body = JSON.parse(rest);
        const who = {
          room: String(body.room),
          username: String(body.sender_username),
          timestamp: Number(body.timestamp),
        };
        if (kind === PAYLOAD.enter) return { kind: "enter", ...who };
        const reason: LeaveReason = Object.hasOwn(LEAVE_REASONS, body.reason)
          ? body.reason
          : "disconnected";
        return { kind: "leave", ...who, reason };
      }
      case PAYLOAD.revoked:
        return { kind: "revoked", token: rest };
    }
  } catch {
    // Not JSON: not from a node of this version.
  }
  return null;
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
    this.#subscription ??= this.#subscriber.client.subscribe(
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
      const reaped = await HEARTBEAT.run(this.#commands, [
        this.#nodeId,
        this.#nodeTtlMs,
        reap ? "1" : "0",
      ]);
      if (this.#synced) this.#healthySince ??= now;
      if (Number(reaped) > 0) {
        this.#log("warn", "reaped dead nodes", { nodes: Number(reaped) });
      }
    } catch (error) {
      this.#healthySince = null;
      this.#log("debug", "heartbeat failed", { error: String(error) });
    }
  }

  /** Sets the node's records to what it holds, then lets the reducer fill gaps. */
  async #sync(): Promise<void> {
    if (this.#syncing || this.#stopped || !this.#subscribed) return;
    if (!this.#commands.up) return;
    this.#syncing = true;
    const outages = this.#outages;
    try {
      await RESYNC.run(this.#commands, [
        this.#nodeId,
        this.#nodeTtlMs,
        withNames(this.#listener.snapshot()),
      ]);
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

  /** Enters a user's connection into a room; rejects when Redis cannot be reached. */
  async join(request: JoinRequest): Promise<JoinResult> {
    const reply = await JOIN.run(this.#commands, [
      this.#nodeId,
      request.room,
      request.username,
      request.claim,
      request.timestamp,
      foldName(request.username),
      request.held ? "1" : "0",
    ]) as unknown[];
    if (reply[0] === "taken") return { kind: "taken" };
    return {
      kind: "joined",
      seq: Number(reply[1]),
      isNew: Number(reply[2]) === 1,
      members: (reply[3] as unknown[]).map(String),
    };
  }

  /** This node no longer holds the user in the room; `true` when no node does. */
  async part(
    room: string,
    username: string,
    reason: string,
    timestamp: number,
    empty: boolean,
  ): Promise<boolean> {
    const gone = await PART.run(this.#commands, [
      this.#nodeId,
      room,
      username,
      reason,
      timestamp,
      empty ? "1" : "0",
    ]);
    return Number(gone) === 1;
  }

  /** Records that this node holds a connection of `username`. */
  async claim(username: string): Promise<void> {
    await CLAIM.run(this.#commands, [
      this.#nodeId,
      username,
      foldName(username),
    ]);
  }

  /** Records that this node holds no connection of `username`. */
  async release(username: string): Promise<void> {
    await RELEASE.run(this.#commands, [
      this.#nodeId,
      username,
      foldName(username),
    ]);
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
      await FORGET.run(this.#commands, [this.#nodeId]).catch(
        (error) =>
          this.#log("warn", "cluster leave failed", { error: String(error) }),
      );
    }
    await this.#subscriber.close();
  }
}
