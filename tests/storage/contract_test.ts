/**
 * Runs the storage contract (`contract.ts`) against every storage:
 * `MemoryStorage`, `SqliteStorage` on a file, and `RedisStorage` on a real
 * `redis-server` (started with `tools/local_redis.ts`). Each storage is a
 * {@linkcode Subject}: how to open a fresh one, restart it and make its
 * writes fail, and where it legitimately differs. What only one storage
 * has is tested in its own file.
 *
 * @module
 */
import { join } from "node:path";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { RedisStorage } from "../../src/redis/storage.ts";
import {
  connectRedis,
  type RedisConnection,
} from "../../src/redis/connection.ts";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { waitFor } from "../support/helpers.ts";
import {
  type ContractCase,
  type Harness,
  runContract,
  type Subject,
} from "./contract.ts";
import { HISTORY_CONTRACT } from "./contract_history.ts";
import { OFFLINE_CONTRACT } from "./contract_offline.ts";
import { WRITES_CONTRACT } from "./contract_writes.ts";
import { MODERATION_CONTRACT } from "./contract_moderation.ts";

/** The whole contract, in the order it runs. */
const CONTRACT: readonly ContractCase[] = [
  ...HISTORY_CONTRACT,
  ...OFFLINE_CONTRACT,
  ...WRITES_CONTRACT,
  ...MODERATION_CONTRACT,
];

Deno.test("storage contract: memory", async (t) => {
  await runContract(t, CONTRACT, {
    name: "memory",
    assignsSeq: false,
    offlineOrder: "written",
    undeliveredStores: true,
    windowByMessageTime: true,
    restarts: false,
    open: ({ historySize }) =>
      Promise.resolve({
        storage: new MemoryStorage(historySize),
        [Symbol.asyncDispose]: () => Promise.resolve(),
      }),
  });
});

Deno.test("storage contract: SQLite", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "storage_contract_" });
  let files = 0;
  try {
    await runContract(t, CONTRACT, {
      name: "SQLite",
      assignsSeq: false,
      offlineOrder: "timestamp",
      undeliveredStores: false,
      windowByMessageTime: true,
      restarts: true,
      failureText: /^database or disk is full$/,
      open: ({ historySize }) => {
        const path = join(dir, `${++files}.db`);
        let storage = new SqliteStorage(path, historySize);
        const harness: Harness = {
          get storage() {
            return storage;
          },
          async restart() {
            await storage.close();
            storage = new SqliteStorage(path, historySize);
          },
          breakWrites() {
            // No page more than the file has now: SQLITE_FULL, as on a
            // full disk.
            storage.maxPageCount(1);
            return Promise.resolve(() => {
              storage.maxPageCount(1_000_000);
              return Promise.resolve();
            });
          },
          [Symbol.asyncDispose]: () => storage.close(),
        };
        return Promise.resolve(harness);
      },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("storage contract: Redis", async (t) => {
  await using redis = await startLocalRedis();
  const log = () => {};
  const admin = connectRedis(redis.url, { name: "admin", log });
  try {
    await waitFor(() => admin.up, "redis up", 10_000);
    const config = (name: string, value: string) =>
      admin.command(["CONFIG", "SET", name, value]);
    const subject: Subject = {
      name: "Redis",
      assignsSeq: true,
      offlineOrder: "written",
      undeliveredStores: true,
      windowByMessageTime: false,
      restarts: true,
      failureText: /^OOM /,
      async open({ historySize }) {
        await admin.command(["FLUSHALL"]);
        const connection: RedisConnection = connectRedis(redis.url, {
          name: "n1",
          log,
        });
        await waitFor(() => connection.up, "redis up", 10_000);
        const options = { nodeId: "n1", historySize, authEnabled: true };
        const harness: Harness = {
          storage: new RedisStorage(connection, options),
          async restart() {
            // Killed: only the append-only file brings the data back.
            await redis.kill();
            await waitFor(() => !connection.up, "redis down", 10_000);
            await redis.restart();
            await waitFor(
              () => connection.up && admin.up,
              "redis up again",
              10_000,
            );
            harness.storage = new RedisStorage(connection, options);
          },
          async breakWrites() {
            await config("maxmemory-policy", "noeviction");
            await config("maxmemory", "1");
            return async () => void await config("maxmemory", "0");
          },
          [Symbol.asyncDispose]: () => connection.close(),
        };
        return harness;
      },
    };
    await runContract(t, CONTRACT, subject);
  } finally {
    await admin.close();
  }
});
