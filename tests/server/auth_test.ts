/**
 * Authentication on (`AUTH_ENABLED`): every auth error, tokens at upgrade,
 * expiry and revocation of tokens in use, several connections per user, and
 * offline `PrivateChat`s; against real servers on real SQLite files.
 */
import assert from "node:assert/strict";
import { RawPeer, serve, TestClient } from "../support/helpers.ts";
import {
  ADMIN,
  authServer,
  connectWithToken,
  enterWith,
  frame,
  issueToken,
  revokeToken,
  take,
  until,
} from "../support/db_helpers.ts";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends a `GroupChat` from `username` to its one room. */
function say(
  client: TestClient,
  username: string,
  content: string,
  extra: { id?: string; token?: unknown } = {},
): void {
  client.send(
    frame("GroupChat", { sender_username: username, content }, extra),
  );
}

Deno.test("auth: every message needs a token; errors carry the ref", async () => {
  await using server = await authServer();
  const { token } = await issueToken(server.httpUrl, "alice");
  await using client = await TestClient.connect(server.wsUrl);
  assert.equal(client.welcome.auth_required, true);
  assert.equal(client.welcome.username, undefined);

  const cases: [unknown, string][] = [
    [undefined, "auth_required"],
    [null, "auth_required"],
    ["optional_uuid_token", "invalid_token"],
    [crypto.randomUUID(), "invalid_token"],
    [42, "invalid_token"],
    [{ token }, "invalid_token"],
  ];
  let n = 0;
  for (const [bad, code] of cases) {
    const id = `e${++n}`;
    const extra = bad === undefined ? { id } : { id, token: bad };
    client.send(frame("Enter", { sender_username: "alice" }, extra));
    const error = await client.expect("Error");
    assert.equal(error.code, code, JSON.stringify(bad));
    assert.equal(error.ref, id);
  }
  // The token binds the user; another name is a sender_mismatch.
  client.send(frame("Enter", { sender_username: "bob" }, { token, id: "b" }));
  const mismatch = await client.expect("Error");
  assert.equal(mismatch.code, "sender_mismatch");
  assert.equal(mismatch.ref, "b");
  await enterWith(client, "alice", {}, { token, id: "a" });
  assert.equal((await client.expect("Ack")).ref, "a");
  // Bound now, but every message still needs its token.
  say(client, "alice", "no token", { id: "n" });
  assert.equal((await client.expect("Error")).code, "auth_required");
  // Uppercase is the same UUID.
  say(client, "alice", "upper", { id: "u", token: token.toUpperCase() });
  assert.equal((await client.expect("GroupChat")).content, "upper");
  assert.equal((await client.expect("Ack")).ref, "u");
});

Deno.test("auth: a token of another user on a bound connection is a sender_mismatch", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using client = await TestClient.connect(server.wsUrl);
  await enterWith(client, "alice", {}, { token: alice.token });
  say(client, "bob", "as bob", { id: "x", token: bob.token });
  const error = await client.expect("Error");
  assert.equal(error.code, "sender_mismatch");
  assert.equal(error.ref, "x");
  say(client, "alice", "as alice", { id: "y", token: bob.token });
  assert.equal((await client.expect("Error")).code, "sender_mismatch");
  await client.silent();
});

Deno.test("auth: ?token= at upgrade binds the user and Welcome shows it", async () => {
  await using server = await authServer();
  const { token } = await issueToken(server.httpUrl, "alice");
  await using alice = await connectWithToken(server.wsUrl, token);
  assert.equal(alice.welcome.username, "alice");
  assert.equal(alice.welcome.auth_required, true);
  // No token needed on messages now.
  assert.deepEqual((await enterWith(alice, "alice", {}, { id: "e" })).members, [
    "alice",
  ]);
  assert.equal((await alice.expect("Ack")).ref, "e");
  say(alice, "alice", "hi", { id: "g" });
  assert.equal((await alice.expect("GroupChat")).sender_username, "alice");
  assert.equal((await alice.expect("Ack")).ref, "g");
  // The name is the token's.
  alice.send(frame("Enter", { sender_username: "mallory", room: "x" }, {
    id: "m",
  }));
  assert.equal((await alice.expect("Error")).code, "sender_mismatch");
  // Uppercase in the query is the same token.
  await using again = await connectWithToken(server.wsUrl, token.toUpperCase());
  assert.equal(again.welcome.username, "alice");
});

Deno.test("auth: a bad ?token= is refused at upgrade with 401", async () => {
  await using server = await authServer();
  const port = server.server.port;
  const { token } = await issueToken(server.httpUrl, "alice");
  assert.equal(await revokeToken(server.httpUrl, token), 204);
  const expired = await issueToken(server.httpUrl, "bob", 1);
  for (
    const bad of [crypto.randomUUID(), "garbage", token, expired.token]
  ) {
    if (bad === expired.token) await sleep(1100);
    await using peer = await RawPeer.upgrade(port, {}, `/ws?token=${bad}`);
    assert.equal(peer.status, 401, bad);
  }
  await assert.rejects(
    TestClient.connect(`${server.wsUrl}?token=${crypto.randomUUID()}`),
  );
  // Without authentication the query is ignored.
  await using open = await serve({ adminToken: ADMIN });
  await using peer = await RawPeer.upgrade(
    open.server.port,
    {},
    `/ws?token=${crypto.randomUUID()}`,
  );
  assert.equal(peer.status, 101);
});

// Revocation and expiry of tokens in use: tests/server/revocation_test.ts.

Deno.test("auth: one user, two connections: presence once, Leave after the last", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using watcher = await connectWithToken(server.wsUrl, bob.token);
  await enterWith(watcher, "bob");
  const phone = await connectWithToken(server.wsUrl, alice.token);
  const laptop = await connectWithToken(server.wsUrl, alice.token);
  try {
    assert.deepEqual((await enterWith(phone, "alice")).members, [
      "alice",
      "bob",
    ]);
    const entered = await watcher.expect("Enter");
    assert.equal(entered.sender_username, "alice");
    assert.deepEqual((await enterWith(laptop, "alice")).members, [
      "alice",
      "bob",
    ]);
    await watcher.silent();
    await phone.silent(0);

    // A GroupChat of one reaches the other connection too, once.
    say(phone, "alice", "from the phone", { id: "p" });
    assert.equal((await phone.expect("GroupChat")).content, "from the phone");
    await phone.expect("Ack");
    assert.equal((await laptop.expect("GroupChat")).content, "from the phone");
    assert.equal((await watcher.expect("GroupChat")).content, "from the phone");
    // A PrivateChat to alice reaches both connections.
    watcher.send(frame("PrivateChat", {
      sender_username: "bob",
      target_username: "alice",
      content: "psst",
    }, { id: "pc" }));
    assert.equal((await phone.expect("PrivateChat")).content, "psst");
    assert.equal((await laptop.expect("PrivateChat")).content, "psst");
    assert.equal((await watcher.expect("PrivateChat")).content, "psst");
    assert.equal((await watcher.expect("Ack")).ref, "pc");

    // Each connection is in its own rooms.
    await enterWith(laptop, "alice", { room: "side" });
    await phone.silent(50);

    await phone.close();
    await watcher.silent();
    say(watcher, "bob", "still there?");
    assert.equal((await watcher.expect("GroupChat")).content, "still there?");
    assert.equal((await laptop.expect("GroupChat")).content, "still there?");

    await laptop.close();
    const left = await watcher.expect("Leave");
    assert.equal(left.sender_username, "alice");
    assert.equal(left.reason, "disconnected");
    await watcher.silent(50);
  } finally {
    await phone.close();
    await laptop.close();
  }
});

Deno.test("auth: Leave of one connection is not the user's Leave", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using watcher = await connectWithToken(server.wsUrl, bob.token);
  await enterWith(watcher, "bob");
  await using one = await connectWithToken(server.wsUrl, alice.token);
  await using two = await connectWithToken(server.wsUrl, alice.token);
  await enterWith(one, "alice");
  await watcher.expect("Enter");
  await enterWith(two, "alice");
  one.send(frame("Leave", { sender_username: "alice" }, { id: "l1" }));
  assert.equal((await one.expect("Ack")).ref, "l1");
  await watcher.silent();
  two.send(frame("Leave", { sender_username: "alice" }, { id: "l2" }));
  assert.equal((await two.expect("Ack")).ref, "l2");
  const left = await watcher.expect("Leave");
  assert.equal(left.reason, "left");
  assert.equal(left.sender_username, "alice");
});

Deno.test("auth: auth failures count toward MAX_CONSECUTIVE_ERRORS and close with 1008", async () => {
  await using server = await authServer({ maxConsecutiveErrors: 4 });
  const { token } = await issueToken(server.httpUrl, "alice");
  await using client = await TestClient.connect(server.wsUrl);
  const failures = [
    frame("Enter", { sender_username: "alice" }),
    frame("Enter", { sender_username: "alice" }, { token: "x" }),
    frame("Enter", { sender_username: "alice" }, {
      token: crypto.randomUUID(),
    }),
  ];
  // Three failures, then an accepted message resets the streak.
  for (const failure of failures) client.send(failure);
  client.send(frame("Enter", { sender_username: "alice" }, { token }));
  // Four more: the fourth reaches the limit.
  for (const failure of [...failures, failures[0]]) client.send(failure);
  const codes = [];
  for (let i = 0; i < 3; i++) codes.push((await client.expect("Error")).code);
  await client.expect("Presence");
  for (let i = 0; i < 4; i++) codes.push((await client.expect("Error")).code);
  assert.deepEqual(codes, [
    "auth_required",
    "invalid_token",
    "invalid_token",
    "auth_required",
    "invalid_token",
    "invalid_token",
    "auth_required",
  ]);
  const closed = await client.closed;
  assert.equal(closed.code, 1008);
  assert.equal(client.frames.length, 0);
});

/** Sends a `PrivateChat`. */
function whisper(
  client: TestClient,
  from: string,
  to: string,
  content: string,
  extra: { id?: string; token?: unknown } = {},
): void {
  client.send(
    frame("PrivateChat", {
      sender_username: from,
      target_username: to,
      content,
    }, extra),
  );
}

Deno.test("auth: offline PrivateChats arrive on the next connection, in order, once", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using sender = await connectWithToken(server.wsUrl, alice.token);
  const sent = [];
  for (let i = 1; i <= 3; i++) {
    whisper(sender, "alice", "bob", `note ${i}`, { id: `o${i}` });
    const echo = await sender.expect("PrivateChat");
    const ack = await sender.expect("Ack");
    assert.equal(ack.ref, `o${i}`);
    assert.equal(ack.id, echo.id);
    assert.equal(echo.target_username, "bob");
    sent.push(echo);
  }
  {
    await using first = await connectWithToken(server.wsUrl, bob.token);
    assert.deepEqual(await take(first, "PrivateChat", 3), sent);
    await first.silent();
  }
  {
    await using second = await connectWithToken(server.wsUrl, bob.token);
    await second.silent();
    // Online now: a new PrivateChat is delivered at once, and only once.
    whisper(sender, "alice", "bob", "live", { id: "live" });
    assert.equal((await second.expect("PrivateChat")).content, "live");
    await sender.expect("PrivateChat");
    await sender.expect("Ack");
  }
  await using third = await connectWithToken(server.wsUrl, bob.token);
  await third.silent();
});

Deno.test("auth: offline PrivateChats reach a user who binds with a message token", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using sender = await connectWithToken(server.wsUrl, alice.token);
  whisper(sender, "alice", "bob", "waiting for you", { id: "w" });
  const echo = await sender.expect("PrivateChat");
  await sender.expect("Ack");
  await using receiver = await TestClient.connect(server.wsUrl);
  await receiver.silent(50);
  await enterWith(receiver, "bob", {}, { token: bob.token });
  assert.deepEqual(await receiver.expect("PrivateChat"), echo);
  await receiver.silent();
});

Deno.test("auth: PrivateChats sent while the target connects arrive once each, in order", async () => {
  await using server = await authServer({ rateLimitPerSecond: 0 });
  const alice = await issueToken(server.httpUrl, "alice");
  const bob = await issueToken(server.httpUrl, "bob");
  await using sender = await connectWithToken(server.wsUrl, alice.token);
  await using receiver = await TestClient.connect(server.wsUrl);
  const count = 60;
  for (let i = 1; i <= count; i++) {
    whisper(sender, "alice", "bob", `n${i}`, { id: `n${i}` });
  }
  // Bob binds while alice's messages are being stored: some were stored for
  // him offline, one is being written, the rest find him online.
  await until(sender, "Ack");
  receiver.send(frame("Enter", { sender_username: "bob" }, {
    token: bob.token,
  }));
  for (let acks = 1; acks < count;) {
    if ((await sender.next()).message_type === "Ack") acks++;
  }
  await sleep(100);
  const got = receiver.frames.splice(0)
    .filter((f) => f.message_type === "PrivateChat")
    .map((f) => f.message_body.content);
  assert.deepEqual(got, Array.from({ length: count }, (_, i) => `n${i + 1}`));
  await using again = await connectWithToken(server.wsUrl, bob.token);
  await again.silent();
});

Deno.test("auth: user_not_found only for a user the server does not know", async () => {
  await using server = await authServer();
  const alice = await issueToken(server.httpUrl, "alice");
  const gone = await issueToken(server.httpUrl, "gone");
  assert.equal(await revokeToken(server.httpUrl, gone.token), 204);
  await using sender = await connectWithToken(server.wsUrl, alice.token);
  whisper(sender, "alice", "nobody", "hello?", { id: "x" });
  const error = await sender.expect("Error");
  assert.equal(error.code, "user_not_found");
  assert.equal(error.ref, "x");
  await sender.silent(50);
  // A user who held a token is known: the message waits for them.
  whisper(sender, "alice", "gone", "for later", { id: "y" });
  await sender.expect("PrivateChat");
  assert.equal((await sender.expect("Ack")).ref, "y");
  // Without authentication there is no offline delivery at all.
  await using open = await serve({ databasePath: server.db.path });
  await using plain = await TestClient.connect(open.wsUrl);
  await enterWith(plain, "alice");
  whisper(plain, "alice", "gone", "hi", { id: "z" });
  assert.equal((await plain.expect("Error")).code, "user_not_found");
});
