import assert from "node:assert/strict";
import { freePort, startLocalRedis } from "../../tools/local_redis.ts";

/** Sends one command in RESP and returns the raw reply (small replies). */
async function command(port: number, ...args: string[]): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const encoder = new TextEncoder();
    await conn.write(encoder.encode(
      `*${args.length}\r\n` +
        args.map((arg) => `$${encoder.encode(arg).length}\r\n${arg}\r\n`)
          .join(""),
    ));
    const buffer = new Uint8Array(4096);
    let reply = "";
    // A bulk string is a header line and a data line; others one line.
    while (
      !(reply.startsWith("$") && !reply.startsWith("$-1")
        ? reply.split("\r\n").length > 2
        : reply.includes("\r\n"))
    ) {
      const n = await conn.read(buffer);
      if (n === null) break;
      reply += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return reply;
  } finally {
    conn.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test("local redis: kill and restart keep the append-only data", async () => {
  const redis = await startLocalRedis();
  try {
    assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
    assert.equal(await command(redis.port, "PING"), "+PONG\r\n");
    assert.equal(await command(redis.port, "SET", "k", "v"), "+OK\r\n");
    await redis.kill();
    assert.equal(redis.running, false);
    await assert.rejects(command(redis.port, "PING"));
    await redis.restart();
    assert.equal(await command(redis.port, "GET", "k"), "$1\r\nv\r\n");
    // restart stops a running server first.
    await redis.restart();
    assert.equal(await command(redis.port, "GET", "k"), "$1\r\nv\r\n");
    assert.equal(
      await command(redis.port, "CONFIG", "GET", "save"),
      "*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
    );
  } finally {
    await redis.stop();
  }
  assert.equal(await exists(redis.dir), false, "its temporary dir is removed");
  await redis.stop();
});

Deno.test("local redis: fsyncs before each reply unless told everysec", async () => {
  const cases: {
    appendfsync?: "always" | "everysec";
    expected: string;
  }[] = [
    { expected: "always" },
    { appendfsync: "everysec", expected: "everysec" },
    { appendfsync: "always", expected: "always" },
  ];
  for (const { appendfsync, expected } of cases) {
    await using redis = await startLocalRedis(
      appendfsync ? { appendfsync } : {},
    );
    assert.equal(
      await command(redis.port, "CONFIG", "GET", "appendfsync"),
      `*2\r\n$11\r\nappendfsync\r\n$${expected.length}\r\n${expected}\r\n`,
    );
  }
});

Deno.test("local redis: stop after kill, and a given dir and port are kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "local_redis_test_" });
  try {
    const first = await startLocalRedis({ dir });
    const port = first.port;
    await command(port, "SET", "k", "1");
    await first.kill("SIGTERM");
    await first.stop();
    assert.equal(await exists(dir), true);
    {
      await using second = await startLocalRedis({ dir, port });
      assert.equal(second.port, port);
      assert.equal(await command(port, "GET", "k"), "$1\r\n1\r\n");
    }
    assert.equal(await exists(dir), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local redis: a busy port fails fast with the server's log", async () => {
  await using running = await startLocalRedis();
  const started = performance.now();
  await assert.rejects(
    startLocalRedis({ port: running.port }),
    (error: Error) => {
      assert.match(error.message, /exited with code 1/);
      assert.match(error.message, /its log ends with/);
      return true;
    },
  );
  assert.ok(performance.now() - started < 5000);
});

Deno.test("local redis: without redis-server, it says what to install", async () => {
  await assert.rejects(
    startLocalRedis({ binary: "no-such-redis-server-binary" }),
    /no-such-redis-server-binary not found on PATH: install Debian's redis-server/,
  );
});

Deno.test("local redis: a port taken between picking it and binding it is picked again", async () => {
  // The first try's cluster bus port is held here, as another test's server
  // might hold it; the second try asks the args function for a free one.
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let tries = 0;
  try {
    await using redis = await startLocalRedis({
      args: () => [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        String(++tries === 1 ? held.addr.port : freePort()),
      ],
    });
    assert.equal(tries, 2);
    assert.equal(await command(redis.port, "PING"), "+PONG\r\n");
  } finally {
    held.close();
  }
});
