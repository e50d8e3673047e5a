import assert from "node:assert/strict";
import { SERVER_ERROR_TEXT } from "../../src/client/error_text.ts";
import {
  formatTime,
  parseCommand,
  parseTerminalArgs,
} from "../../src/client/terminal_client.ts";
import { serve } from "../support/helpers.ts";

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
