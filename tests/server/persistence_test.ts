/**
 * What survives a restart on the same database file: history, message ids
 * and `seq`, tokens and pending offline messages; and that every
 * acknowledged message survives `kill -9`.
 */
import assert from "node:assert/strict";
import { FakeSocket } from "../support/fake_socket.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Metrics } from "../../src/runtime/metrics.ts";
import { type ChatSettings, createState } from "../../src/chat/reducer.ts";
import { Runner } from "../../src/runtime/runner.ts";
import type { Storage, WriteOp, WriteResult } from "../../src/chat/storage.ts";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";
import { childEnv, RawPeer, serve, TestClient } from "../support/helpers.ts";
import {
  ADMIN,
  chatMany,
  connectWithToken,
  enterWith,
  frame,
  issueToken,
  revokeToken,
  take,
  tempDb,
} from "../support/db_helpers.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../../deno.json", import.meta.url));

/** A `GroupChat` body as kept in history. */
interface Kept {
  id: string;
  seq: number;
  room: string;
  sender_username: string;
  content: string;
  timestamp: number;
}

/** Replays a room from the start: its `History` messages. */
async function replay(wsUrl: string, room: string): Promise<Kept[]> {
  await using reader = await TestClient.connect(wsUrl);
  reader.send(frame("Enter", {
    sender_username: "reader",
    room,
    since: 0,
  }));
  await reader.expect("Presence");
  const page = await reader.expect("History");
  assert.equal(page.complete, true);
  return page.messages;
}

Deno.test("restart on the same file: history, ids and seq continue", async () => {
  await using db = await tempDb();
  let before: Kept[];
  {
    await using server = await serve({ databasePath: db.path });
    await using alice = await TestClient.connect(server.wsUrl);
    await enterWith(alice, "alice", { room: "lobby" });
    await chatMany(alice, "alice", "lobby", 3);
    await enterWith(alice, "alice", { room: "side" });
    await chatMany(alice, "alice", "side", 2);
    before = await replay(server.wsUrl, "lobby");
    assert.deepEqual(before.map((m) => m.seq), [1, 2, 3]);
  }
  await using server = await serve({ databasePath: db.path });
  // The same messages, ids, seqs and timestamps.
  assert.deepEqual(await replay(server.wsUrl, "lobby"), before);
  assert.equal((await replay(server.wsUrl, "side")).length, 2);
  // And seq goes on from where it was, per room.
  await using bob = await TestClient.connect(server.wsUrl);
  await enterWith(bob, "bob", { room: "lobby" });
  const [next] = await chatMany(bob, "bob", "lobby", 1);
  assert.equal(next!.seq, 4);
  await enterWith(bob, "bob", { room: "side" });
  const [side] = await chatMany(bob, "bob", "side", 1);
  assert.equal(side!.seq, 3);
  // History paging sees old and new messages alike.
  bob.send(frame("History", { room: "lobby", before: 4, limit: 2 }));
  const page = await bob.expect("History");
  assert.deepEqual(page.messages, before.slice(1, 3));
});

Deno.test("restart on the same file: tokens and offline messages are kept", async () => {
  await using db = await tempDb();
  const settings = {
    databasePath: db.path,
    adminToken: ADMIN,
    authEnabled: true,
  };
  let alice, bob, revoked, pending;
  {
    await using server = await serve(settings);
    alice = await issueToken(server.httpUrl, "alice");
    bob = await issueToken(server.httpUrl, "bob");
    revoked = await issueToken(server.httpUrl, "carol");
    assert.equal(await revokeToken(server.httpUrl, revoked.token), 204);
    await using sender = await connectWithToken(server.wsUrl, alice.token);
    pending = [];
    for (let i = 1; i <= 2; i++) {
      sender.send(frame("PrivateChat", {
        sender_username: "alice",
        target_username: "bob",
        content: `while you were away ${i}`,
      }, { id: `p${i}` }));
      pending.push(await sender.expect("PrivateChat"));
      await sender.expect("Ack");
    }
  }
  {
    await using server = await serve(settings);
    await using sender = await connectWithToken(server.wsUrl, alice.token);
    assert.equal(sender.welcome.username, "alice");
    {
      await using peer = await RawPeer.upgrade(
        server.server.port,
        {},
        `/ws?token=${revoked.token}`,
      );
      assert.equal(peer.status, 401);
    }
    await using receiver = await connectWithToken(server.wsUrl, bob.token);
    assert.deepEqual(await take(receiver, "PrivateChat", 2), pending);
    await receiver.silent();
  }
  // Delivered is kept too: not again after another restart.
  await using server = await serve(settings);
  await using again = await connectWithToken(server.wsUrl, bob.token);
  assert.equal(again.welcome.username, "bob");
  await again.silent();
});

/** A server in its own process, as `deno task start` runs it. */
interface Child extends AsyncDisposable {
  port: number;
  process: Deno.ChildProcess;
}

/**
 * Starts `main.ts` in `cwd` with PORT=0 and every other setting at its
 * default (so the database is `cwd/data/chat.db`); reads the port from its
 * log.
 */
async function spawnServer(cwd: string): Promise<Child> {
  const env = childEnv();
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, MAIN],
    cwd,
    clearEnv: true,
    env: {
      ...env,
      PORT: "0",
      RATE_LIMIT_PER_SECOND: "0",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = process.stderr
    .pipeThrough(new TextDecoderStream())
    .getReader();
  let buffered = "";
  let port: number | undefined;
  const seen: string[] = [];
  while (port === undefined) {
    const { value, done } = await lines.read();
    if (done) {
      await process.status;
      throw new Error(`server exited before listening:\n${seen.join("\n")}`);
    }
    buffered += value;
    let newline;
    while ((newline = buffered.indexOf("\n")) !== -1) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      seen.push(line);
      try {
        const entry = JSON.parse(line);
        if (entry.msg === "listening") port = Number(new URL(entry.url).port);
      } catch {
        // not a log line
      }
    }
  }
  // Keep reading, so that the pipe never fills, until the process ends.
  const drained = (async () => {
    while (!(await lines.read()).done) { /* discard */ }
  })();
  return {
    port,
    process,
    [Symbol.asyncDispose]: async () => {
      try {
        process.kill("SIGKILL");
      } catch {
        // already gone
      }
      await process.status;
      await drained;
    },
  };
}

Deno.test("kill -9: every acknowledged GroupChat is in history after a restart", async () => {
  await using db = await tempDb();
  const total = 60;
  const killAfter = 50;
  const acked = new Map<string, number>();
  const echoed = new Map<string, number>();
  {
    await using child = await spawnServer(db.dir);
    const socket = new WebSocket(`ws://127.0.0.1:${child.port}/ws`);
    const done = Promise.withResolvers<void>();
    const closed = new Promise<CloseEvent>((resolve) => {
      socket.onclose = (event) => {
        resolve(event);
        done.reject(new Error(`closed before ${killAfter} Acks`));
      };
    });
    socket.onmessage = (event) => {
      const { message_type: type, message_body: body } = JSON.parse(
        event.data as string,
      );
      if (type === "Presence") {
        for (let i = 1; i <= total; i++) {
          socket.send(JSON.stringify(frame("GroupChat", {
            sender_username: "alice",
            room: "lobby",
            content: `durable ${i}`,
          }, { id: `d${i}` })));
        }
      } else if (type === "GroupChat") {
        echoed.set(body.id, body.seq);
      } else if (type === "Ack") {
        assert.equal(echoed.get(body.id), body.seq);
        acked.set(body.id, body.seq);
        if (acked.size === killAfter) {
          // At once, with more messages in flight behind this one.
          child.process.kill("SIGKILL");
          done.resolve();
        }
      } else if (type === "Error") {
        done.reject(new Error(JSON.stringify(body)));
      }
    };
    socket.onopen = () =>
      socket.send(JSON.stringify(frame("Enter", {
        sender_username: "alice",
        room: "lobby",
      })));
    await done.promise;
    const status = await child.process.status;
    assert.equal(status.signal, "SIGKILL");
    await closed;
  }
  assert.ok(acked.size >= killAfter);
  // The default DATABASE_PATH, relative to the working directory.
  const path = join(db.dir, "data", "chat.db");
  assert.ok(Deno.statSync(path).isFile);
  await using server = await serve({ databasePath: path });
  const kept = await replay(server.wsUrl, "lobby");
  const byId = new Map(kept.map((m) => [m.id, m]));
  for (const [id, seq] of acked) {
    const message = byId.get(id);
    assert.ok(message, `acknowledged message ${id} was lost`);
    assert.equal(message.seq, seq);
  }
  // The kept seqs have no holes, and seq goes on after the last one.
  const seqs = kept.map((m) => m.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
  assert.ok(seqs.length >= killAfter);
  await using alice = await TestClient.connect(server.wsUrl);
  await enterWith(alice, "alice", { room: "lobby" });
  const [next] = await chatMany(alice, "alice", "lobby", 1);
  assert.equal(next!.seq, seqs.length + 1);
});

/**
 * A storage whose writes wait until the test releases them: a memory
 * storage behind a gate, without `writeNow`, so the runner batches.
 */
class GatedStorage implements Storage {
  batches: WriteOp[][] = [];
  #gate = Promise.withResolvers<void>();
  #inner: MemoryStorage;
  fail = false;

  constructor(historySize: number) {
    this.#inner = new MemoryStorage(historySize);
  }

  release(): void {
    this.#gate.resolve();
  }

  async write(ops: readonly WriteOp[]): Promise<WriteResult[]> {
    this.batches.push([...ops]);
    await this.#gate.promise;
    if (this.fail) throw new Error("disk full");
    return await this.#inner.write(ops);
  }

  roomSeqs: Storage["roomSeqs"] = () => this.#inner.roomSeqs();
  roomSeq: Storage["roomSeq"] = (room) => this.#inner.roomSeq(room);
  history: Storage["history"] = (room, query) =>
    this.#inner.history(room, query);
  offline: Storage["offline"] = (username) => this.#inner.offline(username);
  createToken: Storage["createToken"] = (token, grant, now) =>
    this.#inner.createToken(token, grant, now);
  checkToken: Storage["checkToken"] = (token, now) =>
    this.#inner.checkToken(token, now);
  revokeToken: Storage["revokeToken"] = (token) =>
    this.#inner.revokeToken(token);
  listTokens: Storage["listTokens"] = () => this.#inner.listTokens();
  ban: Storage["ban"] = (...args) => this.#inner.ban(...args);
  unban: Storage["unban"] = (username) => this.#inner.unban(username);
  bannedUntil: Storage["bannedUntil"] = (...args) =>
    this.#inner.bannedUntil(...args);
  bans: Storage["bans"] = (now) => this.#inner.bans(now);
  deleteMessage: Storage["deleteMessage"] = (...args) =>
    this.#inner.deleteMessage(...args);
  close: Storage["close"] = () => this.#inner.close();
}

/** A runner on `storage` with `count` open fake connections in `lobby`. */
function fakeRunner(storage: GatedStorage, count: number) {
  const settings: ChatSettings = {
    serverName: "test",
    authEnabled: false,
    defaultRoom: "lobby",
    maxMessageBytes: 65536,
    maxContentChars: 4000,
    maxRoomsPerConnection: 10,
    rateLimitPerSecond: 0,
    rateLimitBurst: 10,
    maxConsecutiveErrors: 10,
  };
  const runner = new Runner(createState(settings), {
    storage,
    metrics: new Metrics(),
    log: () => {},
    maxBufferedBytes: 1 << 20,
  });
  const sockets = Array.from({ length: count }, (_, i) => {
    const socket = new FakeSocket();
    runner.attach(socket as unknown as WebSocket);
    socket.onopen?.();
    socket.onmessage?.({
      data: JSON.stringify(frame("Enter", { sender_username: `u${i}` })),
    });
    return socket;
  });
  return { runner, sockets };
}

Deno.test("runner: the writes of one turn commit in one batch, Acks only after it", async () => {
  const storage = new GatedStorage(100);
  const { runner, sockets } = fakeRunner(storage, 3);
  try {
    // Three GroupChats from three connections in one turn of the event loop.
    sockets.forEach((socket, i) =>
      socket.onmessage?.({
        data: JSON.stringify(frame("GroupChat", {
          sender_username: `u${i}`,
          content: `hello ${i}`,
        }, { id: `g${i}` })),
      })
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(storage.batches.length, 1);
    assert.deepEqual(storage.batches[0]!.map((op) => op.kind), [
      "group",
      "group",
      "group",
    ]);
    // Not committed yet: nobody has the message, nobody has an Ack.
    for (const socket of sockets) {
      assert.ok(!socket.types().includes("GroupChat"));
      assert.ok(!socket.types().includes("Ack"));
    }
    storage.release();
    await runner.settle();
    for (const [i, socket] of sockets.entries()) {
      const acks = socket.sent.filter((sent) => sent.message_type === "Ack");
      assert.equal(acks.length, 1);
      assert.equal(acks[0]!.message_body.ref, `g${i}`);
      assert.equal(acks[0]!.message_body.seq, i + 1);
      // Every member got every GroupChat, in seq order, before its Ack.
      const seqs = socket.sent
        .filter((sent) => sent.message_type === "GroupChat")
        .map((sent) => sent.message_body.seq);
      assert.deepEqual(seqs, [1, 2, 3]);
      // Its own GroupChat comes before its Ack.
      const own = socket.sent.findIndex((sent) =>
        sent.message_type === "GroupChat" && sent.message_body.seq === i + 1
      );
      assert.ok(own < socket.types().indexOf("Ack"));
    }
    assert.equal(
      (await storage.history("lobby", { kind: "since", since: 0, upTo: 99 }))
        .messages.length,
      3,
    );
  } finally {
    storage.release();
    await runner.shutdown(0);
  }
});

Deno.test("runner: a failed write answers unavailable, never an Ack", async () => {
  const storage = new GatedStorage(100);
  storage.fail = true;
  const { runner, sockets } = fakeRunner(storage, 2);
  try {
    const [alice, bob] = sockets as [FakeSocket, FakeSocket];
    alice.onmessage?.({
      data: JSON.stringify(frame("GroupChat", {
        sender_username: "u0",
        content: "lost",
      }, { id: "g" })),
    });
    alice.onmessage?.({
      data: JSON.stringify(frame("PrivateChat", {
        sender_username: "u0",
        target_username: "u1",
        content: "lost too",
      }, { id: "p" })),
    });
    storage.release();
    // The PrivateChat waits behind the GroupChat, then has its own batch.
    const errors = () =>
      alice.sent.filter((sent) => sent.message_type === "Error");
    for (let waited = 0; errors().length < 2 && waited < 2000; waited += 10) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await runner.settle();
    assert.equal(storage.batches.length, 2);
    assert.deepEqual(
      errors().map((error) => [
        error.message_body.code,
        error.message_body.ref,
      ]),
      [["unavailable", "g"], ["unavailable", "p"]],
    );
    assert.ok(!alice.types().includes("Ack"));
    assert.ok(!bob.types().includes("GroupChat"));
    assert.ok(!bob.types().includes("PrivateChat"));
  } finally {
    await runner.shutdown(0);
  }
});
