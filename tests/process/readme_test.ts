/**
 * The README's first session, pasted whole into a real `deno repl` against a
 * running server: it must work as a reader would paste it (no send before the
 * socket is open). It does not test the protocol itself (tests/server do).
 *
 * @module
 */
import assert from "node:assert/strict";
import { serve } from "../support/helpers.ts";

const README = new URL("../../README.md", import.meta.url);

/** The `js` block of the README's "A first session", as written there. */
async function firstSession(): Promise<string> {
  const text = await Deno.readTextFile(README);
  const section = text.slice(text.indexOf("## A first session"));
  const block = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, "README.md has no js block under 'A first session'");
  return block;
}

/** Reads `stream` into `lines`, waking `notify` on every chunk. */
async function collect(
  stream: ReadableStream<Uint8Array<ArrayBuffer>>,
  lines: string[],
  notify: () => void,
): Promise<void> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    const parts = buffer.split("\n");
    buffer = parts.pop() ?? "";
    lines.push(...parts);
    notify();
  }
  if (buffer) lines.push(buffer);
  notify();
}

/** How the block reaches the REPL. */
interface PasteCase {
  name: string;
  /**
   * Milliseconds to wait after the first two lines (the `new WebSocket` and
   * its `onmessage`), before the rest.
   */
  pauseAfterFirstLine: number;
}

const PASTES: readonly PasteCase[] = [
  // A send before the socket is open would throw InvalidStateError.
  { name: "pasted whole", pauseAfterFirstLine: 0 },
  // The REPL runs events between lines: under load the socket is open (and
  // Welcome in) before the line that waits for the open runs. A wait that
  // only listens for `open` then hangs forever (seen once in CI).
  { name: "with the socket open before the wait", pauseAfterFirstLine: 1_000 },
];

for (const paste of PASTES) {
  Deno.test(`README: the first session works in deno repl, ${paste.name}`, () =>
    runFirstSession(paste.pauseAfterFirstLine));
}

async function runFirstSession(pauseAfterFirstLine: number): Promise<void> {
  await using server = await serve();
  const snippet = await firstSession();
  assert.ok(snippet.includes('"ws://127.0.0.1:8080/"'));
  const port = new URL(server.httpUrl).port;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["repl", "--allow-net"],
    // No update check: this machine has no route out, and a REPL that waits
    // on one once a day hung here.
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let wake = () => {};
  const reading = Promise.all([
    collect(child.stdout, lines, () => wake()),
    collect(child.stderr, lines, () => wake()),
  ]);
  const stdin = child.stdin.getWriter();
  const encoder = new TextEncoder();
  try {
    // Pasted at once: every line is in before the REPL runs the first.
    const local = snippet.replace(
      "ws://127.0.0.1:8080/",
      `ws://127.0.0.1:${port}/`,
    );
    const cut = pauseAfterFirstLine > 0
      ? local.indexOf("\n", local.indexOf("\n") + 1) + 1
      : 0;
    if (cut > 0) {
      await stdin.write(encoder.encode(local.slice(0, cut)));
      await new Promise((resolve) => setTimeout(resolve, pauseAfterFirstLine));
    }
    await stdin.write(encoder.encode(local.slice(cut)));
    const deadline = Date.now() + 20_000;
    while (!lines.some((line) => line.includes('"ref":"m1"'))) {
      if (Date.now() > deadline || lines.some((l) => /Uncaught/.test(l))) {
        break;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    await stdin.write(encoder.encode("ws.close();\nclose();\n"));
  } finally {
    await stdin.close().catch(() => {});
  }
  // `close()` ends the REPL; one that hangs anyway is killed, not waited for.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    child.status,
    new Promise<null>((resolve) =>
      timer = setTimeout(() => resolve(null), 15_000)
    ),
  ]);
  clearTimeout(timer);
  if (status === null) child.kill("SIGKILL");
  await child.status;
  await reading;
  assert.equal(status?.code, 0, `the REPL did not exit:\n${lines.join("\n")}`);
  const output = lines.join("\n");
  assert.doesNotMatch(output, /Uncaught|InvalidStateError/, output);
  const types = lines
    .filter((line) => line.startsWith('{"message_type":'))
    .map((line) => JSON.parse(line).message_type);
  // The REPL runs events between lines: under load `Welcome` may come in
  // before the `onmessage` line runs, and is then not printed (harmless).
  const expected = ["Presence", "GroupChat", "Ack"];
  assert.deepEqual(
    types[0] === "Welcome" ? types.slice(1) : types,
    expected,
    output,
  );
  assert.match(output, /"members":\["user1"\]/);
  assert.match(output, /"content":"hello"/);
}
