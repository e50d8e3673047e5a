/**
 * The storage contract's token and offline tables: a token is `null` when
 * unknown, revoked or expired (the rule each storage has its own copy of),
 * the operator's listing; who may get an offline `PrivateChat`, the
 * `maxWaiting` cap (`inbox_full`), pages read oldest first and marked
 * delivered. It does not open storages (`contract_test.ts` does).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredPrivateChat } from "../../src/wire/protocol.ts";
import {
  hashToken,
  type WriteOp,
  type WriteResult,
} from "../../src/chat/storage.ts";
import {
  ALL,
  bobHoldsAToken,
  chat,
  type ContractCase,
  INBOX_FULL,
  OK,
  range,
  UNKNOWN_USER,
  write,
} from "./contract.ts";

// ---------------------------------------------------------------------------
// Tokens: "null when unknown, revoked or expired at now"

/** One lookup of a token. */
interface TokenRule {
  name: string;
  /** Revoked before the lookup. */
  revoked: boolean;
  /** The lookup's `now`; the token expires at 2000. */
  now: number;
  /** What is looked up, if not the token as created. */
  lookup?: string;
  valid: boolean;
}

const TOKEN = "Tok-Bob-0123456789abcdef";

const TOKEN_RULES: readonly TokenRule[] = [
  { name: "valid when created", revoked: false, now: 1000, valid: true },
  { name: "valid until just before", revoked: false, now: 1999, valid: true },
  { name: "expired at expiresAt", revoked: false, now: 2000, valid: false },
  { name: "expired after", revoked: false, now: 9000, valid: false },
  { name: "revoked", revoked: true, now: 1000, valid: false },
  { name: "revoked and expired", revoked: true, now: 9000, valid: false },
  {
    name: "compared case-insensitively",
    revoked: false,
    now: 1000,
    lookup: TOKEN.toUpperCase(),
    valid: true,
  },
  {
    name: "unknown",
    revoked: false,
    now: 1000,
    lookup: "tok-unknown",
    valid: false,
  },
];

const tokenRules: ContractCase[] = TOKEN_RULES.map((c) => ({
  name: `token: ${c.name}`,
  async run(_subject, { storage }) {
    const grant = { username: "bob", expiresAt: 2000 };
    await storage.createToken(TOKEN, grant, 500);
    if (c.revoked) assert.equal(await storage.revokeToken(TOKEN), true);
    assert.deepEqual(
      await storage.checkToken(c.lookup ?? TOKEN, c.now),
      c.valid ? grant : null,
    );
  },
}));

const tokens: ContractCase[] = [...tokenRules, {
  name: "tokens: create, refuse a duplicate, revoke once, list newest first",
  async run(_subject, { storage }) {
    await storage.createToken(
      "tok-A",
      { username: "bob", expiresAt: 500 },
      100,
    );
    await storage.createToken(
      "tok-b",
      { username: "carol", expiresAt: 900 },
      200,
    );
    await assert.rejects(
      storage.createToken("tok-b", { username: "eve", expiresAt: 900 }, 300),
    );
    // An expired token can still be revoked (and listed).
    assert.equal(await storage.revokeToken("tok-A"), true);
    assert.equal(await storage.revokeToken("tok-A"), false);
    assert.equal(await storage.revokeToken("tok-unknown"), false);
    assert.deepEqual(await storage.listTokens(), [
      {
        username: "carol",
        expiresAt: 900,
        hashPrefix: (await hashToken("tok-b")).slice(0, 12),
        createdAt: 200,
        revoked: false,
      },
      {
        username: "bob",
        expiresAt: 500,
        hashPrefix: (await hashToken("tok-A")).slice(0, 12),
        createdAt: 100,
        revoked: true,
      },
    ]);
    assert.deepEqual(await storage.checkToken("tok-b", 300), {
      username: "carol",
      expiresAt: 900,
    });
    assert.deepEqual(await storage.roomSeqs(), new Map());
  },
}];

// Offline messages

/** Who may get an offline `PrivateChat`: a user who holds or held a token. */
interface RecipientCase {
  name: string;
  /** bob's token, if any, and what became of it. */
  token?: "valid" | "revoked" | "expired";
  delivered: boolean;
  result: WriteResult;
  stored: boolean;
}

const RECIPIENTS: readonly RecipientCase[] = [
  {
    name: "no token, offline: unknown_user, not stored",
    delivered: false,
    result: UNKNOWN_USER,
    stored: false,
  },
  {
    name: "no token, delivered live: not kept for later",
    delivered: true,
    result: OK,
    stored: false,
  },
  {
    name: "a token holder, offline: kept for later",
    token: "valid",
    delivered: false,
    result: OK,
    stored: true,
  },
  {
    name: "a revoked token's user, offline: kept for later",
    token: "revoked",
    delivered: false,
    result: OK,
    stored: true,
  },
  {
    name: "an expired token's user, offline: kept for later",
    token: "expired",
    delivered: false,
    result: OK,
    stored: true,
  },
];

const recipients: ContractCase[] = RECIPIENTS.map((c) => ({
  name: `offline: ${c.name}`,
  async run(_subject, { storage }) {
    if (c.token) {
      const expiresAt = c.token === "expired" ? 2 : ALL;
      await storage.createToken("tok-bob", { username: "bob", expiresAt }, 1);
      if (c.token === "revoked") await storage.revokeToken("tok-bob");
    }
    const message = chat("p1", "bob");
    assert.deepEqual(
      await write(storage, [{
        kind: "private",
        message,
        delivered: c.delivered,
      }]),
      [c.result],
    );
    assert.deepEqual(await storage.offline("bob"), c.stored ? [message] : []);
    assert.deepEqual(await storage.offline("alice"), []);
  },
}));

/** One write to bob's inbox under `MAX_OFFLINE_MESSAGES` 3. */
interface CapCase {
  name: string;
  /** Messages already waiting for bob. */
  waiting: number;
  /** A write of the same message before {@linkcode op}, if any. */
  before?: (message: StoredPrivateChat) => WriteOp;
  op: (message: StoredPrivateChat) => WriteOp;
  result: WriteResult;
  /** Messages waiting afterwards. */
  after: number;
}

const capped = (message: StoredPrivateChat): WriteOp => ({
  kind: "private",
  message,
  delivered: false,
  maxWaiting: 3,
});

const CAPS: readonly CapCase[] = [
  {
    name: "below the cap: kept",
    waiting: 2,
    op: capped,
    result: OK,
    after: 3,
  },
  {
    name: "at the cap: inbox_full, not stored",
    waiting: 3,
    op: capped,
    result: INBOX_FULL,
    after: 3,
  },
  {
    name: "no cap given: kept",
    waiting: 3,
    op: (message) => ({ kind: "private", message, delivered: false }),
    result: OK,
    after: 4,
  },
  {
    name: "sent live: not kept, not capped",
    waiting: 3,
    op: (message) => ({ ...capped(message), delivered: true }),
    result: OK,
    after: 3,
  },
  {
    // Written live first, as the runner does (SQLite's `undelivered` marks
    // a stored row; memory and Redis store the message it carries).
    name: "acknowledged, target gone before the commit: kept anyway",
    waiting: 3,
    before: (message) => ({ kind: "private", message, delivered: true }),
    op: (message) => ({ kind: "undelivered", message }),
    result: OK,
    after: 4,
  },
];

const caps: ContractCase[] = CAPS.map((c) => ({
  name: `offline cap: ${c.name}`,
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const waiting = range(1, c.waiting).map((n) => chat(`w${n}`, "bob", n));
    assert.deepEqual(
      await write(storage, waiting.map((message) => capped(message))),
      waiting.map(() => OK),
    );
    const message = chat("new", "bob", 100);
    if (c.before) {
      assert.deepEqual(await write(storage, [c.before(message)]), [OK]);
    }
    assert.deepEqual(await write(storage, [c.op(message)]), [c.result]);
    const after = await storage.offline("bob");
    assert.equal(after.length, c.after);
    assert.deepEqual(after.slice(0, waiting.length), waiting);
  },
}));

const offline: ContractCase[] = [...recipients, ...caps, {
  name: "offline cap: in one batch, then pages, then room again",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const p = (id: string, at: number) => capped(chat(id, "bob", at));
    assert.deepEqual(
      await write(storage, [
        p("p1", 1),
        p("p2", 2),
        p("p3", 3),
        p("p4", 4),
        // Live: not kept for later, not capped.
        {
          kind: "private",
          message: chat("p5", "bob", 5),
          delivered: true,
          maxWaiting: 3,
        },
        // Sent live, its target gone before the commit: kept whatever the
        // count.
        { kind: "undelivered", message: chat("p5", "bob", 5) },
      ]),
      [OK, OK, OK, INBOX_FULL, OK, OK],
    );
    const ids = async (limit?: number) =>
      (await storage.offline("bob", limit)).map((m) => m.id);
    assert.deepEqual(await ids(), ["p1", "p2", "p3", "p5"]);
    assert.deepEqual(await ids(2), ["p1", "p2"]);
    await storage.write([{ kind: "delivered", ids: ["p1", "p2"] }]);
    assert.deepEqual(await ids(2), ["p3", "p5"]);
    // Room again below the cap.
    assert.deepEqual(await write(storage, [p("p7", 7)]), [OK]);
  },
}, {
  name:
    "offline pages: the oldest first, the same until marked, the next after",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const all = range(1, 5).map((n) => chat(`w${n}`, "bob", n));
    await storage.write(all.map((message): WriteOp => ({
      kind: "private",
      message,
      delivered: false,
    })));
    assert.deepEqual(await storage.offline("bob", 2), all.slice(0, 2));
    assert.deepEqual(await storage.offline("bob", 2), all.slice(0, 2));
    await storage.write([
      { kind: "delivered", ids: ["w1", "w2"], username: "bob" },
    ]);
    assert.deepEqual(await storage.offline("bob", 2), all.slice(2, 4));
    // Ids that wait nowhere are ignored.
    await storage.write([{ kind: "delivered", ids: ["w3", "w4", "nope"] }]);
    assert.deepEqual(await storage.offline("bob", 2), all.slice(4));
    assert.deepEqual(await storage.offline("bob", 0), []);
    assert.deepEqual(await storage.offline("bob"), all.slice(4));
    assert.deepEqual(await storage.offline("nobody"), []);
  },
}, {
  name:
    "offline: written as delivered, then undelivered, it waits; once delivered it is gone",
  async run(_subject, { storage }) {
    const message = chat("p-late", "carol");
    await storage.write([{ kind: "private", message, delivered: true }]);
    assert.deepEqual(await storage.offline("carol"), [], "delivered");
    await storage.write([{ kind: "undelivered", message }]);
    assert.deepEqual(await storage.offline("carol"), [message]);
    await storage.write([{ kind: "delivered", ids: [message.id] }]);
    assert.deepEqual(await storage.offline("carol"), [], "once");
  },
}, {
  name: "offline: undelivered, never written before",
  async run(subject, { storage }) {
    const message = chat("p-paged", "carol");
    assert.deepEqual(await write(storage, [{ kind: "undelivered", message }]), [
      OK,
    ]);
    assert.deepEqual(
      await storage.offline("carol"),
      subject.undeliveredStores ? [message] : [],
    );
  },
}, {
  name: "offline: written out of timestamp order",
  async run(subject, { storage }) {
    await bobHoldsAToken(storage);
    const messages = [
      chat("late", "bob", 30),
      chat("early", "bob", 10),
      chat("tie-1", "bob", 20),
      chat("tie-2", "bob", 20),
    ];
    await storage.write(messages.map((message): WriteOp => ({
      kind: "private",
      message,
      delivered: false,
    })));
    assert.deepEqual(
      (await storage.offline("bob")).map((m) => m.id),
      subject.offlineOrder === "written"
        ? ["late", "early", "tie-1", "tie-2"]
        : ["early", "tie-1", "tie-2", "late"],
    );
    // Marks anywhere in the page, and an id that waits nowhere.
    assert.deepEqual(
      await write(storage, [{
        kind: "delivered",
        ids: ["early", "tie-2", "nope"],
      }]),
      [OK],
    );
    assert.deepEqual(
      (await storage.offline("bob")).map((m) => m.id),
      subject.offlineOrder === "written"
        ? ["late", "tie-1"]
        : ["tie-1", "late"],
    );
    assert.deepEqual(await storage.offline("alice"), []);
  },
}, {
  name: "offline: a refused op in a batch refuses only itself",
  async run(_subject, { storage }) {
    await bobHoldsAToken(storage);
    const toBob = chat("p2", "bob", 2);
    assert.deepEqual(
      await write(storage, [
        { kind: "private", message: chat("p1", "dave", 1), delivered: false },
        { kind: "private", message: toBob, delivered: false },
        { ...capped(chat("p3", "bob", 3)), maxWaiting: 1 } as WriteOp,
        { kind: "private", message: chat("p4", "dave", 4), delivered: true },
      ]),
      [UNKNOWN_USER, OK, INBOX_FULL, OK],
    );
    assert.deepEqual(await storage.offline("bob"), [toBob]);
    assert.deepEqual(await storage.offline("dave"), []);
  },
}];

/** The token and offline part of the contract. */
export const OFFLINE_CONTRACT: readonly ContractCase[] = [
  ...tokens,
  ...offline,
];
