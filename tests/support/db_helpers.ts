/**
 * Helpers for the tests that run servers on real SQLite files: a temporary
 * directory that `await using` removes, the token API, and frame builders.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Config } from "../../src/runtime/config.ts";
import { type Frame, serve, TestClient, type TestServer } from "./helpers.ts";

/** The admin secret the tests' servers are started with. */
export const ADMIN = "admin-secret-for-tests";

/** A temporary directory holding a database file; disposing removes it. */
export interface TempDb extends AsyncDisposable {
  /** The directory. */
  dir: string;
  /** `<dir>/chat.db`, not created yet. */
  path: string;
}

/** Makes a temporary directory for one test's database. */
export async function tempDb(): Promise<TempDb> {
  const dir = await Deno.makeTempDir({ prefix: "chat_test_" });
  return {
    dir,
    path: join(dir, "chat.db"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A server on a fresh database file; disposing it removes the file too. */
export async function serveOnTempDb(
  overrides: Partial<Config> = {},
): Promise<TestServer & { db: TempDb }> {
  const db = await tempDb();
  const server = await serve({ databasePath: db.path, ...overrides });
  return {
    ...server,
    db,
    [Symbol.asyncDispose]: async () => {
      await server[Symbol.asyncDispose]();
      await db[Symbol.asyncDispose]();
    },
  };
}

/**
 * A server with authentication on and {@linkcode ADMIN} as its admin token,
 * on a fresh database file.
 */
export function authServer(
  overrides: Partial<Config> = {},
): Promise<TestServer & { db: TempDb }> {
  return serveOnTempDb({ adminToken: ADMIN, authEnabled: true, ...overrides });
}

/** The body of a `201` from `POST /api/tokens`. */
export interface Issued {
  token: string;
  username: string;
  expires_at: number;
}

/** Calls the token API with the admin header (or `auth`), body consumed. */
export async function api(
  httpUrl: string,
  method: string,
  path: string,
  body?: unknown,
  auth: string | null = `Bearer ${ADMIN}`,
): Promise<{ status: number; headers: Headers; body: unknown }> {
  const headers: Record<string, string> = {};
  if (auth !== null) headers.authorization = auth;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${httpUrl}${path}`, {
    method,
    headers,
    body: body === undefined
      ? undefined
      : typeof body === "string"
      ? body
      : JSON.stringify(body),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text === "" ? undefined : JSON.parse(text),
  };
}

/** Issues a token through the API; fails the test unless it answers 201. */
export async function issueToken(
  httpUrl: string,
  username: string,
  ttlSeconds?: number,
): Promise<Issued> {
  const answer = await api(httpUrl, "POST", "/api/tokens", {
    username,
    ...(ttlSeconds === undefined ? {} : { ttl_seconds: ttlSeconds }),
  });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body as Issued;
}

/** Revokes a token through the API; returns the status. */
export async function revokeToken(
  httpUrl: string,
  token: string,
): Promise<number> {
  return (await api(httpUrl, "DELETE", `/api/tokens/${token}`)).status;
}

/** Connects with `?token=`; the `Welcome` is taken. */
export function connectWithToken(
  wsUrl: string,
  token: string,
): Promise<TestClient> {
  return TestClient.connect(`${wsUrl}?token=${encodeURIComponent(token)}`);
}

/** A client frame. */
export function frame(
  type: string,
  body: Record<string, unknown>,
  extra: { id?: string; token?: unknown } = {},
): Record<string, unknown> {
  return { message_type: type, message_body: body, ...extra };
}

/** Takes the next `count` frames, which must all be of `type`; their bodies. */
export async function take(
  client: TestClient,
  type: string,
  count: number,
  // deno-lint-ignore no-explicit-any
): Promise<any[]> {
  const bodies = [];
  for (let i = 0; i < count; i++) bodies.push(await client.expect(type));
  return bodies;
}

/** Takes frames until one of `type` arrives, returning every frame taken. */
export async function until(
  client: TestClient,
  type: string,
): Promise<Frame[]> {
  const taken: Frame[] = [];
  for (;;) {
    const next = await client.next();
    taken.push(next);
    if (next.message_type === type) return taken;
  }
}

/** Sends `Enter` with extra body fields and returns its `Presence`. */
export async function enterWith(
  client: TestClient,
  username: string,
  body: Record<string, unknown> = {},
  extra: { id?: string; token?: unknown } = {},
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  client.send(frame("Enter", { sender_username: username, ...body }, extra));
  return await client.expect("Presence");
}

/** Sends `count` `GroupChat`s to `room` and waits for their `Ack`s and echoes. */
export async function chatMany(
  client: TestClient,
  username: string,
  room: string,
  count: number,
  prefix = "m",
): Promise<{ id: string; seq: number; content: string }[]> {
  for (let i = 1; i <= count; i++) {
    client.send(
      frame("GroupChat", {
        sender_username: username,
        room,
        content: `${prefix}${i}`,
      }, { id: `${prefix}${i}` }),
    );
  }
  const acked = [];
  for (let i = 1; i <= count; i++) {
    const echo = await client.expect("GroupChat");
    const ack = await client.expect("Ack");
    assert.equal(ack.ref, `${prefix}${i}`);
    assert.equal(echo.id, ack.id);
    assert.equal(echo.seq, ack.seq);
    acked.push({ id: echo.id, seq: echo.seq, content: echo.content });
  }
  return acked;
}
