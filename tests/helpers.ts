/**
 * Test helpers: a real server on port 0, real WebSocket clients, and a raw
 * socket for peers that misbehave (never read, never answer a ping).
 *
 * @module
 */
import { type Config, loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { type ChatServer, startServer } from "../src/server.ts";

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

/** Starts a server on a free port; dispose it to shut it down. */
export async function serve(
  overrides: Partial<Config> = {},
): Promise<TestServer> {
  const config = testConfig(overrides);
  const logs: Record<string, unknown>[] = [];
  const log = createLogger(
    config.logLevel,
    (line) => logs.push(JSON.parse(line)),
  );
  const server = await startServer(config, log);
  return {
    server,
    wsUrl: `ws://127.0.0.1:${server.port}/ws`,
    httpUrl: `http://127.0.0.1:${server.port}`,
    logs,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
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

  /** Sends one binary frame. */
  async sendBinary(bytes: Uint8Array): Promise<void> {
    await this.conn.write(maskedFrame(0x2, bytes));
  }

  /** Reads until the server closes the TCP connection; `false` after `ms`. */
  async waitForEnd(ms: number): Promise<boolean> {
    const buffer = new Uint8Array(65536);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), deadline - Date.now());
      });
      const read = await Promise.race([this.conn.read(buffer), timeout]);
      clearTimeout(timer);
      if (read === null) return true;
      if (read === "timeout") return false;
    }
    return false;
  }

  /** Closes the TCP connection. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}
