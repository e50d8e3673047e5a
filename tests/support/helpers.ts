/**
 * Test helpers: a real server on port 0, real WebSocket clients, and a raw
 * socket for peers that misbehave (never read, never answer a ping).
 *
 * Why this file is long: its two peers, `TestClient` and `RawPeer`, are
 * two thirds of it, and some forty test files import them with `serve`
 * and `waitFor`; one module keeps that one import for all of them.
 *
 * @module
 */
import { type Config, loadConfig } from "../../src/runtime/config.ts";
import { SETTINGS } from "../../src/runtime/settings.ts";
import { createLogger } from "../../src/runtime/log.ts";
import {
  type ChatServer,
  type StartOptions,
  startServer,
} from "../../src/http/server.ts";

/** The names of the environment variables of the server's settings. */
const SETTING_VARIABLES: ReadonlySet<string> = new Set(
  Object.values(SETTINGS).map((spec) => spec.env),
);

/**
 * This process's environment without any of the server's settings, with
 * `NO_COLOR` and `extra`: what a spawned server or command starts from.
 */
export function childEnv(
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const [name, value] of Object.entries(Deno.env.toObject())) {
    if (!SETTING_VARIABLES.has(name)) env[name] = value;
  }
  return { ...env, ...extra };
}

/** A JSON object, as frames are built in tests. */
export type Body = Record<string, unknown>;

/** A client envelope; `id` only when given. */
export function envelope(type: string, body: Body, id?: string): Body {
  return {
    message_type: type,
    message_body: body,
    ...(id === undefined ? {} : { id }),
  };
}

/** The default settings with test-friendly overrides. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const loaded = loadConfig({ args: [], env: {}, dotenv: undefined });
  if (loaded.kind !== "config") throw new Error("unreachable");
  return {
    ...loaded.config,
    port: 0,
    databasePath: ":memory:",
    logLevel: "error",
    shutdownGraceSeconds: 2,
    ...overrides,
  };
}

/** A started server that `await using` shuts down. */
export interface TestServer extends AsyncDisposable {
  server: ChatServer;
  /** `ws://127.0.0.1:PORT/ws` */
  wsUrl: string;
  /** `http://127.0.0.1:PORT` */
  httpUrl: string;
  /** Log lines the server wrote, parsed. */
  logs: Record<string, unknown>[];
}

/**
 * The event-loop lag that counts toward an overload in servers started by
 * {@linkcode serve}: the suite runs many servers on a shared, loaded machine,
 * where 50 ms happens without any chat load. The overload test asks for the
 * real threshold.
 */
export const TEST_OVERLOAD_LAG_MS = 1_000;

/** Starts a server on a free port; dispose it to shut it down. */
export async function serve(
  overrides: Partial<Config> = {},
  options: StartOptions = {},
): Promise<TestServer> {
  const config = testConfig(overrides);
  const logs: Record<string, unknown>[] = [];
  const log = createLogger(
    config.logLevel,
    (line) => logs.push(JSON.parse(line)),
  );
  const server = await startServer(config, log, {
    overloadLagMs: TEST_OVERLOAD_LAG_MS,
    ...options,
  });
  return {
    server,
    wsUrl: `ws://127.0.0.1:${server.port}/ws`,
    httpUrl: `http://127.0.0.1:${server.port}`,
    logs,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Polls `check` until it holds; fails with `what` after `ms`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = WAIT_MS,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** What the server still holds: all zero once every client has gone. */
export function leftovers(server: TestServer): Record<string, number> {
  const { runner } = server.server;
  const state = runner.state;
  let held = 0;
  for (const room of state.rooms.values()) held += room.held.size;
  return {
    sockets: runner.openSockets,
    connections: state.connections.size,
    users: state.users.size,
    rooms: state.rooms.size,
    tokenWaiters: state.tokenWaiters.size,
    held,
  };
}

/** Waits until the server holds no socket, connection, user or room. */
export async function waitForNoLeftovers(
  server: TestServer,
  ms = WAIT_MS,
): Promise<void> {
  await waitFor(
    () => Object.values(leftovers(server)).every((count) => count === 0),
    `state left behind: ${JSON.stringify(leftovers(server))}`,
    ms,
  ).catch(() => {
    throw new Error(
      `state left behind: ${JSON.stringify(leftovers(server))}`,
    );
  });
}

/** A decoded server frame. */
export interface Frame {
  message_type: string;
  // deno-lint-ignore no-explicit-any
  message_body: any;
}

/** How long a test waits for a frame before it fails. */
export const WAIT_MS = 3000;

/** A WebSocket client that queues frames for the test to take in order. */
export class TestClient implements AsyncDisposable {
  readonly socket: WebSocket;
  readonly frames: Frame[] = [];
  #waiters: (() => void)[] = [];
  readonly closed: Promise<CloseEvent>;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        resolve(event);
        this.#wake();
      });
    });
    socket.addEventListener("message", (event) => {
      this.frames.push(JSON.parse(event.data as string));
      this.#wake();
    });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Connects and takes the `Welcome` frame. */
  static async connect(url: string): Promise<TestClient> {
    const socket = new WebSocket(url);
    const client = new TestClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener(
        "error",
        () => reject(new Error(`cannot connect to ${url}`)),
        { once: true },
      );
    });
    const welcome = await client.next();
    if (welcome.message_type !== "Welcome") {
      throw new Error(`expected Welcome, got ${JSON.stringify(welcome)}`);
    }
    client.welcome = welcome.message_body;
    return client;
  }

  /** The body of the `Welcome` frame. */
  // deno-lint-ignore no-explicit-any
  welcome: any;

  /** Sends an object as JSON, or a string as it is. */
  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Sends one binary frame. */
  sendBinary(bytes: Uint8Array<ArrayBuffer>): void {
    this.socket.send(bytes);
  }

  /** The next frame, or a failure after {@linkcode WAIT_MS}. */
  async next(ms = WAIT_MS): Promise<Frame> {
    const deadline = Date.now() + ms;
    while (this.frames.length === 0) {
      if (this.socket.readyState === WebSocket.CLOSED) {
        throw new Error("socket closed while waiting for a frame");
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${ms} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
    return this.frames.shift() as Frame;
  }

  /** The next frame, which must be of `type`; returns its body. */
  // deno-lint-ignore no-explicit-any
  async expect(type: string): Promise<any> {
    const frame = await this.next();
    if (frame.message_type !== type) {
      throw new Error(`expected ${type}, got ${JSON.stringify(frame)}`);
    }
    return frame.message_body;
  }

  /** Sends `Enter` and takes `Presence` (and `Ack` when `id` is given). */
  async enter(username: string, room?: string, id?: string): Promise<string[]> {
    const body: Record<string, unknown> = { sender_username: username };
    if (room !== undefined) body.room = room;
    this.send({
      message_type: "Enter",
      message_body: body,
      ...(id ? { id } : {}),
    });
    const presence = await this.expect("Presence");
    if (id) await this.expect("Ack");
    return presence.members;
  }

  /** Asserts that no frame arrives within `ms`. */
  async silent(ms = 150): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    if (this.frames.length > 0) {
      throw new Error(`unexpected frame ${JSON.stringify(this.frames[0])}`);
    }
  }

  /** Closes and waits for the close to finish. */
  async close(code?: number): Promise<CloseEvent> {
    if (this.socket.readyState < WebSocket.CLOSING) this.socket.close(code);
    return await this.closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A frame as a `Deno.Conn` peer sends it: masked, FIN, text or binary. */
function maskedFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = new Uint8Array(header + 4 + length);
  frame[0] = 0x80 | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 65536) {
    frame[1] = 0x80 | 126;
    new DataView(frame.buffer).setUint16(2, length);
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, header);
  for (let i = 0; i < length; i++) {
    frame[header + 4 + i] = (payload[i] as number) ^ (mask[i % 4] as number);
  }
  return frame;
}

/**
 * A hand-made WebSocket peer over TCP: it upgrades, can send frames, and
 * reads only when told to, so it can play a slow consumer or a dead peer.
 */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  /** The status line and headers of the upgrade answer. */
  readonly status: number;
  readonly headers: string;

  private constructor(conn: Deno.TcpConn, status: number, headers: string) {
    this.conn = conn;
    this.status = status;
    this.headers = headers;
  }

  /** Sends an upgrade request with extra `headers`; reads the answer's head. */
  static async upgrade(
    port: number,
    headers: Record<string, string> = {},
    path = "/ws",
  ): Promise<RawPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    // Read byte by byte up to the blank line, so no frame bytes are eaten.
    const head: number[] = [];
    const byte = new Uint8Array(1);
    while (!(head.length >= 4 && head.slice(-4).join() === "13,10,13,10")) {
      const n = await conn.read(byte);
      if (n === null) break;
      head.push(byte[0] as number);
    }
    const text = new TextDecoder().decode(new Uint8Array(head));
    const status = Number(text.split(" ")[1]);
    return new RawPeer(conn, status, text);
  }

  /** Sends one text frame. */
  async sendText(text: string): Promise<void> {
    await this.conn.write(maskedFrame(0x1, new TextEncoder().encode(text)));
  }

  /** Sends several text frames in one write (one TCP segment when small). */
  async sendTexts(texts: readonly string[]): Promise<void> {
    const frames = texts.map((text) =>
      maskedFrame(0x1, new TextEncoder().encode(text))
    );
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let offset = 0;
    for (const f of frames) {
      all.set(f, offset);
      offset += f.length;
    }
    await this.conn.write(all);
  }

  /** Sends one binary frame. */
  async sendBinary(bytes: Uint8Array): Promise<void> {
    await this.conn.write(maskedFrame(0x2, bytes));
  }

  /**
   * A read still in flight (or done but not yet taken) after a wait timed
   * out; the next wait takes it over, so no bytes are lost.
   */
  #pending: Promise<Uint8Array | null> | null = null;
  #buffer = new Uint8Array(65536);

  /** One read, reusing the one a timed-out wait left behind. */
  #read(): Promise<Uint8Array | null> {
    this.#pending ??= this.conn.read(this.#buffer).then((n) =>
      n === null ? null : this.#buffer.slice(0, n)
    );
    return this.#pending;
  }

  /** Bytes read but not yet taken as a frame. */
  #inbox = new Uint8Array(0);

  /** One read within `deadline`: bytes, `null` at the end, or "timeout". */
  async #readUntil(deadline: number): Promise<Uint8Array | null | "timeout"> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(
        () => resolve("timeout"),
        Math.max(0, deadline - Date.now()),
      );
    });
    try {
      const read = await Promise.race([this.#read(), timeout]);
      if (read !== "timeout") this.#pending = null;
      return read;
    } catch {
      this.#pending = null;
      return null; // reset by the server: ended too
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Reads one server frame (ping and close frames included); `null` when the
   * connection ended first. Fails after `ms`.
   */
  async readFrame(
    ms = WAIT_MS,
  ): Promise<{ opcode: number; payload: Uint8Array } | null> {
    const deadline = Date.now() + ms;
    while (true) {
      const frame = this.#takeFrame();
      if (frame) return frame;
      const bytes = await this.#readUntil(deadline);
      if (bytes === null) return null;
      if (bytes === "timeout") throw new Error(`no frame within ${ms} ms`);
      const inbox = new Uint8Array(this.#inbox.length + bytes.length);
      inbox.set(this.#inbox);
      inbox.set(bytes, this.#inbox.length);
      this.#inbox = inbox;
    }
  }

  /** Reads frames until a text frame, and parses it. */
  async readJson(ms = WAIT_MS): Promise<Frame> {
    const deadline = Date.now() + ms;
    while (true) {
      const frame = await this.readFrame(Math.max(0, deadline - Date.now()));
      if (frame === null) throw new Error("connection ended");
      if (frame.opcode === 0x1) {
        return JSON.parse(new TextDecoder().decode(frame.payload));
      }
      if (frame.opcode === 0x8) throw new Error("close frame");
    }
  }

  #takeFrame(): { opcode: number; payload: Uint8Array } | null {
    const inbox = this.#inbox;
    if (inbox.length < 2) return null;
    const view = new DataView(inbox.buffer, inbox.byteOffset);
    let length = (inbox[1] as number) & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (inbox.length < 4) return null;
      length = view.getUint16(2);
      offset = 4;
    } else if (length === 127) {
      if (inbox.length < 10) return null;
      length = Number(view.getBigUint64(2));
      offset = 10;
    }
    const masked = ((inbox[1] as number) & 0x80) !== 0;
    const mask = masked ? inbox.slice(offset, offset + 4) : null;
    if (masked) offset += 4;
    if (inbox.length < offset + length) return null;
    const payload = inbox.slice(offset, offset + length);
    if (mask) {
      for (let i = 0; i < payload.length; i++) {
        payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
      }
    }
    this.#inbox = inbox.slice(offset + length);
    return { opcode: (inbox[0] as number) & 0x0f, payload };
  }

  /**
   * Reads (and discards) until the server closes the TCP connection; `false`
   * after `ms`. A read left in flight by a timeout is taken over by the next
   * call, and settled by {@linkcode RawPeer.close}.
   */
  async waitForEnd(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    this.#inbox = new Uint8Array(0);
    while (true) {
      const read = await this.#readUntil(deadline);
      if (read === null) return true;
      if (read === "timeout") return false;
    }
  }

  /** Closes the TCP connection. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  /** Closes, and waits for a read in flight to settle (op sanitizer). */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#pending?.catch(() => null);
  }
}
