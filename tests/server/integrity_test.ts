/**
 * Issue 12, each defect on real servers: a node whose pub/sub feed runs
 * behind (held up by a {@linkcode FaultProxy} between it and Redis) skips
 * no `seq` that history holds; `Enter` with `since` on such a node replays
 * no duplicate; and a message whose outcome was unknown (Redis paused past
 * the node's reply timeout) is resent with the same `id` and gets the first
 * one's `Ack`, stored once; the same on SQLite across a restart.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { ChatClient } from "../../src/client/chat_client.ts";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import { REPLY_TIMEOUT_MS } from "../../src/redis/connection.ts";
import { KEYS } from "../../src/redis/keys.ts";
import {
  answerTo,
  bodiesOf,
  collect,
  redisCommand,
  waitForHealth,
} from "../support/cluster_helpers.ts";
import { FaultProxy } from "../support/fault_proxy.ts";
import {
  type Frame,
  serve,
  TestClient,
  type TestServer,
  waitFor,
} from "../support/helpers.ts";

const CHROMIUM = "/usr/bin/chromium";

/** Enters `room` as `name` once the cluster has let the name go (its last connection closed). */
async function enterWhenFree(
  client: TestClient,
  name: string,
  room: string,
): Promise<void> {
  await waitFor(async () => {
    const { answer } = await answerTo(
      client,
      "Enter",
      { sender_username: name, room },
      "e",
      5000,
    );
    return answer.message_type === "Ack";
  }, `${name}'s name free again`);
}

/** Node 0 on Redis directly, node 1 through a proxy that can hold its feed. */
async function twoNodes(): Promise<
  AsyncDisposable & {
    nodes: [TestServer, TestServer];
    proxy: FaultProxy;
    redis: LocalRedis;
    redisPort: number;
  }
> {
  const redis = await startLocalRedis();
  const proxy = FaultProxy.start(redis.port);
  const started: TestServer[] = [];
  const dispose = async () => {
    for (const node of started.toReversed()) await node[Symbol.asyncDispose]();
    await proxy.close();
    await redis.stop();
  };
  try {
    started.push(await serve({ redisUrl: redis.url }));
    started.push(await serve({ redisUrl: proxy.url }));
    for (const node of started) {
      await waitFor(() => node.server.bus?.up === true, "bus in sync", 10_000);
    }
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    nodes: started as [TestServer, TestServer],
    proxy,
    redis,
    redisPort: redis.port,
    [Symbol.asyncDispose]: dispose,
  };
}

function chatFrame(user: string, content: string, id: string) {
  return {
    message_type: "GroupChat",
    message_body: { sender_username: user, room: "r", content },
    id,
  };
}

/** Waits until room `r` holds `count` messages, so that stores go in order. */
async function seqIs(port: number, count: number): Promise<void> {
  await waitFor(
    async () =>
      (await redisCommand(port, "ZCARD", KEYS.hist("r"))) === `:${count}`,
    `room r holds ${count} messages`,
  );
}

function seqs(frames: readonly Frame[]): number[] {
  return bodiesOf(frames, "GroupChat").map((m) => m.seq);
}

Deno.test("integrity: a node whose feed runs behind delivers every seq history holds", async () => {
  await using cluster = await twoNodes();
  const { nodes: [a, b], proxy, redisPort } = cluster;
  await using alice = await TestClient.connect(a.wsUrl);
  await using bob = await TestClient.connect(b.wsUrl);
  await using carol = await TestClient.connect(b.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await carol.enter("carol", "r");
  await collect(alice, { Enter: 2 });
  await collect(bob, { Enter: 1 });
  proxy.hold({ name: "subscriber", direction: "toClient" });
  // 2 to 4 are stored within GAP_WAIT_MS: node 1 waits for 1 and 3 with
  // 2 and 4 pending when it reads the gap back.
  try {
    alice.send(chatFrame("alice", "one", "a1"));
    await seqIs(redisPort, 1);
    bob.send(chatFrame("bob", "two", "b2"));
    await seqIs(redisPort, 2);
    alice.send(chatFrame("alice", "three", "a3"));
    await seqIs(redisPort, 3);
    carol.send(chatFrame("carol", "four", "c4"));
    await seqIs(redisPort, 4);
    // Node 1 hears none of 1 and 3 but stores 2 and 4: a gap it reads back.
    const toBob = await collect(bob, { GroupChat: 4 }, 10_000);
    const toCarol = await collect(carol, { GroupChat: 4 }, 10_000);
    assert.deepEqual(seqs(toBob), [1, 2, 3, 4]);
    assert.deepEqual(seqs(toCarol), [1, 2, 3, 4]);
  } finally {
    proxy.release();
  }
  // The feed's late copies are not delivered again.
  carol.send(chatFrame("carol", "five", "c5"));
  const later = await collect(bob, { GroupChat: 1 }, 5000);
  assert.deepEqual(seqs(later), [5]);
});

Deno.test("integrity: Enter since on a node that is behind replays nothing twice", async () => {
  await using cluster = await twoNodes();
  const { nodes: [a, b], proxy, redisPort } = cluster;
  await using bob = await TestClient.connect(b.wsUrl);
  await bob.enter("bob", "r");
  proxy.hold({ name: "subscriber", direction: "toClient" });
  let released = false;
  try {
    {
      await using alice = await TestClient.connect(a.wsUrl);
      await alice.enter("alice", "r");
      for (const n of [1, 2, 3]) {
        const { answer } = await answerTo(
          alice,
          "GroupChat",
          { sender_username: "alice", room: "r", content: `m${n}` },
          `a${n}`,
          5000,
        );
        assert.equal(answer.message_body.seq, n);
      }
    }
    await seqIs(redisPort, 3);
    // Alice saw 1-3 on node 0; node 1 has delivered none of them.
    await using again = await TestClient.connect(b.wsUrl);
    again.send({
      message_type: "Enter",
      message_body: { sender_username: "alice", room: "r", since: 3 },
      id: "e",
    });
    const entered = await collect(again, { History: 1, Ack: 1 }, 5000);
    assert.deepEqual(bodiesOf(entered, "History")[0]?.messages, []);
    proxy.release();
    released = true;
    // Bob gets 1-3 now (the feed, or a gap read); alice must not.
    assert.deepEqual(seqs(await collect(bob, { GroupChat: 3 }, 10_000)), [
      1,
      2,
      3,
    ]);
    again.send(chatFrame("alice", "four", "a4"));
    const after = await collect(again, { Ack: 1 }, 5000);
    assert.deepEqual(seqs(after), [4], JSON.stringify(after));
  } finally {
    if (!released) proxy.release();
  }
});

Deno.test("integrity: a write whose reply is lost past the timeout; the resend with the same id gets the first Ack, stored once", async () => {
  await using cluster = await twoNodes();
  const { nodes: [a, b], proxy, redisPort } = cluster;
  await using alice = await TestClient.connect(b.wsUrl);
  await using bob = await TestClient.connect(a.wsUrl);
  await alice.enter("alice", "r");
  await bob.enter("bob", "r");
  await collect(alice, { Enter: 1 });
  // Redis then knows the script (a first EVALSHA would fail, not store).
  const warm = await answerTo(
    alice,
    "GroupChat",
    { sender_username: "alice", room: "r", content: "warm" },
    "warm",
    5000,
  );
  assert.equal(warm.answer.message_type, "Ack");
  await collect(bob, { GroupChat: 1 }, 5000);
  // Redis stores the message; its reply to node 1 is held past the timeout.
  proxy.hold({ name: "commands", direction: "toClient" });
  let released = false;
  try {
    const first = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: "r", content: "maybe" },
      "once",
      REPLY_TIMEOUT_MS + 5000,
    );
    assert.equal(first.answer.message_type, "Error");
    assert.equal(first.answer.message_body.code, "unavailable");
    assert.match(first.answer.message_body.message, /may have been stored/);
    assert.match(first.answer.message_body.message, /same id/);
    await seqIs(redisPort, 2);
    proxy.release();
    released = true;
    await waitForHealth(b.httpUrl, "ok", 10_000);
    const resend = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: "r", content: "maybe" },
      "once",
      5000,
    );
    assert.equal(resend.answer.message_type, "Ack", JSON.stringify(resend));
    assert.equal(resend.answer.message_body.seq, 2);
    const seen = await collect(bob, { GroupChat: 1 }, 5000);
    assert.deepEqual(bodiesOf(seen, "GroupChat").map((m) => m.content), [
      "maybe",
    ]);
    assert.equal(
      resend.answer.message_body.id,
      bodiesOf(seen, "GroupChat")[0]?.id,
    );
    // From the other node, on a new connection: the same Ack again.
    await alice.close();
    await using later = await TestClient.connect(a.wsUrl);
    await enterWhenFree(later, "alice", "r");
    const third = await answerTo(
      later,
      "GroupChat",
      { sender_username: "alice", room: "r", content: "maybe" },
      "once",
      5000,
    );
    assert.deepEqual(third.answer.message_body, resend.answer.message_body);
    assert.equal(
      await redisCommand(redisPort, "ZCARD", KEYS.hist("r")),
      ":2",
      "stored once",
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(seqs(bob.frames), [], "bob saw it once");
  } finally {
    if (!released) proxy.release();
  }
});

Deno.test("integrity: on SQLite a resend with the same id after a restart gets the first Ack, stored once", async () => {
  const dir = await Deno.makeTempDir();
  const databasePath = join(dir, "chat.db");
  try {
    let firstAck: Record<string, unknown>;
    {
      await using server = await serve({ databasePath });
      await using alice = await TestClient.connect(server.wsUrl);
      await alice.enter("alice", "r");
      const { answer } = await answerTo(
        alice,
        "GroupChat",
        { sender_username: "alice", room: "r", content: "hi" },
        "k1",
        5000,
      );
      assert.equal(answer.message_type, "Ack");
      firstAck = answer.message_body;
    }
    await using server = await serve({ databasePath });
    await using alice = await TestClient.connect(server.wsUrl);
    await alice.enter("alice", "r");
    const resend = await answerTo(
      alice,
      "GroupChat",
      { sender_username: "alice", room: "r", content: "hi" },
      "k1",
      5000,
    );
    assert.deepEqual(resend.answer.message_body, firstAck);
    assert.deepEqual(seqs(resend.before), [], "not delivered again");
    const other = await answerTo(
      alice,
      "History",
      { room: "r" },
      "h",
      5000,
    );
    assert.deepEqual(
      bodiesOf(other.before, "History")[0]?.messages.map((
        m: { content: string },
      ) => m.content),
      ["hi"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("integrity: on Redis a resend with the same id after redis-server is killed -9 and restarted gets the first Ack, stored once, on either node", async () => {
  await using cluster = await twoNodes();
  const { nodes: [a, b], redis, redisPort } = cluster;
  await using bob = await TestClient.connect(b.wsUrl);
  await bob.enter("bob", "r");
  const alice = await TestClient.connect(a.wsUrl);
  try {
    await alice.enter("alice", "r");
    const send = (client: TestClient) =>
      answerTo(
        client,
        "GroupChat",
        { sender_username: "alice", room: "r", content: "kept" },
        "k1",
        5000,
      );
    const first = await send(alice);
    assert.equal(first.answer.message_type, "Ack", JSON.stringify(first));
    await collect(bob, { GroupChat: 1 }, 5000);
    // The append-only file (appendfsync always) brings the key back.
    await redis.kill();
    await redis.start();
    for (const node of [a, b]) await waitForHealth(node.httpUrl, "ok", 10_000);
    const again = await send(alice);
    assert.deepEqual(again.answer.message_body, first.answer.message_body);
    await alice.close();
    await using later = await TestClient.connect(b.wsUrl);
    await enterWhenFree(later, "alice", "r");
    const third = await send(later);
    assert.deepEqual(third.answer.message_body, first.answer.message_body);
    assert.equal(
      await redisCommand(redisPort, "ZCARD", KEYS.hist("r")),
      ":1",
      "stored once",
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(seqs(bob.frames), [], "bob saw it once");
  } finally {
    await alice.close();
  }
});

Deno.test("integrity: the typed client resends a message whose outcome is unknown with the same id; one stored, the first Ack", async () => {
  await using cluster = await twoNodes();
  const { nodes: [a, b], proxy, redisPort } = cluster;
  await using bob = await TestClient.connect(a.wsUrl);
  await bob.enter("bob", "r");
  await using alice = new ChatClient({ url: b.wsUrl, username: "alice" });
  const states: string[] = [];
  alice.on("send_state", (event) => states.push(event.state));
  await alice.connect();
  await alice.enter("r");
  await alice.groupChat("r", "warm");
  await collect(bob, { GroupChat: 1 }, 5000);
  states.length = 0;
  // The write runs; its reply is held past the node's timeout.
  proxy.hold({ name: "commands", direction: "toClient" });
  const sending = alice.groupChat("r", "exactly once");
  try {
    await waitFor(() => states.includes("unknown"), "outcome unknown", 15_000);
    assert.deepEqual(alice.unsettled.length, 1);
    await seqIs(redisPort, 2);
  } finally {
    proxy.release();
  }
  const acked = await sending;
  assert.equal(acked.seq, 2);
  assert.deepEqual(states, ["unknown", "acked"]);
  assert.deepEqual(alice.unsettled, []);
  const seen = await collect(bob, { GroupChat: 1 }, 5000);
  assert.deepEqual(bodiesOf(seen, "GroupChat").map((m) => m.id), [acked.id]);
  assert.equal(
    await redisCommand(redisPort, "ZCARD", KEYS.hist("r")),
    ":2",
    "stored once",
  );
});

Deno.test("integrity: the web page shows a message whose outcome is unknown as such until the resend is answered", async () => {
  await using cluster = await twoNodes();
  const { nodes: [, b], proxy, redisPort } = cluster;
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(`Chromium is missing at ${CHROMIUM}: this test needs it`);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(b.httpUrl);
    await page.fill("#signin-name", "alice");
    await page.fill("#signin-room", "r");
    await page.click("#signin-submit");
    await page.waitForSelector(`#conv-title:has-text("# r")`);
    const composer = "#composer-input";
    await page.fill(composer, "warm");
    await page.press(composer, "Enter");
    await page.waitForSelector(
      `#message-list .message:not(.pending) .content:has-text("warm")`,
    );
    proxy.hold({ name: "commands", direction: "toClient" });
    let released = false;
    try {
      await page.fill(composer, "exactly once");
      await page.press(composer, "Enter");
      await page.waitForSelector(
        `#message-list .message.pending.unknown .outcome`,
      );
      await seqIs(redisPort, 2);
      proxy.release();
      released = true;
    } finally {
      if (!released) proxy.release();
    }
    await page.waitForSelector(
      `#message-list .message:not(.pending) .content:has-text("exactly once")`,
    );
    await page.waitForSelector(`#message-list .message.unknown`, {
      state: "detached",
    });
    const shown = await page.locator("#message-list .message .content")
      .allTextContents();
    assert.deepEqual(shown.filter((text) => text === "exactly once").length, 1);
    assert.equal(
      await redisCommand(redisPort, "ZCARD", KEYS.hist("r")),
      ":2",
      "stored once",
    );
  } finally {
    await browser.close();
  }
});
