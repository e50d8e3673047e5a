/**
 * A {@linkcode Storage} on Redis, shared by the nodes of a cluster: Redis
 * gives each room's `GroupChat`s their `seq`, keeps the recent history,
 * the offline `PrivateChat`s and the tokens, and each write publishes the
 * message to the other nodes that need it (one pub/sub channel per node).
 *
 * Every key this module and the cluster bus use is named in
 * `src/redis/keys.ts`; every script here is given all its keys in `KEYS`,
 * in one hash slot (a room's, or a user's), so it runs on a Redis Cluster
 * as on a standalone Redis. A `PrivateChat` touches two users' slots: one
 * script in the target's slot decides and stores it, a second in the
 * sender's slot tells the sender's other nodes (see {@linkcode RedisStorage.write}).
 *
 * @module
 */
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";
import { type RedisConnection, RedisScript } from "./connection.ts";
import { KEYS, LUA } from "./keys.ts";
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

/** A room keeps at least this many messages, for gap fill between nodes. */
export const MIN_KEPT = 1000;

/**
 * KEYS: the room's seq, hist, nodes, and (only with a client id) the
 * idempotency key (`KEYS.groupSent`). ARGV: node, json before the seq, json
 * after it, how many to keep, the window in ms, the message's
 * `fingerprint`, `id timestamp`. Returns `seq id timestamp` of the message
 * stored before under the key with the same fingerprint, if any. Otherwise
 * gives the message the room's next seq, stores it (and the key), trims
 * the room, and publishes it to the other nodes with members in the room.
 * Returns the seq.
 */
const GROUP = new RedisScript(`
local node, before, after = ARGV[1], ARGV[2], ARGV[3]
local keep = tonumber(ARGV[4])
local sent, print = KEYS[4], ARGV[6]
if sent then
  local first = redis.call('GET', sent)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return string.sub(first, #print + 2)
  end
end
local hist = KEYS[2]
local seq = redis.call('INCR', KEYS[1])
local json = before .. string.format('%d', seq) .. after
redis.call('ZADD', hist, seq, json)
if sent then
  redis.call('SET', sent, print .. ' ' .. string.format('%d', seq) .. ' ' ..
    ARGV[7], 'PX', ARGV[5])
end
redis.call('ZREMRANGEBYRANK', hist, 0, -(keep + 1))
for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if n ~= node then
    redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.group} .. json)
  end
end
return seq
`);

/**
 * In the target's slot. KEYS: the target's nodes, offline list, known
 * mark, and (only with a client id) the idempotency key
 * (`KEYS.privateSent`). ARGV: node, json, auth "1"/"0", delivered
 * "1"/"0", the window in ms, the fingerprint, `id timestamp`, cap ('' for
 * none). Returns `{"dup", "seq id timestamp"}` of the message stored before
 * under the key with the same fingerprint, if any. Otherwise keeps the
 * message for later when no node holds the target and fewer than `cap`
 * wait, and publishes it to the target's other nodes. Returns the answer
 * ("remote": another node holds the target, "ok", "not_connected",
 * "unknown_user" or "inbox_full") and the nodes it was published to; the
 * key is kept only for a message that was taken.
 */
const PRIVATE = new RedisScript(`
local node, json, auth, delivered = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key, print = KEYS[4], ARGV[6]
if key then
  local first = redis.call('GET', key)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return {'dup', string.sub(first, #print + 2)}
  end
end
local targets = redis.call('SMEMBERS', KEYS[1])
local remote = false
for _, n in ipairs(targets) do
  if n ~= node then remote = true break end
end
if delivered == '0' and not remote then
  if auth == '0' then return {'not_connected'} end
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'unknown_user'} end
  if ARGV[8] ~= '' and redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[8]) then
    return {'inbox_full'}
  end
  redis.call('RPUSH', KEYS[2], json)
end
local sent = {}
for _, n in ipairs(targets) do
  if n ~= node then
    sent[#sent + 1] = n
    redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.private} .. json)
  end
end
if key then
  redis.call('SET', key, print .. ' 0 ' .. ARGV[7], 'PX', ARGV[5])
end
if remote then return {'remote', sent} end
return {'ok', sent}
`);

/**
 * In the sender's slot. KEYS: the sender's nodes. ARGV: node, json, then
 * the nodes the message went to already. Publishes the message to the
 * sender's other nodes, for the sender's other connections.
 */
const PRIVATE_ECHO = new RedisScript(`
local sent = {[ARGV[1]] = true}
for i = 3, #ARGV do sent[ARGV[i]] = true end
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not sent[n] then
    redis.call('PUBLISH', ${LUA.channel} .. n, ${LUA.private} .. ARGV[2])
  end
end
return 1
`);

/**
 * KEYS: the room's hist. ARGV: visible (how many of the newest are
 * visible, > 0), highest score, lowest score, limit. Returns the oldest
 * visible seq ('' when none) and, newest first, at most `limit` messages
 * between the two scores.
 */
const HISTORY = new RedisScript(`
local hist = KEYS[1]
local visible = tonumber(ARGV[1])
local oldest = redis.call('ZRANGE', hist, visible - 1, visible - 1, 'REV',
  'WITHSCORES')
if #oldest == 0 then
  oldest = redis.call('ZRANGE', hist, 0, 0, 'WITHSCORES')
end
local messages = redis.call('ZRANGE', hist, ARGV[2], ARGV[3], 'BYSCORE',
  'REV', 'LIMIT', 0, ARGV[4])
return {oldest[2] or '', messages}
`);

/**
 * KEYS: the token. ARGV: username, expires_at, created_at. Fails if the
 * token exists.
 */
const CREATE_TOKEN = new RedisScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR token exists')
end
redis.call('HSET', KEYS[1], 'username', ARGV[1], 'expires_at', ARGV[2],
  'created_at', ARGV[3], 'revoked', '0')
return 'OK'
`);

/** KEYS: the token. Returns 1 when it revoked the token, 0 when unknown or revoked. */
const REVOKE_TOKEN = new RedisScript(`
if redis.call('HGET', KEYS[1], 'revoked') == '0' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
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
  /**
   * How many replicas must have a chat message before it counts as stored
   * (Redis `WAIT`); 0 (the default) does not wait. Fewer in time: the
   * outcome is `unknown` (the sender resends; the resend is a duplicate).
   */
  waitReplicas?: number;
}

/** How long a `WAIT` for replicas may take before the outcome is unknown. */
export const WAIT_REPLICAS_MS = 1000;

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
  #waitReplicas: number;
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
    this.#waitReplicas = options.waitReplicas ?? 0;
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
        return this.#issue(op, splits[i]).then(
          (result) => this.#replicated(op, result),
        ).catch(afterSend);
      }),
    );
  }

  /**
   * With `waitReplicas`, waits until that many replicas have a new chat
   * message (`WAIT`, on the connection to the master that took it);
   * fewer in time make the outcome unknown.
   */
  async #replicated(op: WriteOp, result: WriteResult): Promise<WriteResult> {
    if (this.#waitReplicas === 0 || !result.ok || result.original) {
      return result;
    }
    if (op.kind !== "group" && op.kind !== "private") return result;
    const key = op.kind === "group"
      ? KEYS.seq(op.message.room)
      : KEYS.userNodes(op.message.target_username);
    const replicas = await this.#connection.command<number>([
      "WAIT",
      String(this.#waitReplicas),
      String(WAIT_REPLICAS_MS),
    ], key);
    if (Number(replicas) >= this.#waitReplicas) return result;
    return {
      ok: false,
      reason: "unknown",
      error: `${replicas} of ${this.#waitReplicas} replicas have it`,
    };
  }

  /** Sends the commands of `op` before it returns. */
  async #issue(
    op: WriteOp,
    split: [string, string] | undefined,
  ): Promise<WriteResult> {
    if (op.kind === "group") {
      const [before, after] = split!;
      const m = op.message;
      const keys = [
        KEYS.seq(m.room),
        KEYS.hist(m.room),
        KEYS.roomNodes(m.room),
      ];
      if (op.ref !== undefined) {
        keys.push(KEYS.groupSent(m.room, m.sender_username, op.ref));
      }
      const answer = await GROUP.run(this.#connection, keys, [
        this.#nodeId,
        before,
        after,
        this.#keep,
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
      const target = m.target_username;
      const keys = [
        KEYS.userNodes(target),
        KEYS.offline(target),
        KEYS.known(target),
      ];
      if (op.ref !== undefined) {
        keys.push(KEYS.privateSent(target, m.sender_username, op.ref));
      }
      const json = JSON.stringify(m);
      const reply = await PRIVATE.run(this.#connection, keys, [
        this.#nodeId,
        json,
        this.#auth,
        op.delivered ? "1" : "0",
        IDEMPOTENCY_WINDOW_MS,
        op.ref === undefined ? "" : fingerprint(op),
        `${m.id} ${m.timestamp}`,
        op.maxWaiting ?? "",
      ]) as unknown[];
      const answer = reply[0];
      if (answer === "dup") {
        return { ok: true, original: parseSent(String(reply[1])) };
      }
      if (answer === "remote" || answer === "ok") {
        // The target's slot is done: now the sender's other nodes, in the
        // sender's slot. The message is stored: if this fails, the outcome
        // is unknown to the sender, whose resend is answered as a duplicate.
        const sent = (reply[1] as unknown[] | undefined ?? []).map(String);
        try {
          await PRIVATE_ECHO.run(
            this.#connection,
            [KEYS.userNodes(m.sender_username)],
            [this.#nodeId, json, ...sent],
          );
        } catch (error) {
          const text = error instanceof Error ? error.message : String(error);
          return { ok: false, reason: "unknown", error: text };
        }
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
    const reply = await HISTORY.run(this.#connection, [KEYS.hist(room)], [
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
    const hash = await hashToken(token);
    // Three slots, in an order that a crash between two steps leaves
    // harmless: the user is known, then the token exists, then it is listed.
    await this.#connection.command(["SET", KEYS.known(grant.username), "1"]);
    await CREATE_TOKEN.run(this.#connection, [KEYS.token(hash)], [
      grant.username,
      grant.expiresAt,
      now,
    ]);
    await this.#connection.command([
      "ZADD",
      KEYS.tokens,
      String(now),
      hash,
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
    return await REVOKE_TOKEN.run(this.#connection, [KEYS.token(hash)], []) ===
      1;
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
      if (
        await REVOKE_TOKEN.run(this.#connection, [KEYS.token(hash)], []) === 1
      ) count++;
    }
    return count;
  }

  /** Nothing: the connection belongs to the caller, who closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
