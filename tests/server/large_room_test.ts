/**
 * Large rooms on a running server: a small `PRESENCE_FULL_LIMIT` and a few
 * hundred real WebSocket users, checking the switch to coalesced presence
 * (counts, `PresenceDiff`s instead of one `Enter` per user), `Members`
 * paging, and the way back to full presence. The rules in detail are the
 * reducer tables of `tests/unit/reducer_presence_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  envelope,
  type Frame,
  serve,
  TestClient,
  waitFor,
  waitForNoLeftovers,
} from "../support/helpers.ts";

const USERS = 300;
const LIMIT = 5;

/** The bodies of the frames of `type` a client got so far. */
// deno-lint-ignore no-explicit-any
function bodies(client: TestClient, type: string): any[] {
  return client.frames.filter((frame: Frame) => frame.message_type === type)
    .map((frame) => frame.message_body);
}

Deno.test("large room: 300 users past a limit of 5 get counts, coalesced diffs and pages, then full presence again", async () => {
  await using server = await serve({
    presenceFullLimit: LIMIT,
    maxConnectionsPerIp: 1000,
    maxUnauthenticatedPerIp: 1000,
    maxUnauthenticated: 1000,
    rateLimitPerSecond: 0,
  });
  const clients: TestClient[] = [];
  try {
    // The first LIMIT users one by one: full presence as before.
    for (let i = 0; i < LIMIT; i++) {
      const client = await TestClient.connect(server.wsUrl);
      clients.push(client);
      const members = await client.enter(`u${i}`, "live", `e${i}`);
      assert.equal(members.length, i + 1);
    }
    const first = clients[0] as TestClient;
    assert.equal(
      bodies(first, "Enter").length,
      LIMIT - 1,
      "one Enter per user while the room is small",
    );
    // The rest in bursts of 50, all at once.
    const presences: Record<string, unknown>[] = [];
    for (let start = LIMIT; start < USERS; start += 50) {
      const burst = await Promise.all(
        Array.from(
          { length: Math.min(50, USERS - start) },
          () => TestClient.connect(server.wsUrl),
        ),
      );
      clients.push(...burst);
      await Promise.all(burst.map(async (client, j) => {
        const i = start + j;
        client.send(
          envelope(
            "Enter",
            { sender_username: `u${i}`, room: "live" },
            `e${i}`,
          ),
        );
        presences[i] = await client.expect("Presence");
        await client.expect("Ack");
      }));
    }
    const last = presences[USERS - 1] as Record<string, unknown>;
    assert.equal(last.count, USERS);
    assert.equal((last.members as string[]).length, 100);
    assert.equal((last.members as string[])[0], "u0", "join order");
    assert.equal(last.more, true);
    assert.equal(last.cursor, 100);
    const sixth = presences[LIMIT] as Record<string, unknown>;
    assert.equal(sixth.count, LIMIT + 1, "the join past the limit switches");

    // Every member learns the count from PresenceDiffs, once a second at
    // most: far fewer frames than one Enter per user.
    await waitFor(
      () => bodies(first, "PresenceDiff").at(-1)?.count === USERS,
      "the first member sees the full count",
      5000,
    );
    const diffs = bodies(first, "PresenceDiff");
    const joined = diffs.reduce((sum, diff) => sum + diff.joined_count, 0);
    assert.equal(joined, USERS - LIMIT, "every join counted once");
    assert.ok(diffs.length <= 10, `${diffs.length} diffs, not one per join`);
    assert.equal(bodies(first, "Enter").length, LIMIT - 1, "no more Enters");
    for (const diff of diffs) assert.ok(diff.joined.length <= 100);
    const late = clients[USERS - 1] as TestClient;
    await waitFor(
      () => bodies(late, "PresenceDiff").at(-1)?.count === USERS,
      "the last member sees the full count",
      5000,
    );

    // Paging through every member with the cursor.
    first.frames.length = 0;
    const listed: string[] = [];
    let cursor = 0;
    for (let page = 0;; page++) {
      first.send(
        envelope("Members", { room: "live", cursor, limit: 70 }, `m${page}`),
      );
      const body = await first.expect("Members");
      assert.deepEqual(await first.expect("Ack"), { ref: `m${page}` });
      assert.equal(body.count, USERS);
      listed.push(...body.members);
      cursor = body.cursor;
      if (!body.more) break;
    }
    assert.deepEqual(
      listed,
      Array.from({ length: USERS }, (_, i) => `u${i}`),
    );

    // Leaves are coalesced too.
    const leaving = clients.splice(LIMIT - 1);
    await Promise.all(leaving.slice(0, 200).map((client) => client.close()));
    await waitFor(
      () => bodies(first, "PresenceDiff").at(-1)?.count === USERS - 200,
      "the count after 200 leaves",
      5000,
    );
    assert.equal(bodies(first, "Leave").length, 0, "no Leave per user");
    // Below 90% of the limit (fewer than 5 users): a full Presence.
    await Promise.all(leaving.slice(200).map((client) => client.close()));
    await waitFor(
      () => bodies(first, "Presence").length > 0,
      "a full Presence once the room is small again",
      5000,
    );
    assert.deepEqual(bodies(first, "Presence").at(-1), {
      room: "live",
      members: ["u0", "u1", "u2", "u3"],
    });
    // Small again: one Enter per user.
    const again = await TestClient.connect(server.wsUrl);
    clients.push(again);
    await again.enter("again", "live");
    await waitFor(
      () =>
        bodies(first, "Enter").some((body) => body.sender_username === "again"),
      "an Enter for a join in the small room",
    );
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
  await waitForNoLeftovers(server);
});
