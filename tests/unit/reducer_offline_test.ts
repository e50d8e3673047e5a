/**
 * Reducer tables for the offline pager (authentication on): stored
 * `PrivateChat`s going out a page at a time, and the inbox cap.
 *
 * Conventions (see `tests/support/reducer_harness.ts`): connections 1, 2
 * and 3 are opened first and usually enter as alice, bob and carol; the
 * event under test happens at `WHEN_AT` and a frame under test gets the
 * fresh id `WHEN_ID`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredPrivateChat } from "../../src/wire/server_frames.ts";
import {
  type ChatSettings,
  OFFLINE_PAGE,
  OFFLINE_PAGE_BYTES,
} from "../../src/chat/reducer.ts";
import {
  AUTH,
  AUTH_GRANTS,
  Chat,
  effectsOf,
  inbox,
  TOKEN_ALICE,
  TOKEN_BOB,
} from "../support/reducer_harness.ts";
import {
  ack,
  assertFrames,
  error,
  privateFrame,
  T0,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// ---------------------------------------------------------------------------
// Offline pager

/** `count` stored `PrivateChat`s from bob to alice, `size` characters each. */
function waitingForAlice(count: number, size = 5): StoredPrivateChat[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `w${i}`,
    sender_username: "bob",
    target_username: "alice",
    content: String(i).padStart(size, "x"),
    timestamp: T0 - 1000 + i,
  }));
}

/** Alice (1) and bob (2) online with tokens; alice's pager read is out. */
function pagerChat(settings: Partial<ChatSettings> = {}): Chat {
  const chat = new Chat({
    auto: false,
    settings: { ...AUTH, ...settings },
    grants: AUTH_GRANTS,
  });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  chat.take("load_offline");
  chat.take("load_offline");
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "bob",
    messages: [],
  });
  return chat;
}

interface PagerCase {
  name: string;
  /** What storage reads for alice's first page. */
  stored: StoredPrivateChat[];
  /** How many of them the page sends (the rest wait for the next read). */
  sent: number;
}

const PAGER_CASES: PagerCase[] = [
  { name: "a short inbox fits one page", stored: waitingForAlice(3), sent: 3 },
  {
    name: "a full read of small messages is one page",
    stored: waitingForAlice(OFFLINE_PAGE),
    sent: OFFLINE_PAGE,
  },
  {
    name: "large messages are cut at OFFLINE_PAGE_BYTES",
    stored: waitingForAlice(OFFLINE_PAGE, 2000),
    sent: Math.ceil(
      OFFLINE_PAGE_BYTES /
        JSON.stringify({
          message_type: "PrivateChat",
          message_body: waitingForAlice(1, 2000)[0],
        }).length,
    ),
  },
];

for (const { name, stored, sent } of PAGER_CASES) {
  Deno.test(`offline pager: ${name}; delivered once written, in order`, () => {
    const chat = pagerChat();
    const seen = chat.dispatch({
      type: "offline_loaded",
      now: T0,
      username: "alice",
      messages: stored,
    });
    const page = stored.slice(0, sent);
    assertFrames(
      inbox(seen, 1),
      page.map((message) => ["PrivateChat", { ...message }]),
      "alice gets the page in order",
    );
    assert.deepEqual(effectsOf(seen, "persist"), [], "nothing marked yet");
    assert.deepEqual(effectsOf(seen, "watch_written"), [{
      type: "watch_written",
      username: "alice",
      conns: [1],
      ids: page.map((message) => message.id),
    }]);
    const written = chat.dispatch({
      type: "offline_written",
      now: T0,
      username: "alice",
      ids: page.map((message) => message.id),
      written: true,
    });
    assert.deepEqual(effectsOf(written, "persist"), [{
      type: "persist",
      request: {
        conn: null,
        op: {
          kind: "delivered",
          ids: page.map((message) => message.id),
          username: "alice",
        },
      },
    }]);
    assert.deepEqual(effectsOf(written, "load_offline"), [], "not yet");
    assert.deepEqual(effectsOf(chat.persisted(), "load_offline"), [{
      type: "load_offline",
      username: "alice",
      limit: OFFLINE_PAGE,
    }], "then the next page, once the mark is committed");
  });
}

Deno.test("offline pager: a page that cannot be marked delivered stops the pager, no resend loop", () => {
  const chat = pagerChat();
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: waitingForAlice(2),
  });
  chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["w0", "w1"],
    written: true,
  });
  const failed = chat.persisted({ ok: false, reason: "failed" });
  assert.deepEqual(effectsOf(failed, "load_offline"), []);
  assert.equal(chat.state.offlineLoading.has("alice"), false);
  // Alice is online with no pager: new messages go to her live.
  const sent = chat.send(2, whisper("bob", "alice", "hi", withId("n1")));
  const op = effectsOf(sent, "persist")[0]?.request.op;
  assert.equal(op?.kind === "private" && op.delivered, true);
});

Deno.test("offline pager: a PrivateChat sent while the pager runs waits its turn in storage", () => {
  const chat = pagerChat({ maxOfflineMessages: 5 });
  const sent = chat.send(2, whisper("bob", "alice", "new", withId("n1")));
  const [persist] = effectsOf(sent, "persist");
  assert.deepEqual(persist?.request.op, {
    kind: "private",
    message: {
      id: "srv-1",
      sender_username: "bob",
      target_username: "alice",
      content: "new",
      timestamp: T0,
    },
    delivered: false,
    maxWaiting: 5,
    ref: "n1",
  });
  const stored = chat.persisted();
  assert.deepEqual(inbox(stored, 1), [], "not live: behind the older ones");
  assertFrames(inbox(stored, 2), [
    privateFrame("bob", "alice", "new", "srv-1", T0),
    ack("n1", { id: "srv-1", timestamp: T0 }),
  ], "bob");
  assert.deepEqual(effectsOf(stored, "load_offline"), [], "one pager");
  // The pager's read was out before the write: it ends, and the write's
  // answer starts it again.
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [],
  });
  const late = chat.send(2, whisper("bob", "alice", "late", withId("n2")));
  const op = effectsOf(late, "persist")[0]?.request.op;
  assert.equal(
    op?.kind === "private" && op.delivered,
    true,
    "live once the pager is done",
  );
});

Deno.test("offline pager: a message stored after the pager's last read starts it again", () => {
  const chat = pagerChat();
  chat.send(2, whisper("bob", "alice", "new", withId("n1")));
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [],
  });
  const stored = chat.persisted();
  assert.deepEqual(effectsOf(stored, "load_offline"), [{
    type: "load_offline",
    username: "alice",
    limit: OFFLINE_PAGE,
  }]);
});

Deno.test("offline pager: a page whose connections closed is not marked, and the pager stops", () => {
  const chat = pagerChat();
  chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: waitingForAlice(2),
  });
  chat.close(1);
  const seen = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["w0", "w1"],
    written: false,
  });
  assert.deepEqual(effectsOf(seen, "persist"), []);
  assert.deepEqual(effectsOf(seen, "load_offline"), []);
  assert.equal(chat.state.offlineLoading.has("alice"), false);
  // Her next connection starts from the same page.
  assert.equal(effectsOf(chat.open(3, TOKEN_ALICE), "load_offline").length, 1);
});

interface InboxFullCase {
  name: string;
  settings: Partial<ChatSettings>;
  /** The `maxWaiting` the write carries. */
  maxWaiting: number | undefined;
}

const INBOX_FULL_CASES: InboxFullCase[] = [
  {
    name: "the cap from settings",
    settings: { maxOfflineMessages: 3 },
    maxWaiting: 3,
  },
  { name: "no cap when unset", settings: {}, maxWaiting: undefined },
];

for (const { name, settings, maxWaiting } of INBOX_FULL_CASES) {
  Deno.test(`inbox_full: ${name}; refused with the ref, no echo, no Ack`, () => {
    const chat = pagerChat(settings);
    chat.close(1);
    const sent = chat.send(
      2,
      whisper("bob", "alice", "one more", withId("f1")),
    );
    const op = effectsOf(sent, "persist")[0]?.request.op;
    assert.equal(op?.kind, "private");
    assert.equal(op?.kind === "private" ? op.maxWaiting : null, maxWaiting);
    const refused = chat.persisted({ ok: false, reason: "inbox_full" });
    assertFrames(
      inbox(refused, 2),
      [error("inbox_full", "f1", /alice/)],
      "bob",
    );
  });
}
