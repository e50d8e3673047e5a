/**
 * What was acknowledged comes back byte for byte: random strings of every
 * kind JSON carries (U+0000, U+2028/2029, 4-byte characters, quotes,
 * backslashes, `"seq":0`) round-trip through SQLite, memory and Redis
 * storage, and through a running server: live delivery, `History`, `since`
 * recovery and a restart, on a SQLite file and on a two-node cluster. Lone
 * surrogates, which UTF-8 cannot carry, are refused at send.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startLocalRedis } from "../../tools/local_redis.ts";
import {
  createDecoder,
  hasLoneSurrogate,
  isBlankContent,
  LONE_SURROGATE,
  type StoredGroupChat,
  type StoredPrivateChat,
} from "../../src/wire/protocol.ts";
import type { Logger } from "../../src/runtime/log.ts";
import { connectRedis } from "../../src/redis/connection.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import type { Storage } from "../../src/chat/storage.ts";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";
import { startCluster } from "../support/cluster_helpers.ts";
import { enterWith, frame, tempDb } from "../support/db_helpers.ts";
import { serve, TestClient, waitFor } from "../support/helpers.ts";

/** A seeded PRNG (mulberry32): the same strings on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Pieces that have broken JSON, UTF-8 or SQLite text somewhere. */
const TRICKY = [
  "\u0000",
  "\u2028",
  "\u2029",
  "\ufeff",
  "\ufffd",
  "\uffff",
  "\u{10ffff}",
  "😀",
  "👋🏽",
  "👩‍👩‍👧",
  '"seq":0',
  '"',
  "\\",
  "\\u0000",
  "\r\n",
  "\t",
  "\u007f",
  "\u0085",
  "é",
  "e\u0301",
  "\ud800\udc00",
  "</script>",
  "'; DROP TABLE messages; --",
  " ",
];

/** A random well-formed string of 1 to 40 code points. */
function randomString(random: () => number): string {
  const pick = (n: number) => Math.floor(random() * n);
  const length = 1 + pick(40);
  let text = "";
  for (let i = 0; i < length; i++) {
    const kind = pick(6);
    if (kind === 0) text += TRICKY[pick(TRICKY.length)];
    else if (kind === 1) text += String.fromCodePoint(pick(0x80)); // ASCII, controls
    else if (kind === 2) text += String.fromCodePoint(0x80 + pick(0x780)); // 2 bytes
    else if (kind === 3) {
      // 3 bytes, no surrogate
      let code = 0x800 + pick(0x10000 - 0x800);
      if (code >= 0xd800 && code <= 0xdfff) code -= 0x800;
      text += String.fromCodePoint(code);
    } else if (kind === 4) {
      text += String.fromCodePoint(0x10000 + pick(0x100000)); // 4 bytes
    } else text += "abc ".charAt(pick(4));
  }
  return text;
}

/** `count` random strings from `seed`, every TRICKY piece alone first. */
function strings(seed: number, count: number): string[] {
  const random = prng(seed);
  const out = [...TRICKY];
  while (out.length < count) out.push(randomString(random));
  for (const text of out) assert.ok(!hasLoneSurrogate(text), "well-formed");
  return out;
}

/**
 * The strings a client may send: {@linkcode strings} less those that show
 * nothing (blank content is refused with `invalid_message`, abuse_test.ts).
 */
function sendable(seed: number, count: number): string[] {
  return strings(seed, count).filter((text) => !isBlankContent(text));
}

const quiet: Logger = () => {};

function groupMessage(
  room: string,
  n: number,
  content: string,
  seq: number,
): StoredGroupChat {
  return {
    id: `${room}-${n}`,
    seq,
    room,
    sender_username: "alice",
    content,
    timestamp: 1_700_000_000_000 + n,
  };
}

function privateMessage(n: number, content: string): StoredPrivateChat {
  return {
    id: `p-${n}`,
    sender_username: "alice",
    target_username: "bob",
    content,
    timestamp: 1_700_000_000_000 + n,
  };
}

/**
 * Writes every string as a `GroupChat` and an offline `PrivateChat` and
 * reads them back; `seqByStorage` for Redis, which gives the seqs itself.
 */
async function roundTrip(
  storage: Storage,
  texts: readonly string[],
  seqByStorage: boolean,
): Promise<{ history: StoredGroupChat[]; offline: StoredPrivateChat[] }> {
  await storage.createToken("tok-bob", { username: "bob", expiresAt: 1e15 }, 1);
  const results = await storage.write(
    texts.flatMap((text, i) => [
      {
        kind: "group" as const,
        message: groupMessage("r", i, text, seqByStorage ? 0 : i + 1),
      },
      {
        kind: "private" as const,
        message: privateMessage(i, text),
        delivered: false,
      },
    ]),
  );
  assert.ok(results.every((result) => result.ok), JSON.stringify(results));
  const page = await storage.history("r", {
    kind: "since",
    since: 0,
    upTo: texts.length,
  });
  return { history: page.messages, offline: await storage.offline("bob") };
}

/** What {@linkcode roundTrip} must give back. */
function expected(texts: readonly string[]) {
  return {
    history: texts.map((text, i) => groupMessage("r", i, text, i + 1)),
    offline: texts.map((text, i) => privateMessage(i, text)),
  };
}

/** Where two lists of strings first differ, for a readable failure. */
function firstDifference(
  got: readonly string[],
  want: readonly string[],
): string {
  const i = want.findIndex((text, i) => got[i] !== text);
  return i < 0 && got.length === want.length
    ? "none"
    : `#${i}: sent ${JSON.stringify(want[i])}, got ${JSON.stringify(got[i])}`;
}

Deno.test("property: random strings round-trip through SQLite (and a reopen), memory and Redis storage", async () => {
  const texts = strings(20261207, 400);
  const want = expected(texts);

  await using db = await tempDb();
  let sqlite = new SqliteStorage(db.path, 1000);
  try {
    const got = await roundTrip(sqlite, texts, false);
    assert.equal(
      firstDifference(got.history.map((m) => m.content), texts),
      "none",
    );
    assert.deepEqual(got, want);
  } finally {
    await sqlite.close();
  }
  // A restart reads the same bytes from the file.
  sqlite = new SqliteStorage(db.path, 1000);
  try {
    assert.deepEqual(
      (await sqlite.history("r", { kind: "since", since: 0, upTo: 1e9 }))
        .messages,
      want.history,
    );
    assert.deepEqual(await sqlite.offline("bob"), want.offline);
  } finally {
    await sqlite.close();
  }

  assert.deepEqual(
    await roundTrip(new MemoryStorage(1000), texts, false),
    want,
  );

  await using redis = await startLocalRedis();
  const connection = connectRedis(redis.url, { name: "n1", log: quiet });
  try {
    await waitFor(() => connection.up, "redis connection up");
    const storage = new RedisStorage(connection, {
      nodeId: "n1",
      historySize: 1000,
      authEnabled: true,
    });
    const got = await roundTrip(storage, texts, true);
    assert.equal(
      firstDifference(got.history.map((m) => m.content), texts),
      "none",
    );
    assert.deepEqual(got, want);
  } finally {
    await connection.close();
  }
});

Deno.test("property: content with a lone surrogate is refused as invalid_message naming the field; well-formed content is taken as sent", () => {
  const decoder = createDecoder({ maxContentChars: 4000 });
  const random = prng(7);
  for (const text of sendable(11, 300)) {
    for (const type of ["GroupChat", "PrivateChat"] as const) {
      const body = {
        sender_username: "alice",
        content: text,
        ...(type === "PrivateChat" ? { target_username: "bob" } : {}),
      };
      const good = decoder.decode(
        JSON.stringify({ message_type: type, message_body: body, id: "g" }),
      );
      assert.ok(good.ok, JSON.stringify(good));
      assert.equal(
        (good.message.body as { content: string }).content,
        text,
      );
      // A lone half of a pair, high or low, anywhere in the text.
      const at = Math.floor(random() * (text.length + 1));
      const half = String.fromCharCode(
        random() < 0.5 ? 0xd800 + Math.floor(random() * 0x400) : 0xdc00 +
          Math.floor(random() * 0x400),
      );
      let broken = text.slice(0, at) + half + text.slice(at);
      if (!hasLoneSurrogate(broken)) broken = half + "x" + broken;
      const bad = decoder.decode(JSON.stringify({
        message_type: type,
        message_body: { ...body, content: broken },
        id: "b",
      }));
      assert.deepEqual(bad, {
        ok: false,
        error: {
          code: "invalid_message",
          message: `message_body.content: ${LONE_SURROGATE}`,
          ref: "b",
        },
      }, JSON.stringify(broken));
    }
  }
  // Names cannot carry one either (letters, digits, `_`, `-`, `.` only).
  for (const field of ["sender_username", "room"]) {
    const bad = decoder.decode(JSON.stringify({
      message_type: "Enter",
      message_body: { sender_username: "alice", [field]: "al\ud800ice" },
    }));
    assert.ok(!bad.ok && bad.error.message.startsWith(`message_body.${field}`));
  }
});

/** Sends every text as a `GroupChat` and checks its echo, the peer's copy and the `Ack`. */
async function sendAll(
  sender: TestClient,
  peer: TestClient,
  room: string,
  texts: readonly string[],
): Promise<number[]> {
  for (const [i, content] of texts.entries()) {
    sender.send(
      frame("GroupChat", { sender_username: "alice", room, content }, {
        id: `g${i}`,
      }),
    );
  }
  const seqs: number[] = [];
  for (const [i, content] of texts.entries()) {
    const echo = await sender.expect("GroupChat");
    const ack = await sender.expect("Ack");
    const copy = await peer.expect("GroupChat");
    assert.equal(ack.ref, `g${i}`);
    assert.equal(echo.content, content, `echo #${i}`);
    assert.equal(copy.content, content, `peer #${i}`);
    seqs.push(ack.seq);
  }
  return seqs;
}

/** The contents of a `History` reply to `Enter` with `body`. */
async function replay(
  url: string,
  username: string,
  body: Record<string, unknown>,
): Promise<string[]> {
  await using reader = await TestClient.connect(url);
  reader.send(
    frame("Enter", { sender_username: username, room: "r", ...body }),
  );
  await reader.expect("Presence");
  const history = await reader.expect("History");
  assert.equal(history.complete, true);
  // deno-lint-ignore no-explicit-any
  return history.messages.map((m: any) => m.content);
}

Deno.test("end to end (SQLite file): live, PrivateChat, History, since and a restart give back every string as sent; a lone surrogate is refused", async () => {
  const texts = sendable(99, 100);
  await using db = await tempDb();
  const config = { databasePath: db.path, rateLimitPerSecond: 0 };
  {
    await using server = await serve(config);
    await using alice = await TestClient.connect(server.wsUrl);
    await using bob = await TestClient.connect(server.wsUrl);
    await enterWith(alice, "alice", { room: "r" });
    await enterWith(bob, "bob", { room: "r" });
    await alice.expect("Enter");
    await sendAll(alice, bob, "r", texts.slice(0, 50));
    for (const [i, content] of texts.slice(0, 20).entries()) {
      alice.send(frame("PrivateChat", {
        sender_username: "alice",
        target_username: "bob",
        content,
      }, { id: `p${i}` }));
      assert.equal((await bob.expect("PrivateChat")).content, content);
      assert.equal((await alice.expect("PrivateChat")).content, content);
      assert.equal((await alice.expect("Ack")).ref, `p${i}`);
    }
    // Bob drops; alice goes on; bob comes back with since.
    await bob.close();
    await alice.expect("Leave");
    await using carol = await TestClient.connect(server.wsUrl);
    await enterWith(carol, "carol", { room: "r" });
    await alice.expect("Enter");
    await sendAll(alice, carol, "r", texts.slice(50));
    // Lone surrogates: refused with the field named, nothing sent or stored.
    alice.send(
      '{"message_type":"GroupChat","id":"lone","message_body":' +
        '{"sender_username":"alice","room":"r","content":"a\\ud800b"}}',
    );
    const error = await alice.expect("Error");
    assert.deepEqual(error, {
      code: "invalid_message",
      message: `message_body.content: ${LONE_SURROGATE}`,
      ref: "lone",
    });
    await carol.silent(50);
    assert.deepEqual(
      await replay(server.wsUrl, "bob", { since: 50 }),
      texts.slice(50),
    );
    assert.deepEqual(
      await replay(server.wsUrl, "dave", { history: 100 }),
      texts,
    );
  }
  // After a restart on the same file.
  await using server = await serve(config);
  assert.deepEqual(await replay(server.wsUrl, "erin", { history: 100 }), texts);
  assert.deepEqual(
    await replay(server.wsUrl, "bob", { since: 50 }),
    texts.slice(50),
  );
});

Deno.test("end to end (cluster on Redis): across nodes, History, since and a node restart give back every string as sent", async () => {
  const texts = sendable(1234, 60);
  await using cluster = await startCluster(2, { rateLimitPerSecond: 0 });
  const [a, b] = cluster.nodes as [
    (typeof cluster.nodes)[0],
    (typeof cluster.nodes)[0],
  ];
  {
    await using alice = await TestClient.connect(a.wsUrl);
    await using bob = await TestClient.connect(b.wsUrl);
    await enterWith(alice, "alice", { room: "r" });
    await enterWith(bob, "bob", { room: "r" });
    await alice.expect("Enter");
    await sendAll(alice, bob, "r", texts);
    assert.deepEqual(await replay(b.wsUrl, "carol", { history: 100 }), texts);
    assert.deepEqual(
      await replay(a.wsUrl, "dave", { since: 30 }),
      texts.slice(30),
    );
  }
  // A node that starts afresh reads the same from Redis.
  await b.server.shutdown();
  await using fresh = await serve({ redisUrl: cluster.redis.url });
  await waitFor(() => fresh.server.bus?.up === true, "new node in sync");
  assert.deepEqual(await replay(fresh.wsUrl, "erin", { history: 100 }), texts);
});

Deno.test('History gives back "ab\\u0000cd" whole, not "ab"', async () => {
  // The bytes were always stored whole; reading them stopped at U+0000.
  await using db = await tempDb();
  const storage = new SqliteStorage(join(db.dir, "old.db"), 10);
  try {
    await storage.write([{
      kind: "group",
      message: groupMessage("r", 1, "ab\u0000cd", 1),
    }]);
    const [message] = (await storage.history("r", {
      kind: "last",
      count: 1,
      upTo: 1,
    })).messages;
    assert.equal(message?.content, "ab\u0000cd");
  } finally {
    await storage.close();
  }
});
