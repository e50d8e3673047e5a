/**
 * A local `redis-server` child process, for the tests and for
 * `deno task cluster`: a free port on 127.0.0.1, a data directory with an
 * append-only file (so data survives {@linkcode LocalRedis.kill} and
 * {@linkcode LocalRedis.restart}), no RDB snapshots.
 *
 * @module
 */
import { join } from "node:path";

/** How long {@linkcode startLocalRedis} waits for `PING` to answer. */
const START_TIMEOUT_MS = 10_000;

/** Options of {@linkcode startLocalRedis}. */
export interface LocalRedisOptions {
  /** The port to listen on (127.0.0.1); a free one when absent. */
  port?: number;
  /**
   * The data directory (append-only file, log), made if missing and kept;
   * a new temporary one, which {@linkcode LocalRedis.stop} removes, when
   * absent.
   */
  dir?: string;
  /** The executable, looked up on `PATH`: `redis-server` unless told. */
  binary?: string;
  /**
   * When the append-only file is flushed to disk: `always` (the default)
   * before each reply, so that every acknowledged write survives a `kill -9`
   * (tests count on it); `everysec` once a second, Redis's own default and
   * faster, which may lose the last second or two of writes.
   */
  appendfsync?: "always" | "everysec";
  /**
   * More `redis-server` arguments, after ours (a Redis Cluster node's
   * `--cluster-enabled yes`, say); a function is asked again for each try
   * (a cluster node's bus port, picked free, may be taken meanwhile).
   */
  args?: readonly string[] | (() => readonly string[]);
}

/** Tries of {@linkcode startLocalRedis} when a port picked free was taken meanwhile. */
const PORT_TRIES = 5;

/** A running (or killed) local `redis-server`; disposing it stops it. */
export class LocalRedis implements AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** Its data directory. */
  readonly dir: string;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  #binary: string;
  #appendfsync: "always" | "everysec";
  #ownsDir: boolean;
  #args: readonly string[];
  #child: Deno.ChildProcess | null = null;
  #stopped = false;

  /** Use {@linkcode startLocalRedis}, which also starts it. */
  constructor(
    port: number,
    dir: string,
    ownsDir: boolean,
    binary: string,
    appendfsync: "always" | "everysec" = "always",
    args: readonly string[] = [],
  ) {
    this.#args = args;
    this.port = port;
    this.dir = dir;
    this.url = `redis://127.0.0.1:${port}`;
    this.#ownsDir = ownsDir;
    this.#binary = binary;
    this.#appendfsync = appendfsync;
  }

  /** Whether the process runs (it may still be loading its data). */
  get running(): boolean {
    return this.#child !== null;
  }

  /** The process id while it runs (to send it `SIGSTOP` in a test). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts the process and waits until it answers `PING`. */
  async start(): Promise<void> {
    if (this.#stopped) throw new Error("this LocalRedis was stopped");
    if (this.#child) throw new Error("redis-server is already running");
    const args = [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--dir",
      this.dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      this.#appendfsync,
      "--protected-mode",
      "no",
      "--logfile",
      this.#logPath(),
      ...this.#args,
    ];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(this.#binary, {
        args,
        // Its own session: a terminal's Ctrl-C reaches the nodes, not Redis,
        // which `deno task cluster` stops after the nodes have drained.
        detached: true,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error(
          `${this.#binary} not found on PATH: install Debian's redis-server ` +
            "(apt-get install redis-server)",
          { cause: error },
        );
      }
      throw error;
    }
    this.#child = child;
    try {
      await this.#waitForPong(child);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /**
   * Sends `signal` (default `SIGKILL`; one that ends the process) and
   * waits for the process to exit; does nothing when it does not run. The
   * data directory is kept.
   */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = null;
    try {
      child.kill(signal);
    } catch {
      // It exited already.
    }
    await child.status;
  }

  /**
   * Starts the server again on the same port and directory, after stopping
   * it with `SIGTERM` if it still runs: the append-only file brings its data
   * back.
   */
  async restart(): Promise<void> {
    await this.kill("SIGTERM");
    await this.start();
  }

  /**
   * Stops the process with `SIGTERM` and removes the data directory if it
   * was made by {@linkcode startLocalRedis}. Safe to call after
   * {@linkcode LocalRedis.kill} and more than once.
   */
  async stop(): Promise<void> {
    await this.kill("SIGTERM");
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#ownsDir) await Deno.remove(this.dir, { recursive: true });
  }

  /** Same as {@linkcode LocalRedis.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  #logPath(): string {
    return join(this.dir, "redis.log");
  }

  async #waitForPong(child: Deno.ChildProcess): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exited: Deno.CommandStatus | undefined;
    child.status.then((status) => exited = status);
    while (true) {
      if (exited) {
        throw new Error(
          `redis-server exited with code ${exited.code} before answering ` +
            `on port ${this.port}${await this.#logTail()}`,
        );
      }
      if (await answers(this.port, child.pid)) return;
      if (Date.now() >= deadline) {
        throw new Error(
          `redis-server did not answer PING on port ${this.port} within ` +
            `${START_TIMEOUT_MS / 1000} s${await this.#logTail()}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async #logTail(): Promise<string> {
    try {
      const lines = (await Deno.readTextFile(this.#logPath())).trimEnd()
        .split("\n");
      return `; its log ends with:\n${lines.slice(-10).join("\n")}`;
    } catch {
      return "";
    }
  }
}

/**
 * Whether the `redis-server` of process `pid` answers `PING` with `PONG` on
 * 127.0.0.1:`port` (not another server that holds the port already).
 */
async function answers(port: number, pid: number): Promise<boolean> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return false;
  }
  // A server that accepts but never answers must not hold us forever.
  const timer = setTimeout(() => conn.close(), 1000);
  try {
    await conn.write(new TextEncoder().encode("PING\r\nINFO server\r\n"));
    const buffer = new Uint8Array(16 * 1024);
    let reply = "";
    while (!completeReplies(reply)) {
      const n = await conn.read(buffer);
      if (n === null) return false;
      reply += new TextDecoder().decode(buffer.subarray(0, n));
    }
    // "-LOADING" while the append-only file is read: not ready yet.
    return reply.startsWith("+PONG\r\n") &&
      reply.includes(`\r\nprocess_id:${pid}\r\n`);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

/** Whether `reply` holds a one-line reply, then a whole bulk string (ASCII). */
function completeReplies(reply: string): boolean {
  const firstEnd = reply.indexOf("\r\n");
  if (firstEnd < 0) return false;
  const headerEnd = reply.indexOf("\r\n", firstEnd + 2);
  if (headerEnd < 0) return false;
  const header = reply.slice(firstEnd + 2, headerEnd);
  if (!header.startsWith("$")) return true;
  return reply.length >= headerEnd + 2 + Number(header.slice(1)) + 2;
}

/** A port that was free on 127.0.0.1 a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/**
 * Starts a `redis-server` on 127.0.0.1 and waits (at most 10 s) until it
 * answers `PING`. Throws when `redis-server` is not installed: the tests
 * that need it fail rather than skip.
 */
export async function startLocalRedis(
  options: LocalRedisOptions = {},
): Promise<LocalRedis> {
  const ownsDir = options.dir === undefined;
  for (let attempt = 1;; attempt++) {
    const dir = options.dir ??
      await Deno.makeTempDir({ prefix: "chat_redis_" });
    if (!ownsDir) await Deno.mkdir(dir, { recursive: true });
    const args = typeof options.args === "function"
      ? options.args()
      : options.args;
    const redis = new LocalRedis(
      options.port ?? freePort(),
      dir,
      ownsDir,
      options.binary ?? "redis-server",
      options.appendfsync,
      args,
    );
    try {
      await redis.start();
      return redis;
    } catch (error) {
      await redis.stop();
      // A port that was free when picked can be taken before redis-server
      // binds it (tests start servers in parallel): pick again.
      const taken = /Address already in use/.test(String(error));
      if (!taken || attempt >= PORT_TRIES) throw error;
    }
  }
}
