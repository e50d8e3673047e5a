import assert from "node:assert/strict";
import type { Logger } from "../../src/runtime/log.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { connectRedis, reconnectDelay } from "../../src/redis/connection.ts";

/** Resolves once `done()` holds; fails after `ms`. */
async function until(done: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function recorder() {
  const lines: { level: string; msg: string }[] = [];
  const log: Logger = (level, msg) => lines.push({ level, msg });
  const count = (msg: string) =>
    lines.filter((line) => line.msg === msg).length;
  return { lines, log, count };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("redis connection: backoff doubles from 50 ms to 2 s, ±20%", () => {
  assert.equal(reconnectDelay(0, () => 0.5), 50);
  assert.equal(reconnectDelay(0, () => 0), 40);
  assert.equal(reconnectDelay(0, () => 1), 60);
  assert.equal(reconnectDelay(1, () => 0.5), 100);
  assert.equal(reconnectDelay(5, () => 0.5), 1600);
  assert.equal(reconnectDelay(6, () => 0.5), 2000);
  assert.equal(reconnectDelay(1000, () => 1), 2400);
  assert.equal(reconnectDelay(1000, () => 0), 1600);
});

Deno.test("redis connection: starts while Redis is down, then follows it up and down", async () => {
  const port = freePort();
  const { log, count } = recorder();
  let ready = 0;
  let down = 0;
  const connection = connectRedis(`redis://127.0.0.1:${port}`, {
    name: "commands",
    log,
    onReady: () => ready++,
    onDown: () => down++,
  });
  try {
    assert.equal(connection.up, false);
    await assert.rejects(
      connection.client.sendCommand(["PING"]),
      /offline/,
    );
    // Several attempts fail; the outage is logged once.
    await sleep(400);
    assert.equal(count("redis down"), 1);
    assert.equal(ready, 0);
    assert.equal(down, 0);

    await using redis = await startLocalRedis({ port });
    await until(() => connection.up);
    assert.equal(ready, 1);
    assert.equal(count("redis up"), 1);
    assert.equal(await connection.client.sendCommand(["PING"]), "PONG");
    assert.equal(
      await connection.client.sendCommand(["CLIENT", "GETNAME"]),
      "commands",
    );

    await redis.kill();
    await until(() => !connection.up);
    assert.equal(down, 1);
    const started = performance.now();
    await assert.rejects(connection.client.sendCommand(["PING"]));
    assert.ok(performance.now() - started < 100, "fails at once");
    await sleep(300);
    assert.equal(count("redis down"), 2);

    await redis.restart();
    await until(() => connection.up);
    assert.equal(ready, 2);
    assert.equal(count("redis up"), 2);
    assert.equal(await connection.client.sendCommand(["PING"]), "PONG");
  } finally {
    await connection.close();
  }
  assert.equal(connection.up, false);
  await connection.close();
});

Deno.test("redis connection: close does not hang while Redis is down", async () => {
  const port = freePort();
  // At once, while the first attempt runs.
  const early = connectRedis(`redis://127.0.0.1:${port}`, {
    name: "early",
    log: () => {},
  });
  let started = performance.now();
  await early.close();
  assert.ok(performance.now() - started < 1000);
  // Later, while it waits between attempts.
  const late = connectRedis(`redis://127.0.0.1:${port}`, {
    name: "late",
    log: () => {},
  });
  await sleep(300);
  started = performance.now();
  await late.close();
  assert.ok(performance.now() - started < 3000);
});

Deno.test("redis connection: a sharded subscription is made again by node-redis after a restart (ShardedSubscriber relies on it)", async () => {
  await using redis = await startLocalRedis();
  const { log } = recorder();
  const commands = connectRedis(redis.url, { name: "commands", log });
  let subscriberReady = 0;
  const subscriber = connectRedis(redis.url, {
    name: "subscriber",
    log,
    onReady: () => subscriberReady++,
  });
  try {
    await until(() => commands.up && subscriber.up);
    assert.equal(subscriberReady, 1);
    assert.equal(
      await subscriber.client.sendCommand(["CLIENT", "GETNAME"]),
      "subscriber",
    );
    const received: string[] = [];
    await subscriber.client.sSubscribe("channel", (message) => {
      received.push(message);
    });
    await commands.command(["SPUBLISH", "channel", "one"]);
    await until(() => received.length === 1);

    await redis.kill();
    await until(() => !commands.up && !subscriber.up);
    await redis.restart();
    await until(() => commands.up && subscriber.up);
    assert.equal(subscriberReady, 2);
    // 'ready' comes after node-redis subscribed again.
    await commands.command(["SPUBLISH", "channel", "two"]);
    await until(() => received.length === 2);
    assert.deepEqual(received, ["one", "two"]);
  } finally {
    await subscriber.close();
    await commands.close();
  }
});

Deno.test("redis connection: close gives up on a Redis that stopped answering", async () => {
  await using redis = await startLocalRedis();
  const connection = connectRedis(redis.url, { name: "c", log: () => {} });
  await until(() => connection.up);
  const pid = redis.pid!;
  Deno.kill(pid, "SIGSTOP");
  try {
    const pending = connection.client.sendCommand(["PING"]);
    const started = performance.now();
    await connection.close();
    const ms = performance.now() - started;
    assert.ok(ms >= 900 && ms < 2000, `closed in ${ms} ms`);
    await assert.rejects(pending);
  } finally {
    Deno.kill(pid, "SIGCONT");
  }
});
