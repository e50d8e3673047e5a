/**
 * A revoked or expired token ends access: every connection it authenticated
 * leaves its rooms (the others see `Leave` with reason `token_revoked` or
 * `token_expired`), is closed with 1008 and a reason, and gets no chat frame
 * after that. Through the token API (at once), through `deno task token
 * revoke` (within the 5 s re-check), at expiry (a timer, not the next
 * message), and on every node of a cluster. Real servers, real SQLite files,
 * a real `redis-server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { TOKEN_RECHECK_MS } from "../../src/chat/reducer.ts";
import { main as tokenCommand } from "../../tools/token_cli.ts";
import { type Frame, TestClient, type TestServer } from "../support/helpers.ts";
import { startCluster } from "../support/cluster_helpers.ts";
import {
  ADMIN,
  authServer,
  connectWithToken,
  enterWith,
  frame,
  issueToken,
  revokeToken,
} from "../support/db_helpers.ts";

/** Settings of a cluster with authentication on and the token API. */
const AUTH = { authEnabled: true, adminToken: ADMIN } as const;

/** The client's close, or a failure after `ms`. */
async function closedWithin(
  client: TestClient,
  ms = 3000,
): Promise<CloseEvent> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`not closed within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([client.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The chat frames (content of others) a client got. */
function chatFrames(frames: readonly Frame[]): Frame[] {
  return frames.filter((f) =>
    f.message_type === "GroupChat" || f.message_type === "PrivateChat" ||
    f.message_type === "History"
  );
}

/** Takes frames until a `Leave`; returns its body. */
// deno-lint-ignore no-explicit-any
async function nextLeave(client: TestClient): Promise<any> {
  for (;;) {
    const next = await client.next();
    if (next.message_type === "Leave") return next.message_body;
  }
}

/**
 * Alice (the other member) sends a GroupChat to the room and a PrivateChat
 * to bob, and waits for their Acks: whatever reached bob would be there by then.
 */
async function aliceSpeaks(
  alice: TestClient,
  tag: string,
  room?: string,
): Promise<void> {
  alice.send(frame("GroupChat", {
    sender_username: "alice",
    content: `room ${tag}`,
    ...room === undefined ? {} : { room },
  }, { id: `g-${tag}` }));
  alice.send(frame("PrivateChat", {
    sender_username: "alice",
    target_username: "bob",
    content: `dm ${tag}`,
  }, { id: `p-${tag}` }));
  for (let acks = 0; acks < 2;) {
    const next = await alice.next();
    if (next.message_type === "Ack") acks++;
    if (next.message_type === "Error") {
      throw new Error(`alice refused: ${JSON.stringify(next)}`);
    }
  }
}

Deno.test("revocation through the API: bob leaves with token_revoked, is closed 1008 at once, and reads nothing more", async () => {
  await using server = await authServer();
  const aliceToken = await issueToken(server.httpUrl, "alice");
  const bobToken = await issueToken(server.httpUrl, "bob");
  await using alice = await connectWithToken(server.wsUrl, aliceToken.token);
  await enterWith(alice, "alice");
  await using bob = await connectWithToken(server.wsUrl, bobToken.token);
  // A second connection that authenticated with the token in a message.
  await using bob2 = await TestClient.connect(server.wsUrl);
  await enterWith(bob, "bob");
  await enterWith(bob2, "bob", {}, { token: bobToken.token });
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  await aliceSpeaks(alice, "before");

  const revokedAt = Date.now();
  assert.equal(await revokeToken(server.httpUrl, bobToken.token), 204);
  const leave = await nextLeave(alice);
  assert.equal(leave.sender_username, "bob");
  assert.equal(leave.reason, "token_revoked");
  for (const client of [bob, bob2]) {
    const closed = await closedWithin(client);
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "token revoked");
  }
  assert.ok(Date.now() - revokedAt < 1000, "at once, not at a re-check");
  const seen = bob.frames.length + bob2.frames.length;
  await aliceSpeaks(alice, "after");
  await sleep(100);
  assert.equal(bob.frames.length + bob2.frames.length, seen);
  for (const client of [bob, bob2]) {
    assert.ok(
      chatFrames(client.frames).every((f) =>
        !String(f.message_body.content).endsWith("after")
      ),
    );
  }
  // Presence no longer shows bob.
  alice.send(frame("Enter", { sender_username: "alice" }));
  assert.deepEqual((await alice.expect("Presence")).members, ["alice"]);
});

Deno.test("revocation through the command: the connection ends within the 5 s re-check, with no message sent", async () => {
  await using server = await authServer();
  const aliceToken = await issueToken(server.httpUrl, "alice");
  const bobToken = await issueToken(server.httpUrl, "bob");
  await using alice = await connectWithToken(server.wsUrl, aliceToken.token);
  await enterWith(alice, "alice");
  await using bob = await connectWithToken(server.wsUrl, bobToken.token);
  await enterWith(bob, "bob");
  await alice.expect("Enter");
  const status = await tokenCommand(
    ["--database", server.db.path, "revoke", bobToken.token],
    { env: {}, dotenv: undefined, out: () => {} },
  );
  assert.equal(status, 0);
  const revokedAt = Date.now();
  const leave = await nextLeaveWithin(alice, TOKEN_RECHECK_MS + 1000);
  assert.equal(leave.reason, "token_revoked");
  const closed = await closedWithin(bob);
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "token revoked");
  assert.ok(Date.now() - revokedAt <= TOKEN_RECHECK_MS + 500);
  await aliceSpeaks(alice, "after");
  assert.deepEqual(
    chatFrames(bob.frames).filter((f) =>
      String(f.message_body.content).endsWith("after")
    ),
    [],
  );
});

// deno-lint-ignore no-explicit-any
async function nextLeaveWithin(client: TestClient, ms: number): Promise<any> {
  const deadline = Date.now() + ms;
  for (;;) {
    const next = await client.next(Math.max(1, deadline - Date.now()));
    if (next.message_type === "Leave") return next.message_body;
  }
}

Deno.test("expiry: the connections of a token end at the moment it expires, by a timer", async () => {
  await using server = await authServer();
  const aliceToken = await issueToken(server.httpUrl, "alice");
  const short = await issueToken(server.httpUrl, "bob", 1);
  await using alice = await connectWithToken(server.wsUrl, aliceToken.token);
  await enterWith(alice, "alice");
  await using bob = await connectWithToken(server.wsUrl, short.token);
  await enterWith(bob, "bob");
  await alice.expect("Enter");
  // Bob sends nothing more: only a timer can end him.
  const leave = await nextLeaveWithin(alice, 3000);
  assert.equal(leave.sender_username, "bob");
  assert.equal(leave.reason, "token_expired");
  const closed = await closedWithin(bob);
  const late = Date.now() - short.expires_at;
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "token expired");
  assert.ok(late >= -50 && late < 700, `closed ${late} ms after expiry`);
  await aliceSpeaks(alice, "after");
  assert.deepEqual(chatFrames(bob.frames), []);
});

Deno.test("cluster: a revocation through the API on node A ends the token's connections on node B", async () => {
  await using cluster = await startCluster(2, AUTH);
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  const aliceToken = await issueToken(a.httpUrl, "alice");
  const bobToken = await issueToken(a.httpUrl, "bob");
  await using alice = await connectWithToken(a.wsUrl, aliceToken.token);
  await enterWith(alice, "alice", { room: "r" });
  await using bob = await connectWithToken(b.wsUrl, bobToken.token);
  await enterWith(bob, "bob", { room: "r" });
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  assert.equal(await revokeToken(a.httpUrl, bobToken.token), 204);
  const closed = await closedWithin(bob);
  assert.equal(closed.code, 1008);
  assert.equal(closed.reason, "token revoked");
  const leave = await nextLeaveWithin(alice, 3000);
  assert.equal(leave.reason, "token_revoked");
  alice.send(frame("GroupChat", {
    sender_username: "alice",
    room: "r",
    content: "after",
  }, { id: "g" }));
  await nextOfType(alice, "Ack");
  assert.deepEqual(chatFrames(bob.frames), []);
});

Deno.test("cluster: a token that expires ends its connections on every node, by a timer", async () => {
  await using cluster = await startCluster(2, AUTH);
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  const aliceToken = await issueToken(a.httpUrl, "alice");
  const short = await issueToken(a.httpUrl, "bob", 2);
  await using alice = await connectWithToken(a.wsUrl, aliceToken.token);
  await enterWith(alice, "alice", { room: "r" });
  await using onA = await connectWithToken(a.wsUrl, short.token);
  await enterWith(onA, "bob", { room: "r" });
  await using onB = await connectWithToken(b.wsUrl, short.token);
  await enterWith(onB, "bob", { room: "r" });
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  // Bob sends nothing more on either node: only timers can end him.
  for (const client of [onA, onB]) {
    const closed = await closedWithin(client);
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "token expired");
    const late = Date.now() - short.expires_at;
    assert.ok(late >= -50 && late < 1500, `closed ${late} ms after expiry`);
  }
  const leave = await nextLeaveWithin(alice, 3000);
  assert.equal(leave.sender_username, "bob");
  assert.equal(leave.reason, "token_expired");
  await aliceSpeaks(alice, "after", "r");
  assert.deepEqual(chatFrames(onA.frames), []);
  assert.deepEqual(chatFrames(onB.frames), []);
});

Deno.test("cluster: `deno task token revoke --redis` ends the token's connections on every node", async () => {
  await using cluster = await startCluster(2, AUTH);
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  const token = await issueToken(a.httpUrl, "bob");
  await using onA = await connectWithToken(a.wsUrl, token.token);
  await enterWith(onA, "bob", { room: "r" });
  await using onB = await connectWithToken(b.wsUrl, token.token);
  await enterWith(onB, "bob", { room: "r" });
  const status = await tokenCommand(
    ["--redis", cluster.redis.url, "revoke", token.token],
    { env: {}, dotenv: undefined, out: () => {}, err: () => {} },
  );
  assert.equal(status, 0);
  const started = Date.now();
  for (const client of [onA, onB]) {
    const closed = await closedWithin(client);
    assert.equal(closed.code, 1008);
    assert.equal(closed.reason, "token revoked");
  }
  // Told over the bus: one hop, not the 5 s re-check.
  assert.ok(Date.now() - started < 2000);
});

async function nextOfType(client: TestClient, type: string): Promise<Frame> {
  for (;;) {
    const next = await client.next();
    if (next.message_type === type) return next;
  }
}
