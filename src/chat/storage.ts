/**
 * The storage port: what the effects runner asks of a database, and an
 * in-memory implementation for `DATABASE_PATH=:memory:` and for tests.
 * The reducer never sees this module's objects, only the results that the
 * runner feeds back as events.
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

/** What the server needs of a database. */
export interface Storage {
  /** The last `seq` of every room that has one. */
  roomSeqs(): Promise<Map<string, number>>;
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

/** The `seq`s a query asks for; nothing when `first > last`. */
export function wantedRange(
  query: HistoryQuery,
): { first: number; last: number } {
  const { upTo } = query;
  if (query.kind === "since") return { first: query.since + 1, last: upTo };
  const last = query.kind === "last" ? upTo : Math.min(query.before - 1, upTo);
  const count = query.kind === "last" ? query.count : query.limit;
  return { first: count <= 0 ? last + 1 : Math.max(1, last - count + 1), last };
}

/**
 * Whether a page is complete, by the rule of `docs/protocol.md`: it is not
 * when a message the query asks for was trimmed away. `returned` is how many
 * messages the page holds; `trimmed` is the highest `seq` the room's trimming
 * ever removed (0 when it removed none). It does not count `seq`s: a `seq`
 * whose write failed was never stored, so its gap is no loss; only messages
 * that were stored and then trimmed make a page incomplete.
 */
export function isComplete(
  query: HistoryQuery,
  returned: number,
  trimmed: number,
): boolean {
  if (trimmed <= 0) return true;
  if (query.kind === "since") {
    return trimmed <= query.since || query.since >= query.upTo;
  }
  // The newest kept messages come first: a page that is short of its
  // limit went down past the oldest kept message, into what was trimmed.
  const limit = query.kind === "last" ? query.count : query.limit;
  const { last } = wantedRange(query);
  return limit <= 0 || last < 1 || returned >= limit;
}

/**
 * Picks a page out of a room's kept messages (ascending `seq`); `trimmed`
 * as in {@linkcode isComplete}, by default what lies below the oldest kept
 * message (right when the room has no gap).
 */
export function selectHistory(
  kept: readonly StoredGroupChat[],
  query: HistoryQuery,
  trimmed: number = (kept[0]?.seq ?? 1) - 1,
): HistoryPage {
  const visible = kept.filter((message) => message.seq <= query.upTo);
  let messages: StoredGroupChat[];
  if (query.kind === "since") {
    messages = visible.filter((message) => message.seq > query.since);
  } else {
    const count = query.kind === "last" ? query.count : query.limit;
    const older = query.kind === "last"
      ? visible
      : visible.filter((message) => message.seq < query.before);
    messages = count <= 0 ? [] : older.slice(-count);
  }
  return {
    messages,
    complete: isComplete(query, messages.length, trimmed),
  };
}

/**
 * Idempotency keys {@linkcode MemoryStorage} keeps at most (all users), the
 * oldest going first: it keeps everything in the process's memory.
 */
export const MEMORY_SENT_MAX = 100_000;

/** An idempotency key of {@linkcode MemoryStorage}. */
interface SentKey extends StoredAs {
  key: string;
  fingerprint: string;
}

/** Messages a room may keep beyond `HISTORY_SIZE` before a trim. */
const TRIM_SLACK = 256;

/** A {@linkcode Storage} that keeps everything in memory and nothing after. */
export class MemoryStorage implements Storage, TokenAdmin {
  #historySize: number;
  #rooms = new Map<string, StoredGroupChat[]>();
  #seqs = new Map<string, number>();
  /** The highest `seq` trimmed away in each room that lost any. */
  #trimmed = new Map<string, number>();
  /** Undelivered `PrivateChat`s per target; delivered ones are not kept. */
  #offline = new Map<string, StoredPrivateChat[]>();
  #tokens = new Map<string, TokenRow>();
  /** Stored chat messages by `sender\nref`, oldest first, for the window. */
  #sent = new Map<string, SentKey>();
  /**
   * The keys in the order stored, from `#sentHead` on (a queue: a `Map`
   * walked from its start after many deletions is slow in V8).
   */
  #sentOrder: SentKey[] = [];
  #sentHead = 0;

  /** Keeps the last `historySize` messages of each room. */
  constructor(historySize: number) {
    this.#historySize = historySize;
  }

  roomSeqs(): Promise<Map<string, number>> {
    return Promise.resolve(new Map(this.#seqs));
  }

  write(ops: readonly WriteOp[]): Promise<WriteResult[]> {
    return Promise.resolve(this.writeNow(ops));
  }

  writeNow(ops: readonly WriteOp[]): WriteResult[] {
    const results: WriteResult[] = [];
    for (const op of ops) {
      if (op.kind === "group") {
        const { room } = op.message;
        const original = this.#original(op);
        if (original) {
          results.push({ ok: true, original });
          continue;
        }
        this.#remember(op);
        let kept = this.#rooms.get(room);
        if (!kept) this.#rooms.set(room, kept = []);
        kept.push(op.message);
        // Trim in steps, not per message: queries read only the last
        // historySize (see history). Kept messages are counted, not seqs.
        if (kept.length > this.#historySize + TRIM_SLACK) {
          const cut = kept.splice(0, kept.length - this.#historySize);
          this.#trimmed.set(room, cut.at(-1)!.seq);
        }
        this.#seqs.set(room, op.message.seq);
        results.push({ ok: true });
      } else if (op.kind === "private") {
        if (!op.delivered && !this.#knows(op.message.target_username)) {
          results.push({ ok: false, reason: "unknown_user" });
          continue;
        }
        const original = this.#original(op);
        if (original) {
          results.push({ ok: true, original });
          continue;
        }
        if (
          !op.delivered && op.maxWaiting !== undefined &&
          (this.#offline.get(op.message.target_username)?.length ?? 0) >=
            op.maxWaiting
        ) {
          results.push({ ok: false, reason: "inbox_full" });
          continue;
        }
        this.#remember(op);
        if (!op.delivered) this.#keep(op.message);
        results.push({ ok: true });
      } else if (op.kind === "undelivered") {
        this.#keep(op.message);
        results.push({ ok: true });
      } else {
        const ids = new Set(op.ids);
        // A page of one user's inbox: only that inbox is looked at.
        const inboxes = op.username === undefined
          ? [...this.#offline]
          : [[op.username, this.#offline.get(op.username) ?? []] as const];
        for (const [target, waiting] of inboxes) {
          const left = waiting.filter((message) => !ids.has(message.id));
          if (left.length === 0) this.#offline.delete(target);
          else this.#offline.set(target, left);
        }
        results.push({ ok: true });
      }
    }
    return results;
  }

  /** The message stored before with `op`'s key, within the window; records `op` otherwise. */
  #original(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
  ): StoredAs | undefined {
    if (op.ref === undefined) return undefined;
    const { timestamp, sender_username } = op.message;
    const since = timestamp - IDEMPOTENCY_WINDOW_MS;
    const order = this.#sentOrder;
    while (
      this.#sentHead < order.length &&
      (order[this.#sentHead]!.timestamp < since ||
        order.length - this.#sentHead > MEMORY_SENT_MAX)
    ) {
      const old = order[this.#sentHead++]!;
      if (this.#sent.get(old.key) === old) this.#sent.delete(old.key);
    }
    if (this.#sentHead > 4096 && this.#sentHead * 2 > order.length) {
      order.splice(0, this.#sentHead);
      this.#sentHead = 0;
    }
    const key = `${sender_username}\n${op.ref}`;
    const sent = this.#sent.get(key);
    const print = fingerprint(op);
    if (sent && sent.timestamp >= since && sent.fingerprint === print) {
      return { id: sent.id, seq: sent.seq, timestamp: sent.timestamp };
    }
    return undefined;
  }

  /** Keeps the idempotency key of a message that is stored. */
  #remember(op: Extract<WriteOp, { kind: "group" | "private" }>): void {
    if (op.ref === undefined) return;
    const { id, timestamp, sender_username } = op.message;
    const seq = op.kind === "group" ? op.message.seq : 0;
    const entry: SentKey = {
      key: `${sender_username}\n${op.ref}`,
      id,
      seq,
      timestamp,
      fingerprint: fingerprint(op),
    };
    this.#sent.set(entry.key, entry);
    this.#sentOrder.push(entry);
  }

  #keep(message: StoredPrivateChat): void {
    const waiting = this.#offline.get(message.target_username);
    if (waiting) waiting.push(message);
    else this.#offline.set(message.target_username, [message]);
  }

  #knows(username: string): boolean {
    for (const row of this.#tokens.values()) {
      if (row.username === username) return true;
    }
    return false;
  }

  history(room: string, query: HistoryQuery): Promise<HistoryPage> {
    const kept = this.#rooms.get(room) ?? [];
    // What lies below the newest historySize is as good as trimmed.
    const hidden = kept.at(-this.#historySize - 1)?.seq ?? 0;
    return Promise.resolve(
      selectHistory(
        this.#historySize === 0 ? [] : kept.slice(-this.#historySize),
        query,
        Math.max(this.#trimmed.get(room) ?? 0, hidden),
      ),
    );
  }

  offline(username: string, limit = Infinity): Promise<StoredPrivateChat[]> {
    return Promise.resolve((this.#offline.get(username) ?? []).slice(0, limit));
  }

  async createToken(
    token: string,
    grant: TokenGrant,
    now: number,
  ): Promise<void> {
    const hash = await hashToken(token);
    // As SQLite's primary key and Redis's script: a token is never replaced.
    if (this.#tokens.has(hash)) throw new Error("token exists");
    this.#tokens.set(hash, {
      ...grant,
      hashPrefix: hash.slice(0, 12),
      createdAt: now,
      revoked: false,
    });
  }

  async checkToken(token: string, now: number): Promise<TokenGrant | null> {
    const row = this.#tokens.get(await hashToken(token));
    if (!row || row.revoked || row.expiresAt <= now) return null;
    return { username: row.username, expiresAt: row.expiresAt };
  }

  async revokeToken(token: string): Promise<boolean> {
    const row = this.#tokens.get(await hashToken(token));
    if (!row || row.revoked) return false;
    row.revoked = true;
    return true;
  }

  listTokens(): Promise<TokenRow[]> {
    return Promise.resolve(
      [...this.#tokens.values()].sort((a, b) => b.createdAt - a.createdAt),
    );
  }

  revokeTokensWhere(match: TokenMatch): Promise<number> {
    let count = 0;
    for (const [hash, row] of this.#tokens) {
      if (!row.revoked && tokenMatches(match, hash, row.username)) {
        row.revoked = true;
        count++;
      }
    }
    return Promise.resolve(count);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
