/**
 * Reducer tables for authentication: tokens in messages and at upgrade,
 * lookups, and tokens ending connections (revocation, expiry, re-check).
 *
 * Why this file is long: mostly case tables, one row a
 * scenario; a rule's table stays in one place.
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
import { OFFLINE_PAGE, TOKEN_RECHECK_MS } from "../../src/chat/reducer.ts";
import type { TokenGrant } from "../../src/chat/storage.ts";
import {
  AUTH,
  AUTH_GRANTS,
  Chat,
  closes,
  CONNS,
  effectsOf,
  GRANT_ALICE,
  GRANT_BOB,
  inbox,
  type Observed,
  roomsOf,
  scenarios,
  TOKEN_ALICE,
  TOKEN_BOB,
  username,
} from "../support/reducer_harness.ts";
import {
  ack,
  assertFrames,
  enter,
  entered,
  error,
  groupFrame,
  leave,
  left,
  presence,
  privateFrame,
  say,
  T0,
  WHEN_AT,
  WHEN_ID,
  whisper,
  withId,
} from "../support/reducer_frames.ts";

// Authentication

scenarios("auth", [
  {
    name: "a message without a token is auth_required",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, withId("a1"))],
    then: { 1: [error("auth_required", "a1", /token/)] },
    also: (state, seen) => {
      assert.equal(username(state, 1), null);
      assert.deepEqual(effectsOf(seen, "check_token"), []);
    },
  },
  {
    name: "a null token is auth_required",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, { token: null, id: "a1" })],
    then: { 1: [error("auth_required", "a1")] },
  },
  {
    name: "a token that is not a string is invalid_token",
    options: { settings: AUTH },
    when: [1, enter("alice", {}, { token: 42, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "a valid token is checked, binds its user, and the message proceeds",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [[2, enter("bob", {}, { token: TOKEN_BOB })]],
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: {
      1: [presence("general", ["alice", "bob"]), ack("a1")],
      2: [entered("general", "alice")],
    },
    also: (state, seen) => {
      assert.deepEqual(effectsOf(seen, "check_token"), [{
        type: "check_token",
        token: TOKEN_ALICE,
      }]);
      assert.equal(username(state, 1), "alice");
    },
  },
  {
    name: "a token in capitals is the same token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE.toUpperCase() })],
    then: { 1: [presence("general", ["alice"])] },
  },
  {
    name: "an unknown or revoked token is invalid_token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [
      1,
      enter("alice", {}, {
        token: "00000000-0000-4000-8000-000000000000",
        id: "a1",
      }),
    ],
    then: { 1: [error("invalid_token", "a1")] },
    also: (state) => assert.equal(username(state, 1), null),
  },
  {
    name: "an expired token is invalid_token",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: { username: "alice", expiresAt: WHEN_AT } },
    },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "a failed lookup is unavailable",
    options: { settings: AUTH, grants: { [TOKEN_ALICE]: undefined } },
    when: [1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("unavailable", "a1")] },
  },
  {
    name: "a token of another user than sender_username is sender_mismatch",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    when: [1, enter("mallory", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("sender_mismatch", "a1")] },
    also: (state) => assert.deepEqual(roomsOf(state, 1), []),
  },
  {
    name: "a token of another user than the bound one is sender_mismatch",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [[1, enter("alice", {}, { token: TOKEN_ALICE })]],
    when: [1, say("bob", "hi", {}, { token: TOKEN_BOB, id: "a1" })],
    then: { 1: [error("sender_mismatch", "a1")] },
  },
  {
    name: "an upgrade token binds at open, so messages need no token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    when: [1, enter("alice", {}, withId("a1"))],
    then: { 1: [presence("general", ["alice"]), ack("a1")] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), [], "no lookup"),
  },
  {
    name: "an upgrade-bound connection is sender_mismatch under another name",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    when: [1, enter("bob", {}, withId("a1"))],
    then: { 1: [error("sender_mismatch", "a1")] },
  },
  {
    name: "token_revoked ends a connection that upgraded with the token",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: { type: "token_revoked", now: WHEN_AT, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_revoked")] },
    closes: [[1, 1008]],
    also: (state) => {
      assert.equal(state.connections.has(1), false);
      assert.equal(state.bound.has(TOKEN_ALICE), false);
    },
  },
  {
    name: "token_revoked ends a connection that used the token in a message",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 2: TOKEN_BOB },
    given: [[1, enter("alice", {}, { token: TOKEN_ALICE })], [2, enter("bob")]],
    when: {
      event: { type: "token_revoked", now: WHEN_AT, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_revoked")] },
    closes: [[1, 1008]],
  },
  {
    name:
      "a revoked token's message is refused on a connection that never held it",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    given: [{
      event: { type: "token_revoked", now: T0, token: TOKEN_ALICE },
    }],
    when: [1, say("alice", "hi", {}, { token: TOKEN_ALICE, id: "a1" })],
    then: { 1: [error("invalid_token", "a1")] },
  },
  {
    name: "one user may hold several connections",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: [2, enter("alice", { room: "lobby" }, withId("a1"))],
    then: { 2: [presence("lobby", ["alice"]), ack("a1")] },
    also: (state) =>
      assert.deepEqual([...state.users.get("alice") ?? []], [1, 2]),
  },
  {
    name: "with auth off the seed README's placeholder token is ignored",
    when: [1, enter("alice", {}, { token: "optional_uuid_token", id: "e1" })],
    then: { 1: [presence("general", ["alice"]), ack("e1")] },
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), []),
  },
  {
    name: "with auth off a token of any type is ignored",
    given: [[1, enter("alice", {}, { token: 42 })]],
    when: [1, say("alice", "hi", {}, { token: { a: 1 } })],
    then: { 1: [groupFrame({ seq: 1, content: "hi" })] },
  },
  {
    name: "PrivateChat to a user with no connection is stored for later",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: [1, whisper("alice", "bob", "later", withId("p1"))],
    then: {
      1: [
        privateFrame("alice", "bob", "later"),
        ack("p1", { id: WHEN_ID, timestamp: WHEN_AT }),
      ],
    },
    also: (_state, seen) => {
      const [persist] = effectsOf(seen, "persist");
      assert.equal(persist?.request.op.kind, "private");
      assert.equal(
        persist?.request.op.kind === "private" && persist.request.op.delivered,
        false,
      );
    },
  },
]);

Deno.test("auth: a PrivateChat whose target left before the commit waits for the target's next connection", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  for (const username of ["alice", "bob"]) {
    chat.take("load_offline");
    chat.dispatch({ type: "offline_loaded", now: T0, username, messages: [] });
  }
  chat.send(1, whisper("alice", "bob", "bye", withId("p1")));
  chat.close(2);
  const seen = chat.persisted();
  const persist = effectsOf(seen, "persist").map((effect) => effect.request.op);
  assert.equal(persist.length, 1);
  assert.equal(persist[0]?.kind, "undelivered");
  assert.equal(
    persist[0]?.kind === "undelivered" && persist[0].message.content,
    "bye",
  );
  assert.deepEqual(
    inbox(seen, 1).map(([type]) => type),
    ["PrivateChat", "Ack"],
    "the sender still gets its copy and its Ack",
  );
});

Deno.test("auth: a PrivateChat to a user the store does not know is user_not_found", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.send(1, enter("alice"));
  chat.send(1, whisper("alice", "nobody", "hi", withId("p1")));
  const seen = chat.persisted({ ok: false, reason: "unknown_user" });
  assertFrames(
    inbox(seen, 1),
    [error("user_not_found", "p1", /nobody/)],
    "alice",
  );
});

Deno.test("auth: connections waiting for one lookup share it and all proceed", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  for (const conn of CONNS) chat.open(conn);
  const waiting = [
    ...chat.send(1, enter("alice", {}, { token: TOKEN_ALICE, id: "a1" })),
    ...chat.send(1, say("alice", "hi", {}, { token: TOKEN_ALICE, id: "a2" })),
    ...chat.send(
      2,
      enter("alice", { room: "lobby" }, { token: TOKEN_ALICE, id: "b1" }),
    ),
  ];
  assert.deepEqual(effectsOf(waiting, "check_token"), [{
    type: "check_token",
    token: TOKEN_ALICE,
  }]);
  assert.deepEqual(inbox(waiting, 1), []);
  const seen = chat.tokenChecked(GRANT_ALICE);
  assertFrames(
    inbox(seen, 1),
    [presence("general", ["alice"]), ack("a1")],
    "1",
  );
  assertFrames(inbox(seen, 2), [presence("lobby", ["alice"]), ack("b1")], "2");
  // The GroupChat queued behind the lookup is handled after the Enter.
  assert.deepEqual(effectsOf(seen, "persist").map((e) => e.request.ref), [
    "a2",
  ]);
});

Deno.test("auth: a checked token is looked up again after TOKEN_RECHECK_MS", () => {
  const chat = new Chat({ settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1);
  const first = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(first, "check_token").length, 1);
  chat.now = T0 + TOKEN_RECHECK_MS;
  const cached = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(cached, "check_token").length, 0, "still cached");
  chat.now = T0 + TOKEN_RECHECK_MS + 1;
  chat.dispatch({ type: "tick", now: chat.now });
  const again = chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  assert.equal(effectsOf(again, "check_token").length, 1, "checked again");
  assertFrames(inbox(again, 1), [presence("general", ["alice"])], "proceeds");
});

Deno.test("auth: presence is per user across devices", () => {
  const chat = new Chat({ settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_ALICE);
  chat.open(3, TOKEN_BOB);
  chat.send(3, enter("bob"));

  const first = chat.send(1, enter("alice"));
  assertFrames(
    inbox(first, 3),
    [entered("general", "alice", T0)],
    "first device",
  );
  const second = chat.send(2, enter("alice"));
  assertFrames(inbox(second, 2), [presence("general", ["alice", "bob"])], "2");
  assert.deepEqual(inbox(second, 3), [], "bob sees no second Enter");
  assert.deepEqual(inbox(second, 1), [], "nor does the first device");

  const dm = chat.send(3, whisper("bob", "alice", "yo"), { id: "p1" });
  for (const conn of CONNS) {
    assertFrames(
      inbox(dm, conn),
      [privateFrame("bob", "alice", "yo", "p1", T0)],
      `PrivateChat to ${conn}`,
    );
  }

  const oneLeaves = chat.send(2, leave("alice"));
  assert.deepEqual(inbox(oneLeaves, 3), [], "alice is still there");
  const lastCloses = chat.close(1);
  assertFrames(
    inbox(lastCloses, 3),
    [left("general", "alice", "disconnected", T0)],
    "the last device goes",
  );
});

Deno.test("auth: undelivered PrivateChats arrive when the user connects", () => {
  const stored: StoredPrivateChat = {
    id: "p0",
    sender_username: "bob",
    target_username: "alice",
    content: "later",
    timestamp: T0 - 1000,
  };
  const chat = new Chat({
    auto: false,
    settings: AUTH,
    grants: AUTH_GRANTS,
  });
  const opened = chat.open(1, TOKEN_ALICE);
  assert.deepEqual(effectsOf(opened, "load_offline"), [{
    type: "load_offline",
    username: "alice",
    limit: OFFLINE_PAGE,
  }]);
  chat.take("load_offline");
  const seen = chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [stored],
  });
  assertFrames(inbox(seen, 1), [["PrivateChat", { ...stored }]], "alice");
  assert.deepEqual(
    effectsOf(seen, "persist"),
    [],
    "not delivered until written",
  );
  assert.deepEqual(effectsOf(seen, "watch_written"), [{
    type: "watch_written",
    username: "alice",
    conns: [1],
    ids: ["p0"],
  }]);
  const written = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["p0"],
    written: true,
  });
  assert.deepEqual(effectsOf(written, "persist"), [{
    type: "persist",
    request: {
      conn: null,
      op: { kind: "delivered", ids: ["p0"], username: "alice" },
    },
  }]);
  assert.deepEqual(effectsOf(written, "load_offline"), [], "not yet");
  assert.equal(
    effectsOf(chat.persisted(), "load_offline").length,
    1,
    "the next page once marked",
  );
});

Deno.test("auth: a user back before the offline read answered gets its messages once", () => {
  const stored: StoredPrivateChat = {
    id: "p0",
    sender_username: "bob",
    target_username: "alice",
    content: "later",
    timestamp: T0 - 1000,
  };
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  assert.equal(effectsOf(chat.open(1, TOKEN_ALICE), "load_offline").length, 1);
  chat.close(1);
  const again = chat.open(2, TOKEN_ALICE);
  assert.deepEqual(
    effectsOf(again, "load_offline"),
    [],
    "no second read while the first is out",
  );
  const seen = chat.dispatch({
    type: "offline_loaded",
    now: T0,
    username: "alice",
    messages: [stored],
  });
  assertFrames(inbox(seen, 2), [["PrivateChat", { ...stored }]], "alice");
  chat.close(2);
  // The page was not written: it stays undelivered, and the pager stops.
  const dropped = chat.dispatch({
    type: "offline_written",
    now: T0,
    username: "alice",
    ids: ["p0"],
    written: false,
  });
  assert.deepEqual(effectsOf(dropped, "persist"), []);
  assert.deepEqual(effectsOf(dropped, "load_offline"), []);
  assert.equal(
    effectsOf(chat.open(3, TOKEN_ALICE), "load_offline").length,
    1,
    "a later connection reads again",
  );
});

Deno.test("auth: a lookup answered after a revocation does not undo it", () => {
  const chat = new Chat({ auto: false, settings: AUTH });
  chat.open(1);
  chat.send(1, enter("alice", {}, { token: TOKEN_ALICE }));
  chat.take("check_token");
  chat.dispatch({ type: "token_revoked", now: T0, token: TOKEN_ALICE });
  const seen = chat.dispatch({
    type: "token_checked",
    now: T0,
    token: TOKEN_ALICE,
    grant: GRANT_ALICE,
  });
  assertFrames(inbox(seen, 1), [error("invalid_token")], "alice");
});

// Tokens end connections: revocation, expiry, re-check (timers are effects)

const SHORT_ALICE: TokenGrant = { username: "alice", expiresAt: T0 + 2_000 };

function tokenTimers(
  seen: readonly Observed[],
): { token: string; at: number | null }[] {
  return effectsOf(seen, "token_timer").map(({ token, at }) => ({ token, at }));
}

scenarios("token timers", [
  {
    name:
      "a token at upgrade arms its timer at its expiry when that comes first",
    options: { settings: AUTH, grants: { [TOKEN_ALICE]: SHORT_ALICE } },
    when: { event: { type: "tick", now: WHEN_AT } },
    then: {},
    also: (state) => {
      assert.equal(state.bound.get(TOKEN_ALICE)?.expiresAt, T0 + 2_000);
      assert.deepEqual([...state.bound.get(TOKEN_ALICE)?.conns ?? []], [1]);
    },
    upgrade: { 1: TOKEN_ALICE },
  },
  {
    name:
      "token_due at the expiry ends the connection: Leave token_expired, 1008",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: SHORT_ALICE, [TOKEN_BOB]: GRANT_BOB },
    },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: { type: "token_due", now: T0 + 2_000, token: TOKEN_ALICE },
    },
    then: { 2: [left("general", "alice", "token_expired", T0 + 2_000)] },
    closes: [[1, 1008]],
    also: (state, seen) => {
      assert.deepEqual(tokenTimers(seen), [{ token: TOKEN_ALICE, at: null }]);
      assert.equal(state.users.has("alice"), false);
    },
  },
  {
    name:
      "token_due before the expiry, the lookup stale: the token is looked up",
    options: { settings: AUTH, grants: AUTH_GRANTS, auto: false },
    upgrade: { 1: TOKEN_ALICE },
    given: [[1, enter("alice")]],
    when: {
      event: {
        type: "token_due",
        now: T0 + TOKEN_RECHECK_MS,
        token: TOKEN_ALICE,
      },
    },
    then: {},
    also: (_state, seen) =>
      assert.deepEqual(effectsOf(seen, "check_token"), [
        { type: "check_token", token: TOKEN_ALICE },
      ]),
  },
  {
    name: "token_due for a token nobody holds any more does nothing",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE },
    given: [{ close: 1 }],
    when: { event: { type: "token_due", now: WHEN_AT, token: TOKEN_ALICE } },
    then: {},
    also: (_state, seen) => assert.deepEqual(seen, []),
  },
  {
    name: "the last connection of a token closing cancels its timer",
    options: { settings: AUTH, grants: AUTH_GRANTS },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_ALICE },
    given: [{ close: 2 }],
    when: { close: 1 },
    then: {},
    also: (state, seen) => {
      assert.deepEqual(tokenTimers(seen), [{ token: TOKEN_ALICE, at: null }]);
      assert.equal(state.bound.size, 0);
    },
  },
  {
    name: "a bus revocation ends this node's connections of the token",
    options: {
      settings: { ...AUTH, cluster: true },
      grants: AUTH_GRANTS,
    },
    upgrade: { 1: TOKEN_ALICE },
    when: {
      event: {
        type: "bus",
        now: WHEN_AT,
        message: { kind: "revoked", token: TOKEN_ALICE },
      },
    },
    then: {},
    closes: [[1, 1008]],
    also: (_state, seen) =>
      assert.deepEqual(
        effectsOf(seen, "release").map((e) => e.username),
        ["alice"],
      ),
  },
  {
    name: "a message with a token that expired ends the connection holding it",
    options: {
      settings: AUTH,
      grants: { [TOKEN_ALICE]: SHORT_ALICE, [TOKEN_BOB]: GRANT_BOB },
    },
    upgrade: { 1: TOKEN_ALICE, 2: TOKEN_BOB },
    given: [[1, enter("alice")], [2, enter("bob")]],
    when: {
      event: {
        type: "frame",
        conn: 1,
        now: T0 + 2_500,
        text: JSON.stringify(say("alice", "late", {}, withId("late"))),
        size: 80,
        id: WHEN_ID,
      },
    },
    then: {
      1: [error("invalid_token", "late")],
      2: [left("general", "alice", "token_expired", T0 + 2_500)],
    },
    closes: [[1, 1008]],
  },
]);

Deno.test("token re-check: a lookup that finds the token gone ends its connections; one that finds it re-arms", () => {
  const chat = new Chat({ auto: false, settings: AUTH, grants: AUTH_GRANTS });
  chat.open(1, TOKEN_ALICE);
  chat.open(2, TOKEN_BOB);
  chat.send(1, enter("alice"));
  chat.send(2, enter("bob"));
  chat.now = T0 + TOKEN_RECHECK_MS;
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_BOB });
  const found = chat.tokenChecked(GRANT_BOB);
  assert.deepEqual(tokenTimers(found), [{
    token: TOKEN_BOB,
    at: T0 + 2 * TOKEN_RECHECK_MS,
  }]);
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_ALICE });
  // Revoked by the command on the database: the server was not told.
  const gone = chat.tokenChecked(null);
  assertFrames(inbox(gone, 2), [
    left("general", "alice", "token_revoked", T0 + TOKEN_RECHECK_MS),
  ], "bob");
  assert.deepEqual(closes(gone), [[1, 1008]]);
  // A failed lookup keeps the connection and asks again later.
  chat.now = T0 + 2 * TOKEN_RECHECK_MS;
  chat.dispatch({ type: "token_due", now: chat.now, token: TOKEN_BOB });
  const failed = chat.tokenChecked(undefined);
  assert.deepEqual(closes(failed), []);
  assert.deepEqual(tokenTimers(failed), [{
    token: TOKEN_BOB,
    at: T0 + 3 * TOKEN_RECHECK_MS,
  }]);
});

// ---------------------------------------------------------------------------
