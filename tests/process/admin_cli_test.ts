/**
 * `deno task admin` (tools/admin_cli.ts): its usage errors, the API's
 * operations from a shell against a running server (one run in its own
 * process, as an operator types it), and bans and deletions directly on a
 * server's SQLite file (reaching the running server within its ban reload)
 * and on a cluster's Redis (the nodes told at once).
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { BAN_RELOAD_MS } from "../../src/runtime/runner.ts";
import { main } from "../../tools/admin_cli.ts";
import { parseDuration } from "../../tools/admin_args.ts";
import { TestClient, type TestServer } from "../support/helpers.ts";
import { startCluster } from "../support/cluster_helpers.ts";
import { ADMIN, frame, serveOnTempDb } from "../support/db_helpers.ts";

const CLI = fileURLToPath(new URL("../../tools/admin_cli.ts", import.meta.url));

/** Runs the command in this process; its status and lines. */
async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, {
    env,
    dotenv: undefined,
    out: (line) => out.push(line),
    err: (line) => err.push(line),
  });
  return { code, out, err };
}

Deno.test("admin command: usage errors exit 2 and say what is wrong", async () => {
  const cases: {
    args: string[];
    env?: Record<string, string>;
    says: RegExp;
  }[] = [
    { args: [], says: /a command is required/ },
    { args: ["frobnicate"], says: /unknown command 'frobnicate'/ },
    { args: ["ban", "alice"], env: { ADMIN_TOKEN: "x" }, says: /--for/ },
    {
      args: ["ban", "alice", "--for", "0"],
      env: { ADMIN_TOKEN: "x" },
      says: /--for takes a duration/,
    },
    { args: ["kick", "a b"], env: { ADMIN_TOKEN: "x" }, says: /username: / },
    { args: ["rooms"], says: /ADMIN_TOKEN is not set/ },
    {
      args: ["--database", "x.db", "rooms"],
      says: /needs a running server/,
    },
    {
      args: ["--admin-token", "s3cret", "rooms"],
      says: /--admin-token is refused/,
    },
    {
      args: ["--database", "x.db", "--redis", "redis://h", "bans"],
      says: /not both/,
    },
  ];
  for (const { args, env, says } of cases) {
    const { code, err } = await run(args, env);
    assert.equal(code, 2, args.join(" "));
    assert.match(err.join("\n"), says, args.join(" "));
  }
  assert.equal(parseDuration("90"), 90);
  assert.equal(parseDuration("30m"), 1800);
  assert.equal(parseDuration("2h"), 7200);
  assert.equal(parseDuration("7d"), 604_800);
});

Deno.test("admin command: the API's operations against a running server", async () => {
  await using server = await serveOnTempDb({ adminToken: ADMIN });
  const env = { ADMIN_TOKEN: ADMIN };
  const url = ["--url", server.httpUrl];
  await using alice = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "lobby");
  await using bob = await TestClient.connect(server.wsUrl);
  await bob.enter("bob", "lobby");
  await alice.expect("Enter");

  const rooms = await run([...url, "rooms"], env);
  assert.equal(rooms.code, 0);
  assert.deepEqual(rooms.out, [
    "ROOM   MEMBERS  CONNECTIONS  LAST_SEQ",
    "lobby  2        2            0",
  ]);
  const members = await run([...url, "members", "lobby", "--limit", "1"], env);
  assert.deepEqual(members.out, [
    "USERNAME  CONNECTIONS",
    "alice     1",
    "more: --cursor alice",
  ]);
  const said = await run([...url, "say", "lobby", "hello", "all"], env);
  assert.equal(said.code, 0, said.err.join("\n"));
  assert.match(said.out[0]!, /^sent to lobby as seq 1 /);
  assert.equal((await bob.expect("GroupChat")).content, "hello all");
  await alice.expect("GroupChat");
  const deleted = await run([...url, "delete", "lobby", "1"], env);
  assert.equal(deleted.code, 0);
  assert.equal((await bob.expect("Deleted")).seq, 1);
  const again = await run([...url, "delete", "lobby", "1"], env);
  assert.equal(again.code, 1);
  assert.match(again.err[0]!, /^error: 404 /);

  // One run in its own process, as an operator types it.
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...url, "ban", "alice", "--for", "1h"],
    cwd: server.db.dir,
    env: { NO_COLOR: "1", ADMIN_TOKEN: ADMIN },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(stdout, /^banned alice until \S+: 1 connection\(s\) closed/);
  assert.equal((await alice.closed).reason, "banned by an administrator");
  const bans = await run([...url, "bans"], env);
  assert.equal(bans.out[1]?.split(/\s+/)[0], "alice");
  assert.equal((await run([...url, "unban", "alice"], env)).code, 0);
  assert.equal((await run([...url, "kick", "bob"], env)).code, 0);
  assert.equal((await bob.closed).reason, "kicked by an administrator");
  // A wrong secret is an error answer, not a crash.
  const wrong = await run([...url, "rooms"], { ADMIN_TOKEN: "wrong" });
  assert.equal(wrong.code, 1);
  assert.match(wrong.err[0]!, /^error: 401 /);
});

Deno.test("admin command: a ban and a deletion on the SQLite file reach the running server", async () => {
  await using server = await serveOnTempDb({ adminToken: ADMIN });
  await using alice = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "lobby");
  alice.send(frame("GroupChat", {
    sender_username: "alice",
    room: "lobby",
    content: "oops",
  }, { id: "g1" }));
  await alice.expect("GroupChat");
  await alice.expect("Ack");
  const db = ["--database", server.db.path];
  const started = Date.now();
  const banned = await run([...db, "ban", "alice", "--for", "10m"]);
  assert.equal(banned.code, 0, banned.err.join("\n"));
  const closed = await alice.closed;
  assert.equal(closed.reason, "banned by an administrator");
  assert.ok(Date.now() - started < BAN_RELOAD_MS + 2000);
  assert.deepEqual(
    (await run([...db, "bans"])).out.map((line) => line.split(/\s+/)[0]),
    ["USERNAME", "alice"],
  );
  const deleted = await run([...db, "delete", "lobby", "g1"]);
  assert.equal(deleted.code, 1, "by the client's id: not the message's id");
  assert.equal((await run([...db, "delete", "lobby", "1"])).code, 0);
  await using bob = await TestClient.connect(server.wsUrl);
  bob.send(frame("Enter", { sender_username: "bob", room: "lobby", since: 0 }));
  await bob.expect("Presence");
  assert.deepEqual((await bob.expect("History")).messages, []);
  assert.equal((await run([...db, "unban", "alice"])).code, 0);
  assert.equal((await run([...db, "unban", "alice"])).code, 1);
});

Deno.test("admin command: a ban on a cluster's Redis ends the user's connections on every node at once", async () => {
  await using cluster = await startCluster(2, { adminToken: ADMIN });
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  await using onA = await TestClient.connect(a.wsUrl);
  await onA.enter("alice", "r");
  await using onB = await TestClient.connect(b.wsUrl);
  await onB.enter("bob", "r");
  const started = Date.now();
  const banned = await run([
    "--redis",
    cluster.redisUrl,
    "ban",
    "alice",
    "--for",
    "5m",
  ]);
  assert.equal(banned.code, 0, banned.err.join("\n"));
  assert.equal((await onA.closed).reason, "banned by an administrator");
  // Told over the bus: not the 5 s reload.
  assert.ok(Date.now() - started < 2000);
  await using retry = await TestClient.connect(b.wsUrl);
  retry.send(frame("Enter", { sender_username: "alice" }, { id: "e" }));
  assert.equal((await retry.expect("Error")).code, "banned");
});
