/**
 * The chat server's runner as `main.ts` builds it with `:memory:` and the
 * benchmark's flags (no rate limit, the default limits), for the benchmarks
 * that drive it without a network.
 *
 * @module
 */
import { createState } from "../../src/chat/reducer.ts";
import { Runner } from "../../src/runtime/runner.ts";
import { MemoryStorage } from "../../src/storage/memory_storage.ts";
import { Metrics } from "../../src/runtime/metrics.ts";
import { createLogger } from "../../src/runtime/log.ts";

/** A fresh runner on `MemoryStorage`, logging warnings only. */
export function createBenchRunner(): Runner {
  const state = createState({
    serverName: "bench",
    authEnabled: false,
    defaultRoom: "general",
    maxMessageBytes: 65536,
    maxContentChars: 4000,
    maxRoomsPerConnection: 50,
    rateLimitPerSecond: 0,
    rateLimitBurst: 40,
    maxConsecutiveErrors: 10,
    cluster: false,
  });
  return new Runner(state, {
    storage: new MemoryStorage(1000),
    metrics: new Metrics(),
    log: createLogger("warn"),
    maxBufferedBytes: 1 << 20,
  });
}

/** The benchmark's username of client `i`. */
export function benchUsername(i: number): string {
  return `u${String(i).padStart(5, "0")}`;
}

/** The `Enter` that puts client `i` in its room of `roomSize`, as an event. */
export function enterEvent(i: number, roomSize: number): MessageEvent {
  return new MessageEvent("message", {
    data: JSON.stringify({
      message_type: "Enter",
      message_body: {
        sender_username: benchUsername(i),
        room: `room-${Math.floor(i / roomSize)}`,
      },
    }),
  });
}
