/**
 * The SQLite schema: its migrations, one per version, and
 * {@linkcode migrate}, which brings a file up to {@linkcode SCHEMA_VERSION}
 * by `PRAGMA user_version`. It reads and writes no chat data (the storage
 * is `sqlite_storage.ts`).
 *
 * @module
 */
import type { DatabaseSync } from "node:sqlite";

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
  // The highest seq trimming removed from a room: History's `complete` is
  // read from it, not from seq arithmetic, since a failed write leaves a
  // gap. Before it, a room's trimmed seqs were those below its oldest kept.
  `ALTER TABLE room_seqs ADD COLUMN trimmed INTEGER NOT NULL DEFAULT 0;
  UPDATE room_seqs SET trimmed = coalesce(
    (SELECT min(seq) FROM messages WHERE messages.room = room_seqs.room) - 1,
    seq);`,
  // Undelivered PrivateChats per target, kept by triggers, so that the
  // MAX_OFFLINE_MESSAGES check costs one lookup, not a count of the inbox.
  `CREATE TABLE inbox_counts (
    target TEXT PRIMARY KEY, waiting INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO inbox_counts (target, waiting)
    SELECT target, COUNT(*) FROM private_messages WHERE delivered = 0
    GROUP BY target;
  CREATE TRIGGER inbox_counts_insert AFTER INSERT ON private_messages
  WHEN NEW.delivered = 0 BEGIN
    INSERT INTO inbox_counts (target, waiting) VALUES (NEW.target, 1)
      ON CONFLICT (target) DO UPDATE SET waiting = waiting + 1;
  END;
  CREATE TRIGGER inbox_counts_update AFTER UPDATE OF delivered
  ON private_messages WHEN OLD.delivered != NEW.delivered BEGIN
    INSERT INTO inbox_counts (target, waiting)
      VALUES (NEW.target, CASE WHEN NEW.delivered = 0 THEN 1 ELSE -1 END)
      ON CONFLICT (target) DO UPDATE SET waiting = waiting + excluded.waiting;
  END;
  CREATE TRIGGER inbox_counts_delete AFTER DELETE ON private_messages
  WHEN OLD.delivered = 0 BEGIN
    UPDATE inbox_counts SET waiting = waiting - 1 WHERE target = OLD.target;
  END;`,
  // Idempotency keys of GroupChats: sender and client id, for a window.
  `CREATE TABLE sent_refs (
    sender TEXT NOT NULL, ref TEXT NOT NULL, id TEXT NOT NULL,
    seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (sender, ref)
  ) WITHOUT ROWID;
  CREATE INDEX sent_refs_time ON sent_refs (timestamp);`,
  // Timed bans by folded username (the admin API and command).
  `CREATE TABLE bans (
    username TEXT PRIMARY KEY, until INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;`,
];

/** The schema version a migrated file has (`PRAGMA user_version`). */
export const SCHEMA_VERSION: number = MIGRATIONS.length;

/** Applies the migrations above `PRAGMA user_version`, in one transaction. */
export function migrate(db: DatabaseSync): void {
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
