import assert from "node:assert/strict";
import { SERVER_ERROR_TEXT } from "../../src/client/error_text.ts";
import { diagnoseConnect } from "../../src/client/connect_diagnosis.ts";
import {
  FIRST_CONNECT_TRIES,
  formatTime,
  parseCommand,
  parseTerminalArgs,
} from "../../src/client/terminal_client.ts";
import { serve } from "../support/helpers.ts";
import { ChatClient } from "../../src/client/chat_client.ts";

const SCRIPT =
  new URL("../../src/client/terminal_client.ts", import.meta.url).pathname;
const TIME = String.raw`\d\d:\d\d:\d\d`;

/** `deno task client …` as a process, with its output read line by line. */
class Terminal implements AsyncDisposable {
  readonly lines: string[] = [];
  readonly #process: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  #seen = 0;
  #wake: (() => void) | undefined;

  constructor(args: string[]) {
    this.#process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", SCRIPT, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#stdin = this.#process.stdin.getWriter();
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    let buffer = "";
    for await (
      const chunk of this.#process.stdout.pipeThrough(new TextDecoderStream())
    ) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop() ?? "";
      this.lines.push(...parts);
      this.#wake?.();
    }
    if (buffer) this.lines.push(buffer);
    this.#wake?.();
  }

  /** Types a line. */
  async type(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(`${line}\n`));
  }

  /** Waits for a line (after the last one waited for) that matches. */
  async expect(pattern: RegExp, ms = 5000): Promise<string> {
    const deadline = Date.now() + ms;
    while (true) {
      for (let i = this.#seen; i < this.lines.length; i++) {
        const line = this.lines[i] ?? "";
        if (pattern.test(line)) {
          this.#seen = i + 1;
          return line;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no line matching ${pattern} in:\n${this.lines.join("\n")}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Waits for the process to end by itself. */
  async ended(): Promise<Deno.CommandStatus> {
    const status = await this.#process.status;
    await this.#reading;
    return status;
  }

  /** Sends `/quit` and waits for the process to end. */
  async quit(): Promise<Deno.CommandStatus> {
    await this.type("/quit").catch(() => {});
    await this.#stdin.close().catch(() => {});
    const status = await this.#process.status;
    await this.#reading;
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#process.kill();
    } catch {
      // already ended
    }
    await this.#stdin.close().catch(() => {});
    await this.#process.status;
    await this.#reading;
  }
}

Deno.test("terminal client: two processes exchange a room message and a /msg", async () => {
  await using server = await serve();
  const url = server.wsUrl;
  await using alice = new Terminal([
    "--name",
    "alice",
    "--room",
    "general",
    "--url",
    url,
  ]);
  await alice.expect(/^\* joined #general/);
  await using bob = new Terminal([
    "--name",
    "bob",
    "--room",
    "general",
    "--url",
    url,
  ]);
  await bob.expect(/^\* joined #general/);
  await alice.expect(new RegExp(`^${TIME} \\[general\\] \\* bob joined$`));

  await alice.type("hello from alice");
  await bob.expect(
    new RegExp(`^${TIME} \\[general\\] alice: hello from alice$`),
  );
  await alice.expect(
    new RegExp(`^${TIME} \\[general\\] alice: hello from alice$`),
  );

  await bob.type("/msg alice just between us");
  await alice.expect(
    new RegExp(`^${TIME} \\[dm\\] bob -> alice: just between us$`),
  );
  await bob.expect(
    new RegExp(`^${TIME} \\[dm\\] bob -> alice: just between us$`),
  );

  await bob.type("/who");
  await bob.expect(/^\* in #general: alice, bob$/);
  // Errors are printed in words.
  await bob.type("/msg nobody hello?");
  await bob.expect(
    new RegExp(`^! ${escape(SERVER_ERROR_TEXT.user_not_found)}$`),
  );
  await bob.type("/frobnicate");
  await bob.expect(/^! unknown command \/frobnicate/);

  // A room of their own, then back; history of the first room.
  await alice.type("/join side");
  await alice.expect(/^\* joined #side/);
  await alice.type("only here");
  await alice.expect(new RegExp(`^${TIME} \\[side\\] alice: only here$`));
  await alice.type("/leave");
  await alice.expect(/^\* left #side; current room: #general$/);
  await alice.type("/history");
  await alice.expect(/^\* that is the beginning of #general$/);

  assert.equal((await bob.quit()).code, 0);
  await alice.expect(
    new RegExp(`^${TIME} \\[general\\] \\* bob went offline$`),
  );
  assert.equal((await alice.quit()).code, 0);
  assert.ok(!bob.lines.some((line) => line.includes("only here")));
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test("terminal client: shows who starts typing, in a room and to you", async () => {
  await using server = await serve();
  const url = server.wsUrl;
  await using bob = new Terminal(["--name", "bob", "--url", url]);
  await bob.expect(/^\* joined #general/);
  await using alice = new ChatClient({ url, username: "alice" });
  await alice.connect();
  await alice.enter("general");
  alice.typing("general");
  await bob.expect(
    new RegExp(`^${TIME} \\[general\\] \\* alice is typing\u2026$`),
  );
  alice.typingTo("bob");
  await bob.expect(
    new RegExp(`^${TIME} \\[dm\\] \\* alice is typing\u2026$`),
  );
  await alice.close();
  assert.equal((await bob.quit()).code, 0);
  assert.equal(
    bob.lines.filter((line) => line.includes("is typing")).length,
    2,
    "each start once",
  );
});

Deno.test("terminal client: arguments and commands are parsed", () => {
  assert.deepEqual(parseTerminalArgs(["--name", "al", "--room", "r"]), {
    kind: "options",
    options: {
      name: "al",
      room: "r",
      url: "ws://127.0.0.1:8080/ws",
      token: undefined,
    },
  });
  assert.equal(parseTerminalArgs([]).kind, "error");
  assert.equal(parseTerminalArgs(["--name", "no spaces"]).kind, "error");
  assert.equal(
    parseTerminalArgs(["--name", "a", "--url", "http://x"]).kind,
    "error",
  );
  assert.equal(parseTerminalArgs(["--help"]).kind, "help");

  assert.deepEqual(parseCommand("hi there"), { kind: "say", text: "hi there" });
  assert.deepEqual(parseCommand("/join dev"), { kind: "join", room: "dev" });
  assert.deepEqual(parseCommand("/msg bob a b  c"), {
    kind: "msg",
    user: "bob",
    text: "a b  c",
  });
  assert.deepEqual(parseCommand("/history 5"), { kind: "history", count: 5 });
  assert.deepEqual(parseCommand("/history"), { kind: "history", count: 20 });
  assert.equal(parseCommand("/history 500").kind, "invalid");
  assert.equal(parseCommand("/msg bob").kind, "invalid");
  assert.deepEqual(parseCommand("   "), { kind: "empty" });
  assert.deepEqual(parseCommand("/quit"), { kind: "quit" });
  assert.match(formatTime(Date.UTC(2024, 0, 1, 12, 3, 4)), /^\d\d:03:04$/);
});

/** A port nothing listens on (it was free a moment ago). */
function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("terminal client: a dead port is named, and it gives up after a few tries with exit 1", async () => {
  const url = `ws://127.0.0.1:${deadPort()}/ws`;
  await using terminal = new Terminal(["--name", "alice", "--url", url]);
  for (let i = 1; i < FIRST_CONNECT_TRIES; i++) {
    await terminal.expect(
      new RegExp(
        `^! cannot connect to ${
          escape(url)
        }: connection refused: nothing listens on 127\\.0\\.0\\.1:\\d+ .*; trying again in [\\d.]+ s \\(${i} of ${FIRST_CONNECT_TRIES} tries failed\\)$`,
      ),
      10_000,
    );
  }
  await terminal.expect(
    new RegExp(
      `^! cannot connect to ${
        escape(url)
      }: connection refused: .*; giving up after ${FIRST_CONNECT_TRIES} tries$`,
    ),
    10_000,
  );
  assert.equal((await terminal.ended()).code, 1);
  assert.ok(
    !terminal.lines.some((line) => /connection lost|reconnecting/.test(line)),
    terminal.lines.join("\n"),
  );
});

/** An HTTP server that refuses every upgrade with `status` and `reason`. */
function refusing(
  status: number,
  reason: string,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      new Response(JSON.stringify({ error: reason }), {
        status,
        headers: { "content-type": "application/json" },
      }),
  );
}

/** A refusal at upgrade and what the client says of it. */
interface RefusalCase {
  status: number;
  reason: string;
  /** Whether it gives up at the first try (trying again cannot help). */
  final: boolean;
}

const REFUSALS: readonly RefusalCase[] = [
  {
    status: 403,
    reason: "origin https://evil.example is not allowed",
    final: true,
  },
  { status: 404, reason: "not found", final: true },
  { status: 503, reason: "server shutting down", final: false },
];

for (const { status, reason, final } of REFUSALS) {
  Deno.test(`terminal client: HTTP ${status} at upgrade is named with its reason`, async () => {
    await using server = refusing(status, reason);
    const url = `ws://127.0.0.1:${server.addr.port}/ws`;
    await using terminal = new Terminal(["--name", "alice", "--url", url]);
    const said = `^! cannot connect to ${
      escape(url)
    }: the server refused with HTTP ${status}: ${escape(reason)}; `;
    if (!final) {
      await terminal.expect(new RegExp(`${said}trying again in`), 10_000);
    }
    await terminal.expect(
      new RegExp(
        `${said}giving up${
          final ? "" : ` after ${FIRST_CONNECT_TRIES} tries`
        }$`,
      ),
      15_000,
    );
    assert.equal((await terminal.ended()).code, 1);
  });
}

Deno.test("terminal client: a wrong path on a real server is its 404, a missing token its 401", async () => {
  await using server = await serve({ authEnabled: true, tokenAtUpgrade: true });
  const wrongPath = new URL(server.wsUrl);
  wrongPath.pathname = "/nope";
  assert.deepEqual(await diagnoseConnect(wrongPath.href), {
    text: "the server refused with HTTP 404: not found",
    final: true,
  });
  assert.deepEqual(await diagnoseConnect(server.wsUrl), {
    text:
      "the server refused with HTTP 401: a token is required at upgrade: /ws?token=<token>",
    final: true,
  });
});

Deno.test("terminal client: a host that does not resolve is named", async () => {
  const problem = await diagnoseConnect("ws://no-such-host.invalid/ws");
  assert.equal(problem.final, false);
  assert.match(problem.text, /^host not found: no-such-host\.invalid/);
});
