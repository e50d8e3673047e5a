/**
 * The admin API against a running server (real sockets, real SQLite files):
 * off without `ADMIN_TOKEN`, the bearer check, the reads (rooms, a room's
 * members paged, a user's connections), kick, a timed ban (Enter, tokens
 * and new tokens refused; across a restart), the system message and its
 * reserved name, deleting a message (gone from `since`, `Deleted` sent),
 * and one audit line per call without message content.
 *
 * @module
 */
import assert from "node:assert/strict";
import { RawPeer, serve, TestClient } from "../support/helpers.ts";
import {
  ADMIN,
  api,
  authServer,
  connectWithToken,
  frame,
  issueToken,
  serveOnTempDb,
} from "../support/db_helpers.ts";

/** Sends a `GroupChat` and waits for its `Ack` (and the echo). */
async function say(
  client: TestClient,
  username: string,
  content: string,
  room = "lobby",
): Promise<{ id: string; seq: number }> {
  const id = crypto.randomUUID();
  client.send(
    frame("GroupChat", { sender_username: username, room, content }, { id }),
  );
  let ack: { id: string; seq: number } | undefined;
  let echo = false;
  while (!ack || !echo) {
    const next = await client.next();
    if (next.message_type === "Ack") ack = next.message_body as typeof ack;
    else if (next.message_type === "GroupChat") echo = true;
  }
  return ack;
}

Deno.test("admin API: off without ADMIN_TOKEN, 401 without the bearer", async () => {
  {
    await using server = await serve();
    const off = await api(server.httpUrl, "GET", "/api/rooms");
    assert.equal(off.status, 404);
    assert.deepEqual(off.body, {
      error: "the admin API is off: set ADMIN_TOKEN to turn it on",
      code: "admin_disabled",
    });
  }
  await using server = await serve({ adminToken: ADMIN });
  const cases: { auth: string | null; status: number }[] = [
    { auth: null, status: 401 },
    { auth: "Bearer wrong", status: 401 },
    { auth: `Basic ${ADMIN}`, status: 401 },
    { auth: `Bearer ${ADMIN}`, status: 200 },
  ];
  for (const { auth, status } of cases) {
    const answer = await api(
      server.httpUrl,
      "GET",
      "/api/rooms",
      undefined,
      auth,
    );
    assert.equal(answer.status, status, `${auth}`);
  }
});

Deno.test("admin API: rooms with counts and last seq, members paged, a user's connections", async () => {
  await using server = await serve({ adminToken: ADMIN, logLevel: "info" });
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "lobby");
  await bob.enter("bob", "lobby");
  await alice.expect("Enter");
  await alice.enter("alice", "dev");
  await say(alice, "alice", "hello");
  await bob.expect("GroupChat");

  const rooms = await api(server.httpUrl, "GET", "/api/rooms");
  assert.equal(rooms.status, 200);
  assert.deepEqual(rooms.body, {
    scope: "server",
    rooms: [
      { room: "dev", members: 1, connections: 1, last_seq: 0 },
      { room: "lobby", members: 2, connections: 2, last_seq: 1 },
    ],
  });
  const first = await api(
    server.httpUrl,
    "GET",
    "/api/rooms/lobby/members?limit=1",
  );
  assert.deepEqual(first.body, {
    scope: "server",
    room: "lobby",
    members: [{ username: "alice", connections: 1 }],
    next_cursor: "alice",
  });
  const second = await api(
    server.httpUrl,
    "GET",
    "/api/rooms/lobby/members?limit=1&cursor=alice",
  );
  assert.deepEqual((second.body as { members: unknown }).members, [
    { username: "bob", connections: 1 },
  ]);
  assert.equal((second.body as { next_cursor: unknown }).next_cursor, null);
  const badLimit = await api(
    server.httpUrl,
    "GET",
    "/api/rooms/lobby/members?limit=0",
  );
  assert.equal(badLimit.status, 400);
  const unknown = await api(
    server.httpUrl,
    "GET",
    "/api/rooms/nowhere/members",
  );
  assert.equal(unknown.status, 404);
  const badName = await api(server.httpUrl, "GET", "/api/rooms/a%20b/members");
  assert.equal(badName.status, 400);

  const user = await api(server.httpUrl, "GET", "/api/users/ALICE");
  assert.deepEqual(user.body, {
    scope: "server",
    username: "alice",
    connections: [{ id: alice.welcome.connection_id, rooms: ["dev", "lobby"] }],
    banned_until: null,
  });
  // One audit line per call, never the content.
  const audits = server.logs.filter((line) => line.msg === "admin");
  assert.equal(audits.length, 5);
  assert.ok(!JSON.stringify(server.logs).includes("hello"));
});

Deno.test("admin API: kick closes every connection of the user with Leave reason kicked", async () => {
  await using server = await serve({ adminToken: ADMIN, logLevel: "info" });
  await using alice = await TestClient.connect(server.wsUrl);
  await using alice2 = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await bob.enter("bob", "lobby");
  await alice.enter("alice", "lobby");
  await bob.expect("Enter");
  // alice2 is another user (names are exclusive without auth): kick only alice.
  await alice2.enter("carol", "lobby");
  await bob.expect("Enter");
  await alice.expect("Enter");

  const kicked = await api(server.httpUrl, "POST", "/api/users/Alice/kick");
  assert.equal(kicked.status, 200);
  assert.deepEqual(kicked.body, {
    username: "Alice",
    closed: 1,
    cluster_told: true,
  });
  const close = await alice.closed;
  assert.equal(close.code, 1008);
  assert.equal(close.reason, "kicked by an administrator");
  const leave = await bob.expect("Leave");
  assert.equal(leave.sender_username, "alice");
  assert.equal(leave.reason, "kicked");
  // Kicked, not banned: the name may come back at once.
  await using again = await TestClient.connect(server.wsUrl);
  await again.enter("alice", "lobby");
  const audit = server.logs.find((line) =>
    line.msg === "admin" && line.action === "kick"
  );
  assert.equal(audit?.username, "Alice");
  assert.equal(audit?.closed, 1);
});

Deno.test("admin API: a timed ban refuses Enter under any case of the name until unbanned", async () => {
  await using server = await serve({ adminToken: ADMIN });
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await bob.enter("bob", "lobby");
  await alice.enter("alice", "lobby");
  await bob.expect("Enter");

  const bad = await api(server.httpUrl, "POST", "/api/users/alice/ban", {
    seconds: 0,
  });
  assert.equal(bad.status, 400);
  assert.equal(
    (bad.body as { error: string }).error,
    "seconds: must be at least 1",
  );
  const banned = await api(server.httpUrl, "POST", "/api/users/alice/ban", {
    seconds: 60,
  });
  assert.equal(banned.status, 200);
  const { until } = banned.body as { until: number };
  assert.ok(until > Date.now() + 50_000);
  assert.equal((await alice.closed).reason, "banned by an administrator");
  assert.equal((await bob.expect("Leave")).reason, "banned");

  for (const name of ["alice", "ALICE"]) {
    await using back = await TestClient.connect(server.wsUrl);
    back.send(frame("Enter", { sender_username: name }, { id: "e1" }));
    const error = await back.expect("Error");
    assert.equal(error.code, "banned");
    assert.equal(error.ref, "e1");
    assert.match(error.message, /banned until \d{4}-/);
  }
  const list = await api(server.httpUrl, "GET", "/api/bans");
  assert.deepEqual(list.body, { bans: [{ username: "alice", until }] });

  const lifted = await api(server.httpUrl, "DELETE", "/api/users/Alice/ban");
  assert.equal(lifted.status, 200);
  await using back = await TestClient.connect(server.wsUrl);
  await back.enter("alice", "lobby");
  const again = await api(server.httpUrl, "DELETE", "/api/users/alice/ban");
  assert.equal(again.status, 404);
});

Deno.test("admin API: a ban refuses the user's tokens and new ones, and survives a restart", async () => {
  await using first = await authServer();
  const { token } = await issueToken(first.httpUrl, "alice");
  await using alice = await connectWithToken(first.wsUrl, token);
  const banned = await api(first.httpUrl, "POST", "/api/users/alice/ban", {
    seconds: 3600,
  });
  assert.equal(banned.status, 200);
  assert.equal((await alice.closed).reason, "banned by an administrator");

  {
    await using refused = await RawPeer.upgrade(
      first.server.port,
      {},
      `/ws?token=${token}`,
    );
    assert.equal(refused.status, 403);
  }
  const fresh = await api(first.httpUrl, "POST", "/api/tokens", {
    username: "Alice",
  });
  assert.equal(fresh.status, 403);
  assert.equal((fresh.body as { code: string }).code, "banned");

  // The same database after a restart: the ban holds.
  const path = first.db.path;
  await first.server.shutdown();
  await using second = await serveOnTempDb({
    adminToken: ADMIN,
    authEnabled: true,
    databasePath: path,
  });
  {
    await using refused = await RawPeer.upgrade(
      second.server.port,
      {},
      `/ws?token=${token}`,
    );
    assert.equal(refused.status, 403);
  }
  const stillRefused = await api(second.httpUrl, "POST", "/api/tokens", {
    username: "alice",
  });
  assert.equal(stillRefused.status, 403);
  const list = await api(second.httpUrl, "GET", "/api/bans");
  assert.equal((list.body as { bans: unknown[] }).bans.length, 1);
});

Deno.test("admin API: a system message reaches the room from 'system', a name nobody can take", async () => {
  await using server = await serve({ adminToken: ADMIN, logLevel: "info" });
  await using bob = await TestClient.connect(server.wsUrl);
  await bob.enter("bob", "lobby");
  const posted = await api(
    server.httpUrl,
    "POST",
    "/api/rooms/lobby/messages",
    {
      content: "maintenance at noon",
    },
  );
  assert.equal(posted.status, 201);
  const body = posted.body as { id: string; seq: number; room: string };
  assert.equal(body.seq, 1);
  const chat = await bob.expect("GroupChat");
  assert.equal(chat.sender_username, "system");
  assert.equal(chat.content, "maintenance at noon");
  assert.equal(chat.id, body.id);
  // Stored like any message: a later Enter with since gets it.
  await using carol = await TestClient.connect(server.wsUrl);
  carol.send(
    frame("Enter", { sender_username: "carol", room: "lobby", since: 0 }),
  );
  await carol.expect("Presence");
  const history = await carol.expect("History");
  assert.deepEqual(history.messages.map((m: { id: string }) => m.id), [
    body.id,
  ]);

  const empty = await api(server.httpUrl, "POST", "/api/rooms/lobby/messages", {
    content: "",
  });
  assert.equal(empty.status, 400);
  for (const name of ["system", "System"]) {
    await using taker = await TestClient.connect(server.wsUrl);
    taker.send(frame("Enter", { sender_username: name }, { id: "x" }));
    const error = await taker.expect("Error");
    assert.equal(error.code, "name_reserved");
  }
  assert.ok(!JSON.stringify(server.logs).includes("maintenance"));
});

Deno.test("admin API: no token is issued for the reserved name", async () => {
  await using server = await authServer();
  const answer = await api(server.httpUrl, "POST", "/api/tokens", {
    username: "SYSTEM",
  });
  assert.equal(answer.status, 400);
  assert.equal((answer.body as { code: string }).code, "name_reserved");
});

Deno.test("admin API: a deleted message leaves history and recovery, members get Deleted", async () => {
  await using server = await serveOnTempDb({ adminToken: ADMIN });
  await using alice = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "lobby");
  const sent = [];
  for (const content of ["one", "two", "three"]) {
    sent.push(await say(alice, "alice", content));
  }
  const bySeq = await api(
    server.httpUrl,
    "DELETE",
    "/api/rooms/lobby/messages/2",
  );
  assert.equal(bySeq.status, 200);
  assert.deepEqual(await alice.expect("Deleted"), {
    room: "lobby",
    id: sent[1]!.id,
    seq: 2,
  });
  const byId = await api(
    server.httpUrl,
    "DELETE",
    `/api/rooms/lobby/messages/${sent[0]!.id}`,
  );
  assert.equal(byId.status, 200);
  assert.equal((await alice.expect("Deleted")).seq, 1);
  const gone = await api(
    server.httpUrl,
    "DELETE",
    "/api/rooms/lobby/messages/2",
  );
  assert.equal(gone.status, 404);

  await using late = await TestClient.connect(server.wsUrl);
  late.send(
    frame("Enter", { sender_username: "bob", room: "lobby", since: 0 }),
  );
  await late.expect("Presence");
  const history = await late.expect("History");
  assert.deepEqual(history.messages.map((m: { seq: number }) => m.seq), [3]);
});

Deno.test("admin API: a system message to a room forgotten while idle continues its seq from storage", async () => {
  await using server = await serveOnTempDb({ adminToken: ADMIN });
  {
    await using ann = await TestClient.connect(server.wsUrl);
    await ann.enter("ann", "quiet");
    assert.equal((await say(ann, "ann", "one", "quiet")).seq, 1);
    assert.equal((await say(ann, "ann", "two", "quiet")).seq, 2);
  }
  // Everyone left: the room is forgotten (its seq stays in SQLite) once
  // the server has seen the close.
  const deadline = Date.now() + 5_000;
  while (true) {
    const rooms = await api(server.httpUrl, "GET", "/api/rooms");
    const listed = (rooms.body as { rooms: { room: string }[] }).rooms;
    if (!listed.some((r) => r.room === "quiet")) break;
    assert.ok(Date.now() < deadline, "the idle room is still held");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const posted = await api(
    server.httpUrl,
    "POST",
    "/api/rooms/quiet/messages",
    {
      content: "back soon",
    },
  );
  assert.equal(posted.status, 201);
  assert.equal((posted.body as { seq: number }).seq, 3);
  await using bob = await TestClient.connect(server.wsUrl);
  bob.send(frame("Enter", { sender_username: "bob", room: "quiet", since: 0 }));
  await bob.expect("Presence");
  const history = await bob.expect("History");
  assert.deepEqual(
    history.messages.map((m: { seq: number; content: string }) => [
      m.seq,
      m.content,
    ]),
    [[1, "one"], [2, "two"], [3, "back soon"]],
  );
});
