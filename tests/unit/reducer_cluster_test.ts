/**
 * Tables for the chat rules of one cluster node (`settings.cluster`): the
 * reducer asks the cluster (`join`, `part`, `claim`, `release`,
 * `fill_gap`) and hears other nodes (`bus`), with no Redis here. The test
 * answers each cluster effect itself, as the runner would with Redis.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredGroupChat } from "../../src/wire/server_frames.ts";
import {
  type ConnId,
  contributions,
  type Effect,
  GAP_WAIT_MS,
  type JoinResult,
  MAX_PENDING,
} from "../../src/chat/reducer.ts";
import type { WriteResult } from "../../src/chat/storage.ts";
import {
  chat,
  framesTo,
  joinedAt,
  Node,
  type ReceivedFrame,
  types,
} from "../support/cluster_node.ts";
import { T0 } from "../support/reducer_frames.ts";
import { effectsOf } from "../support/reducer_harness.ts";

Deno.test("cluster Enter: asks the cluster, answers only after joined", () => {
  const node = new Node();
  node.open(1);
  const asked = node.send(
    1,
    "Enter",
    { sender_username: "alice", room: "r" },
    "e1",
  );
  assert.deepEqual(
    framesTo(asked, 1),
    [],
    "nothing before the cluster answers",
  );
  const join = effectsOf(asked, "join")[0];
  assert.deepEqual(
    join && { ...join.request, timestamp: 0 },
    {
      conn: 1,
      room: "r",
      username: "alice",
      claim: "exclusive",
      ref: "e1",
      since: undefined,
      history: undefined,
      timestamp: 0,
    },
  );
  const answered = node.joined(joinedAt(4, ["alice", "bob"]));
  assert.deepEqual(framesTo(answered, 1), [
    { type: "Presence", body: { room: "r", members: ["alice", "bob"] } },
    { type: "Ack", body: { ref: "e1" } },
  ]);
  assert.equal(node.state.rooms.get("r")?.deliveredSeq, 4);
  assert.deepEqual([...node.state.users.keys()], ["alice"]);
  assert.deepEqual(
    effectsOf(answered, "claim"),
    [],
    "the join claimed the name",
  );
});

interface JoinCase {
  name: string;
  result: JoinResult | null;
  code: string;
}

const JOIN_REFUSALS: readonly JoinCase[] = [
  {
    name: "taken on another node",
    result: { kind: "taken" },
    code: "username_taken",
  },
  { name: "Redis away", result: null, code: "unavailable" },
];

for (const { name, result, code } of JOIN_REFUSALS) {
  Deno.test(`cluster Enter refused: ${name} → ${code}, nothing kept`, () => {
    const node = new Node();
    node.open(1);
    node.send(1, "Enter", { sender_username: "alice", room: "r" }, "e1");
    const answered = node.joined(result);
    assert.deepEqual(framesTo(answered, 1).map((f) => f.body.code), [code]);
    assert.equal(node.state.connections.get(1)?.username, null);
    assert.deepEqual([...node.state.rooms.keys()], [], "room forgotten");
    assert.deepEqual([...node.state.claiming], []);
    // The connection goes on: its next Enter is asked again.
    assert.equal(
      effectsOf(node.send(1, "Enter", { sender_username: "alice" }), "join")
        .length,
      1,
    );
  });
}

Deno.test("cluster Enter: a name being claimed on this node is taken", () => {
  const node = new Node();
  node.open(1);
  node.open(2);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  const second = node.send(
    2,
    "Enter",
    { sender_username: "alice", room: "r" },
    "e2",
  );
  assert.deepEqual(framesTo(second, 2).map((f) => f.body.code), [
    "username_taken",
  ]);
  assert.equal(effectsOf(second, "join").length, 0);
});

Deno.test("cluster Enter: Enter broadcast to local members only when new on every node", () => {
  for (const isNew of [true, false]) {
    const node = new Node();
    node.open(1);
    node.open(2);
    node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
    node.send(2, "Enter", { sender_username: "bob", room: "r" });
    const answered = node.joined(joinedAt(0, ["alice", "bob"], isNew));
    assert.deepEqual(types(framesTo(answered, 1)), isNew ? ["Enter"] : []);
    assert.deepEqual(types(framesTo(answered, 2)), ["Presence"]);
  }
});

Deno.test("cluster Enter: closed while joining gives back what the cluster recorded", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  node.close(1);
  const answered = node.joined(joinedAt(0, ["alice"]));
  assert.deepEqual(
    effectsOf(answered, "part").map((p) => [p.room, p.username, p.empty]),
    [
      ["r", "alice", true],
    ],
  );
  assert.deepEqual(effectsOf(answered, "release").map((r) => r.username), [
    "alice",
  ]);
  assert.deepEqual([...node.state.rooms.keys()], []);
});

// ---------------------------------------------------------------------------
// Leave: the cluster tells whether the user is gone from the room

interface PartCase {
  name: string;
  gone: boolean | null;
  /** Whether the other member sees `Leave`. */
  leave: boolean;
}

const PARTS: readonly PartCase[] = [
  { name: "gone from every node", gone: true, leave: true },
  { name: "still on another node", gone: false, leave: false },
  { name: "Redis away: this node's view", gone: null, leave: true },
];

for (const { name, gone, leave } of PARTS) {
  Deno.test(`cluster Leave: ${name}`, () => {
    const node = new Node();
    node.open(1);
    node.open(2);
    node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
    node.enter(2, "bob", "r", joinedAt(0, ["alice", "bob"]));
    const left = node.send(
      2,
      "Leave",
      { sender_username: "bob", room: "r" },
      "l1",
    );
    assert.deepEqual(
      types(framesTo(left, 1)),
      [],
      "no Leave before the cluster answers",
    );
    assert.deepEqual(types(framesTo(left, 2)), ["Ack"]);
    const part = node.take("part");
    assert.deepEqual([part.room, part.username, part.reason, part.empty], [
      "r",
      "bob",
      "left",
      false,
    ]);
    const answered = node.dispatch({
      type: "parted",
      now: node.now,
      room: part.room,
      username: part.username,
      reason: part.reason,
      timestamp: part.timestamp,
      gone,
    });
    assert.deepEqual(
      framesTo(answered, 1),
      leave
        ? [{
          type: "Leave",
          body: {
            room: "r",
            sender_username: "bob",
            timestamp: T0,
            reason: "left",
          },
        }]
        : [],
    );
  });
}

Deno.test("cluster close: parts every room and releases the name", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.send(1, "Enter", { sender_username: "alice", room: "s" });
  node.joined(joinedAt(0, ["alice"]));
  const closed = node.close(1);
  assert.deepEqual(
    effectsOf(closed, "part").map((p) => [p.room, p.reason, p.empty]).sort(),
    [["r", "disconnected", true], ["s", "disconnected", true]],
  );
  assert.deepEqual(effectsOf(closed, "release").map((r) => r.username), [
    "alice",
  ]);
});

Deno.test("cluster auth: a token's user is claimed (shared) and released with the last connection", () => {
  const node = new Node({ authEnabled: true });
  const grant = { username: "alice", expiresAt: T0 + 60_000 };
  const opened = (conn: ConnId) =>
    node.dispatch({
      type: "open",
      conn,
      now: node.now,
      publicId: `p${conn}`,
      token: "t",
      grant,
    });
  assert.deepEqual(effectsOf(opened(1), "claim").map((c) => c.username), [
    "alice",
  ]);
  assert.deepEqual(effectsOf(opened(2), "claim"), [], "claimed once per node");
  assert.deepEqual(effectsOf(node.close(1), "release"), []);
  assert.deepEqual(effectsOf(node.close(2), "release").map((r) => r.username), [
    "alice",
  ]);
});

interface HeldJoinCase {
  name: string;
  /** Whether alice's first connection is in the room when the second enters. */
  firstInRoom: boolean;
  /** What the cluster answers the second join. */
  isNew: boolean;
  /** The `held` the join carries. */
  held: boolean | undefined;
  /** Whether carol, in the room here, sees alice enter. */
  carolSeesEnter: boolean;
}

const HELD_JOIN_CASES: HeldJoinCase[] = [
  {
    name: "first device elsewhere: new in the room, announced",
    firstInRoom: false,
    isNew: true,
    held: undefined,
    carolSeesEnter: true,
  },
  {
    name: "first device in the room, Redis agrees: not new, quiet",
    firstInRoom: true,
    isNew: false,
    held: true,
    carolSeesEnter: false,
  },
  {
    name:
      "first device in the room, Redis lost the record (restarted empty): quiet anyway",
    firstInRoom: true,
    isNew: true,
    held: true,
    carolSeesEnter: false,
  },
];

for (const testCase of HELD_JOIN_CASES) {
  Deno.test(`cluster auth: a second device enters; ${testCase.name}`, () => {
    const node = new Node({ authEnabled: true });
    const grant = { username: "alice", expiresAt: T0 + 60_000 };
    for (const conn of [1, 2]) {
      node.dispatch({
        type: "open",
        conn,
        now: T0,
        publicId: `p${conn}`,
        token: "t",
        grant,
      });
    }
    node.dispatch({
      type: "open",
      conn: 3,
      now: T0,
      publicId: "p3",
      token: "tc",
      grant: { username: "carol", expiresAt: T0 + 60_000 },
    });
    node.enter(3, "carol", "r", joinedAt(0, ["carol"]));
    node.enter(
      1,
      "alice",
      testCase.firstInRoom ? "r" : "s",
      joinedAt(0, ["alice", "carol"]),
    );
    const sent = node.send(2, "Enter", { sender_username: "alice", room: "r" });
    assert.equal(effectsOf(sent, "join")[0]?.request.held, testCase.held);
    const joined = node.joined(
      joinedAt(0, ["alice", "carol"], testCase.isNew),
    );
    assert.deepEqual(
      types(framesTo(joined, 3)),
      testCase.carolSeesEnter ? ["Enter"] : [],
    );
  });
}

// ---------------------------------------------------------------------------
// GroupChat: one seq order from the cluster

Deno.test("cluster GroupChat: Redis gives the seq; members get seq order; the Ack waits for its turn", () => {
  const node = new Node();
  node.open(1);
  node.open(2);
  node.enter(1, "alice", "r", joinedAt(5, ["alice", "bob"]));
  node.enter(2, "carol", "r", joinedAt(5, ["alice", "bob", "carol"]));
  const sent = node.send(1, "GroupChat", {
    sender_username: "alice",
    content: "hi",
    room: "r",
  }, "g1");
  const persist = effectsOf(sent, "persist")[0];
  assert.equal(
    persist?.request.op.kind === "group" && persist.request.op.message.seq,
    0,
    "no local seq",
  );
  // Redis gave 7: seq 6 (another node's) has not arrived yet.
  const early = node.persisted({ ok: true, seq: 7 });
  assert.deepEqual(framesTo(early, 1), [], "held behind seq 6, Ack included");
  const late = node.bus({ kind: "group", message: chat(6) });
  assert.deepEqual(
    framesTo(late, 1).map((f) => [f.type, f.body.seq]),
    [["GroupChat", 6], ["GroupChat", 7], ["Ack", 7]],
  );
  assert.deepEqual(framesTo(late, 2).map((f) => f.body.seq), [6, 7]);
  assert.equal(node.state.rooms.get("r")?.deliveredSeq, 7);
});

Deno.test("cluster GroupChat: a seq already delivered is dropped (no duplicates)", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(5, ["alice"]));
  assert.deepEqual(
    types(framesTo(node.bus({ kind: "group", message: chat(6) }), 1)),
    ["GroupChat"],
  );
  assert.deepEqual(
    framesTo(node.bus({ kind: "group", message: chat(6) }), 1),
    [],
  );
  assert.deepEqual(
    framesTo(node.bus({ kind: "group", message: chat(3) }), 1),
    [],
  );
});

Deno.test("cluster GroupChat: messages that arrive while joining wait for the room's seq", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" }, "e1");
  node.bus({ kind: "group", message: chat(5) });
  node.bus({ kind: "group", message: chat(6) });
  const answered = node.joined(joinedAt(5, ["alice", "bob"]));
  assert.deepEqual(
    framesTo(answered, 1).map((f) => [f.type, f.body.seq]),
    [["Presence", undefined], ["Ack", undefined], ["GroupChat", 6]],
    "seq 5 was before the join: not delivered; 6 after Presence",
  );
});

Deno.test("cluster GroupChat: a failed write answers unavailable", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.send(1, "GroupChat", { sender_username: "alice", content: "hi" }, "g1");
  const answered = node.persisted({ ok: false, reason: "failed" });
  assert.deepEqual(framesTo(answered, 1).map((f) => f.body.code), [
    "unavailable",
  ]);
});

// ---------------------------------------------------------------------------
// Gaps: read back from history

interface GapCase {
  name: string;
  /** What the history read finds between the delivered seq and the pending one. */
  found: StoredGroupChat[] | null;
  /** The seqs the member gets. */
  delivered: number[];
  /** Whether the gap is still open afterwards. */
  open: boolean;
}

const GAPS: readonly GapCase[] = [
  {
    name: "history has the missing seq",
    found: [chat(6)],
    delivered: [6, 7],
    open: false,
  },
  {
    name: "history no longer has it (trimmed)",
    found: [],
    delivered: [7],
    open: false,
  },
  {
    name: "the read failed: wait and ask again",
    found: null,
    delivered: [],
    open: true,
  },
];

for (const { name, found, delivered, open } of GAPS) {
  Deno.test(`cluster gap: ${name}`, () => {
    const node = new Node();
    node.open(1);
    node.enter(1, "alice", "r", joinedAt(5, ["alice"]));
    node.bus({ kind: "group", message: chat(7) });
    node.now = T0 + GAP_WAIT_MS - 1;
    assert.deepEqual(
      effectsOf(node.dispatch({ type: "tick", now: node.now }), "fill_gap"),
      [],
      "not yet",
    );
    node.now = T0 + GAP_WAIT_MS;
    const asked = effectsOf(
      node.dispatch({ type: "tick", now: node.now }),
      "fill_gap",
    );
    assert.deepEqual(asked, [{
      type: "fill_gap",
      room: "r",
      after: 5,
      before: null,
      bound: 7,
    }]);
    assert.deepEqual(
      effectsOf(node.dispatch({ type: "tick", now: node.now + 1 }), "fill_gap"),
      [],
      "one read at a time",
    );
    const filled = node.dispatch({
      type: "gap_filled",
      now: node.now,
      room: "r",
      messages: found,
      bound: 7,
    });
    assert.deepEqual(framesTo(filled, 1).map((f) => f.body.seq), delivered);
    assert.equal(node.state.rooms.get("r")?.gapSince !== null, open);
  });
}

Deno.test("cluster bus_synced: every known room reads what it may have missed", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(3, ["alice"]));
  const synced = node.dispatch({ type: "bus_synced", now: node.now });
  assert.deepEqual(effectsOf(synced, "fill_gap"), [{
    type: "fill_gap",
    room: "r",
    after: 3,
    before: null,
    bound: 3,
  }]);
  const filled = node.dispatch({
    type: "gap_filled",
    now: node.now,
    room: "r",
    messages: [chat(4), chat(5)],
    bound: 3,
  });
  assert.deepEqual(framesTo(filled, 1).map((f) => f.body.seq), [4, 5]);
});

/** Answers the oldest `fill_gap` as Redis would, from the room's kept `history`. */
function answerFill(node: Node, history: readonly number[]): Effect[] {
  const { room, after, before, bound } = node.take("fill_gap");
  const messages = history
    .filter((seq) => seq > after && (before === null || seq < before))
    .map((seq) => chat(seq, room));
  return node.dispatch({
    type: "gap_filled",
    now: node.now,
    room,
    messages,
    bound,
  });
}

interface WholeGapCase {
  name: string;
  /** Seqs the node hears before its gap read is issued. */
  arrive: number[];
  /** What history holds when the read runs. */
  history: number[];
  /** Seqs the node hears while the read is out. */
  late?: number[];
  /** The seqs the member gets, in order, after the read answers. */
  delivered: number[];
  /** Whether the room still waits for a seq afterwards. */
  open: boolean;
}

/** Issue 12: a gap is filled over its whole range; only what history provably lost is skipped. */
const WHOLE_GAPS: readonly WholeGapCase[] = [
  {
    name:
      "a hole above the first pending one is read too (1..4, heard 2 and 4)",
    arrive: [2, 4],
    history: [1, 2, 3, 4],
    delivered: [1, 2, 3, 4],
    open: false,
  },
  {
    name: "several holes, newer messages found past the last pending one",
    arrive: [3, 6],
    history: [1, 2, 3, 4, 5, 6, 7],
    delivered: [1, 2, 3, 4, 5, 6, 7],
    open: false,
  },
  {
    name: "trimmed below the oldest kept: skipped, the rest delivered",
    arrive: [5],
    history: [3, 4, 5],
    delivered: [3, 4, 5],
    open: false,
  },
  {
    name: "a seq stored after the read ran is not skipped",
    arrive: [2],
    history: [1, 2],
    late: [4],
    delivered: [1, 2],
    open: true,
  },
];

for (const { name, arrive, history, late, delivered, open } of WHOLE_GAPS) {
  Deno.test(`cluster whole gap: ${name}`, () => {
    const node = new Node();
    node.open(1);
    node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
    for (const seq of arrive) node.bus({ kind: "group", message: chat(seq) });
    node.now = T0 + GAP_WAIT_MS;
    node.dispatch({ type: "tick", now: node.now });
    const got: number[] = [];
    for (const seq of late ?? []) {
      const heard = node.bus({ kind: "group", message: chat(seq) });
      got.push(...framesTo(heard, 1).map((f) => f.body.seq));
    }
    const filled = answerFill(node, history);
    got.push(...framesTo(filled, 1).map((f) => f.body.seq));
    assert.deepEqual(got, delivered);
    assert.equal(node.state.rooms.get("r")?.gapSince !== null, open);
  });
}

Deno.test("cluster whole gap: what was stored after a read comes with the next read", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.bus({ kind: "group", message: chat(2) });
  node.now = T0 + GAP_WAIT_MS;
  node.dispatch({ type: "tick", now: node.now });
  node.bus({ kind: "group", message: chat(4) });
  const first = answerFill(node, [1, 2]);
  node.now += GAP_WAIT_MS;
  node.dispatch({ type: "tick", now: node.now });
  const second = answerFill(node, [1, 2, 3, 4]);
  assert.deepEqual(
    [...framesTo(first, 1), ...framesTo(second, 1)].map((f) => f.body.seq),
    [1, 2, 3, 4],
  );
});

// ---------------------------------------------------------------------------
// Enter with since on a node that is behind the cluster (issue 12)

interface SinceCase {
  name: string;
  since: number;
  /** What the history read replays. */
  page: number[];
  /** Seqs the node delivers to the room while the read is out. */
  during: number[];
  /** Seqs it delivers after the replay. */
  after: number[];
  /** The seqs the entering connection gets, `History` first. */
  got: (number | "History")[];
}

const SINCE: readonly SinceCase[] = [
  {
    name: "saw 1-3 elsewhere, this node delivers 1-3 later: none again",
    since: 3,
    page: [],
    during: [],
    after: [1, 2, 3, 4],
    got: ["History", 4],
  },
  {
    name: "replay reaches past what this node delivered",
    since: 1,
    page: [2, 3],
    during: [],
    after: [1, 2, 3, 4, 5],
    got: ["History", 2, 3, 4, 5],
  },
  {
    name: "delivered while the read is out: only what the replay lacks",
    since: 0,
    page: [1, 2],
    during: [1],
    after: [2, 3],
    got: ["History", 1, 2, 3],
  },
];

for (const { name, since, page, during, after, got } of SINCE) {
  Deno.test(`cluster Enter since: ${name}`, () => {
    const node = new Node();
    node.open(1);
    node.open(2);
    node.enter(1, "bob", "r", joinedAt(0, ["bob"]));
    node.send(2, "Enter", { sender_username: "alice", room: "r", since }, "e");
    node.joined(joinedAt(4, ["alice", "bob"]));
    const { request } = node.take("load_history");
    assert.deepEqual(
      request.query,
      { kind: "since", since, upTo: Number.MAX_SAFE_INTEGER },
      "up to the room's current seq in storage, not what this node delivered",
    );
    const frames: ReceivedFrame[] = [];
    for (const seq of during) {
      frames.push(
        ...framesTo(node.bus({ kind: "group", message: chat(seq) }), 2),
      );
    }
    frames.push(...framesTo(
      node.dispatch({
        type: "history_loaded",
        now: node.now,
        request,
        page: { messages: page.map((seq) => chat(seq)), complete: true },
      }),
      2,
    ));
    for (const seq of after) {
      if (seq <= (node.state.rooms.get("r")?.deliveredSeq ?? 0)) continue;
      frames.push(
        ...framesTo(node.bus({ kind: "group", message: chat(seq) }), 2),
      );
    }
    const seen = frames.flatMap((f): (number | "History")[] =>
      f.type === "History"
        ? ["History", ...f.body.messages.map((m: StoredGroupChat) => m.seq)]
        : f.type === "GroupChat"
        ? [f.body.seq]
        : []
    );
    assert.deepEqual(seen, got);
    assert.equal(node.state.rooms.get("r")?.floors.size, 0, "floor dropped");
  });
}

// ---------------------------------------------------------------------------
// The bus: other nodes' presence and direct messages

Deno.test("cluster bus: Enter and Leave of users on other nodes reach local members of the room", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  const entered = node.bus({
    kind: "enter",
    room: "r",
    username: "bob",
    timestamp: T0,
  });
  assert.deepEqual(framesTo(entered, 1), [{
    type: "Enter",
    body: { room: "r", sender_username: "bob", timestamp: T0 },
  }]);
  const left = node.bus({
    kind: "leave",
    room: "r",
    username: "bob",
    timestamp: T0,
    reason: "disconnected",
  });
  assert.deepEqual(framesTo(left, 1), [
    {
      type: "Leave",
      body: {
        room: "r",
        sender_username: "bob",
        timestamp: T0,
        reason: "disconnected",
      },
    },
  ]);
  assert.deepEqual(
    node.bus({
      kind: "enter",
      room: "elsewhere",
      username: "bob",
      timestamp: T0,
    }),
    [],
  );
});

Deno.test("cluster bus: a PrivateChat reaches the target's and the sender's local connections", () => {
  const node = new Node();
  for (const conn of [1, 2, 3]) node.open(conn);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  node.enter(2, "bob", "r", joinedAt(0, ["alice", "bob"]));
  node.enter(3, "carol", "r", joinedAt(0, ["alice", "bob", "carol"]));
  const dm = {
    id: "d1",
    sender_username: "bob",
    target_username: "alice",
    content: "psst",
    timestamp: T0,
  };
  const got = node.bus({ kind: "private", message: dm });
  assert.deepEqual(types(framesTo(got, 1)), ["PrivateChat"]);
  assert.deepEqual(types(framesTo(got, 2)), ["PrivateChat"]);
  assert.deepEqual(types(framesTo(got, 3)), []);
});

Deno.test("cluster PrivateChat: to a user on no node (auth off) is user_not_found from the write", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(0, ["alice"]));
  const sent = node.send(1, "PrivateChat", {
    sender_username: "alice",
    target_username: "zed",
    content: "?",
  }, "d1");
  const persist = effectsOf(sent, "persist")[0];
  assert.equal(
    persist?.request.op.kind === "private" && persist.request.op.delivered,
    false,
  );
  const answered = node.persisted({ ok: false, reason: "not_connected" });
  assert.deepEqual(framesTo(answered, 1).map((f) => f.body.code), [
    "user_not_found",
  ]);
});

interface PagingBusCase {
  name: string;
  /** Whether alice's offline messages are still being paged out here. */
  paging: boolean;
  /** How the `undelivered` write is answered, when one is made. */
  result?: WriteResult;
  /** The pager's last (empty) read is answered before the write. */
  pagerEndsFirst?: boolean;
  /** Alice's frames from the bus message and the write's answer. */
  alice: string[];
  /** Effects asked for after the write's answer. */
  after: string[];
}

const PAGING_BUS_CASES: PagingBusCase[] = [
  {
    name: "no backlog: live at once",
    paging: false,
    alice: ["PrivateChat"],
    after: [],
  },
  {
    name: "backlog going out: kept behind it, not live",
    paging: true,
    result: { ok: true },
    alice: [],
    after: [],
  },
  {
    name: "kept after the pager's last read: the pager runs again",
    paging: true,
    result: { ok: true },
    pagerEndsFirst: true,
    alice: [],
    after: ["load_offline"],
  },
  {
    name: "backlog going out, the write fails: live rather than lost",
    paging: true,
    result: { ok: false, reason: "failed" },
    alice: ["PrivateChat"],
    after: [],
  },
];

for (const testCase of PAGING_BUS_CASES) {
  Deno.test(`cluster bus, auth: a PrivateChat from another node; ${testCase.name}`, () => {
    const node = new Node({ authEnabled: true });
    node.dispatch({
      type: "open",
      conn: 1,
      now: T0,
      publicId: "p1",
      token: "t",
      grant: { username: "alice", expiresAt: T0 + 60_000 },
    });
    node.take("claim");
    const load = node.take("load_offline");
    if (!testCase.paging) {
      node.dispatch({
        type: "offline_loaded",
        now: T0,
        username: load.username,
        messages: [],
      });
    }
    const dm = {
      id: "d1",
      sender_username: "bob",
      target_username: "alice",
      content: "later",
      timestamp: T0,
    };
    const got = node.bus({ kind: "private", message: dm });
    const persists = effectsOf(got, "persist").map((effect) =>
      effect.request.op
    );
    assert.deepEqual(
      persists,
      testCase.paging ? [{ kind: "undelivered", message: dm }] : [],
    );
    if (testCase.pagerEndsFirst) {
      node.dispatch({
        type: "offline_loaded",
        now: T0,
        username: "alice",
        messages: [],
      });
    }
    const answered = testCase.result ? node.persisted(testCase.result) : [];
    assert.deepEqual(
      types(framesTo([...got, ...answered], 1)),
      testCase.alice,
    );
    assert.deepEqual(
      answered.filter((effect) => effect.type !== "broadcast").map((e) =>
        e.type
      ),
      testCase.after,
    );
  });
}

Deno.test("cluster bus: a revoked token ends this node's connections of it at once", () => {
  const node = new Node({ authEnabled: true });
  const grant = { username: "alice", expiresAt: T0 + 60_000 };
  node.dispatch({
    type: "open",
    conn: 1,
    now: T0,
    publicId: "p1",
    token: "t",
    grant,
  });
  const effects = node.bus({ kind: "revoked", token: "t" });
  assert.deepEqual(
    effects.flatMap((e) => e.type === "close" ? [[e.conn, e.code]] : []),
    [[1, 1008]],
  );
  assert.equal(node.state.connections.has(1), false);
});

Deno.test("contributions: what the node holds, for the resync", () => {
  const node = new Node();
  node.open(1);
  node.open(2);
  node.enter(1, "alice", "r", joinedAt(2, ["alice"]));
  node.enter(2, "bob", "s", joinedAt(9, ["bob"]));
  assert.deepEqual(contributions(node.state), {
    users: ["alice", "bob"],
    presence: [["r", "alice"], ["s", "bob"]],
    seqs: [["r", 2], ["s", 9]],
  });
});

Deno.test("contributions: joins in flight are listed, their records may be in Redis", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  assert.deepEqual(contributions(node.state), {
    users: ["alice"],
    presence: [["r", "alice"]],
    seqs: [],
  });
});

Deno.test("cluster Enter taken: what a resync may have recorded is taken back", () => {
  const node = new Node();
  node.open(1);
  node.send(1, "Enter", { sender_username: "alice", room: "r" });
  const answered = node.joined({ kind: "taken" });
  assert.deepEqual(
    effectsOf(answered, "part").map((p) => [p.room, p.username, p.empty]),
    [["r", "alice", true]],
  );
  assert.deepEqual(effectsOf(answered, "release").map((r) => r.username), [
    "alice",
  ]);
});

Deno.test("cluster gap: at most MAX_PENDING messages wait; then the room goes on without the missing seq", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(5, ["alice"]));
  // seq 6 never comes (and history cannot be read): 7.. pile up.
  for (let seq = 7; seq < 7 + MAX_PENDING; seq++) {
    assert.deepEqual(node.bus({ kind: "group", message: chat(seq) }), []);
  }
  const over = node.bus({ kind: "group", message: chat(7 + MAX_PENDING) });
  const seqs = framesTo(over, 1).map((f) => f.body.seq);
  assert.equal(seqs.length, MAX_PENDING + 1);
  assert.equal(seqs[0], 7);
  assert.equal(seqs.at(-1), 7 + MAX_PENDING);
  assert.equal(node.state.rooms.get("r")?.pending.size, 0);
});
