/**
 * Large rooms across a cluster: two nodes with `PRESENCE_FULL_LIMIT` 5 and a
 * hundred users joining on both. The nodes batch their joins per tick (no
 * bus message per join), every member on either node learns the same count,
 * `Members` pages through the cluster's members, and the room goes back to
 * full presence on both nodes. Runs on a standalone Redis and on a Redis
 * Cluster.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  envelope,
  type Frame,
  TestClient,
  waitFor,
} from "../support/helpers.ts";
import { BACKENDS, startCluster } from "../support/cluster_helpers.ts";

const LIMIT = 5;
const BULK = 100;

// deno-lint-ignore no-explicit-any
function bodies(client: TestClient, type: string): any[] {
  return client.frames.filter((frame: Frame) => frame.message_type === type)
    .map((frame) => frame.message_body);
}

function lastCount(client: TestClient): number | undefined {
  return bodies(client, "PresenceDiff").at(-1)?.count;
}

for (const backend of BACKENDS) {
  Deno.test(`cluster (${backend}): a large room's joins are batched per node and tick, counts agree, Members pages the cluster, and it goes back to full presence`, async () => {
    await using cluster = await startCluster(2, {
      presenceFullLimit: LIMIT,
      maxConnectionsPerIp: 1000,
      maxUnauthenticatedPerIp: 1000,
      maxUnauthenticated: 1000,
      rateLimitPerSecond: 0,
    }, backend);
    const [a, b] = cluster.nodes;
    assert.ok(a && b);
    const clients: TestClient[] = [];
    try {
      // Four users, two per node, one by one: full presence.
      const small: TestClient[] = [];
      for (const [i, node] of [a, b, a, b].entries()) {
        const client = await TestClient.connect(node.wsUrl);
        small.push(client);
        await client.enter(`s${i}`, "live", `e${i}`);
      }
      clients.push(...small);
      const [watchA, watchB] = small as [TestClient, TestClient];
      await waitFor(
        () => bodies(watchA, "Enter").length === 3,
        "three Enters while the room is small",
      );
      // A hundred more on both nodes, in bursts.
      for (let start = 0; start < BULK; start += 25) {
        const burst = await Promise.all(
          Array.from(
            { length: 25 },
            (_, j) => TestClient.connect(((start + j) % 2 === 0 ? a : b).wsUrl),
          ),
        );
        clients.push(...burst);
        await Promise.all(burst.map(async (client, j) => {
          client.send(
            envelope("Enter", {
              sender_username: `u${start + j}`,
              room: "live",
            }, "e"),
          );
          await client.expect("Presence");
          await client.expect("Ack");
        }));
      }
      const total = 4 + BULK;
      // The fifth user was announced; every later join is counted once, by
      // the node it joined or by that node's batch (a count may come before
      // the last batch: it is Redis's).
      const joinedOf = (watcher: TestClient) =>
        bodies(watcher, "PresenceDiff").reduce(
          (sum, diff) => sum + diff.joined_count,
          0,
        );
      for (const watcher of [watchA, watchB]) {
        await waitFor(
          () =>
            lastCount(watcher) === total &&
            joinedOf(watcher) >= total - LIMIT - 1,
          `a watcher's count reaches ${total} (${lastCount(watcher)}, ${
            joinedOf(watcher)
          } joins told)`,
          10_000,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 1200));
      for (const [i, watcher] of [watchA, watchB].entries()) {
        const diffs = bodies(watcher, "PresenceDiff");
        const enters = bodies(watcher, "Enter").length;
        // Every user who joined after the watcher is told once: as an Enter
        // while the room is small, or in a diff. The fifth user's Enter may
        // reach a node that a sixth join has already made large; it is then
        // told in that node's diff instead.
        assert.equal(
          enters + joinedOf(watcher),
          total - 1 - i,
          "each join once",
        );
        assert.ok(enters <= LIMIT - 1 - i, `${enters} Enters`);
        assert.ok(enters >= LIMIT - 2 - i, `${enters} Enters`);
        assert.equal(lastCount(watcher), total, "the counts agree");
        assert.ok(diffs.length <= 12, `${diffs.length} diffs`);
      }

      // A joiner's Presence: the cluster's count and a first page.
      const late = await TestClient.connect(b.wsUrl);
      clients.push(late);
      late.send(envelope("Enter", { sender_username: "late", room: "live" }));
      const presence = await late.expect("Presence");
      assert.equal(presence.count, total + 1);
      assert.ok(presence.members.length <= 128);
      // Members pages through every node's members.
      const seen = new Set<string>(presence.members);
      let cursor = presence.more ? presence.cursor : 0;
      for (let page = 0; cursor !== 0; page++) {
        late.send(
          envelope(
            "Members",
            { room: "live", cursor, limit: 30 },
            `m${page}`,
          ),
        );
        const body = await late.expect("Members");
        await late.expect("Ack");
        for (const name of body.members) seen.add(name);
        cursor = body.more ? body.cursor : 0;
      }
      assert.equal(seen.size, total + 1, "every member listed");
      assert.ok(seen.has("u0") && seen.has("u99") && seen.has("s1"));

      // Everyone but the first four leaves: back to full presence on both.
      const leaving = clients.splice(small.length);
      await Promise.all(leaving.map((client) => client.close()));
      for (const watcher of [watchA, watchB]) {
        await waitFor(
          () => bodies(watcher, "Presence").length > 0,
          "a full Presence on each node",
          8000,
        );
        assert.deepEqual(bodies(watcher, "Presence").at(-1), {
          room: "live",
          members: ["s0", "s1", "s2", "s3"],
        });
      }
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });
}
