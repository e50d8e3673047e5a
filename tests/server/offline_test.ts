/**
 * Offline `PrivateChat`s at scale, authentication on, real SQLite: paged
 * delivery that survives a connection closing midway, a large backlog read
 * without a slow-consumer close, and the `MAX_OFFLINE_MESSAGES` cap.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../../src/runtime/config.ts";
import { OFFLINE_PAGE } from "../../src/chat/reducer.ts";
import { openSqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { startCluster } from "../support/cluster_helpers.ts";
import {
  serve,
  type TestClient,
  type TestServer,
  waitFor,
} from "../support/helpers.ts";
import {
  ADMIN,
  authServer,
  connectWithToken,
  frame,
  issueToken,
  type TempDb,
  tempDb,
} from "../support/db_helpers.ts";

/** {@linkcode authServer} with no rate limit: these tests send in bulk. */
function bulkServer(
  overrides: Partial<Config> = {},
): Promise<TestServer & { db: TempDb }> {
  return authServer({ rateLimitPerSecond: 0, ...overrides });
}

/** Content of `size` characters numbered `i`. */
function note(i: number, size: number): string {
  return `#${i} `.padEnd(size, "x");
}

/** Frames sent before waiting for answers: under the server's queue bound. */
const WINDOW = 40;

/**
 * Sends `count` `PrivateChat`s from alice to bob, `WINDOW` at a time, and
 * waits for every answer; returns the contents acknowledged, in order, the
 * error codes by ref, and the contents echoed back to the sender.
 */
async function sendMany(
  sender: TestClient,
  count: number,
  size: number,
  first = 0,
): Promise<
  { acked: string[]; errors: Map<string, string>; echoed: string[] }
> {
  const acked: string[] = [];
  const echoed: string[] = [];
  const errors = new Map<string, string>();
  for (let start = first; start < first + count; start += WINDOW) {
    const end = Math.min(start + WINDOW, first + count);
    const contents = new Map<string, string>();
    for (let i = start; i < end; i++) {
      const content = note(i, size);
      contents.set(`s${i}`, content);
      sender.send(frame("PrivateChat", {
        sender_username: "alice",
        target_username: "bob",
        content,
      }, { id: `s${i}` }));
    }
    for (let answered = 0; answered < end - start;) {
      const next = await sender.next(10_000);
      if (next.message_type === "PrivateChat") {
        echoed.push(next.message_body.content as string);
        continue;
      }
      const ref = next.message_body.ref as string;
      if (next.message_type === "Ack") acked.push(contents.get(ref)!);
      else if (next.message_type === "Error") {
        errors.set(ref, next.message_body.code as string);
      } else continue;
      answered++;
    }
  }
  return { acked, errors, echoed };
}

/** Reads `PrivateChat`s until none came for half a second; their contents. */
async function readAll(client: TestClient): Promise<string[]> {
  for (let quiet = 0; quiet < 5;) {
    const before = client.frames.length;
    await new Promise((resolve) => setTimeout(resolve, 100));
    quiet = client.frames.length === before ? quiet + 1 : 0;
  }
  return received(client);
}

/**
 * Asserts that `rest` continues `got` to all `count` notes, in order: paced,
 * so the first connection was not handed the whole backlog, and nothing
 * lost; only the first connection's last page may come again.
 */
function assertTheRest(got: string[], rest: string[], count: number): void {
  assert.ok(got.length < count, `first connection got ${got.length}`);
  assert.ok(rest.length > 0);
  const at = got.indexOf(rest[0]!);
  const overlap = at < 0 ? 0 : got.length - at;
  assert.ok(overlap <= OFFLINE_PAGE, `${overlap} repeated`);
  assert.deepEqual(rest.slice(0, overlap), got.slice(got.length - overlap));
  assert.deepEqual(
    [...got, ...rest.slice(overlap)],
    Array.from({ length: count }, (_, i) => note(i, 500)),
  );
}

/** Reads `count` `PrivateChat`s, closes, and returns all that came before the close. */
async function readSomeThenClose(
  client: TestClient,
  count: number,
): Promise<string[]> {
  await waitFor(() => received(client).length >= count, `${count} read`);
  await client.close();
  return received(client);
}

/** Every `PrivateChat` content a client has received so far. */
function received(client: TestClient): string[] {
  return client.frames.filter((f) => f.message_type === "PrivateChat")
    .map((f) => f.message_body.content as string);
}

Deno.test("offline: a client that closes midway gets the rest next time, in order, nothing lost", async () => {
  await using server = await bulkServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  const count = 3000;
  {
    await using sender = await connectWithToken(server.wsUrl, alice.token);
    const { acked, errors } = await sendMany(sender, count, 500);
    assert.equal(errors.size, 0);
    assert.equal(acked.length, count);
  }
  const got: string[] = [];
  {
    const first = await connectWithToken(server.wsUrl, bob.token);
    got.push(...await readSomeThenClose(first, 500));
  }
  {
    await using second = await connectWithToken(server.wsUrl, bob.token);
    assertTheRest(got, await readAll(second), count);
  }
  await using third = await connectWithToken(server.wsUrl, bob.token);
  await third.silent();
});

Deno.test("offline: a client that reads a large backlog is not closed as a slow consumer", async () => {
  // 30,000 waiting messages of 500 characters (15 MB), stored the way the
  // server stores them, in one transaction to keep the test short.
  await using db = await tempDb();
  const count = 30_000;
  const bob = crypto.randomUUID();
  {
    const storage = openSqliteStorage(db.path, 1000);
    await storage.createToken(bob, {
      username: "bob",
      expiresAt: Date.now() + 3_600_000,
    }, Date.now());
    const results = await storage.write(
      Array.from({ length: count }, (_, i) => ({
        kind: "private" as const,
        delivered: false,
        message: {
          id: `m${i}`,
          sender_username: "alice",
          target_username: "bob",
          content: note(i, 500),
          timestamp: 1_000 + i,
        },
      })),
    );
    assert.ok(results.every((result) => result.ok));
    await storage.close();
  }
  await using server = await serve({
    databasePath: db.path,
    adminToken: ADMIN,
    authEnabled: true,
  });
  await using reader = await connectWithToken(server.wsUrl, bob);
  const all = await readAll(reader);
  assert.equal(reader.socket.readyState, WebSocket.OPEN, "not closed");
  assert.equal(all.length, count);
  assert.ok(all.every((content, i) => content === note(i, 500)), "in order");
});

Deno.test("offline: past MAX_OFFLINE_MESSAGES the sender gets inbox_full with its ref, no Ack, nothing stored", async () => {
  const cap = 25;
  await using server = await bulkServer({ maxOfflineMessages: cap });
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using sender = await connectWithToken(server.wsUrl, alice.token);
  const { acked, errors, echoed } = await sendMany(sender, cap + 5, 20);
  assert.deepEqual(acked, Array.from({ length: cap }, (_, i) => note(i, 20)));
  assert.deepEqual(
    [...errors],
    Array.from({ length: 5 }, (_, i) => [`s${cap + i}`, "inbox_full"]),
  );
  assert.deepEqual(echoed, acked, "the refused ones get no echo either");
  {
    await using reader = await connectWithToken(server.wsUrl, bob.token);
    assert.deepEqual(await readAll(reader), acked, "only the kept ones");
  }
  // Delivered: room again for as many.
  const again = await sendMany(sender, cap, 20, 100);
  assert.equal(again.errors.size, 0);
  assert.equal(again.acked.length, cap);
});

Deno.test("offline, cluster: past MAX_OFFLINE_MESSAGES a sender on node A gets inbox_full; bob on node B reads only the kept ones", async () => {
  const cap = 25;
  await using cluster = await startCluster(2, {
    authEnabled: true,
    adminToken: ADMIN,
    rateLimitPerSecond: 0,
    maxOfflineMessages: cap,
  });
  const [a, b] = cluster.nodes;
  assert.ok(a && b);
  const alice = await issueToken(a.httpUrl, "alice");
  const bob = await issueToken(a.httpUrl, "bob");
  await using sender = await connectWithToken(a.wsUrl, alice.token);
  const { acked, errors } = await sendMany(sender, cap + 5, 20);
  assert.deepEqual(acked, Array.from({ length: cap }, (_, i) => note(i, 20)));
  assert.deepEqual(
    [...errors],
    Array.from({ length: 5 }, (_, i) => [`s${cap + i}`, "inbox_full"]),
  );
  await using reader = await connectWithToken(b.wsUrl, bob.token);
  assert.deepEqual(await readAll(reader), acked, "only the kept ones");
});

Deno.test("offline, cluster: a client that closes midway on one node gets the rest on the other, in order", async () => {
  await using cluster = await startCluster(2, {
    authEnabled: true,
    adminToken: ADMIN,
    rateLimitPerSecond: 0,
  });
  const [a, b] = cluster.nodes;
  assert.ok(a && b);
  const alice = await issueToken(a.httpUrl, "alice");
  const bob = await issueToken(a.httpUrl, "bob");
  const count = 1000;
  {
    await using sender = await connectWithToken(a.wsUrl, alice.token);
    assert.equal((await sendMany(sender, count, 500)).acked.length, count);
  }
  const first = await connectWithToken(a.wsUrl, bob.token);
  const got = await readSomeThenClose(first, 150);
  {
    await using second = await connectWithToken(b.wsUrl, bob.token);
    assertTheRest(got, await readAll(second), count);
  }
  await using third = await connectWithToken(a.wsUrl, bob.token);
  await third.silent();
});
