/**
 * `FrameBatcher` on a scripted clock: what each connection is sent, when,
 * and in how many frames (gathering per connection, order, the size cap,
 * releases before other frames, the adaptive window per room), as typed
 * tables. No socket: `send` records.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  BATCH_HEAD,
  type BatchScheduler,
  FrameBatcher,
  utf8Length,
} from "../../src/runtime/frame_batcher.ts";

/** A scheduler whose turns and time the test moves. */
class ScriptedScheduler implements BatchScheduler {
  time = 0;
  #soon: (() => void)[] = [];
  #timers: { at: number; job: () => void }[] = [];

  soon(job: () => void): () => void {
    this.#soon.push(job);
    return () => {
      this.#soon = this.#soon.filter((other) => other !== job);
    };
  }

  after(job: () => void, ms: number): () => void {
    const timer = { at: this.time + ms, job };
    this.#timers.push(timer);
    return () => {
      this.#timers = this.#timers.filter((other) => other !== timer);
    };
  }

  now(): number {
    return this.time;
  }

  /** Ends the current turn of the event loop. */
  turn(): void {
    const jobs = this.#soon;
    this.#soon = [];
    for (const job of jobs) job();
  }

  /** Moves the clock to `to`, running the timers due on the way. */
  advance(to: number): void {
    for (;;) {
      const due = this.#timers.filter((timer) => timer.at <= to)
        .sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((other) => other !== due);
      this.time = due.at;
      due.job();
    }
    this.time = to;
  }

  get armed(): number {
    return this.#soon.length + this.#timers.length;
  }
}

/** One step of a case. */
type Step =
  /** A message of `room` (default "r") handed to `to`. */
  | { give: string; to: number[]; room?: string }
  | { release: number }
  | { forget: number }
  | { flush: true }
  | { turn: true }
  | { at: number };

/** What one connection was sent: a plain message, or a `Batch` of several. */
type Sent = [conn: number, frame: string | string[]];

interface Case {
  name: string;
  steps: Step[];
  sent: Sent[];
  maxBytes?: number;
  windowMs?: number;
}

/** A small frame whose text is `{"m":"<name>"}`. */
function message(name: string): string {
  return JSON.stringify({ m: name });
}

/** The message names a frame holds: one for a plain frame, an array for a `Batch`. */
function decode(data: string): string | string[] {
  const parsed = JSON.parse(data);
  if (!data.startsWith(BATCH_HEAD)) return parsed.m;
  assert.equal(parsed.message_type, "Batch");
  const frames = parsed.message_body.frames as { m: string }[];
  assert.ok(frames.length >= 2, "a Batch holds two messages or more");
  return frames.map((frame) => frame.m);
}

const CASES: Case[] = [
  {
    name: "a quiet room's message goes out at the end of the turn, plain",
    steps: [{ give: "a", to: [1, 2] }, { turn: true }],
    sent: [[1, "a"], [2, "a"]],
  },
  {
    name: "messages of one turn go out as one Batch per connection, in order",
    steps: [
      { give: "a", to: [1, 2] },
      { give: "b", to: [1] },
      { give: "c", to: [1, 2] },
      { turn: true },
    ],
    sent: [[1, ["a", "b", "c"]], [2, ["a", "c"]]],
  },
  {
    name: "nothing goes out before the turn ends",
    steps: [{ give: "a", to: [1] }],
    sent: [],
  },
  {
    name: "a busy room gathers until its window ends",
    steps: [
      { give: "a", to: [1] },
      { turn: true },
      { at: 5 },
      { give: "b", to: [1] },
      { turn: true },
      { at: 12 },
      { give: "c", to: [1] },
      { turn: true },
      { at: 19 },
      { at: 20 },
    ],
    sent: [[1, "a"], [1, ["b", "c"]]],
  },
  {
    name: "the window goes on while messages keep coming",
    steps: [
      { give: "a", to: [1] },
      { turn: true },
      { at: 5 },
      { give: "b", to: [1] },
      { at: 20 },
      { at: 25 },
      { give: "c", to: [1] },
      { give: "d", to: [1] },
      { turn: true },
      { at: 39 },
      { at: 40 },
    ],
    sent: [[1, "a"], [1, "b"], [1, ["c", "d"]]],
  },
  {
    name: "a room quiet for a window is quiet again: no delay",
    steps: [
      { give: "a", to: [1] },
      { turn: true },
      { at: 5 },
      { give: "b", to: [1] },
      { at: 20 },
      { at: 45 },
      { give: "c", to: [1] },
      { turn: true },
    ],
    sent: [[1, "a"], [1, "b"], [1, "c"]],
  },
  {
    name: "a quiet room is not held back by a busy one",
    steps: [
      { give: "a", to: [1], room: "hot" },
      { turn: true },
      { at: 5 },
      { give: "b", to: [1], room: "hot" },
      { give: "x", to: [2], room: "calm" },
      { turn: true },
      { at: 20 },
    ],
    sent: [[1, "a"], [1, "b"], [2, "x"]],
  },
  {
    name: "window 0: one flush per turn",
    windowMs: 0,
    steps: [
      { give: "a", to: [1] },
      { give: "b", to: [1] },
      { turn: true },
      { give: "c", to: [1] },
      { turn: true },
    ],
    sent: [[1, ["a", "b"]], [1, "c"]],
  },
  {
    name: "release sends what waits for one connection at once, in order",
    steps: [
      { give: "a", to: [1, 2] },
      { give: "b", to: [1, 2] },
      { release: 1 },
      { give: "c", to: [1, 2] },
      { turn: true },
    ],
    sent: [[1, ["a", "b"]], [2, ["a", "b", "c"]], [1, "c"]],
  },
  {
    name: "release with nothing waiting sends nothing",
    steps: [{ release: 1 }, { turn: true }],
    sent: [],
  },
  {
    name: "a forgotten connection is sent nothing",
    steps: [{ give: "a", to: [1, 2] }, { forget: 1 }, { turn: true }],
    sent: [[2, "a"]],
  },
  {
    name: "flush sends everything at once",
    steps: [{ give: "a", to: [1] }, { give: "b", to: [1] }, { flush: true }],
    sent: [[1, ["a", "b"]]],
  },
  {
    name: "the size cap: a full Batch goes out and the next one starts",
    // Each message is 9 bytes: 2 fit (53 + 9 + 1 + 9 = 72), 3 do not (82).
    maxBytes: 80,
    steps: [
      { give: "a", to: [1] },
      { give: "b", to: [1] },
      { give: "c", to: [1] },
      { give: "d", to: [1] },
      { give: "e", to: [1] },
      { turn: true },
    ],
    sent: [[1, ["a", "b"]], [1, ["c", "d"]], [1, "e"]],
  },
  {
    name: "a message larger than the cap goes out alone, plain",
    maxBytes: 60,
    steps: [
      { give: "a", to: [1] },
      { give: "b", to: [1] },
      { give: "c", to: [1] },
      { turn: true },
    ],
    sent: [[1, "a"], [1, "b"], [1, "c"]],
  },
];

for (const testCase of CASES) {
  Deno.test(`FrameBatcher: ${testCase.name}`, () => {
    const scheduler = new ScriptedScheduler();
    const sent: Sent[] = [];
    const batcher = new FrameBatcher({
      send: (conn, data) => {
        if (data.startsWith(BATCH_HEAD)) {
          assert.ok(
            utf8Length(data) <= (testCase.maxBytes ?? 65536),
            "a Batch stays within the cap",
          );
        }
        sent.push([conn, decode(data)]);
      },
      windowMs: testCase.windowMs ?? 20,
      maxBytes: testCase.maxBytes ?? 65536,
      scheduler,
    });
    for (const step of testCase.steps) {
      if ("give" in step) {
        const entry = batcher.entry(step.room ?? "r", message(step.give));
        for (const conn of step.to) batcher.add(conn, entry);
      } else if ("release" in step) batcher.release(step.release);
      else if ("forget" in step) batcher.forget(step.forget);
      else if ("flush" in step) batcher.flush();
      else if ("turn" in step) scheduler.turn();
      else scheduler.advance(step.at);
    }
    assert.deepEqual(sent, testCase.sent);
    batcher.stop();
    assert.equal(scheduler.armed, 0, "stop cancels every timer");
  });
}

Deno.test("FrameBatcher: connections sent the same messages share one frame string", () => {
  const scheduler = new ScriptedScheduler();
  const frames: string[] = [];
  const batcher = new FrameBatcher({
    send: (_conn, data) => frames.push(data),
    windowMs: 20,
    maxBytes: 65536,
    scheduler,
  });
  const conns = Array.from({ length: 100 }, (_, i) => i + 1);
  for (const name of ["a", "b", "c"]) {
    const entry = batcher.entry("r", message(name));
    for (const conn of conns) batcher.add(conn, entry);
  }
  assert.equal(batcher.waiting, 100);
  scheduler.turn();
  assert.equal(frames.length, 100);
  assert.equal(new Set(frames).size, 1);
  assert.equal(
    frames[0],
    BATCH_HEAD + [message("a"), message("b"), message("c")].join(",") +
      "]}}",
    "the Batch is the messages' own text, spliced",
  );
  batcher.stop();
});

Deno.test("utf8Length counts UTF-8 bytes", () => {
  const table: [string, number][] = [
    ["", 0],
    ["abc", 3],
    ["é", 2],
    ["€", 3],
    ["😀", 4],
    ['{"c":"a😀é"}', 15],
  ];
  for (const [text, bytes] of table) {
    assert.equal(utf8Length(text), bytes, text);
    assert.equal(utf8Length(text), new TextEncoder().encode(text).length);
  }
});
