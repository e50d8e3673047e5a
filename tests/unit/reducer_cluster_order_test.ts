/**
 * Tables for one cluster node's room messages: Redis gives the `seq`,
 * members get one `seq` order without gaps or duplicates, and a missing
 * `seq` is read back from history (`fill_gap`) or given up. No Redis: the
 * test answers the cluster's effects itself.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredGroupChat } from "../../src/wire/server_frames.ts";
import { type Effect, GAP_WAIT_MS } from "../../src/chat/reducer.ts";
import {
  chat,
  framesTo,
  joinedAt,
  Node,
  types,
} from "../support/cluster_node.ts";
import { T0 } from "../support/reducer_frames.ts";
import { effectsOf } from "../support/reducer_harness.ts";

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
