/**
 * {@linkcode openStorage}: the storage a single node uses, as
 * `DATABASE_PATH` names it (`:memory:` or an SQLite file). It does not open
 * a cluster's Redis storage (`REDIS_URL`), which the server wires itself.
 *
 * @module
 */
import type { Storage } from "../chat/storage.ts";
import type { Config } from "../runtime/config.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { openSqliteStorage } from "./sqlite_storage.ts";

/** Opens the storage that `DATABASE_PATH` names. */
export function openStorage(
  config: Pick<Config, "databasePath" | "historySize">,
): Storage {
  return config.databasePath === ":memory:"
    ? new MemoryStorage(config.historySize)
    : openSqliteStorage(config.databasePath, config.historySize);
}
