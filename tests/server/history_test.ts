/**
 * History: `Enter` with `history`/`since`, the `History` request, `complete`,
 * the order of `History` and `Ack`, and recovery after a reconnect; on real
 * SQLite files and on `:memory:`.
 */
import assert from "node:assert/strict";
import type { Config } from "../../src/runtime/config.ts";
import { type Frame, TestClient, type TestServer } from "../support/helpers.ts";
import {
  chatMany,
  enterWith,
  frame,
  serveOnTempDb,
  type TempDb,
} from "../support/db_helpers.ts";

/** A server on a fresh database file, or on `:memory:`. */
function historyServer(
  overrides: Partial<Config> = {},
): Promise<TestServer & { db: TempDb }> {
  return serveOnTempDb({ rateLimitPerSecond: 0, ...overrides });
}

const STORAGES = [
  ["sqlite", {}],
  [":memory:", { databasePath: ":memory:" }],
] as const;

/** Fills `room` with `count` messages from a writer that then leaves. */
async function fill(
  server: TestServer,
  room: string,
  count: number,
): Promise<{ id: string; seq: number; content: string }[]> {
  await using writer = await TestClient.connect(server.wsUrl);
  await enterWith(writer, "writer", { room });
  return await chatMany(writer, "writer", room, count);
}

/** The frames that answer an `Enter` up to its `Ack`. */
async function enterFrames(
  client: TestClient,
  username: string,
  body: Record<string, unknown>,
  id = "enter",
): Promise<Frame[]> {
  client.send(frame("Enter", { sender_username: username, ...body }, { id }));
  const frames: Frame[] = [];
  for (;;) {
    const next = await client.next();
    frames.push(next);
    if (next.message_type === "Ack" || next.message_type === "Error") {
      return frames;
    }
  }
}

/** Asks for `History` and returns its body; the `Ack` must follow it. */
async function ask(client: TestClient, body: Record<string, unknown>) {
  client.send(frame("History", body, { id: "h" }));
  const page = await client.expect("History");
  assert.deepEqual(await client.expect("Ack"), { ref: "h" });
  return page;
}

function seqs(page: { messages: { seq: number }[] }): number[] {
  return page.messages.map((message) => message.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

for (const [label, storage] of STORAGES) {
  Deno.test(`history (${label}): Enter with history K replays the last K, then Ack`, async () => {
    await using server = await historyServer(storage);
    const sent = await fill(server, "lobby", 5);
    await using reader = await TestClient.connect(server.wsUrl);
    const frames = await enterFrames(reader, "reader", {
      room: "lobby",
      history: 3,
    });
    assert.deepEqual(frames.map((f) => f.message_type), [
      "Presence",
      "History",
      "Ack",
    ]);
    const page = frames[1]!.message_body;
    assert.equal(page.room, "lobby");
    assert.equal(page.complete, true);
    assert.deepEqual(seqs(page), [3, 4, 5]);
    for (const message of page.messages) {
      const original = sent[message.seq - 1]!;
      assert.equal(message.id, original.id);
      assert.equal(message.content, original.content);
      assert.equal(message.room, "lobby");
      assert.equal(message.sender_username, "writer");
      assert.equal(typeof message.timestamp, "number");
    }
    assert.deepEqual(frames[2]!.message_body, { ref: "enter" });
    // More than there is: everything, complete.
    const all = await enterFrames(reader, "reader", {
      room: "lobby",
      history: 100,
    });
    assert.deepEqual(seqs(all[1]!.message_body), [1, 2, 3, 4, 5]);
    assert.equal(all[1]!.message_body.complete, true);
    // history 0: an empty History frame all the same.
    const none = await enterFrames(reader, "reader", {
      room: "lobby",
      history: 0,
    });
    assert.deepEqual(none[1]!.message_body, {
      room: "lobby",
      messages: [],
      complete: true,
    });
  });

  Deno.test(`history (${label}): Enter with since N replays every message after N`, async () => {
    await using server = await historyServer(storage);
    await fill(server, "lobby", 6);
    await using reader = await TestClient.connect(server.wsUrl);
    for (
      const [since, expected] of [
        [0, range(1, 6)],
        [4, [5, 6]],
        [6, []],
        [99, []],
      ] as const
    ) {
      const frames = await enterFrames(reader, "reader", {
        room: "lobby",
        since,
      });
      assert.deepEqual(frames.map((f) => f.message_type), [
        "Presence",
        "History",
        "Ack",
      ]);
      assert.deepEqual(seqs(frames[1]!.message_body), expected, `${since}`);
      assert.equal(frames[1]!.message_body.complete, true);
    }
    // since wins over history when both are given.
    const both = await enterFrames(reader, "reader", {
      room: "lobby",
      since: 5,
      history: 3,
    });
    assert.deepEqual(seqs(both[1]!.message_body), [6]);
  });

  Deno.test(`history (${label}): an empty or new room still answers with a History frame`, async () => {
    await using server = await historyServer(storage);
    await using reader = await TestClient.connect(server.wsUrl);
    for (const body of [{ history: 10 }, { since: 0 }, { since: 7 }]) {
      const frames = await enterFrames(reader, "reader", {
        room: "empty",
        ...body,
      });
      assert.deepEqual(frames.map((f) => f.message_type), [
        "Presence",
        "History",
        "Ack",
      ]);
      assert.deepEqual(frames[1]!.message_body, {
        room: "empty",
        messages: [],
        complete: true,
      });
    }
    assert.deepEqual(await ask(reader, { room: "empty" }), {
      room: "empty",
      messages: [],
      complete: true,
    });
    // Without history or since: no History frame at all.
    const plain = await enterFrames(reader, "reader", { room: "other" });
    assert.deepEqual(plain.map((f) => f.message_type), ["Presence", "Ack"]);
    await reader.silent(50);
  });

  Deno.test(`history (${label}): History with before and limit pages back`, async () => {
    await using server = await historyServer(storage);
    await fill(server, "lobby", 60);
    await using reader = await TestClient.connect(server.wsUrl);
    await enterWith(reader, "reader", { room: "lobby" });
    // Default limit 50: the newest 50.
    let page = await ask(reader, { room: "lobby" });
    assert.deepEqual(seqs(page), range(11, 60));
    assert.equal(page.complete, true);
    // Page back from the oldest seq seen.
    page = await ask(reader, { room: "lobby", before: 11 });
    assert.deepEqual(seqs(page), range(1, 10));
    assert.equal(page.complete, true);
    page = await ask(reader, { room: "lobby", before: 11, limit: 3 });
    assert.deepEqual(seqs(page), [8, 9, 10]);
    page = await ask(reader, { room: "lobby", limit: 1 });
    assert.deepEqual(seqs(page), [60]);
    page = await ask(reader, { room: "lobby", before: 1 });
    assert.deepEqual(page, { room: "lobby", messages: [], complete: true });
    page = await ask(reader, { room: "lobby", before: 1000, limit: 100 });
    assert.deepEqual(seqs(page), range(1, 60));
    // Out of bounds or not a member: an Error, no History.
    for (
      const [body, code] of [
        [{ room: "lobby", limit: 0 }, "invalid_message"],
        [{ room: "lobby", limit: 101 }, "invalid_message"],
        [{ room: "lobby", before: -1 }, "invalid_message"],
        [{ room: "elsewhere" }, "not_in_room"],
      ] as const
    ) {
      reader.send(frame("History", body, { id: "bad" }));
      const error = await reader.expect("Error");
      assert.equal(error.code, code, JSON.stringify(body));
      assert.equal(error.ref, "bad");
    }
  });

  Deno.test(`history (${label}): complete is false only when HISTORY_SIZE trimmed what was asked for`, async () => {
    await using server = await historyServer({ ...storage, historySize: 5 });
    await fill(server, "lobby", 8);
    // Kept: seq 4 to 8.
    await using reader = await TestClient.connect(server.wsUrl);
    const cases: [Record<string, unknown>, number[], boolean][] = [
      [{ history: 10 }, range(4, 8), false],
      [{ history: 6 }, range(4, 8), false],
      [{ history: 5 }, range(4, 8), true],
      [{ history: 2 }, [7, 8], true],
      [{ since: 0 }, range(4, 8), false],
      [{ since: 2 }, range(4, 8), false],
      [{ since: 3 }, range(4, 8), true],
      [{ since: 6 }, [7, 8], true],
    ];
    for (const [body, expected, complete] of cases) {
      const frames = await enterFrames(reader, "reader", {
        room: "lobby",
        ...body,
      });
      const page = frames[1]!.message_body;
      assert.deepEqual(seqs(page), expected, JSON.stringify(body));
      assert.equal(page.complete, complete, JSON.stringify(body));
    }
    const requests: [Record<string, unknown>, number[], boolean][] = [
      [{}, range(4, 8), false],
      [{ limit: 5 }, range(4, 8), true],
      [{ limit: 6 }, range(4, 8), false],
      [{ before: 6, limit: 2 }, [4, 5], true],
      [{ before: 6, limit: 3 }, [4, 5], false],
      [{ before: 4 }, [], false],
    ];
    for (const [body, expected, complete] of requests) {
      const page = await ask(reader, { room: "lobby", ...body });
      assert.deepEqual(seqs(page), expected, JSON.stringify(body));
      assert.equal(page.complete, complete, JSON.stringify(body));
    }
  });

  Deno.test(`history (${label}): HISTORY_SIZE 0 keeps nothing and says so`, async () => {
    await using server = await historyServer({ ...storage, historySize: 0 });
    await fill(server, "lobby", 3);
    await using reader = await TestClient.connect(server.wsUrl);
    for (
      const [body, complete] of [
        [{ history: 2 }, false],
        [{ since: 0 }, false],
        [{ since: 3 }, true],
        [{ history: 0 }, true],
      ] as const
    ) {
      const frames = await enterFrames(reader, "reader", {
        room: "lobby",
        ...body,
      });
      assert.deepEqual(frames[1]!.message_body, {
        room: "lobby",
        messages: [],
        complete,
      }, JSON.stringify(body));
    }
    // seq goes on all the same (a new id: "m1" again would be a resend).
    await using writer = await TestClient.connect(server.wsUrl);
    await enterWith(writer, "writer", { room: "lobby" });
    const [next] = await chatMany(writer, "writer", "lobby", 1, "n");
    assert.equal(next!.seq, 4);
  });

  Deno.test(`history (${label}): a reconnecting client gets exactly what it missed, once`, async () => {
    await using server = await historyServer(storage);
    await using alice = await TestClient.connect(server.wsUrl);
    await enterWith(alice, "alice", { room: "lobby" });
    let lastSeen = 0;
    {
      await using bob = await TestClient.connect(server.wsUrl);
      await enterWith(bob, "bob", { room: "lobby" });
      await alice.expect("Enter");
      const before = await chatMany(alice, "alice", "lobby", 3, "a");
      for (const message of before) {
        const seen = await bob.expect("GroupChat");
        assert.equal(seen.id, message.id);
        lastSeen = seen.seq;
      }
    }
    assert.equal((await alice.expect("Leave")).reason, "disconnected");
    const missed = await chatMany(alice, "alice", "lobby", 4, "b");
    await using bob = await TestClient.connect(server.wsUrl);
    const frames = await enterFrames(bob, "bob", {
      room: "lobby",
      since: lastSeen,
    });
    assert.deepEqual(frames.map((f) => f.message_type), [
      "Presence",
      "History",
      "Ack",
    ]);
    const page = frames[1]!.message_body;
    assert.equal(page.complete, true);
    assert.deepEqual(
      page.messages.map((m: { id: string; seq: number }) => [m.id, m.seq]),
      missed.map((m) => [m.id, m.seq]),
    );
    // Live again: the next message once, after the replay.
    await alice.expect("Enter");
    const [live] = await chatMany(alice, "alice", "lobby", 1, "c");
    const seen = await bob.expect("GroupChat");
    assert.equal(seen.id, live!.id);
    assert.equal(seen.seq, 8);
    await bob.silent(50);
  });

  Deno.test(`history (${label}): a replay during a burst has every seq once, in order`, async () => {
    await using server = await historyServer(storage);
    await using alice = await TestClient.connect(server.wsUrl);
    await enterWith(alice, "alice", { room: "lobby" });
    await using bob = await TestClient.connect(server.wsUrl);
    const count = 50;
    for (let i = 1; i <= count; i++) {
      alice.send(frame("GroupChat", {
        sender_username: "alice",
        room: "lobby",
        content: `x${i}`,
      }, { id: `x${i}` }));
    }
    // Enter mid-burst: what is already stored comes in History, the rest live.
    let acks = 0;
    while (acks < 5) {
      if ((await alice.next()).message_type === "Ack") acks++;
    }
    bob.send(frame("Enter", {
      sender_username: "bob",
      room: "lobby",
      since: 0,
    }, { id: "e" }));
    while (acks < count) {
      if ((await alice.next()).message_type === "Ack") acks++;
    }
    const seen: number[] = [];
    let answered = false;
    while (seen.length < count || !answered) {
      const next = await bob.next();
      if (next.message_type === "History") {
        assert.equal(seen.length, 0, "History after a live GroupChat");
        seen.push(...seqs(next.message_body));
      } else if (next.message_type === "GroupChat") {
        seen.push(next.message_body.seq);
      } else if (next.message_type === "Ack") {
        assert.equal(next.message_body.ref, "e");
        answered = true;
      } else {
        assert.equal(next.message_type, "Presence");
      }
    }
    assert.deepEqual(seen, range(1, count));
    await bob.silent(50);
  });
}
