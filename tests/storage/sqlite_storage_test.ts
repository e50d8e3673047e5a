/**
 * What only `SqliteStorage` has: its file (schema version, WAL, migrations,
 * tokens stored hashed), a batch as one transaction, I/O errors and
 * read-only files, and trimming across restarts with another
 * `HISTORY_SIZE`. The rules every storage shares, and where SQLite differs
 * from them, are in the storage contract (`contract_test.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type {
  StoredGroupChat,
  StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import {
  openSqliteStorage,
  SqliteStorage,
} from "../../src/storage/sqlite_storage.ts";
import { hashToken } from "../../src/chat/storage.ts";
import { SCHEMA_VERSION } from "../../src/storage/sqlite_schema.ts";

async function withDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sqlite_storage_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function group(room: string, seq: number): StoredGroupChat {
  return {
    id: `${room}-${seq}`,
    seq,
    room,
    sender_username: "alice",
    content: `message ${seq}`,
    timestamp: 1_700_000_000_000 + seq,
  };
}

function groups(room: string, seqs: readonly number[]) {
  return seqs.map((seq) => ({
    kind: "group" as const,
    message: group(room, seq),
  }));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function chat(
  id: string,
  target: string,
  timestamp: number,
): StoredPrivateChat {
  return {
    id,
    sender_username: "alice",
    target_username: target,
    content: `hello ${id}`,
    timestamp,
  };
}

const ALL = Number.MAX_SAFE_INTEGER;
const FAILED = { ok: false, reason: "failed" } as const;
const OK = { ok: true } as const;

// What survives a restart is in the storage contract (contract_history.ts).
Deno.test("a new file in a new folder is created at the schema version, in WAL mode", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "nested", "chat.db");
    const storage = openSqliteStorage(path, 3);
    assert.deepEqual(await storage.write(groups("lobby", range(1, 5))), [
      ...Array(5).fill(OK),
    ]);
    await storage.close();
    const raw = new DatabaseSync(path);
    assert.equal(
      raw.prepare("PRAGMA user_version").get()?.user_version,
      SCHEMA_VERSION,
    );
    assert.equal(raw.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
    raw.close();
  });
});

Deno.test("a database from a newer server is refused", async () => {
  await withDir((dir) => {
    const path = join(dir, "chat.db");
    const raw = new DatabaseSync(path);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    assert.throws(() => new SqliteStorage(path, 10), /newer/);
  });
});

Deno.test(":memory: needs no file and close is idempotent", async () => {
  const storage = openSqliteStorage(":memory:", 10);
  assert.deepEqual(await storage.write(groups("a", [1])), [OK]);
  assert.deepEqual(await storage.roomSeqs(), new Map([["a", 1]]));
  await storage.close();
  await storage.close();
  await assert.rejects(
    storage.history("a", { kind: "last", count: 1, upTo: 1 }),
  );
});

// The token rules (expiry, revocation, listing) are in the storage contract
// (contract_offline.ts); this is what only a file shows.
Deno.test("tokens are stored hashed: the file holds the hash, never the token", async () => {
  await withDir(async (dir) => {
    const secret = "Raw-Secret-Token-0123456789abcdef";
    const other = "another-token-fedcba9876543210";
    const secretHash = await hashToken(secret);
    const otherHash = await hashToken(other);
    const storage = openSqliteStorage(join(dir, "chat.db"), 10);
    const dbBytes = async () => {
      const parts: string[] = [];
      for await (const entry of Deno.readDir(dir)) {
        const bytes = await Deno.readFile(join(dir, entry.name));
        parts.push(new TextDecoder("latin1").decode(bytes));
      }
      return parts.join("\n");
    };
    try {
      await storage.createToken(
        secret,
        { username: "alice", expiresAt: 2000 },
        1000,
      );
      await storage.createToken(
        other,
        { username: "bob", expiresAt: 9000 },
        1500,
      );
      assert.equal(await storage.revokeToken(secret), true);
      const open = await dbBytes();
      assert.ok(open.includes(secretHash));
      assert.ok(!open.includes(secret) && !open.includes(secret.toLowerCase()));
    } finally {
      await storage.close();
    }
    const closed = await dbBytes();
    assert.ok(closed.includes(secretHash) && closed.includes(otherHash));
    assert.ok(
      !closed.includes(secret) && !closed.includes(secret.toLowerCase()),
    );
    assert.ok(!closed.includes(other));
  });
});

Deno.test("a batch with a failing op keeps nothing and fails every op", async () => {
  await withDir(async (dir) => {
    const storage = openSqliteStorage(join(dir, "chat.db"), 10);
    try {
      await storage.createToken(
        "tok-bob",
        { username: "bob", expiresAt: 10 },
        1,
      );
      assert.deepEqual(
        await storage.write([
          ...groups("a", [1]),
          { kind: "private", message: chat("p1", "bob", 1), delivered: false },
        ]),
        [OK, OK],
      );
      const duplicate = { ...group("a", 3), id: "a-1" };
      assert.deepEqual(
        await storage.write([
          ...groups("a", [2]),
          ...groups("b", [1]),
          { kind: "private", message: chat("p2", "bob", 2), delivered: false },
          {
            kind: "private",
            message: chat("p3", "nobody", 3),
            delivered: false,
          },
          { kind: "delivered", ids: ["p1"] },
          { kind: "group", message: duplicate },
        ]),
        Array(6).fill({
          ...FAILED,
          error: "UNIQUE constraint failed: messages.id",
        }),
      );
      assert.deepEqual(await storage.roomSeqs(), new Map([["a", 1]]));
      assert.deepEqual(
        await storage.history("a", { kind: "since", since: 0, upTo: ALL }),
        { messages: [group("a", 1)], complete: true },
      );
      assert.deepEqual(await storage.offline("bob"), [chat("p1", "bob", 1)]);
      // The transaction was closed: the next batch commits.
      assert.deepEqual(await storage.write(groups("a", [2])), [OK]);
      assert.deepEqual(await storage.roomSeqs(), new Map([["a", 2]]));
      assert.deepEqual(await storage.write([]), []);
    } finally {
      await storage.close();
    }
  });
});

/**
 * SQL that takes migrations 3 (the inbox counts) and 4 (the idempotency
 * keys) back out of a file.
 */
const DROP_INBOX_COUNTS = `DROP TRIGGER inbox_counts_insert;
  DROP TRIGGER inbox_counts_update; DROP TRIGGER inbox_counts_delete;
  DROP TABLE inbox_counts; DROP TABLE sent_refs; DROP TABLE bans;`;

Deno.test("a file from before the inbox counts is migrated with its waiting messages counted", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat.db");
    let storage = openSqliteStorage(path, 3);
    await storage.createToken("tok-bob", { username: "bob", expiresAt: 10 }, 1);
    await storage.write([
      { kind: "private", message: chat("p1", "bob", 1), delivered: false },
      { kind: "private", message: chat("p2", "bob", 2), delivered: false },
      { kind: "private", message: chat("p3", "bob", 3), delivered: true },
    ]);
    await storage.close();
    // Back to version 2: no count table, no triggers.
    const raw = new DatabaseSync(path);
    raw.exec(`${DROP_INBOX_COUNTS} PRAGMA user_version = 2;`);
    raw.close();

    storage = openSqliteStorage(path, 3);
    try {
      const capped = (id: string, at: number) => ({
        kind: "private" as const,
        message: chat(id, "bob", at),
        delivered: false,
        maxWaiting: 3,
      });
      assert.deepEqual(await storage.write([capped("p4", 4)]), [OK]);
      assert.deepEqual(await storage.write([capped("p5", 5)]), [
        { ok: false, reason: "inbox_full" },
      ]);
      assert.deepEqual(
        (await storage.offline("bob")).map((m) => m.id),
        ["p1", "p2", "p4"],
      );
    } finally {
      await storage.close();
    }
  });
});

/** Runs `chattr` on `paths`; throws with its stderr when it fails. */
async function chattr(flag: "+i" | "-i", ...paths: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("chattr", {
    args: [flag, ...paths],
    stdout: "null",
    stderr: "piped",
  }).output().catch((error) => ({
    success: false,
    stderr: new TextEncoder().encode(String(error)),
  }));
  if (!success) throw new Error(new TextDecoder().decode(stderr).trim());
}

/**
 * Why files cannot be made immutable here (`chattr +i` needs root and a file
 * system with the flag, such as ext4), or `undefined` when they can.
 */
async function noImmutableFiles(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "chattr_probe_" });
  const file = join(dir, "probe");
  await Deno.writeTextFile(file, "probe");
  try {
    await chattr("+i", file);
    await chattr("-i", file);
    return undefined;
  } catch (error) {
    return `chattr +i is not possible here: ${(error as Error).message}`;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const IMMUTABLE_UNAVAILABLE = await noImmutableFiles();
if (IMMUTABLE_UNAVAILABLE) {
  console.warn(
    `ignoring the I/O error and read-only tests: ${IMMUTABLE_UNAVAILABLE}`,
  );
}

Deno.test({
  name:
    "an I/O error (the files made immutable while open) fails writes with the cause, and they work again after",
  ignore: IMMUTABLE_UNAVAILABLE !== undefined,
  async fn() {
    await withDir(async (dir) => {
      const path = join(dir, "chat.db");
      const storage = new SqliteStorage(path, 10);
      const files = [path, `${path}-wal`];
      try {
        assert.deepEqual(await storage.write(groups("r", [1, 2])), [OK, OK]);
        await chattr("+i", ...files);
        try {
          for (const seq of [3, 4, 5]) {
            assert.deepEqual(await storage.write(groups("r", [seq])), [{
              ...FAILED,
              error: "disk I/O error",
            }]);
          }
          // Reads go on meanwhile.
          assert.deepEqual(
            (await storage.history("r", { kind: "since", since: 0, upTo: 5 }))
              .messages.map((m) => m.seq),
            [1, 2],
          );
        } finally {
          await chattr("-i", ...files);
        }
        assert.deepEqual(await storage.write(groups("r", [6])), [OK]);
        assert.deepEqual(
          await storage.history("r", { kind: "since", since: 0, upTo: 6 }),
          { messages: [1, 2, 6].map((seq) => group("r", seq)), complete: true },
        );
      } finally {
        await storage.close();
      }
    });
  },
});

Deno.test({
  name:
    "a read-only database file fails writes with the cause, and once writable it is opened again by itself",
  ignore: IMMUTABLE_UNAVAILABLE !== undefined,
  async fn() {
    await withDir(async (dir) => {
      const path = join(dir, "chat.db");
      let storage = new SqliteStorage(path, 10);
      assert.deepEqual(await storage.write(groups("r", [1])), [OK]);
      await storage.close();
      // Immutable: even root cannot open it for writing, so SQLite opens it
      // read-only, as for a file without write permission.
      await chattr("+i", path);
      let immutable = true;
      try {
        storage = new SqliteStorage(path, 10);
        try {
          for (const seq of [2, 3]) {
            assert.deepEqual(await storage.write(groups("r", [seq])), [{
              ...FAILED,
              error: "attempt to write a readonly database",
            }]);
          }
          assert.deepEqual(
            (await storage.history("r", { kind: "since", since: 0, upTo: 3 }))
              .messages.map((m) => m.seq),
            [1],
          );
          await chattr("-i", path);
          immutable = false;
          // At most one new open a second: within about a second it writes.
          const deadline = Date.now() + 3000;
          let result;
          do {
            [result] = await storage.write(groups("r", [4]));
            if (!result!.ok) {
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
          } while (!result!.ok && Date.now() < deadline);
          assert.deepEqual(result, OK);
          assert.deepEqual(
            (await storage.history("r", { kind: "since", since: 0, upTo: 4 }))
              .messages.map((m) => m.seq),
            [1, 4],
          );
        } finally {
          await storage.close();
        }
      } finally {
        if (immutable) await chattr("-i", path);
      }
    });
  },
});

Deno.test("a version 1 database is migrated: what lay below a room's oldest message counts as trimmed", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat.db");
    let storage = new SqliteStorage(path, 3);
    await storage.write(groups("a", range(1, 10)));
    await storage.write(groups("b", [1]));
    await storage.close();
    // Back to the first schema: no trimmed column, no inbox counts.
    const raw = new DatabaseSync(path);
    raw.exec(`${DROP_INBOX_COUNTS} ALTER TABLE room_seqs DROP COLUMN trimmed;
      DELETE FROM messages WHERE room = 'b'; PRAGMA user_version = 1`);
    raw.close();
    storage = new SqliteStorage(path, 3);
    try {
      const page = (room: string, since: number) =>
        storage.history(room, { kind: "since", since, upTo: 10 });
      assert.deepEqual((await page("a", 6)).complete, false);
      assert.deepEqual((await page("a", 7)).complete, true);
      // A room with nothing kept lost everything up to its seq.
      assert.deepEqual(await page("b", 0), { messages: [], complete: false });
      assert.deepEqual((await page("b", 1)).complete, true);
    } finally {
      await storage.close();
    }
  });
});

Deno.test("trimming keeps the newest HISTORY_SIZE rows across restarts with another HISTORY_SIZE", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat.db");
    const kept = async (historySize: number, write: number[]) => {
      const storage = new SqliteStorage(path, historySize);
      try {
        for (const seq of write) await storage.write(groups("r", [seq]));
        return (await storage.history("r", {
          kind: "since",
          since: 0,
          upTo: ALL,
        })).messages.map((m) => m.seq);
      } finally {
        await storage.close();
      }
    };
    assert.deepEqual(await kept(10, range(1, 20)), range(11, 20));
    assert.deepEqual(await kept(5, [30]), [17, 18, 19, 20, 30]);
    assert.deepEqual(await kept(8, [40, 41]), [17, 18, 19, 20, 30, 40, 41]);
    assert.deepEqual(await kept(8, [50, 51, 52]), [
      19,
      20,
      30,
      40,
      41,
      50,
      51,
      52,
    ]);
  });
});
