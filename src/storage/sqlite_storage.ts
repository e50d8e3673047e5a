/**
 * A {@linkcode Storage} on SQLite through Deno's built-in `node:sqlite`.
 * Every call is synchronous underneath, so a batch never interleaves with
 * another call of this process; other processes (the operator CLI) wait on
 * SQLite's lock for up to `busy_timeout`. The schema and its migrations are
 * in `sqlite_schema.ts`.
 *
 * Why this file is long: one class holds the prepared
 * statements and the transaction that every write shares; split, each part
 * would reach into the other's statements.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import { migrate } from "./sqlite_schema.ts";
import {
  banIn,
  bannedUntilIn,
  bansIn,
  deleteMessageIn,
  unbanIn,
} from "./sqlite_moderation.ts";
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";
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
  type TokenRow,
  type WriteOp,
  type WriteResult,
} from "../chat/storage.ts";
import { isComplete } from "../chat/history_rules.ts";

const GROUP_COLUMNS = "id, seq, room, sender, content, timestamp";

/**
 * The same for reading: `content` as its UTF-8 bytes, since `node:sqlite`
 * reads a text value only up to its first U+0000.
 */
const GROUP_READ = "id, seq, room, sender, CAST(content AS BLOB) AS content, " +
  "timestamp";

type Row = Record<string, unknown>;

/** What {@linkcode SqliteStorage.probe} writes: about a long message. */
const PROBE_CONTENT = "probe ".repeat(700);

/** How often a read-only database is opened again to see if it still is. */
const REOPEN_MS = 1000;

// ignoreBOM: a leading U+FEFF is content, not a byte order mark to drop.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** A text column read as a blob (see {@linkcode GROUP_READ}), whole. */
function text(value: unknown): string {
  return value instanceof Uint8Array ? decoder.decode(value) : String(value);
}

function toGroupChat(row: Row): StoredGroupChat {
  return {
    id: String(row.id),
    seq: Number(row.seq),
    room: String(row.room),
    sender_username: String(row.sender),
    content: text(row.content),
    timestamp: Number(row.timestamp),
  };
}

/** Options of {@linkcode SqliteStorage}. */
export interface SqliteOptions {
  /**
   * The most pages the database may grow to (`PRAGMA max_page_count`):
   * past it, writes fail with `SQLITE_FULL` as on a full disk.
   */
  maxPageCount?: number;
}

/** A {@linkcode Storage} kept in one SQLite file (or `:memory:`). */
export class SqliteStorage implements Storage, TokenAdmin {
  #db!: DatabaseSync;
  #path: string;
  #historySize: number;
  #maxPageCount: number | undefined;
  #closed = false;
  /**
   * Set when a write found the file read-only: SQLite then opened it
   * read-only and stays so, so the next write opens it again (at most once
   * per {@linkcode REOPEN_MS}) and works as soon as the file is writable.
   */
  #reopenAt: number | undefined;
  /** Stored messages per room as of the last commit, once counted. */
  #rowCounts = new Map<string, number>();
  #insertGroup!: StatementSync;
  #bumpSeq!: StatementSync;
  #countRows!: StatementSync;
  #nthOldest!: StatementSync;
  #trim!: StatementSync;
  #markTrimmed!: StatementSync;
  #findRef!: StatementSync;
  #keepRefs!: StatementSync;
  #forgetRefs!: StatementSync;
  #knows!: StatementSync;
  #insertPrivate!: StatementSync;
  #deliver!: StatementSync;
  #undeliver!: StatementSync;
  #seqs!: StatementSync;
  #seq!: StatementSync;
  #trimmed!: StatementSync;
  #since!: StatementSync;
  #last!: StatementSync;
  #before!: StatementSync;
  #offline!: StatementSync;
  #offlinePage!: StatementSync;
  #waiting!: StatementSync;
  #createToken!: StatementSync;
  #findToken!: StatementSync;
  #revoke!: StatementSync;
  #tokens!: StatementSync;
  #revokeByPrefix!: StatementSync;
  #revokeByUser!: StatementSync;

  /**
   * Opens (creating and migrating as needed) the database at `path`, or an
   * in-memory one for `:memory:`, keeping the last `historySize` messages of
   * each room.
   */
  constructor(path: string, historySize: number, options: SqliteOptions = {}) {
    if (!Number.isSafeInteger(historySize) || historySize < 0) {
      throw new RangeError(
        `historySize must be an integer >= 0: ${historySize}`,
      );
    }
    if (path !== ":memory:") Deno.mkdirSync(dirname(path), { recursive: true });
    this.#path = path;
    this.#historySize = historySize;
    this.#maxPageCount = options.maxPageCount;
    this.#open();
  }

  /** Opens the database, migrates it and prepares the statements. */
  #open(): void {
    const db = this.#db = new DatabaseSync(this.#path);
    try {
      // busy_timeout first, so that the server and the operator CLI wait on
      // each other's locks, even for the journal mode and the migration.
      // WAL with synchronous=NORMAL: a commit survives the process being
      // killed (even kill -9), which is what we promise; only a power loss
      // or OS crash may lose the last commits.
      db.exec(`PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;
        PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;`);
      migrate(this.#db);
      if (this.#maxPageCount !== undefined) {
        this.maxPageCount(this.#maxPageCount);
      }
    } catch (error) {
      db.close();
      throw error;
    }
    const sql = (text: string) => db.prepare(text);
    this.#insertGroup = sql(
      `INSERT INTO messages (${GROUP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`,
    );
    this.#bumpSeq = sql(`INSERT INTO room_seqs (room, seq) VALUES (?, ?)
      ON CONFLICT (room) DO UPDATE SET seq = max(seq, excluded.seq)`);
    // Trimming counts stored messages, not seqs: the newest historySize
    // rows stay, whatever gaps failed writes left between their seqs.
    this.#countRows = sql(
      "SELECT count(*) AS count FROM messages WHERE room = ?",
    );
    this.#nthOldest = sql(`SELECT seq FROM messages WHERE room = ?
      ORDER BY seq LIMIT 1 OFFSET ?`);
    this.#trim = sql("DELETE FROM messages WHERE room = ? AND seq <= ?");
    this.#markTrimmed = sql(
      "UPDATE room_seqs SET trimmed = max(trimmed, ?2) WHERE room = ?1",
    );
    this.#findRef = sql(`SELECT id, seq, timestamp FROM sent_refs
      WHERE sender = ? AND ref = ? AND timestamp >= ? AND fingerprint = ?`);
    this.#keepRefs = sql(`INSERT OR REPLACE INTO sent_refs
      (sender, ref, id, seq, timestamp, fingerprint) VALUES (?, ?, ?, ?, ?, ?)`);
    this.#forgetRefs = sql("DELETE FROM sent_refs WHERE timestamp < ?");
    this.#knows = sql("SELECT 1 FROM tokens WHERE username = ? LIMIT 1");
    this.#insertPrivate = sql(`INSERT INTO private_messages
      (id, sender, target, content, timestamp, delivered)
      VALUES (?, ?, ?, ?, ?, ?)`);
    this.#deliver = sql(
      "UPDATE private_messages SET delivered = 1 WHERE id = ?",
    );
    this.#undeliver = sql(
      "UPDATE private_messages SET delivered = 0 WHERE id = ?",
    );
    this.#seqs = sql("SELECT room, seq FROM room_seqs");
    this.#seq = sql("SELECT seq FROM room_seqs WHERE room = ?");
    this.#trimmed = sql("SELECT trimmed FROM room_seqs WHERE room = ?");
    this.#since = sql(`SELECT ${GROUP_READ} FROM messages
      WHERE room = ? AND seq > ? AND seq <= ? ORDER BY seq`);
    this.#last = sql(`SELECT ${GROUP_READ} FROM messages
      WHERE room = ? AND seq <= ? ORDER BY seq DESC LIMIT ?`);
    this.#before = sql(`SELECT ${GROUP_READ} FROM messages
      WHERE room = ? AND seq < ? AND seq <= ? ORDER BY seq DESC LIMIT ?`);
    this.#offline = sql(`SELECT id, sender, target,
      CAST(content AS BLOB) AS content, timestamp
      FROM private_messages WHERE target = ? AND delivered = 0
      ORDER BY timestamp, rowid`);
    this.#offlinePage = sql(`SELECT id, sender, target,
      CAST(content AS BLOB) AS content, timestamp
      FROM private_messages WHERE target = ? AND delivered = 0
      ORDER BY timestamp, rowid LIMIT ?`);
    this.#waiting = sql(
      "SELECT waiting AS n FROM inbox_counts WHERE target = ?",
    );
    this.#createToken = sql(`INSERT INTO tokens
      (hash, username, expires_at, created_at) VALUES (?, ?, ?, ?)`);
    this.#findToken = sql(
      "SELECT username, expires_at, revoked FROM tokens WHERE hash = ?",
    );
    this.#revoke = sql(
      "UPDATE tokens SET revoked = 1 WHERE hash = ? AND revoked = 0",
    );
    this.#tokens = sql(`SELECT hash, username, expires_at, created_at, revoked
      FROM tokens ORDER BY created_at DESC, rowid DESC`);
    this.#revokeByPrefix = sql(`UPDATE tokens SET revoked = 1
      WHERE substr(hash, 1, length(?1)) = ?1 AND revoked = 0`);
    this.#revokeByUser = sql(
      "UPDATE tokens SET revoked = 1 WHERE username = ? AND revoked = 0",
    );
  }

  /**
   * Sets `PRAGMA max_page_count` (see {@linkcode SqliteOptions}) and returns
   * what SQLite made of it (never less than the pages in use).
   */
  maxPageCount(pages: number): number {
    if (!Number.isSafeInteger(pages) || pages < 1) {
      throw new RangeError(`pages must be an integer >= 1: ${pages}`);
    }
    this.#maxPageCount = pages;
    return Number(
      this.#db.prepare(`PRAGMA max_page_count = ${pages}`).get()
        ?.max_page_count,
    );
  }

  /** The last `seq` ever assigned in one room, 0 when none was. */
  roomSeq(room: string): Promise<number> {
    return Promise.try(() => Number(this.#seq.get(room)?.seq ?? 0));
  }

  /** The last `seq` ever assigned in every room, trimmed or not. */
  roomSeqs(): Promise<Map<string, number>> {
    return Promise.try(() =>
      new Map(
        this.#seqs.all().map((row) => [String(row.room), Number(row.seq)]),
      )
    );
  }

  /**
   * Commits a batch in one transaction; on any error nothing is kept and
   * every result is `failed`.
   */
  write(ops: readonly WriteOp[]): Promise<WriteResult[]> {
    return Promise.try(() => {
      if (ops.length === 0) return [];
      // Rooms written to by the batch, trimmed once each at its end.
      const rooms = new Map<string, number>();
      try {
        this.#reopenIfDue();
        this.#db.exec("BEGIN IMMEDIATE");
        const results = ops.map((op) => this.#apply(op, rooms));
        const counts = [...rooms].map(([room, added]) =>
          [room, this.#trimRoom(room, added)] as const
        );
        // Keys out of the window, by the newest message of the batch.
        let newest = -Infinity;
        for (const op of ops) {
          if (
            (op.kind === "group" || op.kind === "private") &&
            op.ref !== undefined
          ) {
            newest = Math.max(newest, op.message.timestamp);
          }
        }
        if (newest > -Infinity) {
          this.#forgetRefs.run(newest - IDEMPOTENCY_WINDOW_MS);
        }
        this.#db.exec("COMMIT");
        for (const [room, count] of counts) this.#rowCounts.set(room, count);
        return results;
      } catch (cause) {
        const error = this.#abort(cause);
        return ops.map((): WriteResult => ({
          ok: false,
          reason: "failed",
          error,
        }));
      }
    });
  }

  /**
   * Inserts and deletes a message-sized row of a room no name can have, in
   * a transaction that commits: it fails as a write of messages would (no
   * room to grow, an I/O error, a read-only file), and leaves nothing.
   */
  probe(): Promise<void> {
    return Promise.try(() => {
      try {
        this.#reopenIfDue();
        this.#db.exec("BEGIN IMMEDIATE");
        this.#insertGroup.run(
          `probe-${crypto.randomUUID()}`,
          0,
          "",
          "",
          PROBE_CONTENT,
          0,
        );
        this.#trim.run("", 0);
        this.#db.exec("COMMIT");
      } catch (cause) {
        this.#abort(cause);
        throw cause;
      }
    });
  }

  /** Ends a failed transaction; returns the cause's message. */
  #abort(cause: unknown): string {
    // SQLite may have rolled back already (e.g. SQLITE_FULL).
    if (this.#db.isOpen && this.#db.isTransaction) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // Nothing more to undo: the next BEGIN starts afresh.
      }
    }
    const error = cause instanceof Error ? cause.message : String(cause);
    if (/readonly/i.test(error) && this.#path !== ":memory:") {
      this.#reopenAt ??= Date.now() + REOPEN_MS;
    }
    return error;
  }

  /** Opens the database again if it was read-only a while ago. */
  #reopenIfDue(): void {
    if (this.#reopenAt === undefined || Date.now() < this.#reopenAt) return;
    const old = this.#db;
    try {
      this.#open();
    } catch (error) {
      // Still unusable: go on with the old handle, and try again later.
      this.#db = old;
      this.#reopenAt = Date.now() + REOPEN_MS;
      throw error;
    }
    this.#reopenAt = undefined;
    old.close();
  }

  /**
   * Keeps the newest `historySize` stored messages of `room`, to which this
   * transaction added `added`; returns how many it keeps. The count of a
   * room is read once, then followed (only this process writes messages),
   * so the cut costs what it deletes, not `historySize`.
   */
  #trimRoom(room: string, added: number): number {
    const known = this.#rowCounts.get(room);
    const count = known === undefined
      ? Number(this.#countRows.get(room)?.count ?? 0)
      : known + added;
    const excess = count - this.#historySize;
    if (excess <= 0) return count;
    const cut = this.#nthOldest.get(room, excess - 1)?.seq;
    if (cut == null) return count;
    this.#trim.run(room, cut);
    this.#markTrimmed.run(room, cut);
    return this.#historySize;
  }

  #apply(op: WriteOp, rooms: Map<string, number>): WriteResult {
    if (op.kind === "group") {
      const m = op.message;
      const print = op.ref === undefined ? "" : fingerprint(op);
      const original = this.#sentBefore(op, print);
      if (original) return { ok: true, original };
      this.#keepRef(op, print);
      this.#insertGroup.run(
        m.id,
        m.seq,
        m.room,
        m.sender_username,
        m.content,
        m.timestamp,
      );
      this.#bumpSeq.run(m.room, m.seq);
      rooms.set(m.room, (rooms.get(m.room) ?? 0) + 1);
    } else if (op.kind === "private") {
      const m = op.message;
      if (!op.delivered && !this.#knows.get(m.target_username)) {
        return { ok: false, reason: "unknown_user" };
      }
      const print = op.ref === undefined ? "" : fingerprint(op);
      const original = this.#sentBefore(op, print);
      if (original) return { ok: true, original };
      if (
        !op.delivered && op.maxWaiting !== undefined &&
        Number(this.#waiting.get(m.target_username)?.n ?? 0) >= op.maxWaiting
      ) {
        return { ok: false, reason: "inbox_full" };
      }
      this.#keepRef(op, print);
      this.#insertPrivate.run(
        m.id,
        m.sender_username,
        m.target_username,
        m.content,
        m.timestamp,
        op.delivered ? 1 : 0,
      );
    } else if (op.kind === "undelivered") {
      this.#undeliver.run(op.message.id);
    } else {
      for (const id of op.ids) this.#deliver.run(id);
    }
    return { ok: true };
  }

  /**
   * The message its sender stored with `op`'s client id and the same
   * fingerprint (`print`) within the window, if any. It records nothing:
   * `#keepRef` does, once the message is taken.
   */
  #sentBefore(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
    print: string,
  ): StoredAs | undefined {
    if (op.ref === undefined) return undefined;
    const m = op.message;
    const first = this.#findRef.get(
      m.sender_username,
      op.ref,
      m.timestamp - IDEMPOTENCY_WINDOW_MS,
      print,
    );
    if (first) {
      return {
        id: String(first.id),
        seq: Number(first.seq),
        timestamp: Number(first.timestamp),
      };
    }
    return undefined;
  }

  /** Keeps the idempotency key of a message this transaction stores. */
  #keepRef(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
    print: string,
  ): void {
    if (op.ref === undefined) return;
    const m = op.message;
    this.#keepRefs.run(
      m.sender_username,
      op.ref,
      m.id,
      op.kind === "group" ? op.message.seq : 0,
      m.timestamp,
      print,
    );
  }

  /** Reads a room's history exactly as `selectHistory` would. */
  history(room: string, query: HistoryQuery): Promise<HistoryPage> {
    return Promise.try(() => {
      let rows: Row[];
      if (query.kind === "since") {
        rows = this.#since.all(room, query.since, query.upTo);
      } else if (query.kind === "last") {
        rows = query.count <= 0
          ? []
          : this.#last.all(room, query.upTo, query.count).reverse();
      } else {
        rows = query.limit <= 0
          ? []
          : this.#before.all(room, query.before, query.upTo, query.limit)
            .reverse();
      }
      const trimmed = Number(this.#trimmed.get(room)?.trimmed ?? 0);
      return {
        messages: rows.map(toGroupChat),
        complete: isComplete(query, rows.length, trimmed),
      };
    });
  }

  /** The oldest `limit` (default: all) undelivered `PrivateChat`s to `username`. */
  offline(username: string, limit?: number): Promise<StoredPrivateChat[]> {
    return Promise.try(() =>
      (limit === undefined
        ? this.#offline.all(username)
        : this.#offlinePage.all(username, limit)).map((row) => ({
          id: String(row.id),
          sender_username: String(row.sender),
          target_username: String(row.target),
          content: text(row.content),
          timestamp: Number(row.timestamp),
        }))
    );
  }

  /** Stores the hash of a new token; rejects if that token already exists. */
  async createToken(
    token: string,
    grant: TokenGrant,
    now: number,
  ): Promise<void> {
    const hash = await hashToken(token);
    this.#createToken.run(hash, grant.username, grant.expiresAt, now);
  }

  /** Looks a token up: `null` when unknown, revoked or expired at `now`. */
  async checkToken(token: string, now: number): Promise<TokenGrant | null> {
    const row = this.#findToken.get(await hashToken(token));
    if (!row || Number(row.revoked) || Number(row.expires_at) <= now) {
      return null;
    }
    return {
      username: String(row.username),
      expiresAt: Number(row.expires_at),
    };
  }

  /** Revokes a token; `false` when unknown or already revoked. */
  async revokeToken(token: string): Promise<boolean> {
    return Number(this.#revoke.run(await hashToken(token)).changes) > 0;
  }

  /** Every token, newest first. */
  listTokens(): Promise<TokenRow[]> {
    return Promise.try(() =>
      this.#tokens.all().map((row) => ({
        username: String(row.username),
        expiresAt: Number(row.expires_at),
        hashPrefix: String(row.hash).slice(0, 12),
        createdAt: Number(row.created_at),
        revoked: Number(row.revoked) !== 0,
      }))
    );
  }

  /** Revokes every live token `match` names; how many. */
  revokeTokensWhere(match: TokenMatch): Promise<number> {
    return Promise.try(() =>
      Number(
        ("username" in match
          ? this.#revokeByUser.run(match.username)
          : this.#revokeByPrefix.run(match.hashPrefix)).changes,
      )
    );
  }

  /** Bans `username` (folded) until `until`. */
  ban(username: string, until: number, now: number): Promise<void> {
    return Promise.try(() => banIn(this.#db, username, until, now));
  }

  /** Lifts a ban; `false` when there was none. */
  unban(username: string): Promise<boolean> {
    return Promise.try(() => unbanIn(this.#db, username));
  }

  /** When the ban of `username` ends, or `null`. */
  bannedUntil(username: string, now: number): Promise<number | null> {
    return Promise.try(() => bannedUntilIn(this.#db, username, now));
  }

  /** Every ban running at `now`. */
  bans(now: number): Promise<BanRow[]> {
    return Promise.try(() => bansIn(this.#db, now));
  }

  /** Deletes a room's message; the row count of the room is read again. */
  deleteMessage(
    room: string,
    match: MessageMatch,
  ): Promise<StoredGroupChat | null> {
    return Promise.try(() => {
      const row = deleteMessageIn(this.#db, room, match);
      if (!row) return null;
      this.#rowCounts.delete(room);
      return toGroupChat(row);
    });
  }

  /** Closes the database; later calls do nothing. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#db.close();
    }
    return Promise.resolve();
  }
}

/** Opens a {@linkcode SqliteStorage}; see its constructor. */
export function openSqliteStorage(
  path: string,
  historySize: number,
): SqliteStorage {
  return new SqliteStorage(path, historySize);
}
