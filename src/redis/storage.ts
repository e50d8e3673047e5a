/**
 * A {@linkcode Storage} on Redis, shared by the nodes of a cluster: Redis
 * gives each room's `GroupChat`s their `seq`, keeps the recent history,
 * the offline `PrivateChat`s and the tokens, and each write publishes the
 * message to the other nodes that need it (one pub/sub channel per node).
 *
 * Key layout, shared with the cluster bus (see {@linkcode KEYS}):
 *
 * ```
 * chat:seq:{room}            STRING  last seq of the room
 * chat:hist:{room}           ZSET    score = seq, member = JSON StoredGroupChat
 * chat:roomnodes:{room}      SET     node ids with members in the room
 * chat:presence:{room}       HASH    username -> number of nodes with that user in the room
 * chat:nodepresence:{node}   SET     "room\nusername" entries this node contributes
 * chat:usernodes:{username}  SET     node ids with a connection of that user
 * chat:nodeusers:{node}      SET     usernames this node holds
 * chat:nodes                 SET     node ids
 * chat:alive:{node}          STRING  heartbeat with PX expiry
 * chat:reaped:{node}         STRING  the node was reaped (its users' Leave sent), PX expiry
 * chat:offline:{username}    LIST    JSON StoredPrivateChat, oldest first
 * chat:sent:{username}:{id}  STRING  "fingerprint seq id timestamp" of the chat message stored with that client id (PX window)
 * chat:token:{hash}          HASH    username, expires_at, created_at, revoked ("0"/"1")
 * chat:tokens                ZSET    token hash, score created_at
 * chat:tokenusers            SET     usernames that ever held a token
 * chat:probe:{node}          STRING  a node's storage probe, expires at once
 * channel chat:node:{node}   one pub/sub channel per node
 * ```
 *
 * A payload on a node's channel is one letter and the rest (see
 * {@linkcode PAYLOAD}): `g` and a `StoredGroupChat`, `p` and a
 * `StoredPrivateChat` (written here); `e`, `l` and `r` (the cluster bus's).
 *
 * Standalone Redis only: the scripts build key names from their `ARGV`.
 *
 * @module
 */
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";
import { type RedisConnection, RedisScript } from "./connection.ts";
import { ErrorReply } from "@redis/client";
import {
  fingerprint,
  hashToken,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type Storage,
  type StoredAs,
  type TokenAdmin,
  type TokenGrant,
  type TokenMatch,
  tokenMatches,
  type TokenRow,
  type WriteOp,
  type WriteResult,
} from "../chat/storage.ts";
import { isComplete, wantedRange } from "../chat/history_rules.ts";

/** The names of the cluster's Redis keys and channels. */
export const KEYS = {
  /** STRING: the last `seq` of a room. */
  seq: (room: string): string => `chat:seq:${room}`,
  /** ZSET: a room's recent messages, score `seq`, member JSON. */
  hist: (room: string): string => `chat:hist:${room}`,
  /** SET: ids of the nodes with members in a room. */
  roomNodes: (room: string): string => `chat:roomnodes:${room}`,
  /** HASH: username to the number of nodes with that user in a room. */
  presence: (room: string): string => `chat:presence:${room}`,
  /** SET: `room\nusername` entries a node contributes to presence. */
  nodePresence: (node: string): string => `chat:nodepresence:${node}`,
  /** SET: ids of the nodes with a connection of a user. */
  userNodes: (username: string): string => `chat:usernodes:${username}`,
  /** SET: the usernames a node holds. */
  nodeUsers: (node: string): string => `chat:nodeusers:${node}`,
  /** SET: ids of the nodes holding a username of this folded form (`foldName`). */
  nameNodes: (folded: string): string => `chat:namenodes:${folded}`,
  /** SET: the folded usernames a node holds. */
  nodeNames: (node: string): string => `chat:nodenames:${node}`,
  /** SET: every node id. */
  nodes: "chat:nodes",
  /** STRING: a node's heartbeat, with a `PX` expiry. */
  alive: (node: string): string => `chat:alive:${node}`,
  /**
   * STRING: the node was reaped as dead and its users' `Leave` sent; if it
   * comes back, its resync announces them again (with a `PX` expiry).
   */
  reaped: (node: string): string => `chat:reaped:${node}`,
  /** LIST: JSON `StoredPrivateChat`s waiting for a user, oldest first. */
  offline: (username: string): string => `chat:offline:${username}`,
  /**
   * STRING: `fingerprint seq id timestamp` of the `GroupChat` or
   * `PrivateChat` (seq 0) a user stored with client `id` (a username has no
   * `:`), expiring after the idempotency window.
   */
  sent: (username: string, id: string): string => `chat:sent:${username}:${id}`,
  /** HASH: a token by its hash: username, expires_at, created_at, revoked. */
  token: (hash: string): string => `chat:token:${hash}`,
  /** ZSET: token hashes, score created_at. */
  tokens: "chat:tokens",
  /** SET: usernames that ever held a token. */
  tokenUsers: "chat:tokenusers",
  /** STRING: a node's storage probe while writes fail, with a short expiry. */
  probe: (node: string): string => `chat:probe:${node}`,
  /** Pub/sub channel of a node. */
  channel: (node: string): string => `chat:node:${node}`,
} as const;

/** The first letter of a payload on a node's channel. */
export const PAYLOAD = {
  /** JSON of a `StoredGroupChat` (with its `seq`). */
  group: "g",
  /** JSON of a `StoredPrivateChat`. */
  private: "p",
  /** JSON `{room, sender_username, timestamp}`: a user entered a room. */
  enter: "e",
  /** The same with `reason`: a user left a room. */
  leave: "l",
  /** A revoked token. */
  revoked: "r",
} as const;

/** A room keeps at least this many messages, for gap fill between nodes. */
export const MIN_KEPT = 1000;

/**
 * Every key prefix (`KEYS.seq("")`), key name and payload letter as a Lua
 * string literal, for the scripts here and in `src/redis/bus.ts`.
 */
export const LUA = {
  seq: JSON.stringify(KEYS.seq("")),
  hist: JSON.stringify(KEYS.hist("")),
  roomNodes: JSON.stringify(KEYS.roomNodes("")),
  presence: JSON.stringify(KEYS.presence("")),
  nodePresence: JSON.stringify(KEYS.nodePresence("")),
  userNodes: JSON.stringify(KEYS.userNodes("")),
  nodeUsers: JSON.stringify(KEYS.nodeUsers("")),
  nameNodes: JSON.stringify(KEYS.nameNodes("")),
  nodeNames: JSON.stringify(KEYS.nodeNames("")),
  nodes: JSON.stringify(KEYS.nodes),
  alive: JSON.stringify(KEYS.alive("")),
  reaped: JSON.stringify(KEYS.reaped("")),
  offline: JSON.stringify(KEYS.offline("")),
  token: JSON.stringify(KEYS.token("")),
  tokens: JSON.stringify(KEYS.tokens),
  tokenUsers: JSON.stringify(KEYS.tokenUsers),
  channel: JSON.stringify(KEYS.channel("")),
  group: JSON.stringify(PAYLOAD.group),
  private: JSON.stringify(PAYLOAD.private),
  enter: JSON.stringify(PAYLOAD.enter),
  leave: JSON.stringify(PAYLOAD.leave),
  revoked: JSON.stringify(PAYLOAD.revoked),
} as const;

/**
 * ARGV: node, room, json before the seq, json after it, how many to keep,
 * the idempotency key (`KEYS.sent`, '' for none), the window in ms, the
 * message's `fingerprint`, `id timestamp`. Returns `seq id timestamp` of
 * the message stored before under the key with the same fingerprint, if any.
 * Otherwise gives the message the room's next seq, stores it (and the key),
 * trims the room, and publishes it to the other nodes with members in the
 * room. Returns the seq.
 */
const GROUP = new RedisScript(`
local node, room, before, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local keep = tonumber(ARGV[5])
local sent, print = ARGV[6], ARGV[8]
if sent ~= '' then
  local first = redis.call('GET', sent)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return string.sub(first, #print + 2)
  end
end
local hist = ${LUA.hist} .. room
local seq = redis.call('INCR', ${LUA.seq} .. room)
local json = before .. string.format('%d', seq) .. after
redis.call('ZADD', hist, seq, json)
if sent ~= '' then
  redis.call('SET', sent, print .. ' ' .. string.format('%d', seq) .. ' ' ..
    ARGV[9], 'PX', ARGV[7])
end
redis.call('ZREMRANGEBYRANK', hist, 0, -(keep + 1))
for _, n in ipairs(redis.call('SMEMBERS', ${LUA.roomNodes} .. room)) do
  if n ~= node then
    redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.group} .. json)
  end
end
return seq
`);

/**
 * ARGV: node, sender, target, json, auth "1"/"0", delivered "1"/"0", the
 * idempotency key ('' for none), the window in ms, the fingerprint,
 * `id timestamp`, cap ('' for none). Returns "dup" and `seq id timestamp`
 * of the message stored before under the key with the same fingerprint, if
 * any. Otherwise keeps the message for later when no node holds the target
 * and fewer than `cap` wait, and publishes it to the other nodes of the
 * target and of the sender. Returns "remote" (another node holds the
 * target), "ok", "not_connected", "unknown_user" or "inbox_full"; the key is
 * kept only for a message that was taken.
 */
const PRIVATE = new RedisScript(`
local node, sender, target, json = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local auth, delivered, key, print = ARGV[5], ARGV[6], ARGV[7], ARGV[9]
if key ~= '' then
  local first = redis.call('GET', key)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return 'dup' .. string.sub(first, #print + 2)
  end
end
local targets = redis.call('SMEMBERS', ${LUA.userNodes} .. target)
local remote = false
for _, n in ipairs(targets) do
  if n ~= node then remote = true break end
end
if delivered == '0' and not remote then
  if auth == '0' then return 'not_connected' end
  if redis.call('SISMEMBER', ${LUA.tokenUsers}, target) == 0 then
    return 'unknown_user'
  end
  local inbox = ${LUA.offline} .. target
  if ARGV[11] ~= '' and redis.call('LLEN', inbox) >= tonumber(ARGV[11]) then
    return 'inbox_full'
  end
  redis.call('RPUSH', inbox, json)
end
local sent = {[node] = true}
local function publish(nodes)
  for _, n in ipairs(nodes) do
    if not sent[n] then
      sent[n] = true
      redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.private} .. json)
    end
  end
end
publish(targets)
publish(redis.call('SMEMBERS', ${LUA.userNodes} .. sender))
if key ~= '' then
  redis.call('SET', key, print .. ' 0 ' .. ARGV[10], 'PX', ARGV[8])
end
if remote then return 'remote' end
return 'ok'
`);

/**
 * ARGV: room, visible (how many of the newest are visible, > 0), highest
 * score, lowest score, limit. Returns the oldest visible seq ('' when none)
 * and, newest first, at most `limit` messages between the two scores.
 */
const HISTORY = new RedisScript(`
local hist = ${LUA.hist} .. ARGV[1]
local visible = tonumber(ARGV[2])
local oldest = redis.call('ZRANGE', hist, visible - 1, visible - 1, 'REV',
  'WITHSCORES')
if #oldest == 0 then
  oldest = redis.call('ZRANGE', hist, 0, 0, 'WITHSCORES')
end
local messages = redis.call('ZRANGE', hist, ARGV[3], ARGV[4], 'BYSCORE',
  'REV', 'LIMIT', 0, ARGV[5])
return {oldest[2] or '', messages}
`);

/** ARGV: hash, username, expires_at, created_at. Fails if the hash exists. */
const CREATE_TOKEN = new RedisScript(`
local key = ${LUA.token} .. ARGV[1]
if redis.call('EXISTS', key) == 1 then
  return redis.error_reply('ERR token exists')
end
redis.call('HSET', key, 'username', ARGV[2], 'expires_at', ARGV[3],
  'created_at', ARGV[4], 'revoked', '0')
redis.call('ZADD', ${LUA.tokens}, ARGV[4], ARGV[1])
redis.call('SADD', ${LUA.tokenUsers}, ARGV[2])
return 'OK'
`);

/** ARGV: hash. Returns 1 when it revoked the token, 0 when unknown or revoked. */
const REVOKE_TOKEN = new RedisScript(`
local key = ${LUA.token} .. ARGV[1]
if redis.call('HGET', key, 'revoked') == '0' then
  redis.call('HSET', key, 'revoked', '1')
  return 1
end
return 0
`);

/** Where `"seq":0` sits in a `GroupChat`'s JSON. */
const SEQ_ZERO = '"seq":0';

/** Splits a group message's JSON around its `"seq":0`. */
function splitAtSeq(message: StoredGroupChat): [string, string] {
  const json = JSON.stringify(message);
  const at = json.indexOf(SEQ_ZERO);
  const next = json[at + SEQ_ZERO.length];
  if (message.seq !== 0 || at < 0 || (next !== "," && next !== "}")) {
    throw new Error(
      `a cluster's group message must come with seq 0: ${message.id}`,
    );
  }
  return [
    json.slice(0, at + SEQ_ZERO.length - 1),
    json.slice(at + SEQ_ZERO.length),
  ];
}

/** A failed op's result, with the error for the operator. */
function failed(cause: unknown): WriteResult {
  const error = cause instanceof Error ? cause.message : String(cause);
  return { ok: false, reason: "failed", error };
}

/**
 * The result of an op whose command was sent: an error reply means Redis
 * refused it (nothing was written: scripts fail before their first write);
 * anything else (a timeout, a lost connection) leaves the outcome unknown.
 */
function afterSend(cause: unknown): WriteResult {
  if (cause instanceof ErrorReply) return failed(cause);
  const error = cause instanceof Error ? cause.message : String(cause);
  return { ok: false, reason: "unknown", error };
}

/** Reads `seq id timestamp`, what a `chat:sent:` key holds after its fingerprint. */
function parseSent(text: string): StoredAs {
  const [seq, id, timestamp] = text.split(" ");
  if (id === undefined || timestamp === undefined) {
    throw new Error(`a chat:sent value that cannot be read: ${text}`);
  }
  return { id, seq: Number(seq), timestamp: Number(timestamp) };
}

const OK: WriteResult = { ok: true };

/** Options of {@linkcode RedisStorage}. */
export interface RedisStorageOptions {
  /** This node's id: it is not sent what it writes. */
  nodeId: string;
  /** How many messages of each room history reads show. */
  historySize: number;
  /** Whether tokens are required (`PrivateChat`s to unknown users fail). */
  authEnabled: boolean;
}

/**
 * A {@linkcode Storage} on a standalone Redis shared by the cluster's nodes.
 * Every call fails at once while Redis is down.
 */
export class RedisStorage implements Storage, TokenAdmin {
  #connection: RedisConnection;
  #nodeId: string;
  #historySize: number;
  #keep: number;
  #auth: string;
  /** Offline messages read by {@linkcode offline}, by id, to remove them. */
  #seen = new Map<string, { username: string; json: string }>();
  /** The ids in {@linkcode #seen} of each user. */
  #seenIds = new Map<string, string[]>();

  /** Uses `connection`, which the caller owns and closes. */
  constructor(connection: RedisConnection, options: RedisStorageOptions) {
    const { historySize } = options;
    if (!Number.isSafeInteger(historySize) || historySize < 0) {
      throw new RangeError(
        `historySize must be an integer >= 0: ${historySize}`,
      );
    }
    this.#connection = connection;
    this.#nodeId = options.nodeId;
    this.#historySize = historySize;
    this.#keep = Math.max(historySize, MIN_KEPT);
    this.#auth = options.authEnabled ? "1" : "0";
  }

  /** Nothing: in a cluster, Redis gives each `GroupChat` its `seq`. */
  roomSeqs(): Promise<Map<string, number>> {
    return Promise.resolve(new Map());
  }

  /**
   * Issues one command per op at once (node-redis pipelines them, in
   * order) and waits for all. Each op is atomic on its own, the batch is
   * not: an op that fails is `failed`, the others stand. A `group` op must
   * carry `seq` 0; its result holds the `seq` Redis gave it.
   */
  write(ops: readonly WriteOp[]): Promise<WriteResult[]> {
    let splits: ([string, string] | undefined)[];
    try {
      splits = ops.map((op) =>
        op.kind === "group" ? splitAtSeq(op.message) : undefined
      );
    } catch (error) {
      return Promise.reject(error);
    }
    return Promise.all(
      ops.map((op, i) => {
        // Refused before it was sent: certainly not stored. Once sent, a
        // lost or late reply leaves the outcome unknown.
        if (!this.#connection.up) return failed("redis is not available");
        return this.#issue(op, splits[i]).catch(afterSend);
      }),
    );
  }

  /** Sends the commands of `op` before it returns. */
  async #issue(
    op: WriteOp,
    split: [string, string] | undefined,
  ): Promise<WriteResult> {
    if (op.kind === "group") {
      const [before, after] = split!;
      const m = op.message;
      const answer = await GROUP.run(this.#connection, [
        this.#nodeId,
        m.room,
        before,
        after,
        this.#keep,
        op.ref === undefined ? "" : KEYS.sent(m.sender_username, op.ref),
        IDEMPOTENCY_WINDOW_MS,
        op.ref === undefined ? "" : fingerprint(op),
        `${m.id} ${m.timestamp}`,
      ]);
      if (typeof answer === "string") {
        const original = parseSent(answer);
        return { ok: true, seq: original.seq, original };
      }
      return { ok: true, seq: Number(answer) };
    }
    if (op.kind === "private") {
      const m = op.message;
      const answer = await PRIVATE.run(this.#connection, [
        this.#nodeId,
        m.sender_username,
        m.target_username,
        JSON.stringify(m),
        this.#auth,
        op.delivered ? "1" : "0",
        op.ref === undefined ? "" : KEYS.sent(m.sender_username, op.ref),
        IDEMPOTENCY_WINDOW_MS,
        op.ref === undefined ? "" : fingerprint(op),
        `${m.id} ${m.timestamp}`,
        op.maxWaiting ?? "",
      ]);
      if (typeof answer === "string" && answer.startsWith("dup")) {
        return { ok: true, original: parseSent(answer.slice(3)) };
      }
      if (answer === "remote" || answer === "ok") {
        return { ok: true, remote: answer === "remote" };
      }
      if (
        answer === "not_connected" || answer === "unknown_user" ||
        answer === "inbox_full"
      ) {
        return { ok: false, reason: answer };
      }
      throw new Error(`unexpected answer: ${answer}`);
    }
    if (op.kind === "undelivered") {
      const m = op.message;
      await this.#connection.command([
        "RPUSH",
        KEYS.offline(m.target_username),
        JSON.stringify(m),
      ]);
      return OK;
    }
    const found = op.ids.flatMap((id) => {
      const seen = this.#seen.get(id);
      return seen ? [{ id, ...seen }] : [];
    });
    await Promise.all(
      found.map(({ username, json }) =>
        this.#connection.command(["LREM", KEYS.offline(username), "0", json])
      ),
    );
    for (const { id } of found) this.#seen.delete(id);
    return OK;
  }

  /**
   * A write that needs memory (`SET` with a 1 s expiry): it fails as the
   * storage's writes would while Redis is down or out of memory.
   */
  async probe(): Promise<void> {
    await this.#connection.command([
      "SET",
      KEYS.probe(this.#nodeId),
      "1",
      "PX",
      "1000",
    ]);
  }

  /**
   * Reads a room's history as `selectHistory` would over the room's newest
   * `historySize` messages, in one script call. A room's seqs have no gap
   * here (the script that gives a seq stores the message, or fails before
   * either), so what lies below the oldest visible message is what trimming
   * took.
   */
  async history(room: string, query: HistoryQuery): Promise<HistoryPage> {
    const { first, last } = wantedRange(query);
    // Nothing asked for: no need to ask Redis.
    if (first > last) return { messages: [], complete: true };
    if (this.#historySize === 0) {
      // Nothing visible: every message up to the room's seq is as trimmed.
      const seq = await this.#connection.command<string | null>([
        "GET",
        KEYS.seq(room),
      ]);
      return { messages: [], complete: isComplete(query, 0, Number(seq)) };
    }
    const visible = this.#historySize;
    const [highest, lowest, limit] = query.kind === "since"
      ? [query.upTo, `(${query.since}`, visible]
      : [
        last,
        "-inf",
        Math.min(query.kind === "last" ? query.count : query.limit, visible),
      ];
    const reply = await HISTORY.run(this.#connection, [
      room,
      visible,
      highest,
      lowest,
      limit,
    ]);
    const [oldestText, members] = reply as [string, string[]];
    const oldest = oldestText === "" ? undefined : Number(oldestText);
    const messages = members
      .map((json) => JSON.parse(json) as StoredGroupChat)
      .filter((message) => oldest !== undefined && message.seq >= oldest)
      .reverse();
    return {
      messages,
      complete: isComplete(query, messages.length, (oldest ?? 1) - 1),
    };
  }

  /** The oldest `limit` (default: all) undelivered `PrivateChat`s to `username`. */
  async offline(
    username: string,
    limit?: number,
  ): Promise<StoredPrivateChat[]> {
    if (limit !== undefined && limit <= 0) return [];
    const rows = await this.#connection.command<string[]>([
      "LRANGE",
      KEYS.offline(username),
      "0",
      limit === undefined ? "-1" : String(limit - 1),
    ]);
    for (const id of this.#seenIds.get(username) ?? []) this.#seen.delete(id);
    const messages = rows.map((json) => JSON.parse(json) as StoredPrivateChat);
    messages.forEach((message, i) =>
      this.#seen.set(message.id, { username, json: rows[i]! })
    );
    if (messages.length === 0) this.#seenIds.delete(username);
    else this.#seenIds.set(username, messages.map((message) => message.id));
    return messages;
  }

  /** Stores the hash of a new token; rejects if that token already exists. */
  async createToken(
    token: string,
    grant: TokenGrant,
    now: number,
  ): Promise<void> {
    await CREATE_TOKEN.run(this.#connection, [
      await hashToken(token),
      grant.username,
      grant.expiresAt,
      now,
    ]);
  }

  /** Looks a token up: `null` when unknown, revoked or expired at `now`. */
  async checkToken(token: string, now: number): Promise<TokenGrant | null> {
    const [username, expiresAt, revoked] = await this.#connection.command<
      (string | null)[]
    >([
      "HMGET",
      KEYS.token(await hashToken(token)),
      "username",
      "expires_at",
      "revoked",
    ]);
    if (username == null || revoked !== "0" || Number(expiresAt) <= now) {
      return null;
    }
    return { username, expiresAt: Number(expiresAt) };
  }

  /** Revokes a token; `false` when unknown or already revoked. */
  async revokeToken(token: string): Promise<boolean> {
    const hash = await hashToken(token);
    return await REVOKE_TOKEN.run(this.#connection, [hash]) === 1;
  }

  /** Every token, newest first. */
  async listTokens(): Promise<TokenRow[]> {
    const hashes = await this.#connection.command<string[]>([
      "ZRANGE",
      KEYS.tokens,
      "0",
      "-1",
      "REV",
    ]);
    const rows = await Promise.all(
      hashes.map((hash) =>
        this.#connection.command<(string | null)[]>([
          "HMGET",
          KEYS.token(hash),
          "username",
          "expires_at",
          "created_at",
          "revoked",
        ])
      ),
    );
    return rows.flatMap(([username, expiresAt, createdAt, revoked], i) =>
      username == null ? [] : [{
        username,
        expiresAt: Number(expiresAt),
        hashPrefix: hashes[i]!.slice(0, 12),
        createdAt: Number(createdAt),
        revoked: revoked === "1",
      }]
    );
  }

  /** Revokes every live token `match` names; how many. */
  async revokeTokensWhere(match: TokenMatch): Promise<number> {
    const hashes = await this.#connection.command<string[]>([
      "ZRANGE",
      KEYS.tokens,
      "0",
      "-1",
    ]);
    let count = 0;
    for (const hash of hashes) {
      const username = await this.#connection.command<string | null>([
        "HGET",
        KEYS.token(hash),
        "username",
      ]);
      if (username === null || !tokenMatches(match, hash, username)) continue;
      if (await REVOKE_TOKEN.run(this.#connection, [hash]) === 1) count++;
    }
    return count;
  }

  /** Nothing: the connection belongs to the caller, who closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
