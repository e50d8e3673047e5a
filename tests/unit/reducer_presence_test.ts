/**
 * Reducer tables for large rooms' presence: the switch past
 * `PRESENCE_FULL_LIMIT`, joins and leaves coalesced per tick, `Members`
 * paging, the way back below 90% of the limit, and the caps on names.
 * Small rooms' presence is in `reducer_rooms_test.ts`. At the end, idle
 * rooms: a room forgotten when empty, its `seq` read back when it opens.
 *
 * Why this file is long: mostly one case table, one row a step of a large
 * room's life (the switch, the coalescing, paging, the way back), sharing
 * the `THREE` steps and the `diff` and `members` frames; a rule's rows stay
 * in one place.
 *
 * Conventions (see `tests/support/reducer_harness.ts`): connections 1, 2
 * and 3 enter as alice, bob and carol; with a limit of 2 the third user makes
 * the room large, and it is full again below 2 (90% of 2, rounded up).
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  Chat,
  inbox,
  scenarios,
  type Step,
} from "../support/reducer_harness.ts";
import {
  ack,
  assertFrames,
  enter,
  entered,
  error,
  type Frame,
  leave,
  left,
  message,
  presence,
  say,
  T0,
  WHEN_AT,
  withId,
} from "../support/reducer_frames.ts";
import type { ConnId, Event } from "../../src/chat/reducer.ts";
import { fullAgainBelow } from "../../src/chat/presence.ts";

const LIMIT = { settings: { presenceFullLimit: 2 } } as const;

function tick(now = T0 + 100): Step {
  return { event: { type: "tick", now } };
}

const TICK: Step = { event: { type: "tick", now: WHEN_AT } };

function diff(
  count: number,
  joined: string[],
  left: string[],
  counts: { joined?: number; left?: number } = {},
): Frame {
  return ["PresenceDiff", {
    room: "general",
    count,
    joined,
    joined_count: counts.joined ?? joined.length,
    left,
    left_count: counts.left ?? left.length,
    timestamp: WHEN_AT,
  }];
}

function members(body: Record<string, unknown>, id = "m1") {
  return message("Members", { room: "general", ...body }, withId(id));
}

const THREE: Step[] = [
  [1, enter("alice")],
  [2, enter("bob")],
  [3, enter("carol")],
];

scenarios("Large rooms", [
  {
    name: "a room at the limit keeps full presence, byte for byte",
    options: LIMIT,
    given: [[1, enter("alice")]],
    when: [2, enter("bob")],
    then: {
      1: [entered("general", "bob")],
      2: [presence("general", ["alice", "bob"])],
    },
  },
  {
    name: "the join past the limit switches: no Enter, Presence with count",
    options: LIMIT,
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [3, enter("carol", {}, withId("e1"))],
    then: {
      3: [
        ["Presence", {
          room: "general",
          members: ["alice", "bob", "carol"],
          count: 3,
          more: false,
          cursor: 3,
        }],
        ack("e1"),
      ],
    },
    also: (state) => assert.ok(state.rooms.get("general")?.large),
  },
  {
    name: "the tick sends the gathered joins as one PresenceDiff to all",
    options: LIMIT,
    given: THREE,
    when: TICK,
    then: {
      1: [diff(3, ["carol"], [])],
      2: [diff(3, ["carol"], [])],
      3: [diff(3, ["carol"], [])],
    },
  },
  {
    name: "a tick with nothing gathered sends nothing",
    options: LIMIT,
    given: [...THREE, tick()],
    when: TICK,
    then: {},
  },
  {
    name: "a leave in a large room is gathered, not announced",
    options: LIMIT,
    given: [...THREE, tick()],
    when: [3, leave("carol")],
    then: {},
  },
  {
    name: "a leave goes out with the next tick and the new count",
    options: LIMIT,
    given: [...THREE, tick(), [3, leave("carol")]],
    when: TICK,
    then: { 1: [diff(2, [], ["carol"])], 2: [diff(2, [], ["carol"])] },
    also: (state) => assert.ok(state.rooms.get("general")?.large),
  },
  {
    name: "at the limit (not below 90%) the room stays large",
    options: LIMIT,
    given: [...THREE, tick(), [3, leave("carol")], tick()],
    when: [3, enter("carol")],
    then: {
      3: [["Presence", {
        room: "general",
        members: ["alice", "bob", "carol"],
        count: 3,
        more: false,
        cursor: 4,
      }]],
    },
  },
  {
    name: "a join and a leave of one user within a tick cancel out",
    options: LIMIT,
    given: [...THREE, tick(), [3, leave("carol")], [3, enter("carol")]],
    when: TICK,
    then: {},
  },
  {
    name: "a closed connection's user leaves by the tick too",
    options: LIMIT,
    given: [...THREE, tick(), { close: 2 }],
    when: TICK,
    then: { 1: [diff(2, [], ["bob"])], 3: [diff(2, [], ["bob"])] },
  },
  {
    name: "below 90% of the limit the tick sends a full Presence instead",
    options: LIMIT,
    given: [
      ...THREE,
      tick(),
      [3, leave("carol")],
      tick(),
      [2, leave("bob")],
    ],
    when: TICK,
    then: { 1: [presence("general", ["alice"])] },
    also: (state) => assert.equal(state.rooms.get("general")?.large, false),
  },
  {
    name: "back to full presence, joins are announced one by one again",
    options: LIMIT,
    given: [
      ...THREE,
      tick(),
      [3, leave("carol")],
      [2, leave("bob")],
      tick(),
    ],
    when: [2, enter("bob")],
    then: {
      1: [entered("general", "bob")],
      2: [presence("general", ["alice", "bob"])],
    },
  },
  {
    name: "a small room's leaves are announced at once",
    options: LIMIT,
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: [2, leave("bob")],
    then: { 1: [left("general", "bob", "left")], 2: [] },
  },
]);

scenarios("Members", [
  {
    name: "pages in join order with a cursor",
    options: LIMIT,
    given: THREE,
    when: [2, members({ cursor: 1, limit: 1 })],
    then: {
      2: [
        ["Members", {
          room: "general",
          members: ["bob"],
          count: 3,
          more: true,
          cursor: 2,
        }],
        ack("m1"),
      ],
    },
  },
  {
    name: "the last page says no more",
    options: LIMIT,
    given: THREE,
    when: [2, members({ cursor: 2 })],
    then: {
      2: [
        ["Members", {
          room: "general",
          members: ["carol"],
          count: 3,
          more: false,
          cursor: 3,
        }],
        ack("m1"),
      ],
    },
  },
  {
    name: "past the end: an empty page that keeps the cursor",
    given: [[1, enter("alice")]],
    when: [1, members({ cursor: 9 })],
    then: {
      1: [
        ["Members", {
          room: "general",
          members: [],
          count: 1,
          more: false,
          cursor: 9,
        }],
        ack("m1"),
      ],
    },
  },
  {
    name: "skips members who left since",
    options: LIMIT,
    given: [...THREE, [2, leave("bob")]],
    when: [1, members({})],
    then: {
      1: [
        ["Members", {
          room: "general",
          members: ["alice", "carol"],
          count: 2,
          more: false,
          cursor: 3,
        }],
        ack("m1"),
      ],
    },
  },
  {
    name: "of a room the connection is not in: not_in_room",
    given: [[1, enter("alice")], [2, enter("bob", { room: "other" })]],
    when: [2, members({})],
    then: {
      2: [error("not_in_room", "m1", /not in room 'general'/)],
    },
  },
  {
    name: "a limit over 500 is refused",
    given: [[1, enter("alice")]],
    when: [1, members({ limit: 501 })],
    then: {
      1: [
        error(
          "invalid_message",
          "m1",
          /^message_body.limit: must be at most 500$/,
        ),
      ],
    },
  },
]);

/** A chat of `n` users entering `general` on connections 1..n. */
function crowd(n: number, limit: number): Chat {
  const chat = new Chat({ settings: { presenceFullLimit: limit } });
  for (let i = 1; i <= n; i++) {
    chat.open(i);
    chat.send(i, enter(`u${i}`));
  }
  return chat;
}

function tickAt(chat: Chat, now: number) {
  chat.now = now;
  return chat.dispatch({ type: "tick", now } satisfies Event);
}

Deno.test("Large rooms: names in a PresenceDiff and a Presence are capped, counts are not", () => {
  const chat = crowd(149, 2);
  chat.open(150);
  const seen = chat.send(150, enter("u150"));
  const [presenceFrame] = inbox(seen, 150);
  assert.ok(presenceFrame);
  const body = presenceFrame[1] as {
    members: string[];
    count: number;
    more: boolean;
    cursor: number;
  };
  assert.equal(body.members.length, 100);
  assert.equal(body.members[0], "u1");
  assert.deepEqual(
    { count: body.count, more: body.more, cursor: body.cursor },
    { count: 150, more: true, cursor: 100 },
  );
  const frames = inbox(tickAt(chat, T0 + 1000), 1);
  assert.equal(frames.length, 1);
  const [type, sent] = frames[0] as Frame;
  assert.equal(type, "PresenceDiff");
  assert.equal((sent.joined as string[]).length, 100);
  // u1 and u2 were announced one by one; u3 made the room large.
  assert.equal(sent.joined_count, 148);
  assert.equal(sent.count, 150);
});

Deno.test("Large rooms: paging walks every member once, leaves and joins between pages", () => {
  const chat = crowd(300, 5);
  const seen: string[] = [];
  let cursor = 0;
  let more = true;
  let page = 0;
  while (more) {
    const frames = inbox(
      chat.send(1, members({ cursor, limit: 40 }, `p${page}`)),
      1,
    );
    const body = (frames[0] as Frame)[1] as {
      members: string[];
      more: boolean;
      cursor: number;
    };
    seen.push(...body.members);
    ({ more, cursor } = body);
    // Between pages: one listed member leaves, one not yet listed leaves,
    // and a newcomer arrives (listed at the end).
    if (page === 2) {
      chat.send(10, leave("u10"));
      chat.send(200, leave("u200"));
      chat.open(301);
      chat.send(301, enter("u301"));
    }
    page++;
  }
  const expected = Array.from({ length: 301 }, (_, i) => `u${i + 1}`)
    .filter((name) => name !== "u200");
  assert.deepEqual(seen, expected);
});

Deno.test("Large rooms: the roster stays compact as members come and go", () => {
  const chat = crowd(200, 5);
  for (let i = 2; i <= 200; i++) chat.send(i, leave(`u${i}`));
  for (let i = 2; i <= 200; i++) {
    chat.open(1000 + i);
    chat.send(1000 + i, enter(`v${i}`));
  }
  const room = chat.state.rooms.get("general");
  assert.ok(room);
  assert.equal(room.users.size, 200);
  // Dead entries are dropped once they are half the list.
  assert.ok(room.roster.entries.length < 2 * 200, "roster compacted");
  assert.equal(room.roster.index.size, 200);
  const frames = inbox(chat.send(1, members({ limit: 500 })), 1);
  const body = (frames[0] as Frame)[1] as { members: string[] };
  assert.deepEqual(body.members, [
    "u1",
    ...Array.from({ length: 199 }, (_, i) => `v${i + 2}`),
  ]);
});

Deno.test("Large rooms: hysteresis, the switch back is below 90% of the limit", () => {
  assert.equal(fullAgainBelow(200), 180);
  assert.equal(fullAgainBelow(5), 5);
  assert.equal(fullAgainBelow(10), 9);
  const chat = crowd(12, 10);
  tickAt(chat, T0 + 1000);
  const room = chat.state.rooms.get("general");
  assert.ok(room?.large);
  // 12 → 9: still large (9 is not below 9).
  for (const i of [12, 11, 10]) chat.send(i, leave(`u${i}`));
  const at9 = inbox(tickAt(chat, T0 + 2000), 1);
  assert.equal(at9[0]?.[0], "PresenceDiff");
  assert.ok(room.large);
  chat.send(9, leave("u9"));
  const at8 = inbox(tickAt(chat, T0 + 3000), 1);
  assert.deepEqual(at8, [
    presence("general", ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"]),
  ]);
  assert.equal(room.large, false);
});

Deno.test("Large rooms: a member waiting for History gets the PresenceDiff after it", () => {
  const chat = new Chat({ settings: { presenceFullLimit: 2 }, auto: false });
  const conns: ConnId[] = [1, 2, 3];
  for (const conn of conns) chat.open(conn);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob", { history: 5 }));
  chat.historyLoaded({ messages: [], complete: true });
  chat.send(3, enter("carol", { history: 5 }));
  const during = tickAt(chat, T0 + 1000);
  assert.equal(inbox(during, 3).length, 0, "held while History is read");
  assert.equal(inbox(during, 1)[0]?.[0], "PresenceDiff");
  const after = chat.historyLoaded({ messages: [], complete: true });
  assert.deepEqual(inbox(after, 3).map(([type]) => type), [
    "History",
    "PresenceDiff",
  ]);
});

// Bounded per-room state: an empty, idle room is forgotten, seq included.

function seqOf(seen: ReturnType<Chat["dispatch"]>, conn: ConnId): unknown {
  const found = inbox(seen, conn).find(([type]) => type === "Ack");
  return found?.[1].seq;
}

Deno.test("Idle rooms: an empty room is forgotten with its seq, and a rejoin continues from storage's", () => {
  const chat = new Chat({ seqs: { lobby: 41 } });
  chat.open(1);
  chat.send(1, enter("alice", { room: "lobby" }));
  const said = chat.send(
    1,
    say("alice", "hi", { room: "lobby" }, withId("s1")),
  );
  assert.equal(seqOf(said, 1), 42);
  chat.send(1, leave("alice", { room: "lobby" }));
  assert.equal(chat.state.rooms.has("lobby"), false);
  assert.equal(chat.state.seqs.has("lobby"), false, "seq forgotten");
  const again = chat.send(1, enter("alice", { room: "lobby" }));
  assert.deepEqual(
    again.filter((effect) => effect.type === "load_seq"),
    [{ type: "load_seq", room: "lobby" }],
  );
  assert.deepEqual(inbox(again, 1), [presence("lobby", ["alice"])]);
  const next = chat.send(
    1,
    say("alice", "hi", { room: "lobby" }, withId("s2")),
  );
  assert.equal(seqOf(next, 1), 43, "continues from storage's seq");
});

Deno.test("Idle rooms: a room emptied with a write in flight keeps its seq until the answer", () => {
  const chat = new Chat({ auto: false });
  chat.open(1);
  chat.send(1, enter("alice", { room: "lobby" }));
  chat.send(1, say("alice", "hi", { room: "lobby" }));
  chat.send(1, leave("alice", { room: "lobby" }));
  // The Leave waits behind the write; close instead to empty the room now.
  chat.close(1);
  assert.equal(chat.state.rooms.has("lobby"), false);
  assert.equal(chat.state.seqs.get("lobby"), 1, "kept while writing");
  chat.persisted();
  assert.equal(chat.state.seqs.has("lobby"), false, "forgotten after");
  assert.equal(chat.state.writing.size, 0);
});

Deno.test("Idle rooms: a failed seq read answers a GroupChat unavailable, and the next one reads again", () => {
  const chat = new Chat({ seqs: { general: 3 } });
  chat.seqRead = false;
  chat.open(1);
  // The Enter goes on at once: only a message needs the seq.
  const entered = chat.send(1, enter("alice", {}, withId("e1")));
  assert.deepEqual(inbox(entered, 1), [
    presence("general", ["alice"]),
    ack("e1"),
  ]);
  const failed = chat.send(1, say("alice", "hi", {}, withId("s1")));
  assertFrames(inbox(failed, 1), [
    error("unavailable", "s1", /could not be read/),
  ], "the GroupChat's answer");
  assert.equal(chat.state.seqWaiters.size, 0);
  assert.equal(chat.state.connections.get(1)?.queue.length, 0, "not kept");
  chat.seqRead = true;
  const again = chat.send(1, say("alice", "hi", {}, withId("s2")));
  assert.equal(seqOf(again, 1), 4);
});

Deno.test("Idle rooms: messages into a room being read wait for one read, in order", () => {
  const chat = new Chat({ seqs: { general: 7 } });
  chat.seqHeld = [];
  chat.open(1);
  chat.open(2);
  assert.deepEqual(inbox(chat.send(1, enter("alice", {}, withId("a"))), 1), [
    presence("general", ["alice"]),
    ack("a"),
  ]);
  assert.deepEqual(inbox(chat.send(2, enter("bob", {}, withId("b"))), 2), [
    presence("general", ["alice", "bob"]),
    ack("b"),
  ]);
  assert.deepEqual(
    inbox(chat.send(2, say("bob", "one", {}, withId("s1"))), 2),
    [],
  );
  assert.deepEqual(
    inbox(chat.send(2, say("bob", "two", {}, withId("s2"))), 2),
    [],
  );
  assert.deepEqual(chat.seqHeld, ["general"], "one read");
  const seen = chat.seqLoaded();
  assert.deepEqual(
    inbox(seen, 2).filter(([type]) => type === "Ack").map(([, body]) =>
      body.seq
    ),
    [8, 9],
  );
});
