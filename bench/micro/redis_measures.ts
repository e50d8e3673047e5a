/**
 * The measures of `deno task bench:redis`, each on one {@linkcode Client}:
 * pipelined throughput ({@linkcode rate}), pub/sub throughput and integrity
 * ({@linkcode measurePubsub}), and what a Redis restart does to commands in
 * flight ({@linkcode measureRestart}). It opens no client of its own but the
 * one under test, and prints nothing; `redis_clients.ts` runs them and
 * makes the tables.
 *
 * @module
 */
import type { LocalRedis } from "../../tools/local_redis.ts";
import {
  type Client,
  type NodeRedisClient,
  nodeRedisOf,
  type Variant,
} from "./redis_adapters.ts";

/** Warm-up before each throughput sample, in ms (not counted). */
export const WARMUP_MS = 250;
/** Messages per pub/sub sample. */
export const PUBSUB_MESSAGES = 100_000;
/** Bytes per pub/sub message. */
export const PUBSUB_MESSAGE_BYTES = 100;
/** `PUBLISH`es per batch. */
export const PUBSUB_BATCH = 1000;
/** How long a pub/sub sample may wait for its last message, in ms. */
export const PUBSUB_TIMEOUT_MS = 20_000;
/** `INCR`s issued per loop turn (every ms or so) in the restart test. */
export const RESTART_BATCH = 50;

/** One throughput sample. */
export interface RateSample {
  opsPerSecond: number;
  ops: number;
  failed: number;
  seconds: number;
}

/** One pub/sub sample. */
export interface PubsubSample {
  messagesPerSecond: number;
  received: number;
  lost: number;
  duplicates: number;
  outOfOrder: number;
  failedPublishes: number;
  seconds: number;
}

/** What became of the commands of one phase of the restart test. */
export interface Fate {
  issued: number;
  resolved: number;
  rejected: number;
  /** Neither resolved nor rejected 5 s after the loop stopped. */
  hung: number;
}

/** The restart test of one client. */
export interface RestartResult {
  client: string;
  /** The client reported the loss of its connection. */
  lossSeen: boolean;
  /** The client was ready again by itself within 10 s of Redis answering. */
  reconnected: boolean;
  /** From Redis answering again to the client's 'ready', ms. */
  reconnectMs: number | null;
  /** A message published after the restart reached the subscriber. */
  resubscribed: boolean;
  /** From Redis answering again to that message's receipt, ms. */
  resubscribeMs: number | null;
  /** Sent, unanswered when the connection was lost. */
  inFlight: Fate;
  /** Issued between the loss and 'ready'. */
  whileDown: Fate;
  /** Every `INCR` of the test. */
  all: Fate;
  /** The counter in Redis afterwards. */
  counter: number;
  /** `counter - all.resolved`: `INCR`s that ran without a reply delivered. */
  ranWithoutReply: number;
  /** Distinct rejection messages and how often each came. */
  rejections: Record<string, number>;
  /** 'error' events of the client. */
  errorEvents: number;
  downMs: number;
}

/**
 * Calls `batch` (`size` commands, resolving to failures) one at a time for
 * {@linkcode WARMUP_MS} uncounted, then for `seconds`.
 */
export async function rate(
  batch: () => Promise<number>,
  size: number,
  seconds: number,
): Promise<RateSample> {
  const warm = performance.now() + WARMUP_MS;
  while (performance.now() < warm) await batch();
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  let failed = 0;
  while (performance.now() < end) {
    const f = await batch();
    ops += size - f;
    failed += f;
  }
  const elapsed = (performance.now() - start) / 1000;
  return { opsPerSecond: ops / elapsed, ops, failed, seconds: elapsed };
}

/** Messages of {@linkcode PUBSUB_MESSAGE_BYTES}, each starting with its index. */
export function makeMessages(count: number): string[] {
  const filler = "x".repeat(PUBSUB_MESSAGE_BYTES - 8);
  return Array.from(
    { length: count },
    (_, i) => String(i).padStart(8, "0") + filler,
  );
}

/**
 * Publishes `messages` through `pub` in batches (one in flight) to `sub`
 * subscribed to `channel`; the rate is from the first publish to the last
 * message received.
 */
export async function measurePubsub(
  pub: Client,
  sub: Client,
  channel: string,
  messages: readonly string[],
): Promise<PubsubSample> {
  const total = messages.length;
  const seen = new Uint8Array(total);
  let received = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let next = 0;
  let last = 0;
  let allReceived = () => {};
  const finished = new Promise<void>((resolve) => allReceived = resolve);
  await sub.subscribe(channel, (message) => {
    const i = Number(message.slice(0, 8));
    if (seen[i]) {
      duplicates++;
    } else {
      seen[i] = 1;
      received++;
    }
    if (i !== next) outOfOrder++;
    next = i + 1;
    if (received === total) {
      last = performance.now();
      allReceived();
    }
  });
  const batches: (readonly string[])[] = [];
  for (let i = 0; i < total; i += PUBSUB_BATCH) {
    batches.push(messages.slice(i, i + PUBSUB_BATCH));
  }
  const start = performance.now();
  let failedPublishes = 0;
  for (const batch of batches) {
    failedPublishes += await pub.publishBatch(channel, batch);
  }
  await withTimeout(finished, PUBSUB_TIMEOUT_MS);
  const end = received === total ? last : performance.now();
  await sub.unsubscribe(channel);
  const seconds = (end - start) / 1000;
  return {
    messagesPerSecond: received / seconds,
    received,
    lost: total - received,
    duplicates,
    outOfOrder,
    failedPublishes,
    seconds,
  };
}

/**
 * The restart test of one client: a loop of `INCR`s (50 a turn, a turn a
 * ms) for 400 ms, `SIGKILL` to Redis, 300 ms down, Redis started again on
 * its append-only file, the loop kept 400 ms past the client's 'ready',
 * then every reply awaited (5 s at most) and the counter read.
 */
export async function measureRestart(
  redis: LocalRedis,
  admin: Client,
  variant: Variant,
): Promise<RestartResult> {
  const adminClient = nodeRedisOf(admin);
  const slug = variant.name.replace(/[^a-z0-9]+/gi, "-");
  const key = `bench:restart:${slug}`;
  const channel = `bench:restart:${slug}`;
  await adminClient.del(key);
  const client = await variant.open(redis.url);
  const sub = await variant.open(redis.url);
  let gotBefore = false;
  let gotAfterAt: number | null = null;
  await sub.subscribe(channel, (message) => {
    if (message === "before") gotBefore = true;
    if (message === "after" && gotAfterAt === null) {
      gotAfterAt = performance.now();
    }
  });
  await poll(
    () => gotBefore,
    () => adminClient.publish(channel, "before"),
    2000,
  );
  if (!gotBefore) throw new Error(`${variant.name}: subscriber got nothing`);

  type Phase = "up" | "down" | "again";
  let phase: Phase = "up";
  const fates: Record<Phase, Fate> = {
    up: newFate(),
    down: newFate(),
    again: newFate(),
  };
  const inFlight = newFate();
  let inFlightIds: Set<number> | null = null;
  let lostAt: number | null = null;
  let readyAt: number | null = null;
  const pending = new Set<number>();
  const rejections: Record<string, number> = {};
  let resolved = 0;
  let rejected = 0;
  let lastId = 0;
  client.onLost = () => {
    if (inFlightIds !== null) return;
    inFlightIds = new Set(pending);
    inFlight.issued = inFlightIds.size;
    lostAt = performance.now();
    phase = "down";
  };
  client.onReady = () => {
    if (phase !== "down") return;
    readyAt = performance.now();
    phase = "again";
  };
  function issue(): void {
    const id = ++lastId;
    const fate = fates[phase];
    fate.issued++;
    pending.add(id);
    client.incr(key).then(
      () => {
        pending.delete(id);
        resolved++;
        fate.resolved++;
        if (inFlightIds?.has(id)) inFlight.resolved++;
      },
      (error: unknown) => {
        pending.delete(id);
        rejected++;
        fate.rejected++;
        if (inFlightIds?.has(id)) inFlight.rejected++;
        const name = error instanceof Error
          ? `${error.constructor.name}: ${error.message}`
          : String(error);
        rejections[name] = (rejections[name] ?? 0) + 1;
      },
    );
  }
  let running = true;
  const loop = (async () => {
    while (running) {
      for (let i = 0; i < RESTART_BATCH; i++) issue();
      await sleep(1);
    }
  })();

  await sleep(400);
  const killAt = performance.now();
  await redis.kill("SIGKILL");
  await sleep(300);
  await redis.restart();
  const upAt = performance.now();
  await poll(() => phase === "again", () => {}, 10_000);
  await sleep(400);
  running = false;
  await loop;
  await poll(() => pending.size === 0, () => {}, 5000);
  for (const id of pending) {
    if (inFlightIds !== null && (inFlightIds as Set<number>).has(id)) {
      inFlight.hung++;
    }
  }
  for (const fate of Object.values(fates)) {
    fate.hung = fate.issued - fate.resolved - fate.rejected;
  }
  await poll(
    () => gotAfterAt !== null,
    () => adminClient.publish(channel, "after"),
    5000,
  );
  const counter = Number(await adminClient.get(key) ?? 0);
  client.close();
  sub.close();
  const all: Fate = {
    issued: lastId,
    resolved,
    rejected,
    hung: lastId - resolved - rejected,
  };
  const reconnectedAt = readyAt as number | null;
  const resubscribedAt = gotAfterAt as number | null;
  return {
    client: variant.name,
    lossSeen: lostAt !== null,
    reconnected: reconnectedAt !== null,
    reconnectMs: reconnectedAt === null
      ? null
      : Math.max(0, Math.round(reconnectedAt - upAt)),
    resubscribed: resubscribedAt !== null,
    resubscribeMs: resubscribedAt === null
      ? null
      : Math.round(resubscribedAt - upAt),
    inFlight,
    whileDown: fates.down,
    all,
    counter,
    ranWithoutReply: counter - resolved,
    rejections,
    errorEvents: client.errors,
    downMs: Math.round(upAt - killAt),
  };
}

function newFate(): Fate {
  return { issued: 0, resolved: 0, rejected: 0, hung: 0 };
}

/** Turns the append-only file on and waits until its rewrite is done. */
export async function enableAppendOnly(client: NodeRedisClient): Promise<void> {
  await client.configSet("appendonly", "yes");
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const info = await client.info("persistence");
    if (
      infoField(info, "aof_enabled") === "1" &&
      infoField(info, "aof_rewrite_in_progress") === "0" &&
      infoField(info, "aof_rewrite_scheduled") === "0"
    ) {
      return;
    }
    await sleep(50);
  }
  throw new Error("the append-only file was not rewritten within 30 s");
}

/** A field of an `INFO` reply. */
export function infoField(info: string, name: string): string {
  return info.match(new RegExp(`^${name}:(.*?)\\r?$`, "m"))?.[1] ?? "?";
}

/** Calls `act` every 100 ms until `done()` or `ms` pass. */
async function poll(
  done: () => boolean,
  act: () => unknown,
  ms: number,
): Promise<void> {
  const deadline = performance.now() + ms;
  let lastAct = -Infinity;
  while (!done() && performance.now() < deadline) {
    if (performance.now() - lastAct >= 100) {
      lastAct = performance.now();
      try {
        await act();
      } catch {
        // Not connected yet: try again.
      }
    }
    await sleep(5);
  }
}

/** Waits for `promise`, or `ms` at most. */
async function withTimeout(promise: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
  ]);
  clearTimeout(timer);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
