/**
 * A {@linkcode Storage} on SQLite through Deno's built-in `node:sqlite`.
 * Every call is synchronous underneath, so a batch never interleaves with
 * another call of this process; other processes (the operator CLI) wait on
 * SQLite's lock for up to `busy_timeout`.
 *
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import type { StoredGroupChat, StoredPrivateChat } from "./protocol.ts";
import {
  fingerprint,
  hashToken,
  type HistoryPage,
  type HistoryQuery,
  IDEMPOTENCY_WINDOW_MS,
  isComplete,
  type Storage,
  type StoredAs,
  type TokenGrant,
  type TokenRow,
  type WriteOp,
  type WriteResult,
} from "./storage.ts";

/** The schema, one migration per version: never edit one, append. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL, content TEXT NOT NULL, timestamp INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
  ) WITHOUT ROWID;
  CREATE TABLE room_seqs (room TEXT PRIMARY KEY, seq INTEGER NOT NULL);
  CREATE TABLE private_messages (
    id TEXT PRIMARY KEY, sender TEXT NOT NULL, target TEXT NOT NULL,
    content TEXT NOT NULL, timestamp INTEGER NOT NULL,
    delivered INTEGER NOT NULL
  );
  CREATE INDEX private_messages_inbox
    ON private_messages (target, delivered, timestamp);
  CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, username TEXT NOT NULL,
    expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX tokens_username ON tokens (username);`,
  // Idempotency keys of GroupChats: sender and client id, for a window.
  `CREATE TABLE sent_refs (
    sender TEXT NOT NULL, ref TEXT NOT NULL, id TEXT NOT NULL,
    seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (sender, ref)
  ) WITHOUT ROWID;
  CREATE INDEX sent_refs_time ON sent_refs (timestamp);`,
];

const GROUP_COLUMNS = "id, seq, room, sender, content, timestamp";

type Row = Record<string, unknown>;

function toGroupChat(row: Row): StoredGroupChat {
  return {
    id: String(row.id),
    seq: Number(row.seq),
    room: String(row.room),
    sender_username: String(row.sender),
    content: String(row.content),
    timestamp: Number(row.timestamp),
  };
}

/** A {@linkcode Storage} kept in one SQLite file (or `:memory:`). */
export class SqliteStorage implements Storage {
  #db: DatabaseSync;
  #historySize: number;
  #closed = false;
  #insertGroup: StatementSync;
  #bumpSeq: StatementSync;
  #trim: StatementSync;
  #findRef: StatementSync;
  #keepRef: StatementSync;
  #forgetRefs: StatementSync;
  #knows: StatementSync;
  #insertPrivate: StatementSync;
  #deliver: StatementSync;
  #undeliver: StatementSync;
  #seqs: StatementSync;
  #oldest: StatementSync;
  #since: StatementSync;
  #last: StatementSync;
  #before: StatementSync;
  #offline: StatementSync;
  #createToken: StatementSync;
  #findToken: StatementSync;
  #revoke: StatementSync;
  #tokens: StatementSync;

  /**
   * Opens (creating and migrating as needed) the database at `path`, or an
   * in-memory one for `:memory:`, keeping the last `historySize` messages of
   * each room.
   */
  constructor(path: string, historySize: number) {
    if (!Number.isSafeInteger(historySize) || historySize < 0) {
      throw new RangeError(
        `historySize must be an integer >= 0: ${historySize}`,
      );
    }
    if (path !== ":memory:") Deno.mkdirSync(dirname(path), { recursive: true });
    this.#historySize = historySize;
    const db = this.#db = new DatabaseSync(path);
    try {
      // busy_timeout first, so that the server and the operator CLI wait on
      // each other's locks, even for the journal mode and the migration.
      // WAL with synchronous=NORMAL: a commit survives the process being
      // killed (even kill -9), which is what we promise; only a power loss
      // or OS crash may lose the last commits.
      db.exec(`PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;
        PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;`);
      this.#migrate();
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
    this.#trim = sql(`DELETE FROM messages WHERE room = ?1
      AND seq <= (SELECT seq FROM room_seqs WHERE room = ?1) - ?2`);
    this.#findRef = sql(`SELECT id, seq, timestamp FROM sent_refs
      WHERE sender = ? AND ref = ? AND timestamp >= ? AND fingerprint = ?`);
    this.#keepRef = sql(`INSERT OR REPLACE INTO sent_refs
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
    this.#oldest = sql("SELECT MIN(seq) AS seq FROM messages WHERE room = ?");
    this.#since = sql(`SELECT ${GROUP_COLUMNS} FROM messages
      WHERE room = ? AND seq > ? AND seq <= ? ORDER BY seq`);
    this.#last = sql(`SELECT ${GROUP_COLUMNS} FROM messages
      WHERE room = ? AND seq <= ? ORDER BY seq DESC LIMIT ?`);
    this.#before = sql(`SELECT ${GROUP_COLUMNS} FROM messages
      WHERE room = ? AND seq < ? AND seq <= ? ORDER BY seq DESC LIMIT ?`);
    this.#offline = sql(`SELECT id, sender, target, content, timestamp
      FROM private_messages WHERE target = ? AND delivered = 0
      ORDER BY timestamp, rowid`);
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
  }

  /** Applies the migrations above `PRAGMA user_version`, in one transaction. */
  #migrate(): void {
    const db = this.#db;
    const version = () =>
      Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0);
    if (version() === MIGRATIONS.length) return;
    db.exec("BEGIN IMMEDIATE");
    try {
      // Read again under the write lock: another process may have migrated.
      const current = version();
      if (current > MIGRATIONS.length) {
        throw new Error(
          `database schema version ${current} is newer than this server's ${MIGRATIONS.length}`,
        );
      }
      for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!);
      db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
      db.exec("COMMIT");
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
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
      const rooms = new Set<string>();
      try {
        this.#db.exec("BEGIN IMMEDIATE");
        const results = ops.map((op) => this.#apply(op, rooms));
        for (const room of rooms) this.#trim.run(room, this.#historySize);
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
        return results;
      } catch {
        // SQLite may have rolled back already (e.g. SQLITE_FULL).
        if (this.#db.isOpen && this.#db.isTransaction) {
          this.#db.exec("ROLLBACK");
        }
        return ops.map((): WriteResult => ({ ok: false, reason: "failed" }));
      }
    });
  }

  #apply(op: WriteOp, rooms: Set<string>): WriteResult {
    if (op.kind === "group") {
      const m = op.message;
      const original = this.#sentBefore(op);
      if (original) return { ok: true, original };
      this.#insertGroup.run(
        m.id,
        m.seq,
        m.room,
        m.sender_username,
        m.content,
        m.timestamp,
      );
      this.#bumpSeq.run(m.room, m.seq);
      rooms.add(m.room);
    } else if (op.kind === "private") {
      const m = op.message;
      if (!op.delivered && !this.#knows.get(m.target_username)) {
        return { ok: false, reason: "unknown_user" };
      }
      const original = this.#sentBefore(op);
      if (original) return { ok: true, original };
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
   * The message its sender stored with `op`'s client id within the window,
   * if any; otherwise records `op` under that id.
   */
  #sentBefore(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
  ): StoredAs | undefined {
    if (op.ref === undefined) return undefined;
    const m = op.message;
    const print = fingerprint(op);
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
    const seq = op.kind === "group" ? op.message.seq : 0;
    this.#keepRef.run(
      m.sender_username,
      op.ref,
      m.id,
      seq,
      m.timestamp,
      print,
    );
    return undefined;
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
      const oldest = this.#oldest.get(room)?.seq;
      return {
        messages: rows.map(toGroupChat),
        complete: isComplete(
          query,
          oldest == null ? undefined : Number(oldest),
        ),
      };
    });
  }

  /** Undelivered `PrivateChat`s to `username`, oldest first. */
  offline(username: string): Promise<StoredPrivateChat[]> {
    return Promise.try(() =>
      this.#offline.all(username).map((row) => ({
        id: String(row.id),
        sender_username: String(row.sender),
        target_username: String(row.target),
        content: String(row.content),
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
