/**
 * Storage faults through a running server: a database that cannot grow
 * (`max_page_count`, a real `SQLITE_FULL`) and a full file system (a 2 MB
 * tmpfs, where mounting is allowed), and a cluster node whose Redis is out of
 * memory (`maxmemory` with `noeviction`). Every message is answered, `Ack` or
 * `unavailable` with its `ref`; nothing acknowledged is lost; the operator
 * sees it in the log, `/healthz` and `/metrics`; and the server recovers by
 * itself. Also the runner's rate limit on the log lines, on a fake clock.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FakeSocket } from "../support/fake_socket.ts";
import { join } from "node:path";
import { Metrics } from "../../src/runtime/metrics.ts";
import { type ChatSettings, createState } from "../../src/chat/reducer.ts";
import { Runner } from "../../src/runtime/runner.ts";
import { STORAGE_REPORT_MS } from "../../src/runtime/storage_health.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { redisCommand, startCluster } from "../support/cluster_helpers.ts";
import { chatMany, enterWith, frame, tempDb } from "../support/db_helpers.ts";
import {
  serve,
  TestClient,
  type TestServer,
  waitFor,
} from "../support/helpers.ts";

/** `/healthz`, parsed. */
async function health(
  server: TestServer,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${server.httpUrl}/healthz`);
  return { status: response.status, body: await response.json() };
}

/** The samples of `/metrics` whose names start with `chat_storage`. */
async function storageMetrics(
  server: TestServer,
): Promise<Record<string, number>> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const samples: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const match = /^(chat_storage\S*) (\S+)$/.exec(line);
    if (match) samples[match[1]!] = Number(match[2]);
  }
  return samples;
}

const BATCHES_OK = 'chat_storage_batches_total{result="committed"}';
const BATCHES_FAILED = 'chat_storage_batches_total{result="failed"}';
const WRITES_OK = 'chat_storage_writes_total{result="committed"}';
const WRITES_FAILED = 'chat_storage_writes_total{result="failed"}';

/** The server's log lines with `msg`. */
function lines(server: TestServer, msg: string): Record<string, unknown>[] {
  return server.logs.filter((line) => line.msg === msg);
}

/**
 * Sends `count` `GroupChat`s in bursts of 32 (fewer than may wait behind a
 * write); each must be answered, by `Ack` or by `Error` `unavailable` with
 * its `ref`. Returns the acknowledged seqs and how many were refused.
 */
async function sendThrough(
  client: TestClient,
  count: number,
  content: string,
): Promise<{ acked: number[]; refused: number }> {
  const acked: number[] = [];
  let refused = 0;
  for (let start = 0; start < count; start += 32) {
    const ids = range(start, Math.min(start + 32, count) - 1).map((i) =>
      `f${i}`
    );
    for (const id of ids) {
      client.send(
        frame("GroupChat", { sender_username: "alice", room: "r", content }, {
          id,
        }),
      );
    }
    for (const id of ids) {
      for (;;) {
        const next = await client.next();
        const body = next.message_body;
        if (next.message_type === "Error") {
          assert.deepEqual(body, {
            code: "unavailable",
            message:
              "the message was not stored; send it again with the same id",
            ref: id,
          });
          refused++;
          break;
        }
        if (next.message_type === "Ack") {
          assert.equal(body.ref, id);
          acked.push(body.seq);
          break;
        }
        assert.ok(
          ["GroupChat", "Enter", "Leave"].includes(next.message_type),
          JSON.stringify(next),
        );
      }
    }
  }
  return { acked, refused };
}

/** The seqs and `complete` of `r`'s history (`Enter` with `body`), read by a new client. */
async function historyOf(
  server: TestServer,
  body: Record<string, unknown> = { history: 100 },
): Promise<{ seqs: number[]; complete: boolean }> {
  await using reader = await TestClient.connect(server.wsUrl);
  await enterWith(reader, "reader", { room: "r", ...body });
  const history = await reader.expect("History");
  return {
    // deno-lint-ignore no-explicit-any
    seqs: history.messages.map((m: any) => m.seq),
    complete: history.complete,
  };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

Deno.test("a full database (max_page_count) through a running server: unavailable with ref, nothing acknowledged lost, the operator sees it, and it recovers by itself", async () => {
  await using db = await tempDb();
  // 300 failed writes, more than HISTORY_SIZE: they must trim nothing.
  const storage = new SqliteStorage(db.path, 100);
  await using server = await serve(
    { databasePath: db.path, historySize: 100, rateLimitPerSecond: 0 },
    { storage },
  );
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await enterWith(alice, "alice", { room: "r" });
  await enterWith(bob, "bob", { room: "r" });
  await alice.expect("Enter");
  const first = await chatMany(alice, "alice", "r", 50);
  assert.deepEqual(first.map((m) => m.seq), range(1, 50));
  for (let i = 0; i < 50; i++) await bob.expect("GroupChat");
  const before = await storageMetrics(server);
  assert.equal(before[BATCHES_FAILED], 0);
  assert.equal(before["chat_storage_up"], 1);
  assert.deepEqual((await health(server)).body.storage, { status: "ok" });

  storage.maxPageCount(1);
  // More errors in a row than MAX_CONSECUTIVE_ERRORS: the server's fault,
  // so alice stays connected.
  const during = await sendThrough(alice, 300, "x".repeat(3000));
  assert.deepEqual(during, { acked: [], refused: 300 });
  // Live traffic that needs no storage goes on: bob sees carol enter.
  {
    await using carol = await TestClient.connect(server.wsUrl);
    await enterWith(carol, "carol", { room: "r" });
    assert.equal((await bob.expect("Enter")).sender_username, "carol");
  }
  assert.equal((await bob.expect("Leave")).sender_username, "carol");
  assert.ok(!bob.frames.some((f) => f.message_type === "GroupChat"));

  // The operator: one log line with the cause, /healthz degraded (200),
  // failed batches counted apart from committed ones.
  assert.deepEqual(
    lines(server, "storage writes failing").map((line) => line.error),
    ["database or disk is full"],
  );
  assert.equal(lines(server, "storage writes failing")[0]!.level, "error");
  assert.equal(lines(server, "storage writes still failing").length, 0);
  const degraded = await health(server);
  assert.equal(degraded.status, 200);
  assert.equal(degraded.body.status, "degraded");
  assert.match(
    String(degraded.body.reason),
    /^storage writes failing since \S+: database or disk is full$/,
  );
  const fault = degraded.body.storage as Record<string, unknown>;
  assert.equal(fault.status, "failing");
  assert.equal(fault.error, "database or disk is full");
  assert.equal(fault.failed_writes, 300);
  const failing = await storageMetrics(server);
  assert.equal(failing[BATCHES_OK], before[BATCHES_OK]);
  assert.equal(failing[WRITES_OK], before[WRITES_OK]);
  assert.equal(failing[BATCHES_FAILED], fault.failed_batches);
  assert.equal(failing[WRITES_FAILED], 300);
  assert.equal(failing["chat_storage_up"], 0);

  // The fault clears: a probe write finds it out within about a second,
  // with nobody sending; then the next message is stored, with a gap in seq.
  storage.maxPageCount(1_000_000);
  await waitFor(
    () => lines(server, "storage writes work again").length === 1,
    "the recovery is logged",
  );
  assert.deepEqual((await health(server)).body.status, "ok");
  const after = await sendThrough(alice, 1, "back");
  assert.deepEqual(after, { acked: [351], refused: 0 });
  assert.equal((await bob.expect("GroupChat")).seq, 351);
  assert.deepEqual(await historyOf(server), {
    seqs: [...range(1, 50), 351],
    complete: true,
  });
  assert.deepEqual(await historyOf(server, { since: 50 }), {
    seqs: [351],
    complete: true,
  });
  const recovered = lines(server, "storage writes work again");
  assert.equal(recovered.length, 1);
  assert.equal(recovered[0]!.level, "error");
  assert.equal(recovered[0]!.failed_writes, 300);
  assert.equal(recovered[0]!.last_error, "database or disk is full");
  assert.deepEqual((await health(server)).body.status, "ok");
  assert.equal((await storageMetrics(server))["chat_storage_up"], 1);
});

/** Why a tmpfs cannot be mounted here, or `undefined` when it can. */
async function noTmpfs(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "tmpfs needs Linux";
  const dir = await Deno.makeTempDir({ prefix: "tmpfs_probe_" });
  try {
    await mount(dir, "64k");
    await umount(dir);
    return undefined;
  } catch (error) {
    return `mounting a tmpfs is not permitted here (needs root): ${
      (error as Error).message
    }`;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function run(command: string, args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(command, {
    args,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`,
    );
  }
}

function mount(dir: string, size: string): Promise<void> {
  return run("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]);
}

function umount(dir: string): Promise<void> {
  return run("umount", [dir]);
}

const TMPFS_UNAVAILABLE = await noTmpfs().catch((error) =>
  `mounting a tmpfs is not possible here: ${error}`
);
if (TMPFS_UNAVAILABLE) {
  console.warn(`ignoring the full file system test: ${TMPFS_UNAVAILABLE}`);
}

Deno.test({
  name:
    "a full file system (2 MB tmpfs) through a running server: 1,100 refused writes trim no acknowledged message, and it recovers when space is freed",
  ignore: TMPFS_UNAVAILABLE !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tmpfs_full_" });
    await mount(dir, "2m");
    try {
      await using server = await serve({
        databasePath: join(dir, "chat.db"),
        rateLimitPerSecond: 0,
      });
      await using alice = await TestClient.connect(server.wsUrl);
      await enterWith(alice, "alice", { room: "r" });
      await chatMany(alice, "alice", "r", 50);
      // Fill what is left of the file system.
      const filler = join(dir, "filler");
      const file = await Deno.open(filler, { write: true, create: true });
      try {
        for (const size of [65536, 4096, 512, 1]) {
          const chunk = new Uint8Array(size);
          try {
            for (;;) await file.write(chunk);
          } catch {
            // This size no longer fits; try a smaller one.
          }
        }
      } finally {
        file.close();
      }
      const during = await sendThrough(alice, 1100, "y".repeat(200));
      assert.deepEqual(during, { acked: [], refused: 1100 });
      assert.equal((await health(server)).body.status, "degraded");
      assert.deepEqual(
        lines(server, "storage writes failing").map((line) => line.error),
        ["database or disk is full"],
      );
      await Deno.remove(filler);
      const after = await sendThrough(alice, 1, "space again");
      assert.deepEqual(after, { acked: [1151], refused: 0 });
      assert.deepEqual(await historyOf(server), {
        seqs: [...range(1, 50), 1151],
        complete: true,
      });
      assert.equal(lines(server, "storage writes work again").length, 1);
      assert.equal((await health(server)).body.status, "ok");
    } finally {
      await umount(dir).catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("runner: while storage fails, one log line per STORAGE_REPORT_MS with the count since the last, then one when it works again", async () => {
  const settings: ChatSettings = {
    serverName: "test",
    authEnabled: false,
    defaultRoom: "r",
    maxMessageBytes: 65536,
    maxContentChars: 4000,
    maxRoomsPerConnection: 10,
    rateLimitPerSecond: 0,
    rateLimitBurst: 10,
    maxConsecutiveErrors: 10,
  };
  const storage = new SqliteStorage(":memory:", 100);
  let clock = 1_000_000;
  const logs: Record<string, unknown>[] = [];
  const runner = new Runner(createState(settings), {
    storage,
    metrics: new Metrics(),
    log: (level, msg, fields) => {
      if (msg.startsWith("storage")) logs.push({ level, msg, ...fields });
    },
    maxBufferedBytes: 1 << 20,
    now: () => clock,
  });
  const socket = new FakeSocket();
  runner.attach(socket as unknown as WebSocket);
  socket.onopen?.();
  let n = 0;
  const send = async () => {
    socket.onmessage?.({
      data: JSON.stringify(frame("GroupChat", {
        sender_username: "alice",
        content: "z".repeat(3000),
      }, { id: `m${++n}` })),
    });
    await runner.settle();
    return socket.sent.at(-1)!.message_body;
  };
  try {
    socket.onmessage?.({
      data: JSON.stringify(frame("Enter", { sender_username: "alice" })),
    });
    assert.equal((await send()).ref, "m1");
    storage.maxPageCount(1);
    const messages = () => logs.map((line) => line.msg);
    assert.equal((await send()).code, "unavailable");
    assert.deepEqual(messages(), ["storage writes failing"]);
    assert.deepEqual(runner.storageFault, {
      since: clock,
      error: "database or disk is full",
      failedBatches: 1,
      failedWrites: 1,
    });
    // Four more failures within the interval: no line.
    for (let i = 0; i < 4; i++) {
      clock += (STORAGE_REPORT_MS - 1) / 4;
      assert.equal((await send()).code, "unavailable");
    }
    assert.deepEqual(messages(), ["storage writes failing"]);
    clock += 1;
    await send();
    assert.deepEqual(logs.at(-1), {
      level: "error",
      msg: "storage writes still failing",
      error: "database or disk is full",
      failing_ms: STORAGE_REPORT_MS,
      failed_batches: 5,
      failed_writes: 5,
    });
    clock += 1;
    await send();
    assert.equal(logs.length, 2);
    storage.maxPageCount(1_000_000);
    clock += 5;
    assert.equal((await send()).ref, `m${n}`);
    assert.deepEqual(logs.at(-1), {
      level: "error",
      msg: "storage writes work again",
      failing_ms: STORAGE_REPORT_MS + 6,
      failed_batches: 7,
      failed_writes: 7,
      last_error: "database or disk is full",
    });
    assert.equal(runner.storageFault, undefined);
    // Once recovered, a success logs nothing more.
    await send();
    assert.equal(logs.length, 3);
  } finally {
    await runner.shutdown(0);
    await storage.close();
  }
});

Deno.test("a cluster node whose Redis is out of memory: unavailable with ref, degraded with the cause, nothing lost, and it recovers by itself", async () => {
  await using cluster = await startCluster(1, { rateLimitPerSecond: 0 });
  const node = cluster.nodes[0]!;
  const port = Number(new URL(cluster.redis.url).port);
  await using alice = await TestClient.connect(node.wsUrl);
  await enterWith(alice, "alice", { room: "r" });
  assert.deepEqual(
    (await chatMany(alice, "alice", "r", 5)).map((m) => m.seq),
    range(1, 5),
  );
  assert.equal(
    await redisCommand(port, "CONFIG", "SET", "maxmemory-policy", "noeviction"),
    "+OK",
  );
  assert.equal(
    await redisCommand(port, "CONFIG", "SET", "maxmemory", "1"),
    "+OK",
  );
  try {
    assert.deepEqual(await sendThrough(alice, 40, "oom"), {
      acked: [],
      refused: 40,
    });
    const degraded = await health(node);
    assert.equal(degraded.status, 200);
    assert.equal(degraded.body.status, "degraded");
    assert.match(String(degraded.body.reason), /storage writes failing .*OOM/);
    assert.match(
      String(lines(node, "storage writes failing")[0]?.error),
      /^OOM /,
    );
  } finally {
    await redisCommand(port, "CONFIG", "SET", "maxmemory", "0");
  }
  await waitFor(
    () => lines(node, "storage writes work again").length === 1,
    "the recovery is logged",
  );
  assert.equal((await health(node)).body.status, "ok");
  // Redis took no seq for the refused messages: no gap here.
  assert.deepEqual(await sendThrough(alice, 1, "back"), {
    acked: [6],
    refused: 0,
  });
  assert.deepEqual(await historyOf(node), {
    seqs: range(1, 6),
    complete: true,
  });
});
