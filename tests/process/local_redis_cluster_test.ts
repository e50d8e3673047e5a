import assert from "node:assert/strict";
import {
  parseClusterNodes,
  redisCli,
  startLocalRedisCluster,
} from "../../tools/local_redis_cluster.ts";

Deno.test("local redis cluster: 3 masters and 3 replicas; a killed master's replica takes over with its data", async () => {
  await using cluster = await startLocalRedisCluster();
  const topology = await cluster.topology();
  assert.equal(topology.filter((node) => node.master).length, 3);
  assert.equal(topology.filter((node) => !node.master).length, 3);
  assert.equal(cluster.url.split(",").length, 6);
  const slot = Number(
    (await redisCli(cluster.nodes[0]!.port, "CLUSTER", "KEYSLOT", "{chat}x"))
      .trim(),
  );
  const master = await cluster.masterOf(slot);
  assert.equal(
    (await redisCli(master.port, "SET", "{chat}x", "v")).trim(),
    "OK",
  );
  // The replica has it before the master dies.
  assert.equal(
    (await redisCli(master.port, "WAIT", "1", "2000")).trim(),
    "1",
  );
  await master.kill();
  await cluster.waitUntilOk(20_000, false);
  const promoted = await cluster.masterOf(slot);
  assert.notEqual(promoted.port, master.port);
  assert.equal((await redisCli(promoted.port, "GET", "{chat}x")).trim(), "v");
  await cluster.stop();
  assert.equal(cluster.nodes.some((node) => node.running), false);
  await assert.rejects(Deno.stat(cluster.dir));
});

Deno.test("local redis cluster: CLUSTER NODES is parsed", () => {
  const text = [
    "07c3 127.0.0.1:30004@31004,host slave e7d1 0 1426238317239 4 connected",
    "67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922",
    "292f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383 [93-<-292f]",
    "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000",
  ].join("\n");
  assert.deepEqual(parseClusterNodes(text), [
    { port: 30004, master: false, failed: false, slots: [] },
    { port: 30002, master: true, failed: false, slots: [[5461, 10922]] },
    { port: 30003, master: true, failed: true, slots: [[10923, 16383]] },
    {
      port: 30001,
      master: true,
      failed: false,
      slots: [[0, 5460], [7000, 7000]],
    },
  ]);
});
