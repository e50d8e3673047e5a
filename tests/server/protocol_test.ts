/**
 * Integration tests of the wire protocol (docs: PROTOCOL.md): a real server on
 * port 0, real WebSocket clients. Tokens, history and persistence are tested
 * elsewhere.
 *
 * Why this file is long: one section per part of PROTOCOL.md, plus the
 * table of bad frames (one row per refusal) and the seeded fuzz; kept
 * together so that a frame's rules are looked up in one file.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  ERROR_CODES as ERROR_TABLE,
  type ErrorCode,
} from "../../src/wire/codes.ts";
import { CLIENT_TYPES, SERVER_TYPES } from "../../src/wire/protocol.ts";
import {
  type Body,
  envelope,
  type Frame,
  serve,
  TestClient,
  type TestServer,
  waitForNoLeftovers,
} from "../support/helpers.ts";

// ---------------------------------------------------------------------------
// Small helpers

/** Takes the next frame, which must be an `Error` with `code` (and `ref`). */
async function expectError(
  client: TestClient,
  code: ErrorCode,
  options: { ref?: string; field?: string } = {},
): Promise<Body> {
  const body = await client.expect("Error");
  assert.equal(body.code, code, JSON.stringify(body));
  assert.equal(typeof body.message, "string");
  assert.ok(body.message.length > 0);
  if (options.ref === undefined) assert.equal("ref" in body, false);
  else assert.equal(body.ref, options.ref);
  if (options.field !== undefined) {
    assert.ok(
      body.message.includes(options.field),
      `'${body.message}' should name ${options.field}`,
    );
  }
  return body;
}

/** Asserts a timestamp is a millisecond time between `from` and now. */
function assertTimestamp(timestamp: unknown, from: number): void {
  assert.equal(typeof timestamp, "number");
  assert.ok(Number.isInteger(timestamp));
  assert.ok(
    (timestamp as number) >= from - 1 && (timestamp as number) <= Date.now(),
    `timestamp ${timestamp} not in [${from}, now]`,
  );
}

/** Connects and enters `room` as `username`. */
async function entered(
  server: TestServer,
  username: string,
  room?: string,
): Promise<TestClient> {
  const client = await TestClient.connect(server.wsUrl);
  await client.enter(username, room);
  return client;
}

// ---------------------------------------------------------------------------
// The seed README

// The four frames exactly as the seed README prints them.
const SEED_ENTER = `{
"message_type": "Enter",
"message_body": {
"sender_username": "your_username"
},
"token": "optional_uuid_token"
}`;
const SEED_LEAVE = `{
"message_type": "Leave",
"message_body": {
"sender_username": "your_username"
},
"token": "optional_uuid_token"
}`;
const SEED_GROUP_CHAT = `{
"message_type": "GroupChat",
"message_body": {
"sender_username": "your_username",
"content": "your_message"
},
"token": "optional_uuid_token"
}`;
const SEED_PRIVATE_CHAT = `{
"message_type": "PrivateChat",
"message_body": {
"target_username": "target_user",
"sender_username": "your_username",
"content": "your_message"
},
"token": "optional_uuid_token"
}`;

Deno.test("seed README: the four frames work exactly as printed", async () => {
  await using server = await serve();
  await using target = await TestClient.connect(server.wsUrl);
  await using you = await TestClient.connect(server.wsUrl);
  const start = Date.now();

  target.send(SEED_ENTER.replace("your_username", "target_user"));
  assert.deepEqual(await target.expect("Presence"), {
    room: "general",
    members: ["target_user"],
  });

  you.send(SEED_ENTER);
  assert.deepEqual(await you.expect("Presence"), {
    room: "general",
    members: ["target_user", "your_username"],
  });
  const entered = await target.expect("Enter");
  assert.equal(entered.room, "general");
  assert.equal(entered.sender_username, "your_username");
  assertTimestamp(entered.timestamp, start);

  you.send(SEED_GROUP_CHAT);
  for (const client of [you, target]) {
    const chat = await client.expect("GroupChat");
    assert.equal(chat.room, "general");
    assert.equal(chat.sender_username, "your_username");
    assert.equal(chat.content, "your_message");
    assert.equal(chat.seq, 1);
  }

  you.send(SEED_PRIVATE_CHAT);
  for (const client of [target, you]) {
    const chat = await client.expect("PrivateChat");
    assert.equal(chat.sender_username, "your_username");
    assert.equal(chat.target_username, "target_user");
    assert.equal(chat.content, "your_message");
  }

  you.send(SEED_LEAVE);
  const left = await target.expect("Leave");
  assert.equal(left.room, "general");
  assert.equal(left.sender_username, "your_username");
  assert.equal(left.reason, "left");
  // No id: nothing comes back to the sender, not even an Ack.
  await you.silent();
  await target.silent(0);
});

Deno.test("seed README: Enter without token or room joins general", async () => {
  await using server = await serve();
  await using client = await TestClient.connect(server.wsUrl);
  client.send(
    '{"message_type":"Enter","message_body":{"sender_username":"user1"}}',
  );
  assert.deepEqual(await client.expect("Presence"), {
    room: "general",
    members: ["user1"],
  });
  await client.silent();
});

// ---------------------------------------------------------------------------
// Welcome, Presence, Enter, Leave

Deno.test("Welcome: first frame, with server, connection_id, limits", async () => {
  const cases: {
    name: string;
    overrides: Parameters<typeof serve>[0];
    defaultRoom: string;
    limits: Body;
  }[] = [
    {
      name: "defaults",
      overrides: {},
      defaultRoom: "general",
      limits: {
        max_message_bytes: 65536,
        max_content_chars: 4000,
        max_rooms: 50,
        rate_limit_per_second: 20,
        rate_limit_burst: 40,
      },
    },
    {
      name: "overrides",
      overrides: {
        defaultRoom: "lobby",
        maxMessageBytes: 2048,
        maxContentChars: 100,
        maxRoomsPerConnection: 3,
        rateLimitPerSecond: 0,
        rateLimitBurst: 7,
      },
      defaultRoom: "lobby",
      limits: {
        max_message_bytes: 2048,
        max_content_chars: 100,
        max_rooms: 3,
        rate_limit_per_second: 0,
        rate_limit_burst: 7,
      },
    },
  ];
  for (const c of cases) {
    await using server = await serve(c.overrides);
    // TestClient.connect fails unless the first frame is Welcome.
    await using one = await TestClient.connect(server.wsUrl);
    await using two = await TestClient.connect(server.wsUrl);
    for (const welcome of [one.welcome, two.welcome]) {
      assert.equal(typeof welcome.server, "string", c.name);
      assert.ok(welcome.server.length > 0, c.name);
      assert.equal(typeof welcome.connection_id, "string", c.name);
      assert.ok(welcome.connection_id.length > 0, c.name);
      assert.equal(welcome.auth_required, false, c.name);
      assert.equal("username" in welcome, false, c.name);
      assert.equal(welcome.default_room, c.defaultRoom, c.name);
      assert.deepEqual(welcome.limits, c.limits, c.name);
    }
    assert.notEqual(one.welcome.connection_id, two.welcome.connection_id);
    await one.silent(50);
  }
});

Deno.test("Presence: members sorted, sent again on a repeated Enter", async () => {
  await using server = await serve();
  const clients: TestClient[] = [];
  try {
    for (const name of ["carol", "alice", "dave", "bob"]) {
      clients.push(await entered(server, name, "r1"));
    }
    const [carol, alice, dave, bob] = clients as [
      TestClient,
      TestClient,
      TestClient,
      TestClient,
    ];
    // Take the Enter broadcasts the later arrivals caused.
    for (
      const [client, count] of [[carol, 3], [alice, 2], [dave, 1]] as const
    ) {
      for (let i = 0; i < count; i++) await client.expect("Enter");
    }
    const newcomer = await TestClient.connect(server.wsUrl);
    clients.push(newcomer);
    assert.deepEqual(await newcomer.enter("erin", "r1"), [
      "alice",
      "bob",
      "carol",
      "dave",
      "erin",
    ]);
    for (const client of [carol, alice, dave, bob]) {
      assert.equal((await client.expect("Enter")).sender_username, "erin");
    }
    // Entering again: Presence again, nothing for the others.
    assert.deepEqual(await bob.enter("bob", "r1", "again"), [
      "alice",
      "bob",
      "carol",
      "dave",
      "erin",
    ]);
    for (const client of clients) await client.silent(50);
  } finally {
    for (const client of clients) await client.close();
  }
});

Deno.test("Enter and Leave broadcasts: others only, reason left/disconnected", async () => {
  await using server = await serve();
  await using alice = await entered(server, "alice", "room");
  await using outsider = await entered(server, "outsider", "elsewhere");
  await using bob = await TestClient.connect(server.wsUrl);
  const start = Date.now();

  assert.deepEqual(await bob.enter("bob", "room"), ["alice", "bob"]);
  const enter = await alice.expect("Enter");
  assert.deepEqual(Object.keys(enter).sort(), [
    "room",
    "sender_username",
    "timestamp",
  ]);
  assert.equal(enter.room, "room");
  assert.equal(enter.sender_username, "bob");
  assertTimestamp(enter.timestamp, start);

  // An explicit Leave: the remaining members see reason "left".
  bob.send(envelope("Leave", { sender_username: "bob", room: "room" }, "l1"));
  assert.deepEqual(await bob.expect("Ack"), { ref: "l1" });
  const left = await alice.expect("Leave");
  assert.deepEqual(Object.keys(left).sort(), [
    "reason",
    "room",
    "sender_username",
    "timestamp",
  ]);
  assert.equal(left.room, "room");
  assert.equal(left.sender_username, "bob");
  assert.equal(left.reason, "left");
  assertTimestamp(left.timestamp, start);

  // A close: the remaining members see reason "disconnected".
  assert.deepEqual(await bob.enter("bob", "room"), ["alice", "bob"]);
  assert.equal((await alice.expect("Enter")).sender_username, "bob");
  await bob.close();
  const gone = await alice.expect("Leave");
  assert.equal(gone.room, "room");
  assert.equal(gone.sender_username, "bob");
  assert.equal(gone.reason, "disconnected");
  assertTimestamp(gone.timestamp, start);

  // Nobody outside the room heard any of it; the sender never sees itself.
  await outsider.silent(50);
  await alice.silent(0);
});

// ---------------------------------------------------------------------------
// GroupChat, PrivateChat, Ack

Deno.test("GroupChat: to every member, sender included; Ack after it", async () => {
  await using server = await serve();
  await using alice = await entered(server, "alice", "room");
  await using bob = await entered(server, "bob", "room");
  await using outsider = await entered(server, "outsider", "elsewhere");
  await alice.expect("Enter");
  const start = Date.now();

  for (const [n, sender] of [[1, alice], [2, bob], [3, alice]] as const) {
    const name = sender === alice ? "alice" : "bob";
    sender.send(
      envelope("GroupChat", {
        sender_username: name,
        content: `hello ${n} ☃️`,
        room: "room",
      }, `g${n}`),
    );
    const seen: Body[] = [];
    for (const client of [alice, bob]) {
      const chat = await client.expect("GroupChat");
      assert.deepEqual(Object.keys(chat).sort(), [
        "content",
        "id",
        "room",
        "sender_username",
        "seq",
        "timestamp",
      ]);
      assert.equal(chat.seq, n);
      assert.equal(chat.room, "room");
      assert.equal(chat.sender_username, name);
      assert.equal(chat.content, `hello ${n} ☃️`);
      assert.equal(typeof chat.id, "string");
      assert.ok(chat.id.length > 0);
      assertTimestamp(chat.timestamp, start);
      seen.push(chat);
    }
    assert.deepEqual(seen[0], seen[1]);
    // The Ack comes after the sender's own GroupChat and repeats its ids.
    assert.deepEqual(await sender.expect("Ack"), {
      ref: `g${n}`,
      id: seen[0]?.id,
      seq: n,
      timestamp: seen[0]?.timestamp,
    });
  }
  await outsider.silent(50);
  await alice.silent(0);
  await bob.silent(0);
});

Deno.test("PrivateChat: to the target and the sender only; Ack after it", async () => {
  await using server = await serve();
  await using alice = await entered(server, "alice", "a-room");
  await using bob = await entered(server, "bob", "b-room");
  await using carol = await entered(server, "carol", "a-room");
  await alice.expect("Enter");
  const start = Date.now();

  alice.send(
    envelope("PrivateChat", {
      sender_username: "alice",
      target_username: "bob",
      content: "psst",
    }, "p1"),
  );
  const received = await bob.expect("PrivateChat");
  assert.deepEqual(Object.keys(received).sort(), [
    "content",
    "id",
    "sender_username",
    "target_username",
    "timestamp",
  ]);
  assert.equal(received.sender_username, "alice");
  assert.equal(received.target_username, "bob");
  assert.equal(received.content, "psst");
  assert.equal(typeof received.id, "string");
  assertTimestamp(received.timestamp, start);
  assert.deepEqual(await alice.expect("PrivateChat"), received);
  assert.deepEqual(await alice.expect("Ack"), {
    ref: "p1",
    id: received.id,
    timestamp: received.timestamp,
  });

  alice.send(
    envelope("PrivateChat", {
      sender_username: "alice",
      target_username: "nobody",
      content: "hello?",
    }, "p2"),
  );
  await expectError(alice, "user_not_found", {
    ref: "p2",
    field: "target_username",
  });
  await carol.silent(50);
  await bob.silent(0);
  await alice.silent(0);
});

Deno.test("PrivateChat: every connection of the target and of the sender", async () => {
  // Several connections per user exist only with authentication on.
  await using server = await serve({ authEnabled: true });
  const { tokens } = server.server;
  const aliceToken = (await tokens.issue("alice", 60)).token;
  const bobToken = (await tokens.issue("bob", 60)).token;
  const carolToken = (await tokens.issue("carol", 60)).token;
  const url = (token: string) => `${server.wsUrl}?token=${token}`;
  await using alice1 = await TestClient.connect(url(aliceToken));
  await using alice2 = await TestClient.connect(url(aliceToken));
  await using bob1 = await TestClient.connect(url(bobToken));
  await using bob2 = await TestClient.connect(url(bobToken));
  await using carol = await TestClient.connect(url(carolToken));
  assert.equal(bob2.welcome.username, "bob");

  alice1.send(
    envelope("PrivateChat", {
      sender_username: "alice",
      target_username: "bob",
      content: "to all your devices",
    }, "multi"),
  );
  const first = await bob1.expect("PrivateChat");
  assert.equal(first.content, "to all your devices");
  for (const client of [bob2, alice1, alice2]) {
    assert.deepEqual(await client.expect("PrivateChat"), first);
  }
  assert.equal((await alice1.expect("Ack")).id, first.id);
  for (const client of [carol, alice2, bob1, bob2]) await client.silent(30);
});

Deno.test("Ack: exactly one per accepted message with an id, after its frames", async () => {
  await using server = await serve();
  await using alice = await TestClient.connect(server.wsUrl);

  alice.send(envelope("Enter", { sender_username: "alice" }, "e1"));
  await alice.expect("Presence");
  assert.deepEqual(await alice.expect("Ack"), { ref: "e1" });

  // Entering again is accepted again.
  alice.send(
    envelope("Enter", { sender_username: "alice", room: "general" }, "e2"),
  );
  await alice.expect("Presence");
  assert.deepEqual(await alice.expect("Ack"), { ref: "e2" });

  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "x" }, "g1"),
  );
  const chat = await alice.expect("GroupChat");
  assert.deepEqual(await alice.expect("Ack"), {
    ref: "g1",
    id: chat.id,
    seq: chat.seq,
    timestamp: chat.timestamp,
  });

  // Accepted without id: no Ack.
  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "y" }),
  );
  await alice.expect("GroupChat");
  await alice.silent(80);

  // Refused with id: one Error with ref, and no Ack.
  alice.send(
    envelope("GroupChat", { sender_username: "mallory", content: "z" }, "bad"),
  );
  await expectError(alice, "sender_mismatch", { ref: "bad" });
  await alice.silent(80);

  alice.send(envelope("Leave", { sender_username: "alice" }, "l1"));
  assert.deepEqual(await alice.expect("Ack"), { ref: "l1" });
  await alice.silent(50);
});

// ---------------------------------------------------------------------------
// Identity

Deno.test("identity: not_entered, sender_mismatch, username_taken, freed on close", async () => {
  await using server = await serve();
  await using first = await TestClient.connect(server.wsUrl);
  await using watcher = await entered(server, "watcher", "general");

  // Nothing but Enter before a username is bound.
  const beforeEnter: { frame: Body; ref: string }[] = [
    {
      frame: envelope(
        "GroupChat",
        { sender_username: "a", content: "x" },
        "n1",
      ),
      ref: "n1",
    },
    { frame: envelope("Leave", { sender_username: "a" }, "n2"), ref: "n2" },
    {
      frame: envelope("PrivateChat", {
        sender_username: "a",
        target_username: "watcher",
        content: "x",
      }, "n3"),
      ref: "n3",
    },
  ];
  for (const { frame, ref } of beforeEnter) {
    first.send(frame);
    await expectError(first, "not_entered", { ref });
  }

  await first.enter("alice");
  await watcher.expect("Enter");

  // Another name on a bound connection: refused, and never delivered.
  const mismatches: { frame: Body; ref: string }[] = [
    {
      frame: envelope("GroupChat", {
        sender_username: "watcher",
        content: "spoof",
      }, "m1"),
      ref: "m1",
    },
    {
      frame: envelope("PrivateChat", {
        sender_username: "mallory",
        target_username: "watcher",
        content: "spoof",
      }, "m2"),
      ref: "m2",
    },
    { frame: envelope("Enter", { sender_username: "carol" }, "m3"), ref: "m3" },
    { frame: envelope("Leave", { sender_username: "bob" }, "m4"), ref: "m4" },
  ];
  for (const { frame, ref } of mismatches) {
    first.send(frame);
    await expectError(first, "sender_mismatch", {
      ref,
      field: "sender_username",
    });
  }
  await watcher.silent(50);

  // One live connection per username.
  {
    await using second = await TestClient.connect(server.wsUrl);
    second.send(envelope("Enter", { sender_username: "alice" }, "t1"));
    await expectError(second, "username_taken", {
      ref: "t1",
      field: "sender_username",
    });
    // The refused Enter bound nothing: the connection may take another name.
    assert.deepEqual(await second.enter("bob"), ["alice", "bob", "watcher"]);
    await watcher.expect("Enter");
    await first.expect("Enter");
  }
  assert.equal((await watcher.expect("Leave")).sender_username, "bob");
  await first.expect("Leave");

  // Closed: the username is free again.
  await first.close();
  const left = await watcher.expect("Leave");
  assert.deepEqual([left.sender_username, left.reason], [
    "alice",
    "disconnected",
  ]);
  await using third = await TestClient.connect(server.wsUrl);
  assert.deepEqual(await third.enter("alice"), ["alice", "watcher"]);
});

// ---------------------------------------------------------------------------
// Rooms

Deno.test("rooms: room_required, not_in_room, too_many_rooms", async () => {
  await using server = await serve({ maxRoomsPerConnection: 2 });
  await using alice = await TestClient.connect(server.wsUrl);
  await using bob = await entered(server, "bob", "a");

  assert.deepEqual(await alice.enter("alice", "a"), ["alice", "bob"]);
  await bob.expect("Enter");
  await alice.enter("alice", "b");
  alice.send(envelope("Enter", { sender_username: "alice", room: "c" }, "r1"));
  await expectError(alice, "too_many_rooms", { ref: "r1" });
  // A room it is in already does not count again.
  assert.deepEqual(await alice.enter("alice", "a", "r2"), ["alice", "bob"]);

  const refusals: { frame: Body; code: ErrorCode; field: string }[] = [
    {
      frame: envelope("GroupChat", { sender_username: "alice", content: "x" }),
      code: "room_required",
      field: "room",
    },
    {
      frame: envelope("Leave", { sender_username: "alice" }),
      code: "room_required",
      field: "room",
    },
    {
      frame: envelope("GroupChat", {
        sender_username: "alice",
        content: "x",
        room: "c",
      }),
      code: "not_in_room",
      field: "room",
    },
    {
      frame: envelope("Leave", { sender_username: "alice", room: "c" }),
      code: "not_in_room",
      field: "room",
    },
  ];
  for (const [index, { frame, code, field }] of refusals.entries()) {
    alice.send({ ...frame, id: `x${index}` });
    await expectError(alice, code, { ref: `x${index}`, field });
  }

  // Down to one room: room may be omitted.
  alice.send(envelope("Leave", { sender_username: "alice", room: "b" }, "l1"));
  assert.deepEqual(await alice.expect("Ack"), { ref: "l1" });
  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "hi" }),
  );
  assert.equal((await alice.expect("GroupChat")).room, "a");
  assert.equal((await bob.expect("GroupChat")).room, "a");
  alice.send(envelope("Leave", { sender_username: "alice" }, "l2"));
  assert.deepEqual(await alice.expect("Ack"), { ref: "l2" });
  assert.equal((await bob.expect("Leave")).reason, "left");

  // In no room: room_required again, and a free slot for a new room.
  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "x" }, "z"),
  );
  await expectError(alice, "room_required", { ref: "z", field: "room" });
  await alice.enter("alice", "c");
  await alice.enter("alice", "d");
  await bob.silent(50);
});

Deno.test("rooms: DEFAULT_ROOM is honored", async () => {
  await using server = await serve({ defaultRoom: "lobby" });
  await using alice = await TestClient.connect(server.wsUrl);
  assert.equal(alice.welcome.default_room, "lobby");
  alice.send(envelope("Enter", { sender_username: "alice" }));
  assert.deepEqual(await alice.expect("Presence"), {
    room: "lobby",
    members: ["alice"],
  });
  alice.send(envelope("GroupChat", { sender_username: "alice", content: "x" }));
  assert.equal((await alice.expect("GroupChat")).room, "lobby");
  assert.deepEqual([...server.server.runner.state.rooms.keys()], ["lobby"]);
});

// ---------------------------------------------------------------------------
// Bad input

Deno.test("unsupported_frame: a binary frame gets an Error, the connection stays", async () => {
  await using server = await serve();
  await using alice = await TestClient.connect(server.wsUrl);
  alice.sendBinary(new Uint8Array([0x7b, 0x7d]));
  await expectError(alice, "unsupported_frame");
  await alice.enter("alice");
  alice.sendBinary(new Uint8Array(0));
  await expectError(alice, "unsupported_frame");
  alice.send(
    envelope("GroupChat", { sender_username: "alice", content: "ok" }),
  );
  assert.equal((await alice.expect("GroupChat")).content, "ok");
});

interface BadFrameCase {
  /** What the case is about. */
  name: string;
  /** An object is sent as JSON, a string as it is. */
  frame: Body | string;
  code: ErrorCode;
  /** Text the Error's message must contain. */
  field?: string;
  /** The `ref` the Error must carry. */
  ref?: string;
}

const long = (n: number) => "x".repeat(n);
const chat = (body: Body, id = "c1") => envelope("GroupChat", body, id);
const alice = (extra: Body = {}) => ({
  sender_username: "alice",
  content: "hi",
  ...extra,
});

const BAD_FRAMES: BadFrameCase[] = [
  // invalid_json: not a JSON object
  { name: "not JSON", frame: "hello", code: "invalid_json" },
  { name: "empty frame", frame: "", code: "invalid_json" },
  {
    name: "truncated JSON",
    frame: '{"message_type":"Enter","message_body":{"sender_username":"al',
    code: "invalid_json",
  },
  { name: "array", frame: "[1,2,3]", code: "invalid_json" },
  { name: "number", frame: "42", code: "invalid_json" },
  { name: "null", frame: "null", code: "invalid_json" },
  { name: "string", frame: '"Enter"', code: "invalid_json" },
  { name: "boolean", frame: "true", code: "invalid_json" },
  // unknown_type
  {
    name: "unknown type",
    frame: envelope("Shout", { sender_username: "alice" }, "u1"),
    code: "unknown_type",
    field: "message_type",
    ref: "u1",
  },
  {
    name: "lower case type",
    frame: envelope("groupchat", alice(), "u2"),
    code: "unknown_type",
    field: "message_type",
    ref: "u2",
  },
  {
    name: "a server-only type",
    frame: envelope("Welcome", {}, "u3"),
    code: "unknown_type",
    field: "message_type",
    ref: "u3",
  },
  {
    name: "Ack from a client",
    frame: envelope("Ack", { ref: "x" }, "u4"),
    code: "unknown_type",
    field: "message_type",
    ref: "u4",
  },
  {
    name: "empty type",
    frame: envelope("", alice(), "u5"),
    code: "unknown_type",
    field: "message_type",
    ref: "u5",
  },
  // invalid_message: the envelope
  {
    name: "message_type missing",
    frame: { message_body: alice(), id: "e1" },
    code: "invalid_message",
    field: "message_type",
    ref: "e1",
  },
  {
    name: "message_type a number",
    frame: { message_type: 3, message_body: alice(), id: "e2" },
    code: "invalid_message",
    field: "message_type",
    ref: "e2",
  },
  {
    name: "message_body missing",
    frame: { message_type: "GroupChat", id: "e3" },
    code: "invalid_message",
    field: "message_body",
    ref: "e3",
  },
  {
    name: "message_body an array",
    frame: { message_type: "GroupChat", message_body: [alice()], id: "e4" },
    code: "invalid_message",
    field: "message_body",
    ref: "e4",
  },
  {
    name: "message_body a string",
    frame: { message_type: "Enter", message_body: "alice", id: "e5" },
    code: "invalid_message",
    field: "message_body",
    ref: "e5",
  },
  {
    name: "message_body null",
    frame: { message_type: "Enter", message_body: null, id: "e6" },
    code: "invalid_message",
    field: "message_body",
    ref: "e6",
  },
  {
    name: "id a number",
    frame: { ...chat(alice()), id: 7 },
    code: "invalid_message",
    field: "id",
  },
  {
    name: "id empty",
    frame: { ...chat(alice()), id: "" },
    code: "invalid_message",
    field: "id",
  },
  {
    name: "id of 65 characters",
    frame: { ...chat(alice()), id: long(65) },
    code: "invalid_message",
    field: "id",
  },
  // invalid_message: the body
  {
    name: "content missing",
    frame: chat({ sender_username: "alice" }, "b1"),
    code: "invalid_message",
    field: "content",
    ref: "b1",
  },
  {
    name: "content a number",
    frame: chat(alice({ content: 5 }), "b2"),
    code: "invalid_message",
    field: "content",
    ref: "b2",
  },
  {
    name: "content empty",
    frame: chat(alice({ content: "" }), "b3"),
    code: "invalid_message",
    field: "content",
    ref: "b3",
  },
  {
    name: "content over MAX_CONTENT_CHARS",
    frame: chat(alice({ content: long(4001) }), "b4"),
    code: "invalid_message",
    field: "content",
    ref: "b4",
  },
  {
    name: "sender_username missing",
    frame: chat({ content: "hi" }, "b5"),
    code: "invalid_message",
    field: "sender_username",
    ref: "b5",
  },
  {
    name: "sender_username of 33 characters",
    frame: chat(alice({ sender_username: long(33) }), "b6"),
    code: "invalid_message",
    field: "sender_username",
    ref: "b6",
  },
  {
    name: "sender_username with a space",
    frame: chat(alice({ sender_username: "al ice" }), "b7"),
    code: "invalid_message",
    field: "sender_username",
    ref: "b7",
  },
  {
    name: "room empty",
    frame: chat(alice({ room: "" }), "b8"),
    code: "invalid_message",
    field: "room",
    ref: "b8",
  },
  {
    name: "room with a slash",
    frame: chat(alice({ room: "a/b" }), "b9"),
    code: "invalid_message",
    field: "room",
    ref: "b9",
  },
  {
    name: "room a number",
    frame: envelope("Leave", { sender_username: "alice", room: 1 }, "b10"),
    code: "invalid_message",
    field: "room",
    ref: "b10",
  },
  {
    name: "target_username missing",
    frame: envelope("PrivateChat", alice(), "b11"),
    code: "invalid_message",
    field: "target_username",
    ref: "b11",
  },
  {
    name: "history over 100",
    frame: envelope("Enter", { sender_username: "alice", history: 101 }, "b12"),
    code: "invalid_message",
    field: "history",
    ref: "b12",
  },
  {
    name: "history not an integer",
    frame: envelope("Enter", { sender_username: "alice", history: 1.5 }, "b13"),
    code: "invalid_message",
    field: "history",
    ref: "b13",
  },
  {
    name: "since negative",
    frame: envelope("Enter", { sender_username: "alice", since: -1 }, "b14"),
    code: "invalid_message",
    field: "since",
    ref: "b14",
  },
  {
    name: "since a string",
    frame: envelope("Enter", { sender_username: "alice", since: "3" }, "b15"),
    code: "invalid_message",
    field: "since",
    ref: "b15",
  },
  {
    name: "History limit 0",
    frame: envelope("History", { room: "general", limit: 0 }, "b16"),
    code: "invalid_message",
    field: "limit",
    ref: "b16",
  },
  {
    name: "History room missing",
    frame: envelope("History", { limit: 5 }, "b17"),
    code: "invalid_message",
    field: "room",
    ref: "b17",
  },
  {
    name: "Enter body empty",
    frame: envelope("Enter", {}, "b18"),
    code: "invalid_message",
    field: "sender_username",
    ref: "b18",
  },
];

Deno.test("bad frames: invalid_json, unknown_type, invalid_message; no effect", async () => {
  await using server = await serve({ maxConsecutiveErrors: 1000 });
  await using client = await entered(server, "alice", "general");
  await using watcher = await entered(server, "watcher", "general");
  await client.expect("Enter");
  for (const c of BAD_FRAMES) {
    client.send(c.frame);
    try {
      await expectError(client, c.code, { ref: c.ref, field: c.field });
    } catch (error) {
      throw new Error(`case '${c.name}': ${(error as Error).message}`);
    }
  }
  // No Error had any effect, and the connection is still fine.
  await client.silent(50);
  await watcher.silent(0);
  client.send(envelope("GroupChat", alice(), "ok"));
  assert.equal((await client.expect("GroupChat")).content, "hi");
  assert.equal((await client.expect("Ack")).seq, 1);
  assert.equal((await watcher.expect("GroupChat")).seq, 1);
});

interface GoodFrameCase {
  name: string;
  frame: Body;
}

const GOOD_FRAMES: GoodFrameCase[] = [
  {
    name: "extra envelope and body fields are ignored",
    frame: {
      ...chat(alice({ color: "red", nested: { a: [1, 2] } })),
      extra: true,
    },
  },
  { name: "token a number (auth off)", frame: { ...chat(alice()), token: 42 } },
  { name: "token an object", frame: { ...chat(alice()), token: { a: 1 } } },
  { name: "token null", frame: { ...chat(alice()), token: null } },
  { name: "id of 64 characters", frame: { ...chat(alice()), id: long(64) } },
  { name: "id of 1 character", frame: { ...chat(alice()), id: "1" } },
  {
    name: "unicode room name",
    frame: envelope("Enter", {
      sender_username: "alice",
      room: "Zoë_房间-1.x",
    }),
  },
  {
    name: "room of 32 characters",
    frame: envelope("Enter", { sender_username: "alice", room: long(32) }),
  },
  {
    name: "content of MAX_CONTENT_CHARS",
    frame: chat(alice({ content: long(4000), room: "general" })),
  },
  {
    name: "unicode content",
    frame: chat(alice({ content: "héllo 👋🏽 مرحبا \u0000", room: "general" })),
  },
];

Deno.test("good frames: edge cases that must be accepted", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  await using client = await entered(server, "alice", "general");
  for (const [index, c] of GOOD_FRAMES.entries()) {
    const id = typeof c.frame.id === "string" ? c.frame.id : `ok${index}`;
    client.send({ ...c.frame, id });
    let frame: Frame;
    do {
      frame = await client.next();
      if (frame.message_type === "Error") {
        throw new Error(`case '${c.name}': ${JSON.stringify(frame)}`);
      }
    } while (frame.message_type !== "Ack");
    assert.equal(frame.message_body.ref, id, c.name);
  }
  await client.silent(30);
});

// ---------------------------------------------------------------------------
// Fan-out order

Deno.test("fan-out: concurrent senders, every member sees every seq once, in order", async () => {
  const MEMBERS = 5;
  const SENDERS = 3;
  const EACH = 30;
  await using server = await serve();
  const clients: TestClient[] = [];
  try {
    for (let i = 0; i < MEMBERS; i++) {
      clients.push(await entered(server, `m${i}`, "busy"));
    }
    // Drop the Enter broadcasts of later arrivals.
    for (const [i, client] of clients.entries()) {
      for (let k = i + 1; k < MEMBERS; k++) await client.expect("Enter");
    }
    // The senders send all at once, interleaved on the wire.
    for (let n = 0; n < EACH; n++) {
      for (let s = 0; s < SENDERS; s++) {
        (clients[s] as TestClient).send(
          envelope("GroupChat", {
            sender_username: `m${s}`,
            content: `${s}:${n}`,
            room: "busy",
          }, `m${s}-${n}`),
        );
      }
    }
    const total = SENDERS * EACH;
    const streams = await Promise.all(clients.map(async (client, index) => {
      const chats: Body[] = [];
      const acked = new Set<string>();
      const seenIds = new Set<string>();
      while (chats.length < total || (index < SENDERS && acked.size < EACH)) {
        const frame = await client.next();
        if (frame.message_type === "GroupChat") {
          chats.push(frame.message_body);
          seenIds.add(frame.message_body.id);
        } else if (frame.message_type === "Ack") {
          const ack = frame.message_body;
          // The Ack follows the sender's own copy of the message.
          assert.ok(seenIds.has(ack.id), `Ack before its GroupChat`);
          acked.add(ack.ref);
        } else throw new Error(`unexpected ${JSON.stringify(frame)}`);
      }
      return chats;
    }));
    const reference = streams[0] as Body[];
    for (const chats of streams) {
      assert.equal(chats.length, total);
      // Strictly increasing seq, no gaps, no duplicates.
      assert.deepEqual(
        chats.map((chat) => chat.seq),
        Array.from({ length: total }, (_, i) => i + 1),
      );
      // Everyone sees the same messages under the same seq.
      assert.deepEqual(
        chats.map((chat) => chat.id),
        reference.map((chat) => chat.id),
      );
      // Each sender's messages in the order it sent them.
      for (let s = 0; s < SENDERS; s++) {
        assert.deepEqual(
          chats.filter((chat) => chat.sender_username === `m${s}`)
            .map((chat) => chat.content),
          Array.from({ length: EACH }, (_, n) => `${s}:${n}`),
        );
      }
    }
    for (const client of clients) await client.silent(0);
  } finally {
    for (const client of clients) await client.close();
  }
  await waitForNoLeftovers(server);
});

// ---------------------------------------------------------------------------
// Seeded fuzz

/** A tiny seeded PRNG, so a failing run can be replayed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Fuzz {
  constructor(readonly random: () => number) {}

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  string(max = 40): string {
    const alphabets = [
      "abcxyz",
      "ABC_-.09",
      "éüñßøå",
      "名字房间用户",
      "مرحبا",
      "👋🏽🎉😀",
      ' \t\n"\\/{}[]:,',
      "\u0000\u001f\u007f\u200b\u202e\ufeff",
      "\ud800\udfff", // lone surrogates, one at a time
    ];
    let text = "";
    const length = this.int(max + 1);
    for (let i = 0; i < length; i++) {
      const alphabet = this.pick(alphabets);
      text += alphabet[this.int(alphabet.length)];
    }
    return text;
  }

  number(): number {
    return this.pick([
      0,
      -1,
      1,
      1.5,
      100,
      101,
      2 ** 31,
      2 ** 53 - 1,
      2 ** 53 + 2,
      -(2 ** 53),
      1e308,
      -1e308,
      5e-324,
      this.int(1000),
    ]);
  }

  value(depth = 0): unknown {
    const kind = this.int(depth > 3 ? 4 : 7);
    switch (kind) {
      case 0:
        return null;
      case 1:
        return this.random() < 0.5;
      case 2:
        return this.number();
      case 3:
        return this.string();
      case 4:
        return Array.from({ length: this.int(4) }, () => this.value(depth + 1));
      default: {
        const object: Body = {};
        for (let i = this.int(4); i > 0; i--) {
          object[this.string(8)] = this.value(depth + 1);
        }
        return object;
      }
    }
  }

  name(): unknown {
    return this.pick([
      () => `f${this.int(6)}`,
      () => this.string(12),
      () => "x".repeat(32),
      () => "x".repeat(33),
      () => "",
      () => "Zoë",
      () => "用户",
      () => this.value(2),
    ])();
  }

  /** A body with plausible and implausible fields for one of the types. */
  body(own: string): Body {
    const body: Body = {};
    const fields: [string, () => unknown][] = [
      ["sender_username", () => this.random() < 0.7 ? own : this.name()],
      ["target_username", () => this.name()],
      ["room", () => this.pick(["general", "f-room", this.name()])],
      ["content", () => this.random() < 0.8 ? this.string(60) : this.value(1)],
      ["history", () => this.number()],
      ["since", () => this.number()],
      ["before", () => this.number()],
      ["limit", () => this.number()],
    ];
    for (const [key, make] of fields) {
      const likely = key === "sender_username" || key === "content";
      if (this.random() < (likely ? 0.85 : 0.25)) body[key] = make();
    }
    if (this.random() < 0.2) body[this.string(6)] = this.value(1);
    return body;
  }

  deep(depth: number): string {
    return "[".repeat(depth) + "]".repeat(depth);
  }
}

/** One fuzz frame, and the `ref` its one answer must carry. */
interface FuzzFrame {
  text: string | Uint8Array<ArrayBuffer>;
  ref?: string;
}

function fuzzFrame(fuzz: Fuzz, id: string, own: string): FuzzFrame {
  const type = () => fuzz.pick([...CLIENT_TYPES, "Nope", "enter", ""]);
  switch (fuzz.int(9)) {
    case 0: // random JSON: never an envelope
      return { text: JSON.stringify(fuzz.value()) ?? "null" };
    case 1: { // a valid-looking envelope, truncated
      const text = JSON.stringify(envelope(type(), fuzz.body(own), id));
      return { text: text.slice(0, fuzz.int(text.length)) };
    }
    case 2: // deep nesting, bare
      return { text: fuzz.deep(1 + fuzz.int(5000)) };
    case 3: // deep nesting inside a valid envelope
      return {
        text: `{"id":"${id}","message_type":"Enter","message_body":` +
          `{"sender_username":"${own}","junk":${
            fuzz.deep(1 + fuzz.int(3000))
          }}}`,
        ref: id,
      };
    case 4: // wrong types in the envelope
      return {
        text: JSON.stringify({
          message_type: fuzz.pick([fuzz.value(2), type()]),
          message_body: fuzz.value(2),
          token: fuzz.value(2),
          id,
        }),
        ref: id,
      };
    case 5: // a bad id: an Error without ref
      return {
        text: JSON.stringify({
          ...envelope(type(), fuzz.body(own)),
          id: fuzz.pick<unknown>([7, "", "i".repeat(65), [], { id }, false]),
        }),
      };
    case 6: // binary
      return {
        text: crypto.getRandomValues(new Uint8Array(fuzz.int(64))),
      };
    default: // a valid envelope with a random body
      return {
        text: JSON.stringify({
          ...envelope(type(), fuzz.body(own), id),
          ...(fuzz.random() < 0.3 ? { token: fuzz.value(1) } : {}),
        }),
        ref: id,
      };
  }
}

Deno.test("fuzz: hundreds of seeded random frames; exactly one answer each; nothing left behind", async () => {
  const SEED = 0x5eed_c0de;
  const CONNECTIONS = 4;
  const FRAMES = 400;
  await using server = await serve({
    rateLimitPerSecond: 100_000,
    rateLimitBurst: 100_000,
    maxConsecutiveErrors: 100_000,
  });
  const fuzz = new Fuzz(mulberry32(SEED));
  // Each connection starts with a valid Enter, so that later frames reach
  // the rules behind it; the rest is random.
  const plans: FuzzFrame[][] = Array.from({ length: CONNECTIONS }, (_, c) => [{
    text: JSON.stringify(
      envelope("Enter", { sender_username: `f${c}` }, `enter-${c}`),
    ),
    ref: `enter-${c}`,
  }]);
  for (let i = 0; i < FRAMES; i++) {
    const c = fuzz.int(CONNECTIONS);
    (plans[c] as FuzzFrame[]).push(fuzzFrame(fuzz, `fz-${i}`, `f${c}`));
  }
  const clients: TestClient[] = [];
  const types = new Set<string>(SERVER_TYPES);
  const counts = { Ack: 0, Error: 0, chatAcks: 0 };
  try {
    for (let c = 0; c < CONNECTIONS; c++) {
      clients.push(await TestClient.connect(server.wsUrl));
    }
    // Each connection sends its frames one at a time, all connections at
    // once; every frame gets exactly one Ack or Error, carrying its id.
    await Promise.all(clients.map(async (client, c) => {
      for (const [index, frame] of (plans[c] as FuzzFrame[]).entries()) {
        if (typeof frame.text === "string") client.send(frame.text);
        else client.sendBinary(frame.text);
        let answer: Frame;
        do {
          answer = await client.next();
          assert.ok(types.has(answer.message_type), answer.message_type);
        } while (
          answer.message_type !== "Ack" && answer.message_type !== "Error"
        );
        const where = `seed ${SEED}, connection ${c}, frame ${index}: ${
          String(frame.text).slice(0, 200)
        } -> ${JSON.stringify(answer).slice(0, 300)}`;
        assert.equal(answer.message_body.ref, frame.ref, where);
        if (answer.message_type === "Error") {
          assert.ok(answer.message_body.code in ERROR_TABLE, where);
          assert.notEqual(answer.message_body.code, "rate_limited", where);
        }
        counts[answer.message_type]++;
        if (answer.message_type === "Ack" && "id" in answer.message_body) {
          counts.chatAcks++;
        }
      }
    }));
    // Both outcomes happened: the fuzz reached past validation.
    assert.ok(counts.Ack > 10, JSON.stringify(counts));
    assert.ok(counts.Error > 100, JSON.stringify(counts));
    assert.ok(counts.chatAcks > 0, JSON.stringify(counts));
    for (const client of clients) {
      assert.equal(client.socket.readyState, WebSocket.OPEN);
    }

    // Still serving: fresh clients can enter and chat.
    await using fresh = await entered(server, "fresh", "after-fuzz");
    await using friend = await entered(server, "friend", "after-fuzz");
    await fresh.expect("Enter");
    fresh.send(
      envelope("GroupChat", { sender_username: "fresh", content: "alive" }),
    );
    assert.equal((await friend.expect("GroupChat")).content, "alive");
    assert.equal((await fresh.expect("GroupChat")).content, "alive");
  } finally {
    for (const client of clients) await client.close();
  }
  await waitForNoLeftovers(server);
  const health = await (await fetch(`${server.httpUrl}/healthz`)).json();
  assert.equal(health.status, "ok");
  assert.deepEqual(
    [health.connections, health.rooms, health.users],
    [0, 0, 0],
  );
});
