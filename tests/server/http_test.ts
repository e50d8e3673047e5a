/**
 * The HTTP side of the server: `/healthz`, `/metrics`, the web page, the
 * refusals (404, 405, 426) and the token API's absence without ADMIN_TOKEN.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  serve,
  TestClient,
  type TestServer,
  WAIT_MS,
} from "../support/helpers.ts";

/** Polls `read` until `check` holds on its result; returns that result. */
async function eventually<T>(
  read: () => Promise<T>,
  check: (value: T) => boolean,
  what: string,
): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out: ${what}; last ${JSON.stringify(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** GETs `path` and reads the whole answer. */
async function get(
  server: TestServer,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const response = await fetch(`${server.httpUrl}${path}`, init);
  return {
    status: response.status,
    headers: response.headers,
    text: await response.text(),
  };
}

interface Health {
  status: string;
  uptime_seconds: number;
  connections: number;
  [field: string]: unknown;
}

async function health(server: TestServer): Promise<Health> {
  const { status, headers, text } = await get(server, "/healthz");
  assert.equal(status, 200);
  assert.match(headers.get("content-type") ?? "", /^application\/json/);
  return JSON.parse(text);
}

/** One sample of the Prometheus text: `name{labels}` to its value. */
type Samples = Map<string, number>;

async function scrape(server: TestServer): Promise<Samples> {
  const { status, headers, text } = await get(server, "/metrics");
  assert.equal(status, 200);
  assert.match(headers.get("content-type") ?? "", /^text\/plain/);
  const samples: Samples = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** A sample's value; an absent labelled counter counts as 0. */
function sample(samples: Samples, key: string): number {
  return samples.get(key) ?? 0;
}

// /healthz ------------------------------------------------------------------

Deno.test("GET /healthz: 200 JSON with status ok, uptime_seconds and connections", async () => {
  await using server = await serve();
  const body = await health(server);
  assert.equal(body.status, "ok");
  assert.equal(typeof body.uptime_seconds, "number");
  assert.ok(Number.isInteger(body.uptime_seconds) && body.uptime_seconds >= 0);
  assert.equal(body.connections, 0);
});

Deno.test("GET /healthz: connections tracks the open clients", async () => {
  await using server = await serve();
  const alice = await TestClient.connect(server.wsUrl);
  assert.equal((await health(server)).connections, 1);
  const bob = await TestClient.connect(server.wsUrl);
  assert.equal((await health(server)).connections, 2);
  await alice.close();
  await eventually(
    () => health(server),
    (body) => body.connections === 1,
    "connections back to 1",
  );
  await bob.close();
  await eventually(
    () => health(server),
    (body) => body.connections === 0,
    "connections back to 0",
  );
});

Deno.test("HEAD /healthz answers 200 without a body", async () => {
  await using server = await serve();
  const { status, text } = await get(server, "/healthz", { method: "HEAD" });
  assert.equal(status, 200);
  assert.equal(text, "");
});

// /metrics ------------------------------------------------------------------

Deno.test("GET /metrics: Prometheus text with every chat metric declared", async () => {
  await using server = await serve();
  const { text } = await get(server, "/metrics");
  for (
    const [name, type] of [
      ["chat_connections", "gauge"],
      ["chat_rooms", "gauge"],
      ["chat_frames_in_total", "counter"],
      ["chat_frames_out_total", "counter"],
      ["chat_errors_total", "counter"],
      ["chat_closes_total", "counter"],
    ]
  ) {
    assert.match(text, new RegExp(`^# HELP ${name} `, "m"), name);
    assert.match(text, new RegExp(`^# TYPE ${name} ${type}$`, "m"), name);
  }
  const samples = await scrape(server);
  assert.equal(samples.get("chat_connections"), 0);
  assert.equal(samples.get("chat_rooms"), 0);
  // A single node has no cluster to report on.
  assert.doesNotMatch(text, /chat_cluster_up/);
});

Deno.test("GET /metrics: the figures change as clients act", async () => {
  await using server = await serve({ maxConsecutiveErrors: 100 });
  const before = await scrape(server);

  const alice = await TestClient.connect(server.wsUrl);
  await using bob = await TestClient.connect(server.wsUrl);
  await alice.enter("alice", "lobby");
  await bob.enter("bob", "lobby");
  await alice.expect("Enter");
  alice.send({
    message_type: "GroupChat",
    message_body: { sender_username: "alice", content: "hi", room: "lobby" },
  });
  await alice.expect("GroupChat");
  await bob.expect("GroupChat");
  alice.send("not json");
  assert.equal((await alice.expect("Error")).code, "invalid_json");
  alice.send({ message_type: "Shout", message_body: {} });
  assert.equal((await alice.expect("Error")).code, "unknown_type");

  const during = await scrape(server);
  assert.equal(during.get("chat_connections"), 2);
  assert.equal(during.get("chat_rooms"), 1);
  const grew = (key: string, by: number) =>
    assert.equal(
      sample(during, key) - sample(before, key),
      by,
      `${key}: ${sample(before, key)} -> ${sample(during, key)}`,
    );
  grew('chat_frames_in_total{type="Enter"}', 2);
  grew('chat_frames_in_total{type="GroupChat"}', 1);
  grew('chat_frames_in_total{type="invalid"}', 2);
  grew('chat_frames_out_total{type="Welcome"}', 2);
  grew('chat_frames_out_total{type="Presence"}', 2);
  grew('chat_frames_out_total{type="Enter"}', 1);
  // A broadcast counts once per recipient.
  grew('chat_frames_out_total{type="GroupChat"}', 2);
  grew('chat_frames_out_total{type="Error"}', 2);
  grew('chat_errors_total{code="invalid_json"}', 1);
  grew('chat_errors_total{code="unknown_type"}', 1);

  await alice.close(1000);
  const after = await eventually(
    () => scrape(server),
    (samples) =>
      sample(samples, 'chat_closes_total{code="1000"}') === 1 &&
      samples.get("chat_connections") === 1,
    "alice's close counted",
  );
  assert.equal(after.get("chat_rooms"), 1);
  assert.equal(
    sample(after, 'chat_frames_out_total{type="Leave"}') -
      sample(during, 'chat_frames_out_total{type="Leave"}'),
    1,
  );
});

Deno.test("GET /metrics: a server-side close is counted by its code", async () => {
  await using server = await serve({ maxConsecutiveErrors: 2 });
  await using client = await TestClient.connect(server.wsUrl);
  client.send("{");
  await client.expect("Error");
  client.send("{");
  await client.expect("Error");
  assert.equal((await client.closed).code, 1008);
  const samples = await eventually(
    () => scrape(server),
    (samples) => sample(samples, 'chat_closes_total{code="1008"}') === 1,
    "the 1008 close counted",
  );
  assert.equal(sample(samples, 'chat_errors_total{code="invalid_json"}'), 2);
});

// Web page and refusals -----------------------------------------------------

Deno.test("GET / returns the HTML page", async () => {
  await using server = await serve();
  const { status, headers, text } = await get(server, "/");
  assert.equal(status, 200);
  assert.match(headers.get("content-type") ?? "", /^text\/html/);
  assert.match(text, /<html/i);
});

const REFUSALS: readonly {
  method: string;
  path: string;
  status: number;
  header?: [string, RegExp];
}[] = [
  { method: "GET", path: "/nope", status: 404 },
  { method: "GET", path: "/healthz/extra", status: 404 },
  { method: "GET", path: "/ws/", status: 404 },
  { method: "POST", path: "/nope", status: 404 },
  { method: "POST", path: "/healthz", status: 405, header: ["allow", /GET/] },
  { method: "DELETE", path: "/metrics", status: 405, header: ["allow", /GET/] },
  { method: "PUT", path: "/", status: 405, header: ["allow", /GET/] },
  {
    method: "GET",
    path: "/ws",
    status: 426,
    header: ["upgrade", /^websocket$/i],
  },
];

for (const { method, path, status, header } of REFUSALS) {
  Deno.test(`${method} ${path} answers ${status}`, async () => {
    await using server = await serve();
    const answer = await get(server, path, { method });
    assert.equal(answer.status, status, answer.text);
    if (header) assert.match(answer.headers.get(header[0]) ?? "", header[1]);
    assert.match(answer.headers.get("content-type") ?? "", /json/);
    assert.equal(typeof JSON.parse(answer.text).error, "string");
  });
}

// Token API -----------------------------------------------------------------

Deno.test("without ADMIN_TOKEN the token API answers 404, whatever is sent", async () => {
  await using server = await serve({ adminToken: undefined });
  const attempts: [string, string, RequestInit][] = [
    ["POST", "/api/tokens", {
      headers: { authorization: "Bearer anything" },
      body: JSON.stringify({ username: "alice" }),
    }],
    ["POST", "/api/tokens", { body: "{}" }],
    ["GET", "/api/tokens", {}],
    [
      "DELETE",
      `/api/tokens/${crypto.randomUUID()}`,
      { headers: { authorization: "Bearer anything" } },
    ],
  ];
  for (const [method, path, init] of attempts) {
    const answer = await get(server, path, { ...init, method });
    assert.equal(answer.status, 404, `${method} ${path}`);
  }
});

Deno.test("with ADMIN_TOKEN the token API exists: 401 without the bearer, 201 with it", async () => {
  await using server = await serve({ adminToken: "test-admin-secret" });
  const body = JSON.stringify({ username: "alice", ttl_seconds: 60 });
  const anonymous = await get(server, "/api/tokens", { method: "POST", body });
  assert.equal(anonymous.status, 401);
  const issued = await get(server, "/api/tokens", {
    method: "POST",
    body,
    headers: {
      authorization: "Bearer test-admin-secret",
      "content-type": "application/json",
    },
  });
  assert.equal(issued.status, 201, issued.text);
  assert.equal(JSON.parse(issued.text).username, "alice");
});

Deno.test("HOST: the server listens on that address only", async () => {
  await using server = await serve({ host: "127.0.0.2" });
  assert.equal(server.server.hostname, "127.0.0.2");
  const port = server.server.port;
  const answer = await fetch(`http://127.0.0.2:${port}/healthz`);
  assert.equal(answer.status, 200);
  await answer.body?.cancel();
  await assert.rejects(
    fetch(`http://127.0.0.1:${port}/healthz`),
    "nothing listens on 127.0.0.1 at that port",
  );
});
