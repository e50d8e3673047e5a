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
import { SCHEMA_VERSION } from "../../src/storage/sqlite_schema.ts";
import { hashToken, type HistoryQuery } from "../../src/chat/storage.ts";
import { selectHistory } from "../../src/chat/history_rules.ts";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";

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

Deno.test("a new file is migrated and everything survives a restart", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "nested", "chat.db");
    let storage = openSqliteStorage(path, 3);
    await storage.createToken(
      "tok-bob",
      { username: "bob", expiresAt: 5000 },
      100,
    );
    assert.deepEqual(
      await storage.write([
        ...groups("lobby", range(1, 5)),
        { kind: "private", message: chat("p1", "bob", 10), delivered: false },
      ]),
      Array(6).fill(OK),
    );
    await storage.close();

    const raw = new DatabaseSync(path);
    assert.equal(
      raw.prepare("PRAGMA user_version").get()?.user_version,
      SCHEMA_VERSION,
    );
    assert.equal(raw.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
    raw.close();

    storage = new SqliteStorage(path, 3);
    try {
      assert.deepEqual(await storage.roomSeqs(), new Map([["lobby", 5]]));
      assert.deepEqual(
        await storage.history("lobby", { kind: "last", count: 10, upTo: 5 }),
        {
          messages: range(3, 5).map((seq) => group("lobby", seq)),
          complete: false,
        },
      );
      assert.deepEqual(await storage.checkToken("tok-bob", 200), {
        username: "bob",
        expiresAt: 5000,
      });
      assert.deepEqual(await storage.offline("bob"), [chat("p1", "bob", 10)]);
      assert.deepEqual(await storage.write(groups("lobby", [6])), [OK]);
      assert.deepEqual(await storage.roomSeqs(), new Map([["lobby", 6]]));
      assert.deepEqual(
        (await storage.history("lobby", { kind: "since", since: 0, upTo: 6 }))
          .messages.map((m) => m.seq),
        [4, 5, 6],
      );
    } finally {
      await storage.close();
    }
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

Deno.test("rooms are trimmed to historySize, each on its own", async () => {
  await withDir(async (dir) => {
    const storage = openSqliteStorage(join(dir, "chat.db"), 3);
    try {
      await storage.write([
        ...groups("a", range(1, 10)),
        ...groups("b", [1, 2]),
      ]);
      await storage.write(groups("a", [11]));
      await storage.write(groups("a", [12]));
      const seqs = async (room: string) =>
        (await storage.history(room, { kind: "since", since: 0, upTo: ALL }))
          .messages.map((m) => m.seq);
      assert.deepEqual(await seqs("a"), [10, 11, 12]);
      assert.deepEqual(await seqs("b"), [1, 2]);
      assert.deepEqual(
        await storage.roomSeqs(),
        new Map([["a", 12], ["b", 2]]),
      );
    } finally {
      await storage.close();
    }
  });
});

Deno.test("historySize 0 keeps no message but keeps the room's seq", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "chat.db");
    let storage = openSqliteStorage(path, 0);
    assert.deepEqual(await storage.write(groups("a", [1, 2, 3])), [OK, OK, OK]);
    const query: HistoryQuery = { kind: "last", count: 5, upTo: 3 };
    assert.deepEqual(
      await storage.history("a", query),
      selectHistory([], query, 3),
    );
    assert.deepEqual(await storage.history("a", query), {
      messages: [],
      complete: false,
    });
    await storage.close();
    storage = openSqliteStorage(path, 0);
    try {
      assert.deepEqual(await storage.roomSeqs(), new Map([["a", 3]]));
    } finally {
      await storage.close();
    }
  });
});

Deno.test("history agrees with selectHistory on the kept messages", async () => {
  const scenarios: { room: string; written: number[]; historySize: number }[] =
    [
      { room: "empty", written: [], historySize: 100 },
      { room: "full", written: range(1, 10), historySize: 100 },
      { room: "trimmed", written: range(1, 10), historySize: 4 },
      { room: "gaps", written: [1, 2, 4, 7, 9], historySize: 100 },
      { room: "gapstrimmed", written: [1, 2, 4, 7, 9, 11, 12], historySize: 3 },
      { room: "gapsfirst", written: [3, 5, 6], historySize: 5 },
      { room: "one", written: [1], historySize: 1 },
    ];
  const queries: HistoryQuery[] = [];
  for (const upTo of [0, 1, 3, 6, 9, 10, 12]) {
    for (const since of [0, 1, 3, 6, 9, 10, 15]) {
      queries.push({ kind: "since", since, upTo });
    }
    for (const count of [0, 1, 3, 4, 10, 50]) {
      queries.push({ kind: "last", count, upTo });
    }
    for (const before of [1, 2, 5, 7, 10, 11, 100]) {
      for (const limit of [1, 2, 3, 50]) {
        queries.push({ kind: "before", before, limit, upTo });
      }
    }
  }
  await withDir(async (dir) => {
    let compared = 0;
    for (const { room, written, historySize } of scenarios) {
      const storage = openSqliteStorage(join(dir, `${room}.db`), historySize);
      try {
        await storage.write(groups(room, written));
        // The newest historySize stored messages, whatever their seqs.
        const kept = (historySize === 0 ? [] : written.slice(-historySize))
          .map((seq) => group(room, seq));
        const trimmed = written.at(-historySize - 1) ?? 0;
        for (const query of queries) {
          assert.deepEqual(
            await storage.history(room, query),
            selectHistory(kept, query, trimmed),
            `${room} ${JSON.stringify(query)}`,
          );
          compared++;
        }
      } finally {
        await storage.close();
      }
    }
    assert.equal(compared, scenarios.length * queries.length);
  });

  // A few of those cases spelled out, so the comparison is not vacuous.
  const storage = openSqliteStorage(":memory:", 4);
  try {
    await storage.write(groups("r", range(1, 10)));
    const seqsOf = async (query: HistoryQuery) => {
      const page = await storage.history("r", query);
      return [page.messages.map((m) => m.seq), page.complete];
    };
    assert.deepEqual(await seqsOf({ kind: "since", since: 0, upTo: 10 }), [
      [7, 8, 9, 10],
      false,
    ]);
    assert.deepEqual(await seqsOf({ kind: "since", since: 6, upTo: 9 }), [
      [7, 8, 9],
      true,
    ]);
    assert.deepEqual(await seqsOf({ kind: "since", since: 15, upTo: 10 }), [
      [],
      true,
    ]);
    assert.deepEqual(await seqsOf({ kind: "last", count: 0, upTo: 10 }), [
      [],
      true,
    ]);
    assert.deepEqual(await seqsOf({ kind: "last", count: 2, upTo: 8 }), [
      [7, 8],
      true,
    ]);
    assert.deepEqual(
      await seqsOf({ kind: "before", before: 9, limit: 2, upTo: 10 }),
      [[7, 8], true],
    );
    assert.deepEqual(
      await seqsOf({ kind: "before", before: 9, limit: 3, upTo: 10 }),
      [[7, 8], false],
    );
  } finally {
    await storage.close();
  }
});

Deno.test("an offline PrivateChat needs a user who holds or held a token", async () => {
  const storage = openSqliteStorage(":memory:", 10);
  try {
    assert.deepEqual(
      await storage.write([
        { kind: "private", message: chat("p1", "carol", 1), delivered: false },
        { kind: "private", message: chat("p2", "carol", 2), delivered: true },
      ]),
      [{ ok: false, reason: "unknown_user" }, OK],
    );
    assert.deepEqual(await storage.offline("carol"), []);

    await storage.createToken(
      "tok-carol",
      { username: "carol", expiresAt: 10 },
      1,
    );
    assert.equal(await storage.revokeToken("tok-carol"), true);
    assert.deepEqual(
      await storage.write([
        { kind: "private", message: chat("p3", "carol", 3), delivered: false },
        { kind: "private", message: chat("p4", "dave", 4), delivered: false },
      ]),
      [OK, { ok: false, reason: "unknown_user" }],
    );
    assert.deepEqual(await storage.offline("carol"), [chat("p3", "carol", 3)]);
    assert.deepEqual(await storage.offline("dave"), []);
  } finally {
    await storage.close();
  }
});

Deno.test("offline is oldest first and delivered messages leave it", async () => {
  const storage = openSqliteStorage(":memory:", 10);
  try {
    await storage.createToken("tok-bob", { username: "bob", expiresAt: 10 }, 1);
    const messages = [
      chat("late", "bob", 30),
      chat("early", "bob", 10),
      chat("tie-1", "bob", 20),
      chat("tie-2", "bob", 20),
    ];
    await storage.write(
      messages.map((message) => ({
        kind: "private",
        message,
        delivered: false,
      })),
    );
    assert.deepEqual(
      (await storage.offline("bob")).map((m) => m.id),
      ["early", "tie-1", "tie-2", "late"],
    );
    assert.deepEqual(
      await storage.write([{
        kind: "delivered",
        ids: ["early", "tie-2", "nope"],
      }]),
      [OK],
    );
    assert.deepEqual(
      (await storage.offline("bob")).map((m) => m.id),
      ["tie-1", "late"],
    );
    assert.deepEqual(await storage.offline("alice"), []);
  } finally {
    await storage.close();
  }
});

Deno.test("tokens: create, check, expire, revoke, list, stored hashed", async () => {
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
      await assert.rejects(
        storage.createToken(other, { username: "eve", expiresAt: 9000 }, 1600),
      );

      const alice = { username: "alice", expiresAt: 2000 };
      assert.deepEqual(await storage.checkToken(secret, 1000), alice);
      assert.deepEqual(await storage.checkToken(secret, 1999), alice);
      assert.equal(await storage.checkToken(secret, 2000), null);
      assert.equal(await storage.checkToken("unknown", 1000), null);

      assert.deepEqual(await storage.listTokens(), [
        {
          username: "bob",
          expiresAt: 9000,
          hashPrefix: otherHash.slice(0, 12),
          createdAt: 1500,
          revoked: false,
        },
        {
          username: "alice",
          expiresAt: 2000,
          hashPrefix: secretHash.slice(0, 12),
          createdAt: 1000,
          revoked: false,
        },
      ]);

      assert.equal(await storage.revokeToken(secret), true);
      assert.equal(await storage.revokeToken(secret), false);
      assert.equal(await storage.revokeToken("unknown"), false);
      assert.equal(await storage.checkToken(secret, 1000), null);
      assert.deepEqual(
        (await storage.listTokens()).map((row) => [row.username, row.revoked]),
        [["bob", false], ["alice", true]],
      );

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

Deno.test("a PrivateChat written as delivered and then undelivered waits offline, in both storages", async () => {
  const message: StoredPrivateChat = {
    id: "p-late",
    sender_username: "bob",
    target_username: "alice",
    content: "you left",
    timestamp: 1_000,
  };
  const storages = [
    openSqliteStorage(":memory:", 10),
    new MemoryStorage(10),
  ];
  for (const storage of storages) {
    try {
      await storage.write([{ kind: "private", message, delivered: true }]);
      assert.deepEqual(await storage.offline("alice"), [], "delivered");
      await storage.write([{ kind: "undelivered", message }]);
      assert.deepEqual(await storage.offline("alice"), [message]);
      await storage.write([{ kind: "delivered", ids: [message.id] }]);
      assert.deepEqual(await storage.offline("alice"), [], "once");
    } finally {
      await storage.close();
    }
  }
});

/** Writes of `n` messages, one batch each, with content that needs new pages. */
async function writeEach(
  storage: SqliteStorage,
  room: string,
  seqs: readonly number[],
) {
  const results = [];
  for (const seq of seqs) {
    const [result] = await storage.write([{
      kind: "group",
      message: { ...group(room, seq), content: "x".repeat(4000) },
    }]);
    results.push(result!);
  }
  return results;
}

Deno.test("a full database fails writes with the cause, keeps every stored message, and recovers", async () => {
  await withDir(async (dir) => {
    const storage = new SqliteStorage(join(dir, "chat.db"), 10);
    try {
      assert.deepEqual(
        await storage.write(groups("r", range(1, 5))),
        Array(5).fill(OK),
      );
      // No page more than the file has now: SQLITE_FULL, as on a full disk.
      storage.maxPageCount(1);
      const failed = await writeEach(storage, "r", range(6, 205));
      for (const result of failed) {
        assert.deepEqual(result, {
          ...FAILED,
          error: "database or disk is full",
        });
      }
      await assert.rejects(storage.probe(), /database or disk is full/);
      storage.maxPageCount(1_000_000);
      // The probe finds the fault gone, and leaves nothing behind.
      await storage.probe();
      assert.deepEqual(await storage.roomSeqs(), new Map([["r", 5]]));
      assert.deepEqual(
        await storage.history("", { kind: "since", since: -1, upTo: ALL }),
        { messages: [], complete: true },
      );
      // The next write commits, with a gap in seq.
      assert.deepEqual(await storage.write(groups("r", [206])), [OK]);
      for (
        const query of [
          { kind: "since", since: 0, upTo: 206 },
          { kind: "last", count: 10, upTo: 206 },
          { kind: "before", before: 207, limit: 50, upTo: 206 },
        ] satisfies HistoryQuery[]
      ) {
        assert.deepEqual(await storage.history("r", query), {
          messages: [...range(1, 5), 206].map((seq) => group("r", seq)),
          complete: true,
        }, JSON.stringify(query));
      }
      assert.deepEqual(await storage.roomSeqs(), new Map([["r", 206]]));
      // Trimming still keeps exactly the newest 10 stored messages.
      await storage.write(groups("r", range(207, 211)));
      const page = await storage.history("r", {
        kind: "since",
        since: 0,
        upTo: 211,
      });
      assert.deepEqual(page.messages.map((m) => m.seq), [
        2,
        3,
        4,
        5,
        206,
        ...range(207, 211),
      ]);
      assert.equal(page.complete, false);
      assert.equal(
        (await storage.history("r", { kind: "since", since: 1, upTo: 211 }))
          .complete,
        true,
      );
    } finally {
      await storage.close();
    }
  });
});

/** The storages a single server runs on, for the same offline rules. */
const OFFLINE_STORAGES = [
  { name: "SQLite", open: () => openSqliteStorage(":memory:", 10) },
  { name: "memory", open: () => new MemoryStorage(10) },
];

for (const { name, open } of OFFLINE_STORAGES) {
  Deno.test(`${name}: MAX_OFFLINE_MESSAGES refuses with inbox_full and stores nothing; pages read the oldest first`, async () => {
    const storage = open();
    try {
      await storage.createToken(
        "tok-bob",
        { username: "bob", expiresAt: 10 },
        1,
      );
      const capped = (id: string, at: number) => ({
        kind: "private" as const,
        message: chat(id, "bob", at),
        delivered: false,
        maxWaiting: 3,
      });
      assert.deepEqual(
        await storage.write([
          capped("p1", 1),
          capped("p2", 2),
          capped("p3", 3),
          capped("p4", 4),
          // Live: not kept for later, not capped.
          { ...capped("p5", 5), delivered: true },
          // Sent live, its target gone before the commit: kept whatever
          // the count.
          { kind: "undelivered", message: chat("p5", "bob", 5) },
        ]),
        [OK, OK, OK, { ok: false, reason: "inbox_full" }, OK, OK],
      );
      const waiting = ["p1", "p2", "p3", "p5"];
      assert.deepEqual(
        (await storage.offline("bob")).map((m) => m.id),
        waiting,
      );
      assert.deepEqual(
        (await storage.offline("bob", 2)).map((m) => m.id),
        ["p1", "p2"],
      );
      await storage.write([{ kind: "delivered", ids: ["p1", "p2"] }]);
      assert.deepEqual(
        (await storage.offline("bob", 2)).map((m) => m.id),
        ["p3", "p5"],
      );
      // Room again below the cap.
      assert.deepEqual(await storage.write([capped("p7", 7)]), [OK]);
    } finally {
      await storage.close();
    }
  });
}

/**
 * SQL that takes migrations 3 (the inbox counts) and 4 (the idempotency
 * keys) back out of a file.
 */
const DROP_INBOX_COUNTS = `DROP TRIGGER inbox_counts_insert;
  DROP TRIGGER inbox_counts_update; DROP TRIGGER inbox_counts_delete;
  DROP TABLE inbox_counts; DROP TABLE sent_refs;`;

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

Deno.test("gaps in seq (failed writes) neither trim kept messages nor make pages incomplete, in both storages", async () => {
  interface GapCase {
    name: string;
    historySize: number;
    /** Seqs stored, in order; the ones missing failed. */
    written: number[];
    query: HistoryQuery;
    seqs: number[];
    complete: boolean;
  }
  const many = range(1, 300).map((n) => n * 10);
  const cases: GapCase[] = [
    {
      name: "a long gap keeps the older messages",
      historySize: 10,
      written: [...range(1, 5), 1151],
      query: { kind: "since", since: 0, upTo: 1151 },
      seqs: [...range(1, 5), 1151],
      complete: true,
    },
    {
      name: "the first seqs failed: nothing was trimmed",
      historySize: 10,
      written: [3, 4],
      query: { kind: "last", count: 10, upTo: 4 },
      seqs: [3, 4],
      complete: true,
    },
    {
      name: "before the oldest, nothing trimmed",
      historySize: 10,
      written: [5, 9],
      query: { kind: "before", before: 9, limit: 5, upTo: 9 },
      seqs: [5],
      complete: true,
    },
    {
      name: "trimmed by count across gaps",
      historySize: 3,
      written: many,
      query: { kind: "last", count: 5, upTo: 3000 },
      seqs: [2980, 2990, 3000],
      complete: false,
    },
    {
      name: "since the last trimmed seq is complete",
      historySize: 3,
      written: many,
      query: { kind: "since", since: 2970, upTo: 3000 },
      seqs: [2980, 2990, 3000],
      complete: true,
    },
    {
      name: "since a trimmed seq is not",
      historySize: 3,
      written: many,
      query: { kind: "since", since: 2969, upTo: 3000 },
      seqs: [2980, 2990, 3000],
      complete: false,
    },
  ];
  for (const kind of ["sqlite", "memory"] as const) {
    for (const c of cases) {
      const storage = kind === "sqlite"
        ? new SqliteStorage(":memory:", c.historySize)
        : new MemoryStorage(c.historySize);
      try {
        for (const seq of c.written) {
          assert.deepEqual(await storage.write(groups("r", [seq])), [OK]);
        }
        const page = await storage.history("r", c.query);
        assert.deepEqual(
          [page.messages.map((m) => m.seq), page.complete],
          [c.seqs, c.complete],
          `${kind}: ${c.name}`,
        );
      } finally {
        await storage.close();
      }
    }
  }
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
