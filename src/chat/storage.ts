/**
 * The storage port: what the effects runner asks of a database (the
 * {@linkcode Storage} interface and the shapes of its writes and reads), and
 * the rules every implementation shares about what a write's key means
 * (idempotency window, fingerprint) and how tokens are hashed. It holds no
 * implementation: memory and SQLite live in `src/storage/`, Redis in
 * `src/redis/`; history paging rules are in `history_rules.ts`. The reducer
 * never sees a storage object, only the results that the runner feeds back
 * as events.
 *
 * @module
 */
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";

/**
 * How long a message's client `id` stays its idempotency key: a
 * `GroupChat` or `PrivateChat` from the same sender with the same `id`
 * within this window (by the messages' timestamps; on Redis, by its clock)
 * is not stored again and gets the first one's `Ack`.
 */
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;

/**
 * What a resend repeats: the kind, the room (or target) and the content, as
 * 16 hex digits (two 32-bit FNV-1a hashes). A message with a used client
 * `id` is a resend only when this matches too; otherwise the `id` was
 * reused for another message, which is stored as new.
 */
export function fingerprint(
  op: Extract<WriteOp, { kind: "group" | "private" }>,
): string {
  const text = op.kind === "group"
    ? `g\n${op.message.room}\n${op.message.content}`
    : `p\n${op.message.target_username}\n${op.message.content}`;
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15);
  }
  return (a >>> 0).toString(16).padStart(8, "0") +
    (b >>> 0).toString(16).padStart(8, "0");
}

/** What an `Ack` of a stored chat message tells: its server id, `seq` (0 for a `PrivateChat`) and time. */
export interface StoredAs {
  id: string;
  seq: number;
  timestamp: number;
}

/** One write of a batch; a batch commits in one transaction. */
export type WriteOp =
  | {
    kind: "group";
    message: StoredGroupChat;
    /**
     * The client's `id` of the message: with the sender, its idempotency
     * key (see {@linkcode IDEMPOTENCY_WINDOW_MS} and
     * {@linkcode fingerprint}). None: no check.
     */
    ref?: string;
  }
  | {
    kind: "private";
    message: StoredPrivateChat;
    /** Whether the target had a live connection when it was sent. */
    delivered: boolean;
    /**
     * Messages that may wait for the target (`MAX_OFFLINE_MESSAGES`): a
     * message to keep for later when that many already wait is refused
     * with `inbox_full`. Absent: no cap.
     */
    maxWaiting?: number;
    /** The client's `id`: with the sender, its idempotency key. */
    ref?: string;
  }
  | {
    kind: "delivered";
    ids: readonly string[];
    /** The user whose offline page this is: where to look (all when absent). */
    username?: string;
  }
  /** Its target left before it was sent: keep it for the next connection. */
  | { kind: "undelivered"; message: StoredPrivateChat };

/** The result of one {@linkcode WriteOp}, in the order of the batch. */
export type WriteResult =
  | {
    ok: true;
    /** The `seq` a cluster's storage gave a `group` op (its own `seq` is then 0). */
    seq?: number;
    /** A cluster's `private` op whose target has connections on other nodes. */
    remote?: boolean;
    /**
     * A `group` or `private` op whose sender stored a message with the same
     * `ref` within the window: this one was not stored; that one's `Ack`
     * is owed.
     */
    original?: StoredAs;
  }
  /** A cluster's `private` op to a user with no connection on any node, auth off. */
  | { ok: false; reason: "not_connected" }
  /** An offline `PrivateChat` to a user who holds no token: not stored. */
  | { ok: false; reason: "unknown_user" }
  /** An offline `PrivateChat` to a user with `maxWaiting` waiting: not stored. */
  | { ok: false; reason: "inbox_full" }
  /** Not stored; `error` says why, for the operator (never for clients). */
  | { ok: false; reason: "failed"; error?: string }
  /** Storage did not answer in time: the write may or may not have happened. */
  | { ok: false; reason: "unknown"; error?: string };

/** Which part of a room's history to read. */
export type HistoryQuery =
  /** Every kept message with `seq > since`. */
  | { kind: "since"; since: number; upTo: number }
  /** The last `count` kept messages. */
  | { kind: "last"; count: number; upTo: number }
  /** The last `limit` kept messages with `seq < before`. */
  | { kind: "before"; before: number; limit: number; upTo: number };

/** Messages of a room, oldest first, and whether they reach back far enough. */
export interface HistoryPage {
  messages: StoredGroupChat[];
  complete: boolean;
}

/** A token as the server knows it; the token itself is stored hashed. */
export interface TokenGrant {
  username: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

/** A row of the operator's token listing. */
export interface TokenRow extends TokenGrant {
  /** The first characters of the hash, to tell rows apart. */
  hashPrefix: string;
  createdAt: number;
  revoked: boolean;
}

/** Tokens to revoke in bulk: by the start of their hash (the listed id) or by user. */
export type TokenMatch =
  | { readonly hashPrefix: string }
  | { readonly username: string };

/**
 * What the operator's token command needs beyond {@linkcode Storage} (the
 * server itself revokes one token at a time, by the token).
 */
export interface TokenAdmin {
  /**
   * Revokes every token not yet revoked whose hash starts with `hashPrefix`
   * or that belongs to `username`; resolves with how many it revoked.
   */
  revokeTokensWhere(match: TokenMatch): Promise<number>;
}

/** Whether the token `row` (hash `hash`) is one `match` names. */
export function tokenMatches(
  match: TokenMatch,
  hash: string,
  username: string,
): boolean {
  return "username" in match
    ? username === match.username
    : hash.startsWith(match.hashPrefix);
}

/** A ban as stored: the folded username and when it ends. */
export interface BanRow {
  /** The banned name, folded (`foldName`): `Alice` and `alice` are one. */
  username: string;
  /** Milliseconds since the epoch. */
  until: number;
  createdAt: number;
}

/** A message of a room to delete: by its server `id` or by its `seq`. */
export type MessageMatch = { readonly id: string } | { readonly seq: number };

/**
 * What moderation needs of a database: timed bans of usernames (kept
 * under the folded name, in the user's hash slot on Redis) and deleting a
 * room's message from history. The server and the admin command share it.
 */
export interface Moderation {
  /** Bans `username` (any case: it is folded) until `until`; replaces an earlier ban. */
  ban(username: string, until: number, now: number): Promise<void>;
  /** Lifts a ban; `false` when there was none. */
  unban(username: string): Promise<boolean>;
  /** When the ban of `username` ends, or `null` when it is not banned at `now`. */
  bannedUntil(username: string, now: number): Promise<number | null>;
  /** Every ban still running at `now`. */
  bans(now: number): Promise<BanRow[]>;
  /**
   * Deletes a stored message of `room`, so that no history read or
   * recovery (`since`) returns it again; resolves with it, or `null` when
   * the room keeps no such message.
   */
  deleteMessage(
    room: string,
    match: MessageMatch,
  ): Promise<StoredGroupChat | null>;
}

/** What the server needs of a database. */
export interface Storage extends Moderation {
  /** The last `seq` of every room that has one. */
  roomSeqs(): Promise<Map<string, number>>;
  /**
   * The last `seq` of one room, 0 when it has none (a single node reads it
   * when a forgotten room opens again); a cluster's storage answers 0, as
   * Redis gives each `GroupChat` its `seq`.
   */
  roomSeq(room: string): Promise<number>;
  /** Commits a batch in one transaction; one result per op, in order. */
  write(ops: readonly WriteOp[]): Promise<WriteResult[]>;
  /**
   * The same, done before it returns, for a storage with nothing to wait
   * for (memory): the runner then skips batching, a turn of the event loop
   * sooner for every message.
   */
  writeNow?(ops: readonly WriteOp[]): WriteResult[];
  /**
   * A write that stores nothing lasting but needs what a message needs
   * (room to grow, a writable file, memory): rejects while writes would
   * fail. The runner calls it while a fault lasts and nobody writes.
   */
  probe?(): Promise<void>;
  /** Reads a room's history. */
  history(room: string, query: HistoryQuery): Promise<HistoryPage>;
  /**
   * The oldest `limit` (default: all) undelivered `PrivateChat`s to
   * `username`, oldest first. Reading marks nothing: a `delivered` write
   * does, so the next read starts after what was marked.
   */
  offline(username: string, limit?: number): Promise<StoredPrivateChat[]>;
  /** Stores a new token. */
  createToken(token: string, grant: TokenGrant, now: number): Promise<void>;
  /** Looks a token up: `null` when unknown, revoked or expired at `now`. */
  checkToken(token: string, now: number): Promise<TokenGrant | null>;
  /** Revokes a token; `false` when there was none. */
  revokeToken(token: string): Promise<boolean>;
  /** Every token, newest first, for operators. */
  listTokens(): Promise<TokenRow[]>;
  /** Releases the database. */
  close(): Promise<void>;
}

/** SHA-256 of a token, hex: tokens are stored and compared hashed. */
export async function hashToken(token: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(token.toLowerCase()),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}
