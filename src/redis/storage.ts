/**
 * A {@linkcode Storage} on Redis, shared by the nodes of a cluster: Redis
 * gives each room's `GroupChat`s their `seq`, keeps the recent history,
 * the offline `PrivateChat`s and the tokens, and each write publishes the
 * message on the sharded channel of its room or target user, in the slot
 * of the keys it writes (see `src/redis/keys.ts`).
 *
 * Every key this module and the cluster bus use is named in
 * `src/redis/keys.ts`; every script (in `src/redis/storage_scripts.ts`) is
 * given all its keys in `KEYS`, in one hash slot (a room's, or a user's),
 * so it runs on a Redis Cluster as on a standalone Redis. A `PrivateChat`
 * touches two users' slots: one script in the target's slot decides, stores
 * and publishes it, then an `SPUBLISH` on the sender's channel tells the
 * sender's other nodes (see {@linkcode RedisStorage.write}). With
 * `REDIS_WAIT_REPLICAS`, a chat message counts as stored once that many
 * replicas have it (`WAIT`).
 *
 * Why this file is long: one class implements the whole storage port
 * (writes, history, offline pages, tokens) over one connection, and its
 * parts share the class's state (node id, history size, the offline ids
 * read); its scripts, keys and moderation are files of their own already.
 *
 * @module
 */
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";
import type { RedisConnection } from "./connection.ts";
import { KEYS, PAYLOAD } from "./keys.ts";
import { busPayload } from "./bus_scripts.ts";
import {
  redisBan,
  redisBannedUntil,
  redisBans,
  redisDeleteMessage,
  redisUnban,
} from "./moderation.ts";
import {
  CREATE_TOKEN,
  GROUP,
  HISTORY,
  PRIVATE,
  REVOKE_TOKEN,
} from "./storage_scripts.ts";
import { ErrorReply } from "@redis/client";
import {
  type BanRow,
  fingerprint,
  hashToken,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  type MessageMatch,
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
 * A {@linkcode Storage} on the Redis (standalone or a Redis Cluster) shared
 * by the cluster's nodes.
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

  /** 0: in a cluster, Redis gives each `GroupChat` its `seq`. */
  roomSeq(_room: string): Promise<number> {
    return Promise.resolve(0);
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
      const keys = [KEYS.seq(m.room), KEYS.hist(m.room)];
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
        KEYS.roomChannel(m.room),
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
        KEYS.userChannel(target),
      ]) as unknown[];
      const answer = reply[0];
      if (answer === "dup") {
        return { ok: true, original: parseSent(String(reply[1])) };
      }
      if (answer === "remote" || answer === "ok") {
        // The target's slot is done: now the sender's other nodes, on the
        // sender's channel in the sender's slot (a node that holds both gets
        // the same payload twice and drops the second). The message is
        // stored: if this fails, the outcome is unknown to the sender, whose
        // resend is answered as a duplicate.
        try {
          await this.#connection.command([
            "SPUBLISH",
            KEYS.userChannel(m.sender_username),
            busPayload(PAYLOAD.private, this.#nodeId, json),
          ]);
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

  /** Bans `username` until `until` (see `moderation.ts`). */
  ban(username: string, until: number, now: number): Promise<void> {
    return redisBan(this.#connection, username, until, now);
  }

  /** Lifts a ban; `false` when none ran. */
  unban(username: string): Promise<boolean> {
    return redisUnban(this.#connection, username);
  }

  /** When the ban of `username` ends, or `null`. */
  bannedUntil(username: string, now: number): Promise<number | null> {
    return redisBannedUntil(this.#connection, username, now);
  }

  /** Every ban running at `now`. */
  bans(now: number): Promise<BanRow[]> {
    return redisBans(this.#connection, now);
  }

  /** Deletes a room's message from its history. */
  deleteMessage(
    room: string,
    match: MessageMatch,
  ): Promise<StoredGroupChat | null> {
    return redisDeleteMessage(this.#connection, room, match);
  }

  /** Nothing: the connection belongs to the caller, who closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
