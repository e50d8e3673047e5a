/**
 * The SQLite side of moderation (`Moderation` in `src/chat/storage.ts`):
 * bans by folded username in the `bans` table (migration 5) and the
 * deletion of a room's message. Plain statements on the database handle
 * that `SqliteStorage` gives it (which may be reopened, so statements are
 * prepared per handle). It converts no rows to messages (the storage does)
 * and decides nothing about who is banned.
 *
 * @module
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { BanRow, MessageMatch } from "../chat/storage.ts";
import { foldName } from "../wire/names.ts";

interface Statements {
  ban: StatementSync;
  unban: StatementSync;
  find: StatementSync;
  list: StatementSync;
  byId: StatementSync;
  bySeq: StatementSync;
  deleteById: StatementSync;
}

const prepared = new WeakMap<DatabaseSync, Statements>();

function statements(db: DatabaseSync): Statements {
  let found = prepared.get(db);
  if (!found) {
    const sql = (text: string) => db.prepare(text);
    found = {
      ban: sql(`INSERT INTO bans (username, until, created_at) VALUES (?, ?, ?)
        ON CONFLICT (username) DO UPDATE SET until = excluded.until,
        created_at = excluded.created_at`),
      unban: sql("DELETE FROM bans WHERE username = ?"),
      find: sql("SELECT until FROM bans WHERE username = ? AND until > ?"),
      list: sql(
        "SELECT username, until, created_at FROM bans WHERE until > ? ORDER BY username",
      ),
      byId: sql(`SELECT id, seq, room, sender, CAST(content AS BLOB) AS content,
        timestamp FROM messages WHERE room = ? AND id = ?`),
      bySeq: sql(
        `SELECT id, seq, room, sender, CAST(content AS BLOB) AS content,
        timestamp FROM messages WHERE room = ? AND seq = ?`,
      ),
      deleteById: sql("DELETE FROM messages WHERE id = ?"),
    };
    prepared.set(db, found);
  }
  return found;
}

/** Bans `username` (folded) until `until`, replacing an earlier ban. */
export function banIn(
  db: DatabaseSync,
  username: string,
  until: number,
  now: number,
): void {
  statements(db).ban.run(foldName(username), until, now);
}

/** Lifts a ban; `false` when there was none. */
export function unbanIn(db: DatabaseSync, username: string): boolean {
  return Number(statements(db).unban.run(foldName(username)).changes) > 0;
}

/** When the ban of `username` ends, or `null` when none runs at `now`. */
export function bannedUntilIn(
  db: DatabaseSync,
  username: string,
  now: number,
): number | null {
  const row = statements(db).find.get(foldName(username), now);
  return row ? Number(row.until) : null;
}

/** Every ban running at `now`. */
export function bansIn(db: DatabaseSync, now: number): BanRow[] {
  return statements(db).list.all(now).map((row) => ({
    username: String(row.username),
    until: Number(row.until),
    createdAt: Number(row.created_at),
  }));
}

/**
 * Deletes the message `match` names from `room` in one transaction;
 * returns its row (as history reads it), or `undefined` when none.
 */
export function deleteMessageIn(
  db: DatabaseSync,
  room: string,
  match: MessageMatch,
): Record<string, unknown> | undefined {
  const s = statements(db);
  db.exec("BEGIN IMMEDIATE");
  try {
    const row = "id" in match
      ? s.byId.get(room, match.id)
      : s.bySeq.get(room, match.seq);
    if (row) s.deleteById.run(String(row.id));
    db.exec("COMMIT");
    return row;
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}
