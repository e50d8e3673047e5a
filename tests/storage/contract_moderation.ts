/**
 * The storage contract's moderation cases (`Moderation` in
 * `src/chat/storage.ts`), run against every storage by `contract_test.ts`:
 * timed bans by folded name (set, replaced, listed, lifted, ended by time,
 * kept across a restart) and deleting a room's message by `seq` or by id
 * (gone from every history read, other rooms untouched, across a restart).
 *
 * @module
 */
import assert from "node:assert/strict";
import { ALL, type ContractCase, group, noRestart, store } from "./contract.ts";

/** The moderation cases. */
export const MODERATION_CONTRACT: readonly ContractCase[] = [
  {
    name: "bans: by folded name, replaced, listed, lifted, over at their end",
    async run(_subject, { storage }) {
      const now = Date.now();
      assert.equal(await storage.bannedUntil("alice", now), null);
      await storage.ban("Alice", now + 60_000, now);
      assert.equal(await storage.bannedUntil("ALICE", now), now + 60_000);
      await storage.ban("alice", now + 120_000, now);
      assert.equal(await storage.bannedUntil("alice", now), now + 120_000);
      await storage.ban("bob", now + 30_000, now);
      const rows = (await storage.bans(now)).map(({ username, until }) => ({
        username,
        until,
      })).sort((a, b) => a.username < b.username ? -1 : 1);
      assert.deepEqual(rows, [
        { username: "alice", until: now + 120_000 },
        { username: "bob", until: now + 30_000 },
      ]);
      // Past its end a ban holds no more.
      assert.equal(await storage.bannedUntil("bob", now + 30_000), null);
      assert.deepEqual(
        (await storage.bans(now + 60_000)).map((row) => row.username),
        ["alice"],
      );
      assert.equal(await storage.unban("ALICE"), true);
      assert.equal(await storage.unban("alice"), false);
      assert.equal(await storage.bannedUntil("alice", now), null);
    },
  },
  {
    name: "bans: kept across a restart",
    skip: noRestart,
    async run(_subject, harness) {
      const now = Date.now();
      await harness.storage.ban("alice", now + 600_000, now);
      await harness.restart!();
      assert.equal(
        await harness.storage.bannedUntil("alice", now),
        now + 600_000,
      );
    },
  },
  {
    name: "delete: by seq or id, gone from every read, other rooms untouched",
    async run(subject, harness) {
      const messages = [1, 2, 3, 4].map((seq) => group("r", seq));
      await store(subject, harness.storage, messages);
      await store(subject, harness.storage, [group("other", 1)]);
      const bySeq = await harness.storage.deleteMessage("r", { seq: 2 });
      assert.deepEqual(bySeq, messages[1]);
      const byId = await harness.storage.deleteMessage("r", { id: "r-4" });
      assert.deepEqual(byId, messages[3]);
      assert.equal(await harness.storage.deleteMessage("r", { seq: 2 }), null);
      assert.equal(
        await harness.storage.deleteMessage("r", { id: "other-1" }),
        null,
      );
      const since = await harness.storage.history("r", {
        kind: "since",
        since: 0,
        upTo: ALL,
      });
      assert.deepEqual(since.messages.map((m) => m.seq), [1, 3]);
      const last = await harness.storage.history("r", {
        kind: "last",
        count: 10,
        upTo: ALL,
      });
      assert.deepEqual(last.messages.map((m) => m.seq), [1, 3]);
      const other = await harness.storage.history("other", {
        kind: "since",
        since: 0,
        upTo: ALL,
      });
      assert.equal(other.messages.length, 1);
      if (harness.restart) {
        await harness.restart();
        const again = await harness.storage.history("r", {
          kind: "before",
          before: ALL,
          limit: 10,
          upTo: ALL,
        });
        assert.deepEqual(again.messages.map((m) => m.seq), [1, 3]);
      }
    },
  },
];
