/**
 * The real process: `deno run main.ts` with flags, environment and `.env`,
 * its exit status, its log lines on stderr, and how it stops on a signal.
 *
 * Why this file is long: every test runs the real process through the
 * helpers at the top (`run`, and the `Process` harness: spawn, read the log
 * lines, wait for the port); refusals, help, starting, logging and stopping
 * are sections of one file so that those helpers stay private to it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { SETTINGS } from "../../src/runtime/settings.ts";
import { childEnv, RawPeer, TestClient } from "../support/helpers.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
];
/** Longest a process may take to start, answer or stop in these tests. */
const PROCESS_MS = 20_000;

interface RunOptions {
  /** Flags after `main.ts`. */
  args?: string[];
  /** Settings in the environment. */
  env?: Record<string, string>;
  /** Working directory; the repository root by default. */
  cwd?: string;
}

function command(
  { args = [], env = {}, cwd = ROOT }: RunOptions,
  output: "piped" | "null",
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    cwd,
    env: childEnv(env),
    clearEnv: true,
    stdin: "null",
    stdout: output,
    stderr: "piped",
  });
}

/** Runs main.ts to its end; kills it if it has not ended in time. */
async function run(options: RunOptions): Promise<{
  code: number;
  stdout: string;
  stderr: string;
}> {
  const child = command(options, "piped").spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, PROCESS_MS);
  try {
    const { code, stdout, stderr } = await child.output();
    const decoder = new TextDecoder();
    return {
      code,
      stdout: decoder.decode(stdout),
      stderr: decoder.decode(stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** One parsed log line. */
interface LogLine {
  time: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A running main.ts whose stderr is read as it comes. */
class Process implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Everything written to stderr so far. */
  stderr = "";
  #ended = false;
  #exited = false;
  #waiters: (() => void)[] = [];
  readonly #pump: Promise<void>;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(options: RunOptions) {
    const child = command(options, "null").spawn();
    this.child = child;
    this.status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#pump = (async () => {
      const text = child.stderr.pipeThrough(new TextDecoderStream());
      for await (const chunk of text) {
        this.stderr += chunk;
        this.#wake();
      }
      this.#ended = true;
      this.#wake();
    })();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** The complete stderr lines so far, parsed; a non-JSON line fails. */
  get lines(): LogLine[] {
    const complete = this.stderr.slice(0, this.stderr.lastIndexOf("\n") + 1);
    return complete.split("\n").filter((line) => line !== "").map((line) => {
      try {
        return JSON.parse(line) as LogLine;
      } catch {
        throw new Error(`stderr line is not JSON: ${line}`);
      }
    });
  }

  /** The first log line with `msg`, waiting for it. */
  async line(msg: string, ms = PROCESS_MS): Promise<LogLine> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.lines.find((line) => line.msg === msg);
      if (found) return found;
      if (this.#ended) {
        throw new Error(`stderr ended without "${msg}":\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`no "${msg}" within ${ms} ms:\n${this.stderr}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** The port the `listening` line names. */
  async port(): Promise<number> {
    const listening = await this.line("listening");
    const url = new URL(String(listening.url));
    return Number(url.port);
  }

  /** Sends `signal`; resolves with the status and the time it took. */
  async stop(
    signal: Deno.Signal = "SIGTERM",
  ): Promise<{ code: number; ms: number }> {
    const started = performance.now();
    this.child.kill(signal);
    const { code } = await this.exited();
    return { code, ms: performance.now() - started };
  }

  /** The exit status, once stderr is read to its end too. */
  async exited(ms = PROCESS_MS): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`still running after ${ms} ms`)),
        ms,
      );
    });
    try {
      const status = await Promise.race([this.status, late]);
      await this.#pump;
      return status;
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#exited) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
    }
    await this.status;
    await this.#pump;
  }
}

/** A port that was free a moment ago. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Polls `/healthz` until the server answers. */
async function waitForHealth(port: number, ms = PROCESS_MS): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      await response.body?.cancel();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** A temporary working directory holding `.env` (when given). */
async function workdir(dotenv?: string): Promise<
  AsyncDisposable & {
    path: string;
  }
> {
  const path = await Deno.makeTempDir({ prefix: "chat-main-test-" });
  if (dotenv !== undefined) await Deno.writeTextFile(`${path}/.env`, dotenv);
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

/** Settings every started server gets: a free port, nothing on disk. */
const QUIET = { PORT: "0", DATABASE_PATH: ":memory:" };

// Refusals ------------------------------------------------------------------

/** Asserts exit status 2 and one stderr line that matches. */
function assertRefused(
  result: { code: number; stdout: string; stderr: string },
  pattern: RegExp,
): void {
  assert.equal(result.code, 2, result.stderr);
  assert.equal(result.stdout, "");
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `not one line:\n${result.stderr}`);
  assert.match(lines[0] as string, pattern);
  assert.ok(!result.stderr.includes("listening"));
}

const INVALID: readonly {
  name: string;
  options: RunOptions;
  pattern: RegExp;
}[] = [
  {
    name: "PORT=abc",
    options: { env: { PORT: "abc" } },
    pattern: /PORT \(--port\) takes .*'abc'/,
  },
  {
    name: "--port=70000",
    options: { args: ["--port=70000"] },
    pattern: /PORT \(--port\) takes .*'70000'/,
  },
  {
    name: "--max-connections -1",
    options: { args: ["--max-connections", "-1"] },
    pattern: /MAX_CONNECTIONS \(--max-connections\) takes .*'-1'/,
  },
  {
    name: "AUTH_ENABLED=yes",
    options: { env: { AUTH_ENABLED: "yes" } },
    pattern: /AUTH_ENABLED \(--auth\) takes true, false, 1 or 0/,
  },
  {
    name: "LOG_LEVEL=loud",
    options: { env: { LOG_LEVEL: "loud" } },
    pattern: /LOG_LEVEL \(--log-level\) takes debug, info, warn or error/,
  },
  {
    name: "DEFAULT_ROOM='the lobby'",
    options: { env: { DEFAULT_ROOM: "the lobby" } },
    pattern: /DEFAULT_ROOM \(--default-room\) takes .*'the lobby'/,
  },
  {
    name: "REDIS_URL=http://x",
    options: { env: { REDIS_URL: "http://x" } },
    pattern: /REDIS_URL \(--redis\) takes a redis:\/\//,
  },
  {
    name: "HOST='not a host'",
    options: { env: { HOST: "not a host" } },
    pattern: /HOST \(--host\) takes /,
  },
  {
    name: "--admin-token s3cret (a secret flag)",
    options: { args: ["--admin-token", "s3cret-flag-value"] },
    pattern:
      /^error: --admin-token is not accepted: .*set ADMIN_TOKEN in the environment or in \.env$/,
  },
  {
    name: "--redis with a password (a secret flag)",
    options: { args: ["--redis=redis://:pw-in-flag@127.0.0.1:1"] },
    pattern: /set REDIS_URL in the environment or in \.env$/,
  },
  {
    name: "--shutdown-grace=-5",
    options: { args: ["--shutdown-grace=-5"] },
    pattern: /SHUTDOWN_GRACE_SECONDS \(--shutdown-grace\) takes /,
  },
];

for (const { name, options, pattern } of INVALID) {
  Deno.test(`main.ts: ${name} exits 2 with one line naming the setting`, async () => {
    assertRefused(await run(options), pattern);
  });
}

Deno.test("main.ts: an unknown flag exits 2 with one line naming it", async () => {
  assertRefused(
    await run({ args: ["--port", "0", "--colour=blue"] }),
    /^error: unknown flag --colour\b/,
  );
});

Deno.test("main.ts: a stray argument exits 2 with one line naming it", async () => {
  assertRefused(await run({ args: ["serve"] }), /unexpected argument 'serve'/);
});

Deno.test("main.ts: a bad value in .env exits 2 with one line naming the setting", async () => {
  await using dir = await workdir("# bad\nMAX_ROOMS_PER_CONNECTION=0\n");
  assertRefused(
    await run({ cwd: dir.path }),
    /MAX_ROOMS_PER_CONNECTION \(--max-rooms\) takes .*'0'/,
  );
});

// Help ----------------------------------------------------------------------

Deno.test("main.ts: --help prints every variable and flag on stdout and exits 0", async () => {
  const { code, stdout, stderr } = await run({ args: ["--help"] });
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
  for (const spec of Object.values(SETTINGS)) {
    assert.ok(stdout.includes(spec.env), `--help lacks ${spec.env}`);
    if ("envOnly" in spec) {
      // Shown in its environment form, never as a flag to pass.
      assert.ok(
        !stdout.includes(`--${spec.flag}`),
        `--help shows --${spec.flag}`,
      );
      assert.match(
        stdout,
        new RegExp(`environment or \\.env only.*${spec.env}`),
      );
    } else {
      assert.ok(
        stdout.includes(`--${spec.flag}`),
        `--help lacks --${spec.flag}`,
      );
    }
  }
  assert.ok(stdout.includes("--no-auth"));
});

// Starting ------------------------------------------------------------------

Deno.test("main.ts: PORT=0 logs the real port, and a client connects to it", async () => {
  await using dir = await workdir();
  await using server = new Process({ cwd: dir.path, env: QUIET });
  const starting = await server.line("starting");
  assert.equal(starting.level, "info");
  assert.deepEqual(starting.settings, { PORT: 0, DATABASE_PATH: ":memory:" });
  const port = await server.port();
  assert.ok(port > 0);
  const listening = await server.line("listening");
  assert.equal(listening.url, `http://127.0.0.1:${port}/`);
  assert.equal(listening.websocket, `ws://127.0.0.1:${port}/ws`);
  {
    await using client = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
    assert.equal(client.welcome.default_room, "general");
  }
  const { code } = await server.stop();
  assert.equal(code, 0);
  // No .env in the working directory: no warning, only JSON lines.
  assert.ok(server.lines.every((line) => typeof line.msg === "string"));
  assert.ok(server.lines.some((line) => line.msg === "stopped"));
});

Deno.test("main.ts: .env in the working directory is read; env overrides it; a flag overrides env", async () => {
  await using dir = await workdir(
    "PORT=0\nDATABASE_PATH=:memory:\nDEFAULT_ROOM=from-dotenv\nHISTORY_SIZE=5\n",
  );
  const cases: readonly {
    options: RunOptions;
    room: string;
    history: number;
  }[] = [
    { options: {}, room: "from-dotenv", history: 5 },
    {
      options: { env: { DEFAULT_ROOM: "from-env" } },
      room: "from-env",
      history: 5,
    },
    {
      options: {
        env: { DEFAULT_ROOM: "from-env", HISTORY_SIZE: "6" },
        args: ["--default-room", "from-flag"],
      },
      room: "from-flag",
      history: 6,
    },
  ];
  for (const { options, room, history } of cases) {
    await using server = new Process({ ...options, cwd: dir.path });
    const starting = await server.line("starting");
    assert.deepEqual(starting.settings, {
      PORT: 0,
      DATABASE_PATH: ":memory:",
      DEFAULT_ROOM: room,
      HISTORY_SIZE: history,
    });
    const port = await server.port();
    {
      await using client = await TestClient.connect(
        `ws://127.0.0.1:${port}/ws`,
      );
      assert.equal(client.welcome.default_room, room);
      // Enter without a room lands in the configured default room.
      client.send({
        message_type: "Enter",
        message_body: { sender_username: "dora" },
      });
      await client.expect("Presence");
      client.send({
        message_type: "GroupChat",
        message_body: { sender_username: "dora", content: "hello" },
      });
      assert.equal((await client.expect("GroupChat")).room, room);
    }
    assert.equal((await server.stop()).code, 0);
  }
});

Deno.test("main.ts: the startup line masks ADMIN_TOKEN and REDIS_URL", async () => {
  // REDIS_URL points nowhere; the server must still start and log it masked.
  const secret = `admin-${crypto.randomUUID()}`;
  const redisSecret = `pw-${crypto.randomUUID()}`;
  await using dir = await workdir();
  await using server = new Process({
    cwd: dir.path,
    env: {
      ...QUIET,
      ADMIN_TOKEN: secret,
      REDIS_URL: `redis://:${redisSecret}@127.0.0.1:1/0`,
    },
  });
  const starting = await server.line("starting");
  assert.deepEqual(starting.settings, {
    PORT: 0,
    DATABASE_PATH: ":memory:",
    ADMIN_TOKEN: "(set)",
    REDIS_URL: "(set)",
  });
  assert.ok(!server.stderr.includes(secret));
  assert.ok(!server.stderr.includes(redisSecret));
});

// Logging -------------------------------------------------------------------

Deno.test("main.ts: LOG_LEVEL=warn hides the info lines", async () => {
  const port = freePort();
  await using dir = await workdir();
  await using server = new Process({
    cwd: dir.path,
    env: { DATABASE_PATH: ":memory:", LOG_LEVEL: "warn" },
    args: ["--port", String(port)],
  });
  await waitForHealth(port);
  {
    await using client = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
    await client.enter("wally");
  }
  assert.equal((await server.stop()).code, 0);
  assert.deepEqual(
    server.lines.filter((line) =>
      line.level === "info" || line.level === "debug"
    ),
    [],
  );
  assert.equal(server.stderr, "");
});

Deno.test("main.ts: logs at info never hold message content", async () => {
  const group = `group-content-${crypto.randomUUID()}`;
  const direct = `private-content-${crypto.randomUUID()}`;
  await using dir = await workdir();
  await using server = new Process({
    cwd: dir.path,
    env: { ...QUIET, LOG_LEVEL: "info" },
  });
  const port = await server.port();
  {
    await using alice = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
    await using bob = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
    await alice.enter("alice", "lobby");
    await bob.enter("bob", "lobby");
    await alice.expect("Enter");
    alice.send({
      message_type: "GroupChat",
      message_body: { sender_username: "alice", content: group, room: "lobby" },
      id: "g1",
    });
    assert.equal((await alice.expect("GroupChat")).content, group);
    await alice.expect("Ack");
    assert.equal((await bob.expect("GroupChat")).content, group);
    bob.send({
      message_type: "PrivateChat",
      message_body: {
        sender_username: "bob",
        target_username: "alice",
        content: direct,
      },
    });
    assert.equal((await alice.expect("PrivateChat")).content, direct);
    assert.equal((await bob.expect("PrivateChat")).content, direct);
    // A refused message's content is not logged either.
    alice.send({
      message_type: "GroupChat",
      message_body: {
        sender_username: "alice",
        content: group,
        room: "nowhere",
      },
    });
    assert.equal((await alice.expect("Error")).code, "not_in_room");
  }
  assert.equal((await server.stop()).code, 0);
  assert.ok(server.lines.some((line) => line.msg === "connection opened"));
  assert.ok(!server.stderr.includes(group), "GroupChat content was logged");
  assert.ok(!server.stderr.includes(direct), "PrivateChat content was logged");
});

// Stopping ------------------------------------------------------------------

Deno.test("main.ts: SIGTERM closes two clients in a room with 1001 and exits 0 within the grace", async () => {
  const grace = 5;
  await using dir = await workdir();
  await using server = new Process({
    cwd: dir.path,
    env: { ...QUIET, SHUTDOWN_GRACE_SECONDS: String(grace) },
  });
  const port = await server.port();
  await using alice = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
  await using bob = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
  await alice.enter("alice", "lobby");
  await bob.enter("bob", "lobby");
  await alice.expect("Enter");
  alice.send({
    message_type: "GroupChat",
    message_body: { sender_username: "alice", content: "bye", room: "lobby" },
  });
  await alice.expect("GroupChat");
  await bob.expect("GroupChat");

  const { code, ms } = await server.stop("SIGTERM");
  assert.equal(code, 0);
  assert.ok(ms < grace * 1000, `took ${Math.round(ms)} ms`);
  assert.equal((await alice.closed).code, 1001);
  assert.equal((await bob.closed).code, 1001);
  const stopping = server.lines.find((line) => line.msg === "stopping");
  assert.equal(stopping?.signal, "SIGTERM");
  assert.ok(server.lines.some((line) => line.msg === "stopped"));
});

Deno.test("main.ts: while a peer keeps it draining, /healthz answers 503 and upgrades are refused; it exits 0 at the grace", async () => {
  const grace = 2;
  await using dir = await workdir();
  await using server = new Process({
    cwd: dir.path,
    env: { ...QUIET, SHUTDOWN_GRACE_SECONDS: String(grace) },
  });
  const port = await server.port();
  await using client = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
  await client.enter("carol", "lobby");
  // Upgrades, then never reads and never answers the close frame.
  await using peer = await RawPeer.upgrade(port);
  assert.equal(peer.status, 101);

  const started = performance.now();
  server.child.kill("SIGTERM");
  await server.line("draining");
  assert.equal((await client.closed).code, 1001);

  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  assert.equal(health.status, 503);
  assert.equal((await health.json()).status, "draining");
  await using late = await RawPeer.upgrade(port);
  assert.equal(late.status, 503);

  const { code } = await server.exited();
  const ms = performance.now() - started;
  assert.equal(code, 0);
  assert.ok(ms < grace * 1000 + 1500, `took ${Math.round(ms)} ms`);
  assert.ok(server.lines.some((line) => line.msg === "stopped"));
});

Deno.test("main.ts: SIGINT closes clients with 1001 and exits 0", async () => {
  await using dir = await workdir();
  await using server = new Process({ cwd: dir.path, env: QUIET });
  const port = await server.port();
  await using client = await TestClient.connect(`ws://127.0.0.1:${port}/ws`);
  await client.enter("sigrid", "lobby");
  const { code, ms } = await server.stop("SIGINT");
  assert.equal(code, 0);
  assert.ok(ms < 10_000, `took ${Math.round(ms)} ms`);
  assert.equal((await client.closed).code, 1001);
  const stopping = server.lines.find((line) => line.msg === "stopping");
  assert.equal(stopping?.signal, "SIGINT");
});

Deno.test("main.ts: SIGTERM with no clients exits 0 at once", async () => {
  await using dir = await workdir();
  await using server = new Process({ cwd: dir.path, env: QUIET });
  await server.port();
  const { code, ms } = await server.stop("SIGTERM");
  assert.equal(code, 0);
  assert.ok(ms < 5000, `took ${Math.round(ms)} ms`);
});

Deno.test("main.ts: a SIGTERM as soon as the first log line appears still drains and exits 0", async () => {
  await using dir = await workdir();
  for (let attempt = 0; attempt < 3; attempt++) {
    await using server = new Process({ cwd: dir.path, env: QUIET });
    await server.line("starting");
    const { code } = await server.stop("SIGTERM");
    assert.equal(code, 0, server.stderr);
    const stopping = server.lines.find((line) => line.msg === "stopping");
    assert.equal(stopping?.signal, "SIGTERM");
    assert.ok(server.lines.some((line) => line.msg === "stopped"));
  }
});
