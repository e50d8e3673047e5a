import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { StoredGroupChat, StoredPrivateChat } from "../src/protocol.ts";
import { openSqliteStorage, SqliteStorage } from "../src/sqlite_storage.ts";
import {
  hashToken,
  type HistoryQuery,
  MemoryStorage,
  selectHistory,
} from "../src/storage.ts";

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
    assert.equal(raw.prepare("PRAGMA user_version").get()?.user_version, 2);
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
      selectHistory([], query),
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
        const last = written.at(-1) ?? 0;
        const kept = written.filter((seq) => seq > last - historySize)
          .map((seq) => group(room, seq));
        for (const query of queries) {
          assert.deepEqual(
            await storage.history(room, query),
            selectHistory(kept, query),
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
        Array(6).fill(FAILED),
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
