/**
 * Abuse resistance against a running server (issue 13): origins, security
 * headers, the sign-in deadline, per-address and unauthenticated caps (from
 * real source addresses 127.0.0.2 and 127.0.0.3, through
 * `Deno.createHttpClient({ localAddress })`, and through `TRUSTED_PROXIES`
 * and `X-Forwarded-For` for the rest), the token API's body limits,
 * look-alike and mixed-script names, blank content, and the real bound in
 * error texts.
 *
 * Why this file is long: issue 13 is one concern, one section per defence
 * above, each with its case table; kept together so that what the server
 * refuses to strangers is one place to look.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ADMIN, api, connectWithToken, tempDb } from "../support/db_helpers.ts";
import {
  envelope,
  RawPeer,
  serve,
  TestClient,
  type TestServer,
  WAIT_MS,
  waitFor,
} from "../support/helpers.ts";
import { answerTo, startCluster } from "../support/cluster_helpers.ts";
import { main as tokenCli } from "../../tools/token_cli.ts";
import { createState, reduce } from "../../src/chat/reducer.ts";

/** Sends an upgrade request by hand with exactly `headers`; returns the status and head. */
async function rawUpgrade(
  port: number,
  headers: Record<string, string>,
): Promise<{ status: number; head: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [
      "GET /ws HTTP/1.1",
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    const buffer = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      head += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return { status: Number(head.split(" ")[1]), head };
  } finally {
    conn.close();
  }
}

// Origins -------------------------------------------------------------------

type OriginCase = {
  name: string;
  allowed?: string[];
  headers: (port: number) => Record<string, string>;
  status: 101 | 403;
};

const ORIGINS: readonly OriginCase[] = [
  {
    name: "no Origin (not a browser)",
    headers: (port) => ({ Host: `127.0.0.1:${port}` }),
    status: 101,
  },
  {
    name: "the page's own origin under 127.0.0.1",
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: `http://127.0.0.1:${port}`,
    }),
    status: 101,
  },
  {
    name: "the page's own origin under localhost",
    headers: (port) => ({
      Host: `localhost:${port}`,
      Origin: `http://localhost:${port}`,
    }),
    status: 101,
  },
  {
    name: "a foreign origin",
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: "https://evil.example",
    }),
    status: 403,
  },
  {
    name: "another port of the same host",
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: `http://127.0.0.1:${port + 1}`,
    }),
    status: 403,
  },
  {
    name: "a foreign origin with ALLOWED_ORIGINS=*",
    allowed: ["*"],
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: "https://evil.example",
    }),
    status: 101,
  },
  {
    name: "a listed origin",
    allowed: ["https://app.example"],
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: "https://app.example",
    }),
    status: 101,
  },
  {
    name: "the page's own origin when only another origin is listed",
    allowed: ["https://app.example"],
    headers: (port) => ({
      Host: `127.0.0.1:${port}`,
      Origin: `http://127.0.0.1:${port}`,
    }),
    status: 403,
  },
];

for (const { name, allowed, headers, status } of ORIGINS) {
  Deno.test(`origins: ${name} -> ${status}`, async () => {
    await using server = await serve({
      logLevel: "warn",
      ...(allowed ? { allowedOrigins: allowed } : {}),
    });
    const answer = await rawUpgrade(
      server.server.port,
      headers(server.server.port),
    );
    assert.equal(answer.status, status, answer.head);
    if (status === 403) {
      assert.ok(
        server.logs.some((line) =>
          line.msg === "upgrade refused: origin not allowed"
        ),
        "the refusal is logged",
      );
    }
  });
}

Deno.test("origins: refusals are logged once per 10 s, with how many there were", async () => {
  await using server = await serve({ logLevel: "warn" });
  const port = server.server.port;
  for (let i = 0; i < 5; i++) {
    const answer = await rawUpgrade(port, {
      Host: `127.0.0.1:${port}`,
      Origin: `https://evil${i}.example`,
    });
    assert.equal(answer.status, 403);
  }
  const lines = server.logs.filter((line) =>
    line.msg === "upgrade refused: origin not allowed"
  );
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.origin, "https://evil0.example");
});

Deno.test("origins: ALLOWED_ORIGINS=* logs a warning at start; the default does not", async () => {
  await using open = await serve({ allowedOrigins: ["*"], logLevel: "warn" });
  assert.ok(
    open.logs.some((line) => /ALLOWED_ORIGINS=\*/.test(String(line.msg))),
  );
  await using closed = await serve({ logLevel: "warn" });
  assert.ok(
    !closed.logs.some((line) => /ALLOWED_ORIGINS/.test(String(line.msg))),
  );
});

Deno.test("origins: /api/upgrade-check tells a page whether its origin may connect", async () => {
  await using server = await serve({ allowedOrigins: ["https://app.example"] });
  const check = async (origin: string) =>
    await (await fetch(
      `${server.httpUrl}/api/upgrade-check?origin=${
        encodeURIComponent(origin)
      }`,
    )).json();
  assert.deepEqual(await check(server.httpUrl), {
    origin: server.httpUrl,
    origin_allowed: false,
    token_at_upgrade: false,
  });
  assert.equal((await check("https://app.example")).origin_allowed, true);
});

// Headers -------------------------------------------------------------------

type HeaderCase = {
  path: string;
  init?: RequestInit;
  cacheControl: "no-store" | null;
  page: boolean;
};

const HEADERS: readonly HeaderCase[] = [
  { path: "/", cacheControl: null, page: true },
  { path: "/healthz", cacheControl: "no-store", page: false },
  { path: "/metrics", cacheControl: "no-store", page: false },
  {
    path: "/api/tokens",
    init: { method: "POST", body: "{}" },
    cacheControl: "no-store",
    page: false,
  },
  { path: "/api/upgrade-check", cacheControl: "no-store", page: false },
  { path: "/nowhere", cacheControl: "no-store", page: false },
];

for (const { path, init, cacheControl, page } of HEADERS) {
  Deno.test(`headers: ${init?.method ?? "GET"} ${path} forbids framing and sniffing`, async () => {
    await using server = await serve({ adminToken: ADMIN });
    const response = await fetch(`${server.httpUrl}${path}`, init);
    await response.body?.cancel();
    const h = response.headers;
    assert.equal(h.get("x-frame-options"), "DENY");
    assert.equal(h.get("x-content-type-options"), "nosniff");
    assert.equal(h.get("referrer-policy"), "no-referrer");
    const csp = h.get("content-security-policy") ?? "";
    assert.match(csp, /frame-ancestors 'none'/);
    if (page) assert.match(csp, /script-src 'sha256-/);
    if (cacheControl) assert.equal(h.get("cache-control"), cacheControl);
  });
}

// The sign-in deadline ------------------------------------------------------

Deno.test("deadline: auth off, a socket that sends no Enter is closed with 1008; one that does stays", async () => {
  await using server = await serve({ authTimeoutSeconds: 1 });
  await using idle = await TestClient.connect(server.wsUrl);
  await using entered = await TestClient.connect(server.wsUrl);
  await entered.enter("alice");
  const closed = await idle.closed;
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /no Enter in time/);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(entered.socket.readyState, WebSocket.OPEN);
});

Deno.test("deadline: auth on, a socket with no token is closed with 1008; one with a token stays", async () => {
  await using db = await tempDb();
  await using server = await serve({
    authEnabled: true,
    adminToken: ADMIN,
    databasePath: db.path,
    authTimeoutSeconds: 1,
  });
  const issued = await api(server.httpUrl, "POST", "/api/tokens", {
    username: "alice",
  });
  const { token } = issued.body as { token: string };
  await using anonymous = await TestClient.connect(server.wsUrl);
  await using alice = await connectWithToken(server.wsUrl, token);
  const closed = await anonymous.closed;
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /no valid token in time/);
  assert.equal(alice.socket.readyState, WebSocket.OPEN);
});

Deno.test("deadline: TOKEN_AT_UPGRADE refuses an upgrade without a token with 401", async () => {
  await using server = await serve({
    authEnabled: true,
    tokenAtUpgrade: true,
    adminToken: ADMIN,
  });
  const answer = await rawUpgrade(server.server.port, {
    Host: `127.0.0.1:${server.server.port}`,
  });
  assert.equal(answer.status, 401);
  const check = await (await fetch(`${server.httpUrl}/api/upgrade-check`))
    .json();
  assert.equal(check.token_at_upgrade, true);
});

// Per-address caps ----------------------------------------------------------

/** Upgrades through the "proxy" 127.0.0.1 for `client`. */
function fromAddress(server: TestServer, client: string): Promise<RawPeer> {
  return RawPeer.upgrade(server.server.port, { "X-Forwarded-For": client });
}

Deno.test("per address: MAX_CONNECTIONS_PER_IP refuses the next upgrade from that address with 429 + Retry-After", async () => {
  await using server = await serve({
    maxConnectionsPerIp: 2,
    trustedProxies: ["127.0.0.1"],
  });
  await using a1 = await fromAddress(server, "203.0.113.7");
  await using a2 = await fromAddress(server, "203.0.113.7");
  assert.equal(a1.status, 101);
  assert.equal(a2.status, 101);
  await using a3 = await fromAddress(server, "203.0.113.7");
  assert.equal(a3.status, 429);
  assert.match(a3.headers, /retry-after: \d+/i);
  // Another address is counted apart.
  await using b1 = await fromAddress(server, "198.51.100.2");
  assert.equal(b1.status, 101);
  // A closed socket frees its place.
  a1.conn.close();
  await waitFor(async () => {
    await using again = await fromAddress(server, "203.0.113.7");
    return again.status === 101;
  }, "a place freed");
});

/**
 * Deno's `WebSocket` takes an HTTP client (and so its local address) as an
 * option; the DOM library that the web client's files bring into one type
 * check declares only `protocols` there.
 */
const DenoWebSocket = WebSocket as unknown as new (
  url: string,
  options: { client: Deno.HttpClient },
) => WebSocket;

/** A WebSocket from `client`'s local address; `null` when the upgrade is refused. */
function openFrom(
  url: string,
  client: Deno.HttpClient,
): Promise<WebSocket | null> {
  const socket = new DenoWebSocket(url, { client });
  return new Promise((resolve) => {
    socket.onopen = () => resolve(socket);
    socket.onerror = () => {};
    socket.onclose = () => resolve(null);
  });
}

/** Closes `socket` and waits for its close. */
async function closeSocket(socket: WebSocket | null): Promise<void> {
  if (!socket || socket.readyState === WebSocket.CLOSED) return;
  const closed = new Promise((resolve) => socket.onclose = resolve);
  socket.close();
  await closed;
}

Deno.test("per address: MAX_CONNECTIONS_PER_IP counts real source addresses (127.0.0.2 and 127.0.0.3, no proxy)", async () => {
  await using server = await serve({ maxConnectionsPerIp: 2 });
  const two = Deno.createHttpClient({ localAddress: "127.0.0.2" });
  const three = Deno.createHttpClient({ localAddress: "127.0.0.3" });
  const sockets: (WebSocket | null)[] = [];
  try {
    sockets.push(await openFrom(server.wsUrl, two));
    sockets.push(await openFrom(server.wsUrl, two));
    assert.ok(sockets[0] && sockets[1], "two let in");
    const third = await openFrom(server.wsUrl, two);
    sockets.push(third);
    assert.equal(third, null, "the third from 127.0.0.2 is refused");
    const other = await openFrom(server.wsUrl, three);
    sockets.push(other);
    assert.ok(other !== null, "127.0.0.3 is counted apart");
  } finally {
    for (const socket of sockets) await closeSocket(socket);
    two.close();
    three.close();
  }
});

Deno.test("per address: X-Forwarded-For from a peer not in TRUSTED_PROXIES is ignored", async () => {
  await using server = await serve({ maxConnectionsPerIp: 2 });
  await using a1 = await fromAddress(server, "203.0.113.7");
  await using a2 = await fromAddress(server, "198.51.100.2");
  await using a3 = await fromAddress(server, "192.0.2.9");
  assert.deepEqual([a1.status, a2.status, a3.status], [101, 101, 429]);
});

Deno.test("per address: only a few sockets that have not signed in yet; one that signs in frees a place", async () => {
  await using server = await serve({
    maxConnectionsPerIp: 0,
    maxUnauthenticatedPerIp: 4,
    trustedProxies: ["127.0.0.1"],
  });
  const peers: RawPeer[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const peer = await fromAddress(server, "203.0.113.8");
      peers.push(peer);
      assert.equal(peer.status, 101);
    }
    await using over = await fromAddress(server, "203.0.113.8");
    assert.equal(over.status, 429);
    // Other addresses still get in.
    await using other = await fromAddress(server, "203.0.113.9");
    assert.equal(other.status, 101);
    // One of them enters: it is no longer waiting, and a place is free.
    await waitFor(
      () => server.server.runner.state.connections.size >= peers.length,
      "sockets opened",
    );
    await peers[0]?.sendText(JSON.stringify(
      envelope("Enter", { sender_username: "early" }),
    ));
    await waitFor(
      () => server.server.runner.state.users.has("early"),
      "early entered",
    );
    await using next = await fromAddress(server, "203.0.113.8");
    assert.equal(next.status, 101);
  } finally {
    for (const peer of peers) await peer[Symbol.asyncDispose]();
  }
});

Deno.test("in all: MAX_UNAUTHENTICATED refuses the next socket that has not signed in with 503, from any address", async () => {
  await using server = await serve({
    maxUnauthenticated: 3,
    trustedProxies: ["127.0.0.1"],
  });
  const peers: RawPeer[] = [];
  try {
    for (const address of ["192.0.2.1", "192.0.2.2", "192.0.2.3"]) {
      const peer = await fromAddress(server, address);
      peers.push(peer);
      assert.equal(peer.status, 101);
    }
    await using over = await fromAddress(server, "192.0.2.4");
    assert.equal(over.status, 503);
    assert.match(over.headers, /retry-after: 10/i);
    const health = await (await fetch(`${server.httpUrl}/healthz`)).json();
    assert.equal(health.near_limit, true);
    assert.equal(health.unauthenticated, 3);
  } finally {
    for (const peer of peers) await peer[Symbol.asyncDispose]();
  }
});

Deno.test("healthz: near_limit and status full when the connections are (nearly) all taken", async () => {
  await using server = await serve({ maxConnections: 2 });
  const health = async () =>
    await (await fetch(`${server.httpUrl}/healthz`)).json();
  const calm = await health();
  assert.equal(calm.status, "ok");
  assert.equal(calm.near_limit, false);
  await using a = await TestClient.connect(server.wsUrl);
  await using b = await TestClient.connect(server.wsUrl);
  const full = await health();
  assert.equal(full.status, "full");
  assert.equal(full.near_limit, true);
  assert.equal(full.limits.max_connections, 2);
  assert.equal(full.unauthenticated, 2);
  void a, b;
});

// Token API bodies ----------------------------------------------------------

Deno.test("token API: a declared body over 16 KiB gets 413 unread; a chunked one is cut at 16 KiB", async () => {
  await using server = await serve({ adminToken: ADMIN });
  const big = JSON.stringify({ username: "a", pad: "x".repeat(20_000) });
  const declared = await fetch(`${server.httpUrl}/api/tokens`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${ADMIN}`,
      "content-type": "application/json",
    },
    body: big,
  });
  assert.equal(declared.status, 413);
  assert.match((await declared.json()).error, /at most 16384 bytes/);
  // A stream has no Content-Length: it goes chunked, and is counted.
  let sent = 0;
  const chunk = new TextEncoder().encode("x".repeat(4096));
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      // Endless unless the server stops reading; 1 MiB at most here.
      if (sent >= 1 << 20) return controller.close();
      sent += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  const chunked = await fetch(`${server.httpUrl}/api/tokens`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${ADMIN}`,
      "content-type": "application/json",
    },
    body: stream,
  });
  assert.equal(chunked.status, 413);
  await chunked.body?.cancel();
});

type TypeCase = { type: string | null; status: number };
const TYPES: readonly TypeCase[] = [
  { type: "application/json", status: 201 },
  { type: "application/json; charset=utf-8", status: 201 },
  { type: "text/plain", status: 415 },
  { type: "application/x-www-form-urlencoded", status: 415 },
  { type: null, status: 415 },
];

for (const { type, status } of TYPES) {
  Deno.test(`token API: Content-Type ${type ?? "(none)"} -> ${status}`, async () => {
    await using server = await serve({ adminToken: ADMIN });
    const headers: Record<string, string> = {
      authorization: `Bearer ${ADMIN}`,
    };
    if (type) headers["content-type"] = type;
    const answer = await fetch(`${server.httpUrl}/api/tokens`, {
      method: "POST",
      headers,
      body: new TextEncoder().encode(JSON.stringify({ username: "alice" })),
    });
    assert.equal(answer.status, status);
    await answer.body?.cancel();
  });
}

// Names ---------------------------------------------------------------------

/** Names one script or an allowed CJK mix (taken) or mixing scripts (refused). */
const SCRIPTS: readonly { name: string; ok: boolean; what: string }[] = [
  { name: "alice_1", ok: true, what: "ASCII" },
  { name: "Ελληνικά", ok: true, what: "Greek alone" },
  { name: "Москва", ok: true, what: "Cyrillic alone" },
  { name: "名前a1", ok: true, what: "Han with Latin and digits" },
  { name: "ひらがなカタカナ漢字", ok: true, what: "Japanese" },
  { name: "한국어漢字abc", ok: true, what: "Korean with Latin" },
  { name: "ㄅㄆ漢abc", ok: true, what: "Chinese with Bopomofo and Latin" },
  { name: "ＡＬＩＣＥ", ok: true, what: "fullwidth Latin" },
  { name: "\u0430dmin", ok: false, what: "Cyrillic а among Latin" },
  { name: "p\u0430yp\u0430l", ok: false, what: "Cyrillic а twice among Latin" },
  { name: "\u03b1lpha", ok: false, what: "Greek α among Latin" },
  { name: "Москвa", ok: false, what: "Latin a among Cyrillic" },
  { name: "ひらがなㄅ", ok: false, what: "Hiragana with Bopomofo" },
  { name: "한국어ひらがな", ok: false, what: "Hangul with Hiragana" },
];

for (const { name, ok, what } of SCRIPTS) {
  Deno.test(`names: '${name}' (${what}) is ${ok ? "taken" : "refused"} by Enter, the token API and deno task token`, async () => {
    await using server = await serve({ adminToken: ADMIN });
    await using client = await TestClient.connect(server.wsUrl);
    client.send(envelope("Enter", { sender_username: name }, "e1"));
    const frame = await client.next();
    if (ok) assert.equal(frame.message_type, "Presence");
    else {
      assert.equal(frame.message_type, "Error");
      assert.equal(frame.message_body.code, "invalid_message");
      assert.match(frame.message_body.message, /must not mix scripts/);
    }
    const issued = await api(server.httpUrl, "POST", "/api/tokens", {
      username: name,
    });
    assert.equal(issued.status, ok ? 201 : 400, JSON.stringify(issued.body));
    await using db = await tempDb();
    const lines: string[] = [];
    const code = await tokenCli(["--database", db.path, "create", name], {
      env: {},
      dotenv: undefined,
      out: (line) => lines.push(line),
      err: (line) => lines.push(line),
    });
    assert.equal(code === 0, ok, lines.join("\n"));
  });
}

/** Look-alikes of `Alice`, each refused while `Alice` is held (auth off). */
const LOOKALIKES: readonly string[] = [
  "alice",
  "ALICE",
  "aLiCe",
  "ＡＬＩＣＥ",
  "ａｌｉｃｅ",
];

for (const name of LOOKALIKES) {
  Deno.test(`names: '${name}' is username_taken while Alice is connected, free once she leaves`, async () => {
    await using server = await serve();
    await using alice = await TestClient.connect(server.wsUrl);
    await alice.enter("Alice");
    await using other = await TestClient.connect(server.wsUrl);
    other.send(envelope("Enter", { sender_username: name }, "e1"));
    const refused = await other.expect("Error");
    assert.equal(refused.code, "username_taken");
    assert.match(refused.message, /as 'Alice'/);
    await alice.close();
    await waitFor(
      () => !server.server.runner.state.users.has("Alice"),
      "Alice gone",
    );
    other.send(envelope("Enter", { sender_username: name }, "e2"));
    assert.deepEqual((await other.expect("Presence")).members, [name]);
  });
}

// Content -------------------------------------------------------------------

const BLANK: readonly { content: string; what: string }[] = [
  { content: " ", what: "a space" },
  { content: "  \n\t\r\n ", what: "spaces and newlines" },
  { content: "\u200b", what: "U+200B zero width space" },
  { content: "\u202e", what: "U+202E right-to-left override" },
  {
    content: "\u00a0\u3000\u2060\ufeff",
    what: "no-break, ideographic space, word joiner, BOM",
  },
  { content: "\u200b \u200d\n", what: "invisibles and whitespace" },
  { content: "\u3164\u3164", what: "U+3164 Hangul filler" },
  { content: "\u115f\u1160\uffa0", what: "other Hangul fillers" },
  { content: "\u2800 \u2800", what: "U+2800 braille blank" },
  { content: "\ufe0f\u034f", what: "a variation selector and CGJ" },
];

for (const { content, what } of BLANK) {
  Deno.test(`content: ${what} only is invalid_message`, async () => {
    await using server = await serve();
    await using client = await TestClient.connect(server.wsUrl);
    await client.enter("alice");
    client.send(
      envelope("GroupChat", { sender_username: "alice", content }, "g1"),
    );
    const error = await client.expect("Error");
    assert.equal(error.code, "invalid_message");
    assert.equal(error.ref, "g1");
    assert.match(error.message, /content: must contain something visible/);
    client.send(envelope("PrivateChat", {
      sender_username: "alice",
      target_username: "alice",
      content,
    }, "p1"));
    assert.equal((await client.expect("Error")).code, "invalid_message");
  });
}

Deno.test("content: visible text with invisibles around it is taken", async () => {
  await using server = await serve();
  await using client = await TestClient.connect(server.wsUrl);
  await client.enter("alice");
  client.send(envelope("GroupChat", {
    sender_username: "alice",
    content: "\u200bhi ",
  }, "g1"));
  assert.equal((await client.expect("GroupChat")).content, "\u200bhi ");
});

// Bounds in error texts -----------------------------------------------------

const BOUNDS: readonly {
  body: Record<string, unknown>;
  type: string;
  text: RegExp;
}[] = [
  {
    type: "Enter",
    body: { sender_username: "alice", history: 1e308 },
    text: /message_body\.history: must be at most 100$/,
  },
  {
    type: "Enter",
    body: { sender_username: "alice", history: 101 },
    text: /message_body\.history: must be at most 100$/,
  },
  {
    type: "Enter",
    body: { sender_username: "alice", history: -1 },
    text: /message_body\.history: must be at least 0$/,
  },
  {
    type: "Enter",
    body: { sender_username: "alice", history: 1.5 },
    text: /message_body\.history: must be an integer$/,
  },
  {
    type: "History",
    body: { room: "general", limit: 1e308 },
    text: /message_body\.limit: must be at most 100$/,
  },
];

for (const { type, body, text } of BOUNDS) {
  Deno.test(`bounds: ${type} ${JSON.stringify(body)} states the real bound`, async () => {
    await using server = await serve();
    await using client = await TestClient.connect(server.wsUrl);
    client.send(envelope(type, body, "x"));
    const error = await client.expect("Error");
    assert.equal(error.code, "invalid_message");
    assert.match(error.message, text);
  });
}

Deno.test("startup: AUTH_ENABLED without ADMIN_TOKEN warns that only deno task token issues tokens", async () => {
  await using server = await serve({ authEnabled: true, logLevel: "warn" });
  assert.ok(
    server.logs.some((line) => /deno task token/.test(String(line.msg))),
  );
});

// Cluster -------------------------------------------------------------------

Deno.test("names, cluster: a name held on node A is taken on node B in every case and width, and free once it closes", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.nodes as [TestServer, TestServer];
  await using bob = await TestClient.connect(a.wsUrl);
  await bob.enter("Bob", "r");
  await using other = await TestClient.connect(b.wsUrl);
  for (const [i, name] of ["bob", "BOB", "ｂｏｂ"].entries()) {
    const { answer } = await answerTo(
      other,
      "Enter",
      {
        sender_username: name,
        room: "r",
      },
      `e${i}`,
      WAIT_MS,
    );
    assert.equal(answer.message_body.code, "username_taken", name);
  }
  await bob.close();
  await waitFor(async () => {
    const { answer } = await answerTo(
      other,
      "Enter",
      {
        sender_username: "bob",
        room: "r",
      },
      `again-${crypto.randomUUID()}`,
      WAIT_MS,
    );
    return answer.message_type === "Ack";
  }, "bob free on node B");
});

// The deadline in the reducer -----------------------------------------------

type DeadlineCase = {
  name: string;
  authEnabled: boolean;
  /** What the connection sends at 100 ms, if anything. */
  frame?: string;
  /** Tick times (ms) and whether a 1008 close comes at that tick. */
  ticks: readonly [number, boolean][];
};

const DEADLINES: readonly DeadlineCase[] = [
  {
    name: "auth off, no Enter: closed at the first tick at or after 1000 ms",
    authEnabled: false,
    ticks: [[999, false], [1000, true], [2000, false]],
  },
  {
    name: "auth off, Enter at 100 ms: never closed",
    authEnabled: false,
    frame: JSON.stringify(envelope("Enter", { sender_username: "ann" })),
    ticks: [[1000, false], [5000, false]],
  },
  {
    name: "auth off, a refused Enter does not count: closed",
    authEnabled: false,
    frame: JSON.stringify(envelope("Enter", { sender_username: "\u0430dmin" })),
    ticks: [[1500, true]],
  },
  {
    name: "auth on, no token: closed",
    authEnabled: true,
    frame: JSON.stringify(envelope("Enter", { sender_username: "ann" })),
    ticks: [[999, false], [1200, true]],
  },
];

for (const { name, authEnabled, frame, ticks } of DEADLINES) {
  Deno.test(`deadline (reducer): ${name}`, () => {
    let state = createState({
      serverName: "t",
      authEnabled,
      defaultRoom: "general",
      maxMessageBytes: 65536,
      maxContentChars: 4000,
      maxRoomsPerConnection: 50,
      rateLimitPerSecond: 0,
      rateLimitBurst: 40,
      maxConsecutiveErrors: 10,
      authTimeoutMs: 1000,
    });
    [state] = reduce(state, { type: "open", conn: 1, now: 0, publicId: "p" });
    if (frame) {
      [state] = reduce(state, {
        type: "frame",
        conn: 1,
        now: 100,
        text: frame,
        size: frame.length,
        id: "m1",
      });
    }
    for (const [now, closes] of ticks) {
      const [next, effects] = reduce(state, { type: "tick", now });
      state = next;
      const close = effects.find((effect) => effect.type === "close");
      assert.equal(close !== undefined, closes, `tick at ${now}`);
      if (close?.type === "close") assert.equal(close.code, 1008);
    }
  });
}
