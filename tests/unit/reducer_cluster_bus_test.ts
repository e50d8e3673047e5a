/**
 * Tables for one cluster node hearing the others: `Enter` with `since` on
 * a node behind the cluster, and the bus (presence, `PrivateChat`, revoked
 * tokens) and the contributions a resync checks. No Redis: the test plays
 * the other nodes.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredGroupChat } from "../../src/wire/server_frames.ts";
import { contributions, MAX_PENDING } from "../../src/chat/reducer.ts";
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

Deno.test("cluster gap: at most MAX_PENDING messages wait; the room stalls, skips nothing, and a gap read brings every one back in order", () => {
  const node = new Node();
  node.open(1);
  node.enter(1, "alice", "r", joinedAt(5, ["alice"]));
  // seq 6 never comes and history cannot be read: 7.. pile up.
  for (let seq = 7; seq < 7 + MAX_PENDING + 50; seq++) {
    assert.deepEqual(node.bus({ kind: "group", message: chat(seq) }), []);
  }
  const room = node.state.rooms.get("r")!;
  assert.equal(room.pending.size, MAX_PENDING, "the buffer stays bounded");
  assert.equal(room.deliveredSeq, 5, "nothing skipped");
  // History answers at last: it holds 6 and everything after.
  const last = 6 + MAX_PENDING + 50;
  const history = Array.from({ length: last - 5 }, (_, i) => chat(6 + i));
  const filled = node.dispatch({
    type: "gap_filled",
    now: node.now,
    room: "r",
    messages: history,
    bound: 6 + MAX_PENDING,
  });
  const seqs = framesTo(filled, 1).map((f) => f.body.seq);
  assert.deepEqual(
    seqs,
    history.map((m) => m.seq),
    "every seq history holds, in order, once",
  );
  assert.equal(room.pending.size, 0);
});
