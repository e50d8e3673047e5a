/**
 * {@linkcode MemoryStorage}: the storage port (`src/chat/storage.ts`) kept in
 * the process's memory, for `DATABASE_PATH=:memory:`, benchmarks and tests.
 * Nothing survives the process; it does no I/O and never fails.
 *
 * @module
 */
import type { StoredGroupChat, StoredPrivateChat } from "../wire/protocol.ts";
import { foldName } from "../wire/names.ts";
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
import { selectHistory } from "../chat/history_rules.ts";

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
  /** Bans by folded username. */
  #bans = new Map<string, { until: number; createdAt: number }>();
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

  roomSeq(room: string): Promise<number> {
    return Promise.resolve(this.#seqs.get(room) ?? 0);
  }

  write(ops: readonly WriteOp[]): Promise<WriteResult[]> {
    return Promise.resolve(this.writeNow(ops));
  }

  writeNow(ops: readonly WriteOp[]): WriteResult[] {
    const results: WriteResult[] = [];
    for (const op of ops) {
      if (op.kind === "group") {
        const { room } = op.message;
        const print = op.ref === undefined ? "" : fingerprint(op);
        const original = this.#original(op, print);
        if (original) {
          results.push({ ok: true, original });
          continue;
        }
        this.#remember(op, print);
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
        const print = op.ref === undefined ? "" : fingerprint(op);
        const original = this.#original(op, print);
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
        this.#remember(op, print);
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

  /** The message stored before with `op`'s key and fingerprint `print`, within the window; it records nothing (`#remember` does). */
  #original(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
    print: string,
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
    if (sent && sent.timestamp >= since && sent.fingerprint === print) {
      return { id: sent.id, seq: sent.seq, timestamp: sent.timestamp };
    }
    return undefined;
  }

  /** Keeps the idempotency key of a message that is stored. */
  #remember(
    op: Extract<WriteOp, { kind: "group" | "private" }>,
    print: string,
  ): void {
    if (op.ref === undefined) return;
    const { id, timestamp, sender_username } = op.message;
    const seq = op.kind === "group" ? op.message.seq : 0;
    const entry: SentKey = {
      key: `${sender_username}\n${op.ref}`,
      id,
      seq,
      timestamp,
      fingerprint: print,
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

  ban(username: string, until: number, now: number): Promise<void> {
    this.#bans.set(foldName(username), { until, createdAt: now });
    return Promise.resolve();
  }

  unban(username: string): Promise<boolean> {
    return Promise.resolve(this.#bans.delete(foldName(username)));
  }

  bannedUntil(username: string, now: number): Promise<number | null> {
    const ban = this.#bans.get(foldName(username));
    return Promise.resolve(ban && ban.until > now ? ban.until : null);
  }

  bans(now: number): Promise<BanRow[]> {
    const rows: BanRow[] = [];
    for (const [username, ban] of this.#bans) {
      if (ban.until > now) rows.push({ username, ...ban });
    }
    return Promise.resolve(rows);
  }

  deleteMessage(
    room: string,
    match: MessageMatch,
  ): Promise<StoredGroupChat | null> {
    const kept = this.#rooms.get(room) ?? [];
    const at = kept.findIndex((message) =>
      "id" in match ? message.id === match.id : message.seq === match.seq
    );
    if (at < 0) return Promise.resolve(null);
    const [message] = kept.splice(at, 1);
    return Promise.resolve(message ?? null);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
