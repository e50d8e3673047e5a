/**
 * Integration tests of the limit settings (CONFIG.md): each test would fail
 * if its limit broke. Real server on port 0, real WebSocket clients, and raw
 * TCP peers for the misbehaving ones.
 *
 * Why this file is long: one section per limit setting of CONFIG.md (and
 * one for overload), most with a case table; kept together so that a limit
 * without a test is one place to look.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../../src/runtime/config.ts";
import { OVERLOAD_LAG_MS } from "../../src/runtime/lag_watch.ts";
import {
  envelope,
  RawPeer,
  serve,
  TestClient,
  type TestServer,
  waitFor,
  waitForNoLeftovers,
} from "../support/helpers.ts";

async function entered(
  server: TestServer,
  username: string,
  room = "general",
): Promise<TestClient> {
  const client = await TestClient.connect(server.wsUrl);
  await client.enter(username, room);
  return client;
}

const utf8 = (text: string) => new TextEncoder().encode(text).length;

/**
 * A `GroupChat` frame of exactly `bytes` UTF-8 bytes, made mostly of
 * multi-byte characters, so that a limit counted in UTF-16 units or in
 * characters would not match.
 */
function groupChatOfBytes(sender: string, bytes: number): string {
  const frame = (content: string) =>
    JSON.stringify(envelope("GroupChat", { sender_username: sender, content }));
  const base = utf8(frame(""));
  let content = "€".repeat(Math.floor((bytes - base) / 3)); // 3 bytes each
  content += "é".repeat(((bytes - base) % 3) === 2 ? 1 : 0); // 2 bytes
  content += "x".repeat(((bytes - base) % 3) === 1 ? 1 : 0); // 1 byte
  const text = frame(content);
  assert.equal(utf8(text), bytes);
  assert.ok(text.length < bytes);
  return text;
}

// ---------------------------------------------------------------------------

interface SizeCase {
  name: string;
  kind: "text" | "binary";
  bytes: number;
  closes: boolean;
}

Deno.test("MAX_MESSAGE_BYTES: a frame over it closes with 1009; one at it is fine", async () => {
  const LIMIT = 1024;
  const cases: SizeCase[] = [
    { name: "text at the limit", kind: "text", bytes: LIMIT, closes: false },
    { name: "text one over", kind: "text", bytes: LIMIT + 1, closes: true },
    {
      name: "binary at the limit",
      kind: "binary",
      bytes: LIMIT,
      closes: false,
    },
    { name: "binary one over", kind: "binary", bytes: LIMIT + 1, closes: true },
  ];
  await using server = await serve({ maxMessageBytes: LIMIT });
  await using watcher = await entered(server, "watcher");
  for (const c of cases) {
    const client = await entered(server, "sender");
    try {
      await watcher.expect("Enter");
      if (c.kind === "text") client.send(groupChatOfBytes("sender", c.bytes));
      else client.sendBinary(new Uint8Array(c.bytes).fill(0x41));
      if (c.closes) {
        const closed = await client.closed;
        assert.equal(closed.code, 1009, c.name);
        const left = await watcher.expect("Leave");
        assert.equal(left.sender_username, "sender", c.name);
        assert.equal(left.reason, "disconnected", c.name);
        await watcher.silent(30); // the big frame went nowhere
      } else {
        if (c.kind === "text") {
          const chat = await watcher.expect("GroupChat");
          assert.equal(utf8(chat.content) > LIMIT - 100, true, c.name);
          await client.expect("GroupChat");
        } else {
          assert.equal(
            (await client.expect("Error")).code,
            "unsupported_frame",
          );
        }
        await client.close();
        assert.equal((await watcher.expect("Leave")).reason, "disconnected");
      }
    } finally {
      await client.close();
    }
  }
  await watcher.close();
  await waitForNoLeftovers(server);
});

// ---------------------------------------------------------------------------

interface ContentCase {
  type: "GroupChat" | "PrivateChat";
  content: string;
  accepted: boolean;
}

Deno.test("MAX_CONTENT_CHARS: content at it is accepted, one more is refused", async () => {
  const LIMIT = 10;
  const cases: ContentCase[] = [
    { type: "GroupChat", content: "x".repeat(LIMIT), accepted: true },
    { type: "GroupChat", content: "x".repeat(LIMIT + 1), accepted: false },
    // Characters, not UTF-16 units: an emoji is one character, two units.
    { type: "GroupChat", content: "😀".repeat(LIMIT), accepted: true },
    { type: "GroupChat", content: "😀".repeat(LIMIT + 1), accepted: false },
    { type: "PrivateChat", content: "é".repeat(LIMIT), accepted: true },
    { type: "PrivateChat", content: "é".repeat(LIMIT + 1), accepted: false },
  ];
  await using server = await serve({ maxContentChars: LIMIT });
  await using alice = await entered(server, "alice");
  await using bob = await entered(server, "bob");
  await alice.expect("Enter");
  for (const [index, c] of cases.entries()) {
    const id = `c${index}`;
    alice.send(
      envelope(c.type, {
        sender_username: "alice",
        target_username: "bob",
        content: c.content,
      }, id),
    );
    if (c.accepted) {
      assert.equal((await bob.expect(c.type)).content, c.content);
      await alice.expect(c.type);
      assert.equal((await alice.expect("Ack")).ref, id);
    } else {
      const error = await alice.expect("Error");
      assert.equal(error.code, "invalid_message", JSON.stringify(c));
      assert.equal(error.ref, id);
      assert.match(error.message, /content/);
      await bob.silent(30);
    }
  }
});

// ---------------------------------------------------------------------------

interface StreakCase {
  limit: number;
  /** `E` an error, `A` an accepted message; the last `E` reaches the limit. */
  steps: string;
}

Deno.test("MAX_CONSECUTIVE_ERRORS: the Error reaching it is sent, then 1008; an accepted message resets it", async () => {
  const cases: StreakCase[] = [
    { limit: 1, steps: "E" },
    { limit: 3, steps: "EEAEEAEEE" },
    { limit: 4, steps: "EEEAEEEE" },
  ];
  for (const c of cases) {
    await using server = await serve({ maxConsecutiveErrors: c.limit });
    await using client = await entered(server, "alice");
    for (const [index, step] of [...c.steps].entries()) {
      const last = index === c.steps.length - 1;
      if (step === "A") {
        client.send(
          envelope("GroupChat", { sender_username: "alice", content: "ok" }),
        );
        await client.expect("GroupChat");
        continue;
      }
      client.send(envelope("Nope", {}, `e${index}`));
      const error = await client.expect("Error");
      assert.equal(error.code, "unknown_type");
      assert.equal(error.ref, `e${index}`);
      if (!last) {
        await client.silent(30);
        assert.equal(client.socket.readyState, WebSocket.OPEN, c.steps);
      }
    }
    const closed = await client.closed;
    assert.equal(closed.code, 1008, JSON.stringify(c));
    await waitForNoLeftovers(server);
  }
});

// ---------------------------------------------------------------------------

interface RateCase {
  name: string;
  rate: number;
  burst: number;
  /** GroupChats sent at once. */
  send: number;
  /** How many of them go through. */
  accepted: number;
}

Deno.test("RATE_LIMIT_PER_SECOND / RATE_LIMIT_BURST: burst, then rate_limited and dropped; 0 is no limit", async () => {
  const cases: RateCase[] = [
    { name: "burst of 3", rate: 4, burst: 3, send: 5, accepted: 3 },
    { name: "burst of 1", rate: 4, burst: 1, send: 3, accepted: 1 },
    { name: "0 is no limit", rate: 0, burst: 1, send: 60, accepted: 60 },
    // More than the frames that wait behind one write (64): all of them.
    { name: "burst of 100", rate: 10, burst: 100, send: 100, accepted: 100 },
  ];
  for (const c of cases) {
    await using server = await serve({
      rateLimitPerSecond: c.rate,
      rateLimitBurst: c.burst,
    });
    // The sender's Enter spent a token: wait for the bucket to be full.
    await using watcher = await entered(server, "watcher");
    await using sender = await entered(server, "sender");
    await watcher.expect("Enter");
    if (c.rate > 0) {
      await new Promise((resolve) => setTimeout(resolve, 1000 / c.rate + 50));
    }
    for (let i = 0; i < c.send; i++) {
      sender.send(
        envelope(
          "GroupChat",
          { sender_username: "sender", content: `m${i}` },
          `r${i}`,
        ),
      );
    }
    const acked: string[] = [];
    const refused: string[] = [];
    while (acked.length + refused.length < c.send) {
      const frame = await sender.next();
      if (frame.message_type === "Ack") acked.push(frame.message_body.ref);
      else if (frame.message_type === "Error") {
        assert.equal(frame.message_body.code, "rate_limited", c.name);
        refused.push(frame.message_body.ref);
      } else assert.equal(frame.message_type, "GroupChat");
    }
    const ids = Array.from({ length: c.send }, (_, i) => `r${i}`);
    assert.deepEqual(acked, ids.slice(0, c.accepted), c.name);
    // The Error names the dropped message.
    assert.deepEqual(refused, ids.slice(c.accepted), c.name);
    // The dropped messages reached nobody.
    for (let i = 0; i < c.accepted; i++) {
      assert.equal((await watcher.expect("GroupChat")).content, `m${i}`);
    }
    await watcher.silent(50);
    if (c.rate > 0) {
      // The rate refills the bucket: one more token after 1/rate seconds.
      await new Promise((resolve) => setTimeout(resolve, 1000 / c.rate + 50));
      sender.send(
        envelope("GroupChat", { sender_username: "sender", content: "later" }),
      );
      assert.equal((await watcher.expect("GroupChat")).content, "later");
    }
  }
});

// ---------------------------------------------------------------------------

Deno.test("MAX_CONNECTIONS: the next upgrade gets 503 with Retry-After; a freed slot is reused", async () => {
  await using server = await serve({ maxConnections: 2 });
  const port = server.server.port;
  await using alice = await entered(server, "alice");
  await using bob = await TestClient.connect(server.wsUrl);
  {
    await using refused = await RawPeer.upgrade(port);
    assert.equal(refused.status, 503);
    assert.match(refused.headers, /^retry-after: *\d+\r$/im);
  }
  assert.equal(server.server.runner.openSockets, 2);
  await alice.close();
  await waitFor(() => server.server.runner.openSockets === 1, "slot freed");
  await using carol = await TestClient.connect(server.wsUrl);
  assert.deepEqual(await carol.enter("carol"), ["carol"]);
  {
    await using refused = await RawPeer.upgrade(port);
    assert.equal(refused.status, 503);
  }
  // The refused upgrades took no slot.
  await bob.close();
  await carol.close();
  await waitForNoLeftovers(server);
});

// ---------------------------------------------------------------------------

interface OriginCase {
  name: string;
  allowed: string[];
  origin?: string;
  status: 101 | 403;
}

Deno.test("ALLOWED_ORIGINS: an unlisted Origin gets 403; listed or absent upgrades", async () => {
  const listed = ["https://chat.example", "http://localhost:8000"];
  const cases: OriginCase[] = [
    { name: "listed", allowed: listed, origin: listed[0], status: 101 },
    { name: "second listed", allowed: listed, origin: listed[1], status: 101 },
    {
      name: "unlisted",
      allowed: listed,
      origin: "https://evil.example",
      status: 403,
    },
    {
      name: "listed host, other port",
      allowed: listed,
      origin: "https://chat.example:8443",
      status: 403,
    },
    { name: "opaque origin", allowed: listed, origin: "null", status: 403 },
    { name: "no Origin header", allowed: listed, status: 101 },
    {
      name: "* allows any",
      allowed: ["*"],
      origin: "https://evil.example",
      status: 101,
    },
  ];
  for (const c of cases) {
    await using server = await serve({ allowedOrigins: c.allowed });
    await using peer = await RawPeer.upgrade(
      server.server.port,
      c.origin === undefined ? {} : { Origin: c.origin },
    );
    assert.equal(peer.status, c.status, c.name);
    if (c.status === 101) {
      const welcome = await peer.readJson();
      assert.equal(welcome.message_type, "Welcome", c.name);
    } else {
      assert.equal(server.server.runner.openSockets, 0, c.name);
    }
  }
});

// ---------------------------------------------------------------------------

Deno.test("IDLE_TIMEOUT_SECONDS: a peer that never answers pings is closed; a live one stays", async () => {
  await using server = await serve({ idleTimeoutSeconds: 1 });
  await using watcher = await entered(server, "watcher");
  await using dead = await RawPeer.upgrade(server.server.port);
  assert.equal(dead.status, 101);
  await dead.sendText(
    JSON.stringify(envelope("Enter", { sender_username: "dead" })),
  );
  assert.equal((await watcher.expect("Enter")).sender_username, "dead");
  const start = Date.now();
  // Reads (pings included) but never answers one.
  assert.equal(await dead.waitForEnd(3000), true, "closed within 3 s");
  const took = Date.now() - start;
  assert.ok(
    took >= 500,
    `closed after ${took} ms, before any ping could go unanswered`,
  );
  const left = await watcher.expect("Leave");
  assert.deepEqual([left.sender_username, left.reason], [
    "dead",
    "disconnected",
  ]);
  // The WebSocket client answers pings: still open after 2.5 timeouts.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 2500 - took)));
  assert.equal(watcher.socket.readyState, WebSocket.OPEN);
  watcher.send(
    envelope("GroupChat", { sender_username: "watcher", content: "alive" }),
  );
  assert.equal((await watcher.expect("GroupChat")).content, "alive");
  await watcher.close();
  await waitForNoLeftovers(server);
});

// ---------------------------------------------------------------------------

Deno.test("MAX_BUFFERED_BYTES: a slow consumer is dropped; the others get every message", async () => {
  const overrides: Partial<Config> = {
    maxBufferedBytes: 65536,
    maxContentChars: 60_000,
    rateLimitPerSecond: 0,
  };
  await using server = await serve(overrides);
  await using reader = await entered(server, "reader", "flood");
  await using flooder = await entered(server, "flooder", "flood");
  await reader.expect("Enter");
  await using slow = await RawPeer.upgrade(server.server.port);
  await slow.sendText(
    JSON.stringify(
      envelope("Enter", { sender_username: "slow", room: "flood" }),
    ),
  );
  await reader.expect("Enter");
  await flooder.expect("Enter");
  assert.equal(server.server.runner.state.connections.size, 3);

  const content = "y".repeat(8000);
  const WINDOW = 8;
  const MAX = 5000; // 40 MB: far more than the socket buffers hold
  let sent = 0;
  let acked = 0;
  let leftAt = -1;
  const seqs: number[] = [];
  // The reader takes everything: GroupChats and the slow one's Leave.
  const reading = (async () => {
    while (leftAt < 0 || seqs.length < sent) {
      const frame = await reader.next(5000);
      if (frame.message_type === "GroupChat") {
        seqs.push(frame.message_body.seq);
      } else if (frame.message_type === "Leave") {
        assert.equal(frame.message_body.sender_username, "slow");
        assert.equal(frame.message_body.reason, "disconnected");
        leftAt = seqs.length;
      } else throw new Error(`unexpected ${JSON.stringify(frame)}`);
    }
  })();
  // The flooder keeps a window of messages in flight, until some time
  // after the slow one was dropped.
  const extra = 20;
  while (sent < MAX && (leftAt < 0 || sent < leftAt + extra)) {
    while (sent - acked < WINDOW) {
      flooder.send(
        envelope("GroupChat", {
          sender_username: "flooder",
          content,
        }, `f${sent}`),
      );
      sent++;
    }
    const frame = await flooder.next(5000);
    if (frame.message_type === "Ack") acked++;
    else if (frame.message_type === "Leave") {
      assert.equal(frame.message_body.sender_username, "slow");
    } else if (frame.message_type !== "GroupChat") {
      throw new Error(`unexpected ${JSON.stringify(frame)}`);
    }
  }
  while (acked < sent) {
    if ((await flooder.next(5000)).message_type === "Ack") acked++;
  }
  await reading;
  assert.ok(leftAt >= 0, `slow consumer never dropped after ${sent} messages`);
  // The reader got every message, in order, with no gap.
  assert.deepEqual(seqs, Array.from({ length: sent }, (_, i) => i + 1));
  // The slow one is gone from the rules' state.
  const state = server.server.runner.state;
  assert.equal(state.connections.size, 2);
  assert.equal(state.users.has("slow"), false);
  assert.deepEqual([...(state.rooms.get("flood")?.users.keys() ?? [])].sort(), [
    "flooder",
    "reader",
  ]);
  slow.close();
  await reader.close();
  await flooder.close();
  await waitForNoLeftovers(server);
});

Deno.test("MAX_BUFFERED_BYTES: a burst over the limit to members that read is no reason to drop them", async () => {
  const SENDERS = 4;
  const EACH = 2;
  await using server = await serve({
    maxBufferedBytes: 65536,
    maxContentChars: 60_000,
    rateLimitPerSecond: 0,
  });
  const clients: TestClient[] = [];
  try {
    for (let i = 0; i <= SENDERS; i++) {
      clients.push(await entered(server, `u${i}`, "burst"));
    }
    for (const [i, client] of clients.entries()) {
      for (let k = i + 1; k <= SENDERS; k++) await client.expect("Enter");
    }
    // 8 x 30 kB at once: each member is handed far more than 64 kB in one go.
    const content = "b".repeat(30_000);
    for (let n = 0; n < EACH; n++) {
      for (let s = 1; s <= SENDERS; s++) {
        (clients[s] as TestClient).send(
          envelope("GroupChat", { sender_username: `u${s}`, content }),
        );
      }
    }
    for (const client of clients) {
      const seqs: number[] = [];
      while (seqs.length < SENDERS * EACH) {
        seqs.push((await client.expect("GroupChat")).seq);
      }
      assert.deepEqual(
        seqs,
        Array.from({ length: SENDERS * EACH }, (_, i) => i + 1),
      );
      await client.silent(0);
    }
    assert.equal(server.server.runner.state.connections.size, SENDERS + 1);
  } finally {
    for (const client of clients) await client.close();
  }
  await waitForNoLeftovers(server);
});

/** Keeps this process's event loop (the server's too) busy for `ms`. */
function block(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy on purpose: the server must see its timers run late
  }
}

Deno.test("overload: a lagging event loop sheds chat with rate_limited and 503, then recovers", async () => {
  await using server = await serve({}, { overloadLagMs: OVERLOAD_LAG_MS });
  await using alice = await entered(server, "alice");
  await using bob = await entered(server, "bob");
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  // The sweeps must find their timers late several times in a row.
  const deadline = Date.now() + 5000;
  while (!server.server.runner.overloaded && Date.now() < deadline) {
    block(150);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.ok(server.server.runner.overloaded, "overload was never detected");

  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "hi" }, "g1"),
  );
  const refused = await alice.expect("Error");
  assert.equal(refused.code, "rate_limited");
  assert.equal(refused.ref, "g1");
  assert.match(refused.message, /overloaded/);
  const health = await (await fetch(`${server.httpUrl}/healthz`)).json();
  assert.equal(health.overloaded, true);
  await using peer = await RawPeer.upgrade(server.server.port);
  assert.equal(peer.status, 503);

  await waitFor(
    () => !server.server.runner.overloaded,
    "the load to be normal again",
  );
  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "back" }, "g2"),
  );
  assert.equal((await alice.expect("GroupChat")).content, "back");
  assert.equal((await alice.expect("Ack")).ref, "g2");
  assert.equal((await bob.expect("GroupChat")).content, "back");
  assert.equal(
    alice.socket.readyState,
    WebSocket.OPEN,
    "refusals closed nobody",
  );
});
