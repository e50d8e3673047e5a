import assert from "node:assert/strict";
import { ERROR_CODES } from "../../src/wire/codes.ts";
import { backoffDelay } from "../../src/client/backoff.ts";
import {
  ChatClient,
  ChatError,
  type ChatEvent,
  NAME_PATTERN,
  type StoredGroupChat,
} from "../../src/client/chat_client.ts";
import {
  describeError,
  SERVER_ERROR_TEXT,
} from "../../src/client/error_text.ts";
import { parseServerFrame } from "../../src/client/frames.ts";
import { NAME_PATTERN as SERVER_NAME_PATTERN } from "../../src/wire/protocol.ts";
import { serve, TestClient } from "../support/helpers.ts";

/** A port that was free a moment ago, for a server that must restart on it. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Polls `check` until it holds, or fails after `ms`. */
async function waitFor(
  what: string,
  check: () => boolean,
  ms = 5000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Every event a client emits, in order. */
function record(client: ChatClient): ChatEvent[] {
  const events: ChatEvent[] = [];
  client.on("*", (event) => events.push(event));
  return events;
}

/** The room messages a client showed: live ones and history, in order. */
function shown(events: ChatEvent[], room: string): StoredGroupChat[] {
  return events.flatMap((event) => {
    if (event.type === "group_chat" && event.body.room === room) {
      return [event.body];
    }
    if (event.type === "history" && event.body.room === room) {
      return event.body.messages;
    }
    return [];
  });
}

Deno.test("client: acks resolve with what the server assigned", async () => {
  await using server = await serve();
  await using alice = new ChatClient({ url: server.wsUrl, username: "alice" });
  await using bob = new ChatClient({ url: server.wsUrl, username: "bob" });
  const aliceEvents = record(alice);
  const bobEvents = record(bob);

  const welcome = await alice.connect();
  assert.equal(welcome.auth_required, false);
  assert.equal(alice.state, "open");
  const entered = await alice.enter("general", { history: 10 });
  assert.match(entered.ref, /^c[0-9a-z]+-\d+$/);
  const first = await alice.groupChat("general", "hello");
  assert.equal(first.seq, 1);
  assert.match(first.id, /^[0-9a-f-]{36}$/);
  assert.ok(first.timestamp > 0);

  await bob.connect();
  await bob.enter("general", { history: 10 });
  assert.deepEqual(bob.members("general"), ["alice", "bob"]);
  await waitFor("alice to see bob", () => alice.members("general").length > 1);
  assert.ok(
    aliceEvents.some((e) =>
      e.type === "enter" && e.body.sender_username === "bob"
    ),
  );
  // Bob's entry history holds alice's message.
  assert.deepEqual(shown(bobEvents, "general").map((m) => m.content), [
    "hello",
  ]);

  const secret = await bob.privateChat("alice", "psst");
  assert.match(secret.id, /^[0-9a-f-]{36}$/);
  await waitFor(
    "the private message",
    () => aliceEvents.some((e) => e.type === "private_chat"),
  );
  const second = await bob.groupChat("general", "hi alice");
  assert.equal(second.seq, 2);
  const older = await alice.history("general", { before: 2, limit: 5 });
  assert.deepEqual(older.messages.map((m) => m.seq), [1]);
  // Already shown, so the history event added nothing.
  assert.deepEqual(shown(aliceEvents, "general").map((m) => m.seq), [1, 2]);
  assert.equal(alice.lastSeq("general"), 2);

  await bob.leave("general");
  assert.deepEqual(bob.rooms, []);
  await waitFor(
    "bob's leave",
    () => aliceEvents.some((e) => e.type === "leave"),
  );
  assert.deepEqual(alice.members("general"), ["alice"]);
});

Deno.test("client: errors reject with the server's code", async () => {
  await using server = await serve();
  await using alice = new ChatClient({ url: server.wsUrl, username: "alice" });
  await using impostor = new ChatClient({
    url: server.wsUrl,
    username: "alice",
  });
  const events = record(impostor);
  await alice.connect();
  await alice.enter("general");
  await impostor.connect();

  const taken = await impostor.enter("general").then(
    () => assert.fail("entered under a taken name"),
    (error) => error,
  );
  assert.ok(taken instanceof ChatError);
  assert.equal(taken.code, "username_taken");
  assert.match(taken.ref ?? "", /^c/);
  assert.equal(taken.message, SERVER_ERROR_TEXT.username_taken);
  // The room was forgotten, and the error was reported as handled.
  assert.deepEqual(impostor.rooms, []);
  const reported = events.find((e) => e.type === "error");
  assert.ok(reported?.type === "error" && reported.handled);

  await assert.rejects(
    alice.groupChat("elsewhere", "hi"),
    (error: ChatError) => error.code === "not_in_room",
  );
  await assert.rejects(
    alice.privateChat("nobody", "hi"),
    (error: ChatError) => error.code === "user_not_found",
  );
  await assert.rejects(
    alice.groupChat("general", ""),
    (error: ChatError) =>
      error.code === "invalid_message" &&
      error.detail === "message_body.content: must be 1 to 4000 characters" &&
      error.message.includes("The message must be 1 to 4000 characters"),
  );
  await assert.rejects(
    alice.history("elsewhere"),
    (error: ChatError) => error.code === "not_in_room",
  );
  // The connection is still good after refusals.
  assert.equal((await alice.groupChat("general", "still here")).seq, 1);

  await impostor.close();
  await assert.rejects(
    impostor.groupChat("general", "late"),
    (error: ChatError) => error.code === "closed",
  );
});

Deno.test("client: without a connection, requests reject and enter waits", async () => {
  await using server = await serve();
  const client = new ChatClient({ url: server.wsUrl, username: "carol" });
  await assert.rejects(
    client.groupChat("general", "hi"),
    (error: ChatError) => error.code === "not_connected",
  );
  // Entered before connecting: sent once the Welcome arrives.
  const entered = client.enter("general");
  await client.connect();
  await entered;
  assert.deepEqual(client.members("general"), ["carol"]);
  await client.close();
  assert.equal(client.state, "closed");
  await assert.rejects(client.connect(), (e: ChatError) => e.code === "closed");
});

Deno.test(
  "client: after a server restart it recovers with since, missing nothing and showing nothing twice",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "chat_client_test_" });
    const port = freePort();
    const settings = { port, databasePath: `${dir}/chat.db` };
    const url = `ws://127.0.0.1:${port}/ws`;
    // While `online` is false the client's attempts go to a closed port, so
    // the test decides when it comes back.
    let online = true;
    const deadUrl = `ws://127.0.0.1:${freePort()}/ws`;
    class GatedWebSocket extends WebSocket {
      constructor(target: string) {
        super(online ? target : deadUrl);
      }
    }
    try {
      await using alice = new ChatClient({
        url,
        username: "alice",
        WebSocket: GatedWebSocket,
        backoff: { initialMs: 50, maxMs: 200, jitter: 0.5 },
      });
      const events = record(alice);
      {
        await using _first = await serve(settings);
        await using bob = await TestClient.connect(url);
        await alice.connect();
        await alice.enter("general", { history: 50 });
        await alice.enter("quiet"); // no history asked: the client learns the seq
        await bob.enter("bob", "general");
        for (const content of ["one", "two"]) {
          bob.send({
            message_type: "GroupChat",
            message_body: { sender_username: "bob", content, room: "general" },
          });
          await bob.expect("GroupChat");
        }
        await waitFor("two messages", () => alice.lastSeq("general") === 2);
        assert.equal(alice.lastSeq("quiet"), 0);
        online = false;
      } // the first server shuts down here: alice is dropped with 1001
      await waitFor("reconnecting", () => alice.state === "reconnecting");
      const drop = events.find((e) =>
        e.type === "state" && e.state === "reconnecting"
      );
      assert.ok(drop?.type === "state" && drop.closeCode === 1001);

      await using _second = await serve(settings);
      await using bob = await TestClient.connect(url);
      await bob.enter("bob", "general");
      bob.send({
        message_type: "Enter",
        message_body: { sender_username: "bob", room: "quiet" },
      });
      await bob.expect("Presence");
      const away = [["general", "three"], ["general", "four"], [
        "quiet",
        "psst",
      ]];
      for (const [room, content] of away) {
        bob.send({
          message_type: "GroupChat",
          message_body: { sender_username: "bob", content, room },
        });
        await bob.expect("GroupChat");
      }
      // Attempts failed meanwhile; now the network is back.
      await waitFor(
        "failed attempts",
        () =>
          events.filter((e) => e.type === "state" && e.state === "reconnecting")
            .length >= 3,
      );
      assert.equal(alice.state === "open", false);
      online = true;
      await waitFor("recovery", () => alice.lastSeq("general") === 4, 8000);
      await waitFor("quiet recovery", () => alice.lastSeq("quiet") === 1);
      assert.equal(alice.state, "open");

      // Seq continues after the restart; then a live message.
      const five = await alice.groupChat("general", "five");
      assert.equal(five.seq, 5);
      // A history request that overlaps what was shown adds nothing.
      const newest = await alice.history("general");
      assert.deepEqual(newest.messages.map((m) => m.seq), [1, 2, 3, 4, 5]);

      const general = shown(events, "general");
      assert.deepEqual(general.map((m) => m.seq), [1, 2, 3, 4, 5]);
      assert.deepEqual(general.map((m) => m.content), [
        "one",
        "two",
        "three",
        "four",
        "five",
      ]);
      assert.deepEqual(shown(events, "quiet").map((m) => m.content), ["psst"]);
      const recovery = events.filter((e) =>
        e.type === "history" && e.reason === "recovery"
      );
      assert.equal(recovery.length, 2);
      assert.deepEqual(alice.members("general"), ["alice", "bob"]);
      await alice.close(); // before the server goes, so it does not retry
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("client: error sentences cover every server code", () => {
  for (const code of Object.keys(ERROR_CODES)) {
    const sentence = describeError(code);
    assert.ok(sentence.length > 20, code);
    assert.notEqual(sentence, describeError("no_such_code"), code);
  }
  assert.equal(
    describeError("no_such_code", "boom"),
    "Something went wrong: boom",
  );
});

Deno.test("client: names are checked as the server checks them", () => {
  assert.equal(NAME_PATTERN.source, SERVER_NAME_PATTERN.source);
  assert.equal(NAME_PATTERN.flags, SERVER_NAME_PATTERN.flags);
});

Deno.test("client: frames parse into typed events; junk is unknown", () => {
  const chat = parseServerFrame(JSON.stringify({
    message_type: "GroupChat",
    message_body: {
      id: "x",
      seq: 3,
      room: "r",
      sender_username: "a",
      content: "c",
      timestamp: 1,
    },
  }));
  assert.equal(chat.type, "group_chat");
  assert.equal(chat.type === "group_chat" && chat.body.seq, 3);
  for (
    const junk of [
      "not json",
      "[]",
      '{"message_type":"GroupChat","message_body":{"seq":"3"}}',
      '{"message_type":"Nope","message_body":{}}',
    ]
  ) {
    assert.equal(parseServerFrame(junk).type, "unknown", junk);
  }
});

Deno.test("client: backoff grows, is capped and jittered", () => {
  const options = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  assert.equal(backoffDelay(0, options, () => 0), 100);
  assert.equal(backoffDelay(3, options, () => 0), 800);
  assert.equal(backoffDelay(10, options, () => 0), 1000);
  assert.equal(backoffDelay(3, options, () => 1), 400);
});
