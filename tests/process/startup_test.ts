/**
 * A start that fails ends the real process (`deno run main.ts`) with one
 * line naming the file, port or setting and what to do, exit status 1, no
 * stack trace and no colour codes (stderr is a pipe here, and `NO_COLOR` is
 * not set). And a client that vanishes without a close is logged as 1006.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { childEnv, RawPeer, serve, waitFor } from "../support/helpers.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Runs main.ts with `env` until it ends (20 s at most); stderr and status. */
async function run(
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  const base = childEnv(env);
  delete base.NO_COLOR; // colour must be off because stderr is no terminal
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN],
    cwd: ROOT,
    env: base,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  try {
    const { code, stderr } = await child.output();
    return { code, stderr: new TextDecoder().decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts exit 1 and stderr of exactly one line (LOG_LEVEL=warn) matching `pattern`. */
function assertOneLine(
  result: { code: number; stderr: string },
  pattern: RegExp,
): void {
  const { code, stderr } = result;
  assert.equal(code, 1, stderr);
  assert.ok(!stderr.includes("\x1b["), `colour codes in ${stderr}`);
  assert.doesNotMatch(stderr, /^\s+at /m, "a stack trace");
  const lines = stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0] as string, /^error: /);
  assert.match(lines[0] as string, pattern);
}

async function tempDir(): Promise<
  { path: string } & AsyncDisposable
> {
  const path = await Deno.makeTempDir({ prefix: "chat_startup_" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

Deno.test("startup: a corrupt database file is one line naming the file, exit 1", async () => {
  await using dir = await tempDir();
  const file = join(dir.path, "chat.db");
  await Deno.writeTextFile(
    file,
    "this is not a database, not at all\n".repeat(50),
  );
  assertOneLine(
    await run({ DATABASE_PATH: file, PORT: "0", LOG_LEVEL: "warn" }),
    new RegExp(
      `DATABASE_PATH \\(--database\\) ${file} is not a usable SQLite database.*restore it from a backup`,
    ),
  );
});

/** A directory this process cannot write: chmod, or a read-only mount for root. */
async function readOnlyDir(): Promise<{ path: string } & AsyncDisposable> {
  const dir = await tempDir();
  if (Deno.uid() !== 0) {
    await Deno.chmod(dir.path, 0o555);
    return {
      path: dir.path,
      [Symbol.asyncDispose]: async () => {
        await Deno.chmod(dir.path, 0o755);
        await dir[Symbol.asyncDispose]();
      },
    };
  }
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", dir.path],
  }).output();
  assert.ok(mount.success, new TextDecoder().decode(mount.stderr));
  return {
    path: dir.path,
    [Symbol.asyncDispose]: async () => {
      await new Deno.Command("umount", { args: [dir.path] }).output();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("startup: a database in a read-only directory is one line naming the file, exit 1", async () => {
  await using dir = await readOnlyDir();
  const file = join(dir.path, "chat.db");
  assertOneLine(
    await run({ DATABASE_PATH: file, PORT: "0", LOG_LEVEL: "warn" }),
    new RegExp(`cannot open DATABASE_PATH \\(--database\\) ${file}.*writable`),
  );
});

Deno.test("startup: a port in use is one line naming the port, exit 1", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  assertOneLine(
    await run({
      HOST: "127.0.0.1",
      PORT: String(port),
      DATABASE_PATH: ":memory:",
      LOG_LEVEL: "warn",
    }),
    new RegExp(
      `cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use.*PORT \\(--port\\)`,
    ),
  );
});

Deno.test("a client that vanishes without a close is logged with code 1006", async () => {
  await using server = await serve({ logLevel: "info" });
  const peer = await RawPeer.upgrade(server.server.port);
  assert.equal(peer.status, 101);
  await peer.readFrame(); // Welcome
  await peer[Symbol.asyncDispose](); // TCP closed, no close frame
  await waitFor(
    () => server.logs.some((line) => line.msg === "connection closed"),
    "the close is logged",
  );
  const closed = server.logs.find((line) => line.msg === "connection closed");
  assert.equal(closed?.code, 1006);
});
