/**
 * The token HTTP API and the operator's token command, against real servers
 * on real SQLite files.
 *
 * Why this file is long: the API and the command work on the same tokens,
 * and several tests cross them (a token the command revokes ends a
 * connection the server holds); kept together so a token's whole life is
 * tested in one place.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { serve } from "../support/helpers.ts";
import {
  ADMIN,
  api,
  connectWithToken,
  enterWith,
  frame,
  issueToken,
  revokeToken,
  tempDb,
} from "../support/db_helpers.ts";
import { RawPeer } from "../support/helpers.ts";
import { waitForHealth } from "../support/cluster_helpers.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { main, USAGE } from "../../tools/token_cli.ts";
import {
  hashToken,
  type Storage,
  type TokenAdmin,
} from "../../src/chat/storage.ts";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import { connectRedis } from "../../src/redis/connection.ts";
import { createLogger } from "../../src/runtime/log.ts";

const UUID_V4 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CLI = fileURLToPath(new URL("../../tools/token_cli.ts", import.meta.url));

/** Runs the token command as an operator would, in its own process. */
async function cli(
  dir: string,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    // A directory of its own, so that no .env of the project is read.
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return {
    code: output.code,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
  };
}

/** The token printed by `create`. */
function createdToken(stdout: string): string {
  const match = /^token:\s+(\S+)$/m.exec(stdout);
  assert.ok(match, `no token in ${stdout}`);
  return match[1] as string;
}

/** Whether the upgrade with `?token=` is accepted (101) or refused (401). */
async function upgradeStatus(port: number, token: string): Promise<number> {
  await using peer = await RawPeer.upgrade(port, {}, `/ws?token=${token}`);
  return peer.status;
}

Deno.test("token API: 201 issues a UUID v4 for the default TTL or ttl_seconds", async () => {
  await using db = await tempDb();
  await using server = await serve({
    databasePath: db.path,
    adminToken: ADMIN,
    tokenTtlSeconds: 120,
  });
  const before = Date.now();
  const byDefault = await issueToken(server.httpUrl, "alice");
  const short = await issueToken(server.httpUrl, "bob", 60);
  const after = Date.now();
  assert.match(byDefault.token, UUID_V4);
  assert.match(short.token, UUID_V4);
  assert.notEqual(byDefault.token, short.token);
  assert.equal(byDefault.username, "alice");
  assert.equal(short.username, "bob");
  assert.ok(byDefault.expires_at >= before + 120_000);
  assert.ok(byDefault.expires_at <= after + 120_000);
  assert.ok(short.expires_at >= before + 60_000);
  assert.ok(short.expires_at <= after + 60_000);
  assert.deepEqual(Object.keys(byDefault).sort(), [
    "expires_at",
    "token",
    "username",
  ]);
  const answer = await api(server.httpUrl, "POST", "/api/tokens", {
    username: "carol",
  });
  assert.equal(answer.status, 201);
  assert.match(answer.headers.get("content-type") ?? "", /application\/json/);
});

Deno.test("token API: tokens are stored hashed", async () => {
  await using db = await tempDb();
  let token;
  {
    await using server = await serve({
      databasePath: db.path,
      adminToken: ADMIN,
    });
    token = (await issueToken(server.httpUrl, "alice")).token;
  }
  const raw = new DatabaseSync(db.path);
  try {
    const rows = raw.prepare("SELECT * FROM tokens").all();
    assert.equal(rows.length, 1);
    const text = JSON.stringify(rows);
    assert.ok(!text.includes(token), "the token is stored in clear");
    assert.ok(!text.includes(token.replaceAll("-", "")));
    assert.equal(rows[0]?.username, "alice");
  } finally {
    raw.close();
  }
});

Deno.test("token API: 204 revokes, then 404; 400 for a token that is no UUID", async () => {
  await using db = await tempDb();
  await using server = await serve({
    databasePath: db.path,
    adminToken: ADMIN,
    authEnabled: true,
  });
  const { token } = await issueToken(server.httpUrl, "alice");
  assert.equal(await upgradeStatus(server.server.port, token), 101);
  const revoked = await api(server.httpUrl, "DELETE", `/api/tokens/${token}`);
  assert.equal(revoked.status, 204);
  assert.equal(revoked.body, undefined);
  assert.equal(await upgradeStatus(server.server.port, token), 401);
  assert.equal(await revokeToken(server.httpUrl, token), 404);
  assert.equal(await revokeToken(server.httpUrl, crypto.randomUUID()), 404);
  for (const path of ["not-a-uuid", "%E0%A4%A", `${token}x`]) {
    const bad = await api(server.httpUrl, "DELETE", `/api/tokens/${path}`);
    assert.equal(bad.status, 400, path);
    assert.match((bad.body as { error: string }).error, /^token: /);
  }
  // Escapes are decoded; a token is a UUID whatever its case.
  const other = await issueToken(server.httpUrl, "bob");
  const escaped = other.token.toUpperCase().replaceAll("-", "%2D");
  assert.equal(
    (await api(server.httpUrl, "DELETE", `/api/tokens/${escaped}`)).status,
    204,
  );
  assert.equal(await upgradeStatus(server.server.port, other.token), 401);
});

Deno.test("token API: 401 without the admin header or with a wrong one", async () => {
  await using server = await serve({ adminToken: ADMIN });
  const token = crypto.randomUUID();
  const cases: [string, string, string | null][] = [
    ["POST", "/api/tokens", null],
    ["POST", "/api/tokens", "Bearer wrong"],
    ["POST", "/api/tokens", `Bearer ${ADMIN}x`],
    ["POST", "/api/tokens", `Basic ${ADMIN}`],
    ["POST", "/api/tokens", ADMIN],
    ["DELETE", `/api/tokens/${token}`, null],
    ["DELETE", `/api/tokens/${token}`, "Bearer wrong"],
    ["DELETE", "/api/tokens/%E0%A4%A", null],
  ];
  for (const [method, path, auth] of cases) {
    const answer = await api(
      server.httpUrl,
      method,
      path,
      method === "POST" ? { username: "alice" } : undefined,
      auth,
    );
    assert.equal(answer.status, 401, `${method} ${path} with ${auth}`);
    assert.ok(answer.headers.get("www-authenticate"));
  }
  // Nothing was issued by the refused requests.
  assert.deepEqual(await server.server.tokens.check(token), null);
});

Deno.test("token API: 404 without ADMIN_TOKEN, whatever the request", async () => {
  await using server = await serve({ adminToken: undefined });
  for (
    const [method, path, auth] of [
      ["POST", "/api/tokens", `Bearer ${ADMIN}`],
      ["POST", "/api/tokens", null],
      ["DELETE", `/api/tokens/${crypto.randomUUID()}`, `Bearer ${ADMIN}`],
      ["DELETE", `/api/tokens/${crypto.randomUUID()}`, null],
      ["POST", "/api/tokens", "Bearer undefined"],
    ] as const
  ) {
    const answer = await api(
      server.httpUrl,
      method,
      path,
      method === "POST" ? { username: "alice" } : undefined,
      auth,
    );
    assert.equal(answer.status, 404, `${method} ${path} with ${auth}`);
  }
});

Deno.test("token API: 400 names what is wrong with a malformed body", async () => {
  await using server = await serve({ adminToken: ADMIN });
  const cases: [unknown, RegExp][] = [
    ["{not json", /^body: /],
    ["", /^body: /],
    [[], /^body: /],
    ['"alice"', /^body: /],
    [null, /^body: /],
    [{}, /^username: required$/],
    [{ ttl_seconds: 60 }, /^username: required$/],
    [{ username: "" }, /^username: must be /],
    [{ username: "a b" }, /^username: must be /],
    [{ username: "x".repeat(33) }, /^username: must be /],
    [{ username: 7 }, /^username: must be a string$/],
    [{ username: null }, /^username: must be /],
    [{ username: "alice", ttl_seconds: "60" }, /^ttl_seconds: must be /],
    [{ username: "alice", ttl_seconds: 0 }, /^ttl_seconds: must be /],
    [{ username: "alice", ttl_seconds: -5 }, /^ttl_seconds: must be /],
    [{ username: "alice", ttl_seconds: 1.5 }, /^ttl_seconds: must be /],
  ];
  for (const [body, reason] of cases) {
    const answer = await api(server.httpUrl, "POST", "/api/tokens", body);
    assert.equal(answer.status, 400, JSON.stringify(body));
    const { error } = answer.body as { error: string };
    assert.equal(typeof error, "string");
    assert.match(error, reason, JSON.stringify(body));
  }
});

Deno.test("token command: usage errors exit 2 with the usage line", async () => {
  await using db = await tempDb();
  const bad = [
    [],
    ["frobnicate"],
    ["create"],
    ["create", "a b"],
    ["create", "alice", "bob"],
    ["create", "alice", "--ttl"],
    ["create", "alice", "--ttl", "0"],
    ["create", "alice", "--ttl", "soon"],
    ["list", "extra"],
    ["list", "--ttl", "5"],
    ["revoke"],
    ["revoke", "not-a-uuid"],
    ["--verbose", "list"],
    ["--database"],
    ["--database", ":memory:", "list"],
  ];
  for (const args of bad) {
    const err: string[] = [];
    const code = await main(args, {
      env: { DATABASE_PATH: db.path },
      dotenv: undefined,
      out: () => {},
      err: (line) => err.push(line),
    });
    assert.equal(code, 2, args.join(" "));
    assert.match(err[0] ?? "", /^error: /, args.join(" "));
    assert.equal(err.at(-1), USAGE, args.join(" "));
  }
  // A bad setting from the environment is a usage error too.
  const err: string[] = [];
  assert.equal(
    await main(["list"], {
      env: { DATABASE_PATH: db.path, TOKEN_TTL_SECONDS: "-1" },
      dotenv: undefined,
      err: (line) => err.push(line),
    }),
    2,
  );
  assert.match(err[0] ?? "", /TOKEN_TTL_SECONDS/);
  // Neither created a database.
  assert.deepEqual([...Deno.readDirSync(db.dir)], []);
});

Deno.test("token command: reads DATABASE_PATH and TOKEN_TTL_SECONDS like the server", async () => {
  await using db = await tempDb();
  const out: string[] = [];
  const io = {
    env: { DATABASE_PATH: db.path, TOKEN_TTL_SECONDS: "90" },
    dotenv: "DATABASE_PATH=/nonexistent/ignored.db\n",
    out: (line: string) => out.push(line),
    err: (line: string) => out.push(line),
    now: () => 1_800_000_000_000,
  };
  assert.equal(await main(["create", "alice"], io), 0);
  assert.match(out.join("\n"), /username:\s+alice/);
  assert.match(out.join("\n"), /expires_at:.*\(1800000090000\)/);
  // `.env` is read when the environment does not name the file.
  out.length = 0;
  assert.equal(
    await main(["list"], {
      ...io,
      env: {},
      dotenv: `DATABASE_PATH=${db.path}\n`,
    }),
    0,
  );
  assert.match(out.join("\n"), /alice\s+active/);
  // list and revoke do not create a missing database.
  out.length = 0;
  const missing = `${db.dir}/missing.db`;
  assert.equal(await main(["--database", missing, "list"], io), 1);
  assert.match(out.join("\n"), /no database/);
  assert.equal(
    await main(["--database", missing, "revoke", crypto.randomUUID()], io),
    1,
  );
  assert.throws(() => Deno.statSync(missing), Deno.errors.NotFound);
});

Deno.test("token command: create, list and revoke as a subprocess", async () => {
  await using db = await tempDb();
  const created = await cli(
    db.dir,
    "--database",
    db.path,
    "create",
    "alice",
    "--ttl",
    "60",
  );
  assert.equal(created.code, 0, created.stderr);
  const token = createdToken(created.stdout);
  assert.match(token, UUID_V4);
  assert.match(created.stdout, /username:\s+alice/);
  const expires = Number(/\((\d+)\)/.exec(created.stdout)?.[1]);
  assert.ok(Math.abs(expires - (Date.now() + 60_000)) < 10_000);

  const listed = await cli(db.dir, "list", `--database=${db.path}`);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^HASH\s+USERNAME\s+STATUS/);
  assert.match(listed.stdout, /alice\s+active/);
  assert.ok(!listed.stdout.includes(token), "list shows the token itself");

  const revoked = await cli(db.dir, "--database", db.path, "revoke", token);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, new RegExp(`revoked ${token}`));
  const again = await cli(db.dir, "--database", db.path, "revoke", token);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^error: /);

  const after = await cli(db.dir, "--database", db.path, "list");
  assert.match(after.stdout, /alice\s+revoked/);

  const usage = await cli(db.dir, "--database", db.path, "create");
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /^error: .*\nusage: deno task token/);
});

Deno.test("token command works on the file of a running server", async () => {
  await using db = await tempDb();
  await using server = await serve({
    databasePath: db.path,
    adminToken: ADMIN,
    authEnabled: true,
  });
  const port = server.server.port;
  // A token made by the command works on the server at once.
  const created = await cli(db.dir, "--database", db.path, "create", "alice");
  assert.equal(created.code, 0, created.stderr);
  const token = createdToken(created.stdout);
  {
    await using alice = await connectWithToken(server.wsUrl, token);
    assert.equal(alice.welcome.username, "alice");
    await enterWith(alice, "alice", {}, { id: "e1" });
    assert.equal((await alice.expect("Ack")).ref, "e1");
  }
  // A token issued by the server is listed by the command.
  await issueToken(server.httpUrl, "bob");
  const listed = await cli(db.dir, "--database", db.path, "list");
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /bob\s+active/);
  assert.match(listed.stdout, /alice\s+active/);
  // Revoked by the command: a new connection is refused at once.
  const revoked = await cli(db.dir, "--database", db.path, "revoke", token);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.equal(await upgradeStatus(port, token), 401);
  // The server keeps writing to the file meanwhile.
  await using bob = await connectWithToken(
    server.wsUrl,
    (await issueToken(server.httpUrl, "bob")).token,
  );
  await enterWith(bob, "bob");
  bob.send(frame("GroupChat", { sender_username: "bob", content: "hi" }, {
    id: "g1",
  }));
  assert.equal((await bob.expect("GroupChat")).seq, 1);
  assert.equal((await bob.expect("Ack")).ref, "g1");
});

Deno.test("token command with --redis works on a cluster's tokens, seen by every node", async () => {
  await using redis = await startLocalRedis();
  const overrides = {
    redisUrl: redis.url,
    authEnabled: true,
    adminToken: ADMIN,
  };
  await using a = await serve(overrides);
  await using b = await serve(overrides);
  // Until a node is in sync with Redis it answers a token upgrade with 503.
  await waitForHealth(a.httpUrl, "ok", 10_000);
  await waitForHealth(b.httpUrl, "ok", 10_000);
  const out: string[] = [];
  const io = {
    env: {},
    dotenv: undefined,
    out: (line: string) => out.push(line),
    err: (line: string) => out.push(line),
  };
  assert.equal(await main(["--redis", redis.url, "create", "alice"], io), 0);
  const token = createdToken(out.join("\n"));
  // Both nodes know it at once.
  assert.equal(await upgradeStatus(a.server.port, token), 101);
  assert.equal(await upgradeStatus(b.server.port, token), 101);
  out.length = 0;
  assert.equal(
    await main(["list"], { ...io, env: { REDIS_URL: redis.url } }),
    0,
  );
  assert.match(out.join("\n"), /alice\s+active/);
  // A connection on B that uses the token, checked just now (cached 5 s).
  await using onB = await connectWithToken(b.wsUrl, token);
  await enterWith(onB, "alice", { room: "r" });
  assert.equal(await main(["--redis", redis.url, "revoke", token], io), 0);
  // The nodes are told over pub/sub: one hop, not the 5-second cache; the
  // connection that held the token is closed.
  assert.equal((await onB.closed).code, 1008);
  assert.equal(await upgradeStatus(a.server.port, token), 401);
  assert.equal(await upgradeStatus(b.server.port, token), 401);
  // A Redis that cannot be reached is an error, not a hang.
  await redis.kill();
  out.length = 0;
  assert.equal(await main(["--redis", redis.url, "list"], io), 1);
  assert.match(out.join("\n"), /cannot reach Redis/);
});

/** Runs the command in-process on `io`'s database; its status and output lines. */
async function run(
  args: string[],
  env: Record<string, string>,
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

/** The HASH (the id `revoke` takes) of each row of `list` for `username`. */
function listedIds(lines: string[], username: string): string[] {
  return lines.filter((line) => line.split(/\s+/)[1] === username)
    .map((line) => line.split(/\s+/)[0]!);
}

Deno.test("token command: revoke takes an id from list, and --user revokes every token of a user", async () => {
  await using db = await tempDb();
  const env = { DATABASE_PATH: db.path };
  for (const user of ["alice", "alice", "bob"]) {
    assert.equal((await run(["create", user], env)).code, 0);
  }
  const ids = listedIds((await run(["list"], env)).out, "alice");
  assert.equal(ids.length, 2);
  assert.match(ids[0]!, /^[0-9a-f]{12}$/);

  // The listed id, whole or its first 6 digits, upper case too.
  const byId = await run(["revoke", ids[0]!.slice(0, 8).toUpperCase()], env);
  assert.equal(byId.code, 0, byId.err.join("\n"));
  assert.deepEqual(byId.out, [`revoked ${ids[0]} (alice)`]);
  const listed = (await run(["list"], env)).out;
  assert.ok(
    listed.some((line) =>
      /^\S+\s+alice\s+revoked/.test(line) && line.startsWith(ids[0]!)
    ),
  );
  assert.ok(
    listed.some((line) =>
      /^\S+\s+alice\s+active/.test(line) && line.startsWith(ids[1]!)
    ),
  );
  // Again, or an id nobody has: exit 1, naming it.
  const again = await run(["revoke", ids[0]!], env);
  assert.equal(again.code, 1);
  assert.match(again.err[0]!, new RegExp(`no live token with id ${ids[0]}`));
  const unknown = await run(["revoke", "000000"], env);
  assert.equal(unknown.code, 1);

  // --user: alice's last live token, not bob's.
  const byUser = await run(["revoke", "--user", "alice"], env);
  assert.equal(byUser.code, 0, byUser.err.join("\n"));
  assert.deepEqual(byUser.out, ["revoked 1 token of alice"]);
  const after = (await run(["list"], env)).out;
  assert.ok(!after.some((line) => /alice\s+active/.test(line)));
  assert.ok(after.some((line) => /bob\s+active/.test(line)));
  const none = await run(["revoke", "--user", "alice"], env);
  assert.equal(none.code, 1);
  assert.match(none.err[0]!, /alice has no live token/);

  // Usage errors: exit 2 with the usage line.
  for (
    const args of [
      ["revoke", "--user"],
      ["revoke", "--user", "a b"],
      ["revoke", "--user", "alice", ids[1]!],
      ["list", "--user", "alice"],
      ["revoke", "abcde"],
      ["revoke", "abcdef0123456"],
    ]
  ) {
    const { code, err } = await run(args, env);
    assert.equal(code, 2, args.join(" "));
    assert.equal(err.at(-1), USAGE, args.join(" "));
  }
});

Deno.test("token command: a token revoked by id or by user ends its connections at the server's re-check", async () => {
  await using db = await tempDb();
  await using server = await serve({
    databasePath: db.path,
    adminToken: ADMIN,
    authEnabled: true,
  });
  const env = { DATABASE_PATH: db.path };
  const tokens = [];
  for (const user of ["alice", "bob", "bob"]) {
    tokens.push((await issueToken(server.httpUrl, user)).token);
  }
  await using alice = await connectWithToken(server.wsUrl, tokens[0]!);
  await enterWith(alice, "alice", {}, { id: "e1" });
  await using bob1 = await connectWithToken(server.wsUrl, tokens[1]!);
  await enterWith(bob1, "bob", {}, { id: "e2" });
  await using bob2 = await connectWithToken(server.wsUrl, tokens[2]!);
  await enterWith(bob2, "bob", {}, { id: "e3" });

  const [aliceId] = listedIds((await run(["list"], env)).out, "alice");
  const started = Date.now();
  assert.equal((await run(["revoke", aliceId!], env)).code, 0);
  assert.deepEqual(
    (await run(["revoke", "--user", "bob"], env)).out,
    ["revoked 2 tokens of bob"],
  );
  // Refused at once to new connections; the open ones closed within the
  // 5-second re-check.
  for (const token of tokens) {
    assert.equal(await upgradeStatus(server.server.port, token), 401);
  }
  for (const peer of [alice, bob1, bob2]) {
    assert.equal((await peer.closed).code, 1008);
  }
  assert.ok(
    Date.now() - started < 7_000,
    `closed after ${Date.now() - started} ms`,
  );
});

Deno.test("token command with --redis: revoke by id and --user on a cluster's tokens", async () => {
  await using redis = await startLocalRedis();
  const env = { REDIS_URL: redis.url };
  for (const user of ["alice", "alice", "bob"]) {
    assert.equal((await run(["create", user], env)).code, 0);
  }
  await using node = await serve({ redisUrl: redis.url, authEnabled: true });
  const created = await run(["create", "carol"], env);
  const carol = createdToken(created.out.join("\n"));
  await using onNode = await connectWithToken(node.wsUrl, carol);
  await enterWith(onNode, "carol", {}, { id: "e1" });

  const listed = (await run(["list"], env)).out;
  const [carolId] = listedIds(listed, "carol");
  assert.equal((await run(["revoke", carolId!], env)).code, 0);
  assert.deepEqual(
    (await run(["revoke", "--user", "alice"], env)).out,
    ["revoked 2 tokens of alice"],
  );
  const after = (await run(["list"], env)).out;
  assert.equal(after.filter((line) => /\bactive\b/.test(line)).length, 1);
  assert.ok(after.some((line) => /bob\s+active/.test(line)));
  assert.equal(await upgradeStatus(node.server.port, carol), 401);
  assert.equal((await onNode.closed).code, 1008);
});

/** A storage to run the bulk revocation on, opened fresh, and how to close it. */
interface StorageCase {
  name: string;
  open: () => Promise<
    { storage: Storage & TokenAdmin; close: () => Promise<void> }
  >;
}

const STORAGES: readonly StorageCase[] = [
  {
    name: "memory",
    open: () => {
      const storage = new MemoryStorage(0);
      return Promise.resolve({ storage, close: () => storage.close() });
    },
  },
  {
    name: "SQLite",
    open: () => {
      const storage = new SqliteStorage(":memory:", 0);
      return Promise.resolve({ storage, close: () => storage.close() });
    },
  },
  {
    name: "Redis",
    open: async () => {
      const redis = await startLocalRedis();
      const connection = connectRedis(redis.url, {
        name: "test",
        log: createLogger("error"),
      });
      while (!connection.up) await new Promise((r) => setTimeout(r, 10));
      const storage = new RedisStorage(connection, {
        nodeId: "test",
        historySize: 0,
        authEnabled: true,
      });
      return {
        storage,
        close: async () => {
          await storage.close();
          await connection.close();
          await redis.stop();
        },
      };
    },
  },
];

for (const { name, open } of STORAGES) {
  Deno.test(`revokeTokensWhere on ${name}: by the start of the hash, by user, live tokens only`, async () => {
    const { storage, close } = await open();
    try {
      const far = Date.now() + 60_000;
      const tokens = ["t-a1", "t-a2", "t-b1"];
      for (const [i, token] of tokens.entries()) {
        await storage.createToken(token, {
          username: i < 2 ? "alice" : "bob",
          expiresAt: far,
        }, 1000 + i);
      }
      const hash = await hashToken("t-a1");
      assert.equal(
        await storage.revokeTokensWhere({ hashPrefix: hash.slice(0, 12) }),
        1,
      );
      assert.equal(await storage.checkToken("t-a1", Date.now()), null);
      assert.notEqual(await storage.checkToken("t-a2", Date.now()), null);
      // Already revoked: not counted again.
      assert.equal(
        await storage.revokeTokensWhere({ hashPrefix: hash.slice(0, 12) }),
        0,
      );
      assert.equal(await storage.revokeTokensWhere({ username: "alice" }), 1);
      assert.equal(await storage.revokeTokensWhere({ username: "alice" }), 0);
      assert.equal(await storage.revokeTokensWhere({ username: "carol" }), 0);
      assert.deepEqual(
        (await storage.listTokens()).map((row) => [row.username, row.revoked]),
        [["bob", false], ["alice", true], ["alice", true]],
      );
    } finally {
      await close();
    }
  });
}
