/**
 * `deno task bench:redis`: node-redis (`@redis/client`, which the cluster
 * mode uses) against ioredis, under Deno, on a `redis-server` of its own
 * (issue 7). It measures, in one run, alternating the clients (`ABCD ABCD
 * ABCD`, the median reported):
 *
 * 1. pipelined `INCR` throughput: batches of 1000 issued in one turn, one
 *    batch in flight;
 * 2. `EVALSHA` of a script shaped like our `GROUP` one (`INCR`, `ZADD`,
 *    `ZREMRANGEBYRANK`, `PUBLISH`, keys from `ARGV`), batches of 200;
 * 3. pub/sub: one publisher and one subscriber client, 100 000 messages of
 *    100 bytes published in batches of 1000, counted (and checked: none lost,
 *    none twice, in order) on receipt;
 * 4. a Redis restart (`SIGKILL`, then start again on the same append-only
 *    file) under a loop of `INCR`s: whether the client reconnects and
 *    resubscribes by itself, and what becomes of the commands in flight
 *    (rejected, or sent again on the new connection) and of those issued
 *    while Redis is down. The counter left in Redis, compared with the
 *    replies received, tells how many `INCR`s ran without their caller
 *    getting a reply (rejected but ran, or ran twice when sent again).
 *
 * ioredis runs as configured by default (`enableOfflineQueue`, every command
 * written at once), with `enableAutoPipelining: true`, and with an explicit
 * `pipeline()` per batch. It prints a Markdown table and writes every sample
 * to `bench/results/redis_clients-<timestamp>.json`. About a minute and a
 * half; `--quick` runs each measure once, briefly (a smoke test).
 *
 * ```sh
 * deno task bench:redis
 * deno task bench:redis --quick
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { createClient } from "@redis/client";
import { Redis } from "ioredis";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import { machineInfo } from "../load/proc.ts";

/** Seconds each throughput sample lasts (after a short warm-up). */
const SAMPLE_SECONDS = 2;
/** Warm-up before each throughput sample, in ms (not counted). */
const WARMUP_MS = 250;
/** Samples of each measure per client. */
const REPS = 3;
/** `INCR`s per batch. */
const INCR_BATCH = 1000;
/** `EVALSHA`s per batch. */
const EVAL_BATCH = 200;
/** Messages per pub/sub sample. */
const PUBSUB_MESSAGES = 100_000;
/** Bytes per pub/sub message. */
const PUBSUB_MESSAGE_BYTES = 100;
/** `PUBLISH`es per batch. */
const PUBSUB_BATCH = 1000;
/** How long a pub/sub sample may wait for its last message, in ms. */
const PUBSUB_TIMEOUT_MS = 20_000;
/** `INCR`s issued per loop turn (every ms or so) in the restart test. */
const RESTART_BATCH = 50;

/** Like our `GROUP` script: keys from `ARGV`, none in `KEYS`. */
const SCRIPT = `
local room, before, after = ARGV[1], ARGV[2], ARGV[3]
local keep = tonumber(ARGV[4])
local hist = 'bench:hist:' .. room
local seq = redis.call('INCR', 'bench:seq:' .. room)
local json = before .. string.format('%d', seq) .. after
redis.call('ZADD', hist, seq, json)
redis.call('ZREMRANGEBYRANK', hist, 0, -(keep + 1))
redis.call('PUBLISH', 'bench:chan:' .. room, json)
return seq
`;
/** `ARGV` of every `EVALSHA`: a 100-character message, 100 kept. */
const SCRIPT_ARGV: readonly string[] = [
  "r1",
  '{"type":"message","room":"r1","sender_username":"alice","seq":',
  ',"text":"hello, world"}',
  "100",
];

/** A node-redis client. */
type NodeRedisClient = ReturnType<typeof createClient>;

/** A client under test, behind the few operations the bench needs. */
interface Client {
  /** Issues `n` `INCR key` in one turn; resolves to how many failed. */
  incrBatch(key: string, n: number): Promise<number>;
  /** Issues one `EVALSHA` per `ARGV` in one turn; resolves to failures. */
  evalshaBatch(sha: string, n: number): Promise<number>;
  /** Publishes `messages` in one turn; resolves to how many failed. */
  publishBatch(channel: string, messages: readonly string[]): Promise<number>;
  /** One `INCR key`, resolving to the new value. */
  incr(key: string): Promise<number>;
  /** Subscribes (the client is then a subscriber only). */
  subscribe(
    channel: string,
    onMessage: (message: string) => void,
  ): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Called when a ready connection is lost (in the client's own event). */
  onLost: (() => void) | null;
  /** Called each time the connection is ready again. */
  onReady: (() => void) | null;
  /** 'error' events so far, and the last one's message. */
  errors: number;
  lastError: string;
  close(): void;
}

/** How to open one kind of client. */
interface Variant {
  /** As the tables name it. */
  name: string;
  open(url: string): Promise<Client>;
}

/** One throughput sample. */
interface RateSample {
  opsPerSecond: number;
  ops: number;
  failed: number;
  seconds: number;
}

/** One pub/sub sample. */
interface PubsubSample {
  messagesPerSecond: number;
  received: number;
  lost: number;
  duplicates: number;
  outOfOrder: number;
  failedPublishes: number;
  seconds: number;
}

/** What became of the commands of one phase of the restart test. */
interface Fate {
  issued: number;
  resolved: number;
  rejected: number;
  /** Neither resolved nor rejected 5 s after the loop stopped. */
  hung: number;
}

/** The restart test of one client. */
interface RestartResult {
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

/** Runs the whole bench; resolves to the exit code. */
export async function main(
  args: readonly string[] = Deno.args,
): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: { quick: { type: "boolean", default: false } },
  });
  const quick = values.quick;
  const seconds = quick ? 0.3 : SAMPLE_SECONDS;
  const reps = quick ? 1 : REPS;
  const messageCount = quick ? 10_000 : PUBSUB_MESSAGES;
  const started = new Date();
  const imports = await readImports();
  const versions = {
    deno: Deno.version,
    nodeRedis: imports["@redis/client"] ?? "?",
    ioredis: imports["ioredis"] ?? "?",
    redisServer: "?",
  };

  const redis = await startLocalRedis({ appendfsync: "everysec" });
  const clients: Client[] = [];
  try {
    const admin = await openNodeRedis(redis.url);
    clients.push(admin);
    const adminClient = nodeRedisOf(admin);
    versions.redisServer = infoField(
      await adminClient.info("server"),
      "redis_version",
    );
    log(
      `Deno ${versions.deno.deno} (V8 ${versions.deno.v8}, TypeScript ` +
        `${versions.deno.typescript}), redis-server ${versions.redisServer}, ` +
        `${versions.nodeRedis}, ${versions.ioredis}`,
    );
    // The throughput runs would write hundreds of MB of append-only file;
    // the restart test turns it on again.
    await adminClient.configSet("appendonly", "no");
    const sha = await adminClient.scriptLoad(SCRIPT);

    const variants: Variant[] = [
      { name: "node-redis", open: (url) => openNodeRedis(url) },
      { name: "ioredis", open: (url) => openIoredis(url, "default") },
      {
        name: "ioredis autopipelining",
        open: (url) => openIoredis(url, "auto"),
      },
      {
        name: "ioredis pipeline()",
        open: (url) => openIoredis(url, "pipeline"),
      },
    ];
    const opened: { variant: Variant; pub: Client; sub: Client }[] = [];
    for (const variant of variants) {
      const pub = await variant.open(redis.url);
      clients.push(pub);
      const sub = await variant.open(redis.url);
      clients.push(sub);
      opened.push({ variant, pub, sub });
    }

    const incr: Record<string, RateSample[]> = {};
    const evalsha: Record<string, RateSample[]> = {};
    const pubsub: Record<string, PubsubSample[]> = {};
    const messages = makeMessages(messageCount);
    for (let rep = 0; rep < reps; rep++) {
      for (const { variant, pub } of opened) {
        const key = `bench:incr:${variant.name}`;
        const sample = await rate(
          () => pub.incrBatch(key, INCR_BATCH),
          INCR_BATCH,
          seconds,
        );
        (incr[variant.name] ??= []).push(sample);
        log(`INCR     ${variant.name}: ${fmtRate(sample.opsPerSecond)}/s`);
      }
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const { variant, pub } of opened) {
        const sample = await rate(
          () => pub.evalshaBatch(sha, EVAL_BATCH),
          EVAL_BATCH,
          seconds,
        );
        (evalsha[variant.name] ??= []).push(sample);
        log(`EVALSHA  ${variant.name}: ${fmtRate(sample.opsPerSecond)}/s`);
      }
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const { variant, pub, sub } of opened) {
        const channel = `bench:pubsub:${variant.name}:${rep}`;
        const sample = await measurePubsub(pub, sub, channel, messages);
        (pubsub[variant.name] ??= []).push(sample);
        log(
          `pub/sub  ${variant.name}: ${fmtRate(sample.messagesPerSecond)}/s` +
            `, lost ${sample.lost}`,
        );
      }
    }
    for (const { pub, sub } of opened) {
      pub.close();
      sub.close();
    }

    await adminClient.flushAll();
    await enableAppendOnly(adminClient);
    const restartSubjects: Variant[] = [
      variants[0]!,
      {
        name: "node-redis disableOfflineQueue (as src/)",
        open: (url) => openNodeRedis(url, { disableOfflineQueue: true }),
      },
      variants[1]!,
      variants[2]!,
    ];
    const restart: RestartResult[] = [];
    for (const subject of restartSubjects) {
      const result = await measureRestart(redis, admin, subject);
      restart.push(result);
      log(
        `restart  ${subject.name}: reconnected ${result.reconnected}, ` +
          `in flight ${result.inFlight.issued} (resolved ` +
          `${result.inFlight.resolved}, rejected ${result.inFlight.rejected})` +
          `, counter - resolved ${result.ranWithoutReply}`,
      );
    }

    const results = {
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      quick,
      versions,
      machine: machineInfo(),
      settings: {
        sampleSeconds: seconds,
        warmupMs: WARMUP_MS,
        reps,
        incrBatch: INCR_BATCH,
        evalBatch: EVAL_BATCH,
        pubsubMessages: messageCount,
        pubsubMessageBytes: PUBSUB_MESSAGE_BYTES,
        pubsubBatch: PUBSUB_BATCH,
        script: SCRIPT,
      },
      incr: summarize(incr, (s) => s.opsPerSecond),
      evalsha: summarize(evalsha, (s) => s.opsPerSecond),
      pubsub: summarize(pubsub, (s) => s.messagesPerSecond),
      restart,
    };
    console.log();
    console.log(
      formatTables(variants.map((v) => v.name), results, versions),
    );
    const dir = new URL("../results/", import.meta.url);
    await Deno.mkdir(dir, { recursive: true });
    const file = new URL(
      `redis_clients-${started.toISOString().replace(/[:.]/g, "-")}.json`,
      dir,
    );
    await Deno.writeTextFile(file, JSON.stringify(results, null, 2) + "\n");
    console.log(`\nresults: ${file.pathname}`);
    return 0;
  } finally {
    for (const client of clients) client.close();
    await redis.stop();
  }
}

/** Opens a node-redis client (an 'error' listener attached) and waits. */
async function openNodeRedis(
  url: string,
  options: { disableOfflineQueue?: boolean } = {},
): Promise<Client> {
  const client: NodeRedisClient = createClient({
    url,
    disableOfflineQueue: options.disableOfflineQueue ?? false,
  });
  let ready = false;
  const handlers = new Map<string, (message: string) => void>();
  const result: Client & { raw: NodeRedisClient } = {
    raw: client,
    async incrBatch(key, n) {
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) replies[i] = client.incr(key);
      return failures(await Promise.allSettled(replies));
    },
    async evalshaBatch(sha, n) {
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) {
        replies[i] = client.sendCommand(["EVALSHA", sha, "0", ...SCRIPT_ARGV]);
      }
      return failures(await Promise.allSettled(replies));
    },
    async publishBatch(channel, messages) {
      const replies = messages.map((m) => client.publish(channel, m));
      return failures(await Promise.allSettled(replies));
    },
    incr: (key) => client.incr(key),
    async subscribe(channel, onMessage) {
      handlers.set(channel, onMessage);
      await client.subscribe(channel, (message) => onMessage(message));
    },
    async unsubscribe(channel) {
      handlers.delete(channel);
      await client.unsubscribe(channel);
    },
    onLost: null,
    onReady: null,
    errors: 0,
    lastError: "",
    close() {
      if (client.isOpen) client.destroy();
    },
  };
  // Without an 'error' listener the client dies silently under Deno.
  client.on("error", (error: unknown) => {
    result.errors++;
    result.lastError = error instanceof Error ? error.message : String(error);
    if (ready) {
      ready = false;
      result.onLost?.();
    }
  });
  client.on("ready", () => {
    ready = true;
    result.onReady?.();
  });
  await client.connect();
  return result;
}

/** The node-redis client behind a {@linkcode Client} of `openNodeRedis`. */
function nodeRedisOf(client: Client): NodeRedisClient {
  return (client as Client & { raw: NodeRedisClient }).raw;
}

/**
 * Opens an ioredis client (an 'error' listener attached) and waits until it
 * is ready: `default` writes each command at once, `auto` sets
 * `enableAutoPipelining`, `pipeline` sends each batch as one `pipeline()`.
 */
async function openIoredis(
  url: string,
  mode: "default" | "auto" | "pipeline",
): Promise<Client> {
  const redis = new Redis(url, { enableAutoPipelining: mode === "auto" });
  let ready = false;
  const handlers = new Map<string, (message: string) => void>();
  const result: Client = {
    async incrBatch(key, n) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (let i = 0; i < n; i++) pipeline.incr(key);
        return pipelineFailures(await pipeline.exec(), n);
      }
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) replies[i] = redis.incr(key);
      return failures(await Promise.allSettled(replies));
    },
    async evalshaBatch(sha, n) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (let i = 0; i < n; i++) pipeline.evalsha(sha, 0, ...SCRIPT_ARGV);
        return pipelineFailures(await pipeline.exec(), n);
      }
      const replies = new Array<Promise<unknown>>(n);
      for (let i = 0; i < n; i++) {
        replies[i] = redis.evalsha(sha, 0, ...SCRIPT_ARGV);
      }
      return failures(await Promise.allSettled(replies));
    },
    async publishBatch(channel, messages) {
      if (mode === "pipeline") {
        const pipeline = redis.pipeline();
        for (const m of messages) pipeline.publish(channel, m);
        return pipelineFailures(await pipeline.exec(), messages.length);
      }
      const replies = messages.map((m) => redis.publish(channel, m));
      return failures(await Promise.allSettled(replies));
    },
    incr: (key) => redis.incr(key),
    async subscribe(channel, onMessage) {
      handlers.set(channel, onMessage);
      await redis.subscribe(channel);
    },
    async unsubscribe(channel) {
      handlers.delete(channel);
      await redis.unsubscribe(channel);
    },
    onLost: null,
    onReady: null,
    errors: 0,
    lastError: "",
    close() {
      redis.disconnect();
    },
  };
  redis.on("error", (error: Error) => {
    result.errors++;
    result.lastError = error.message;
  });
  redis.on("close", () => {
    if (ready) {
      ready = false;
      result.onLost?.();
    }
  });
  redis.on("ready", () => {
    ready = true;
    result.onReady?.();
  });
  redis.on("message", (channel: string, message: string) => {
    handlers.get(channel)?.(message);
  });
  if (redis.status !== "ready") {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("ioredis not ready within 10 s")),
        10_000,
      );
      redis.once("ready", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return result;
}

/** How many of `results` were rejected. */
function failures(results: PromiseSettledResult<unknown>[]): number {
  let failed = 0;
  for (const r of results) if (r.status === "rejected") failed++;
  return failed;
}

/** How many commands of an ioredis `pipeline().exec()` failed. */
function pipelineFailures(
  results: [error: Error | null, result: unknown][] | null,
  n: number,
): number {
  if (results === null) return n;
  let failed = 0;
  for (const [error] of results) if (error) failed++;
  return failed;
}

/**
 * Calls `batch` (`size` commands, resolving to failures) one at a time for
 * {@linkcode WARMUP_MS} uncounted, then for `seconds`.
 */
async function rate(
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
function makeMessages(count: number): string[] {
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
async function measurePubsub(
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
async function measureRestart(
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
async function enableAppendOnly(client: NodeRedisClient): Promise<void> {
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
function infoField(info: string, name: string): string {
  return info.match(new RegExp(`^${name}:(.*?)\\r?$`, "m"))?.[1] ?? "?";
}

/** The import map of `deno.json`. */
async function readImports(): Promise<Record<string, string>> {
  const text = await Deno.readTextFile(
    new URL("../../deno.json", import.meta.url),
  );
  const config = JSON.parse(text) as { imports?: Record<string, string> };
  return config.imports ?? {};
}

/** Median, lowest and highest of each client's samples. */
function summarize<T>(
  samples: Record<string, T[]>,
  value: (sample: T) => number,
): Record<string, { median: number; min: number; max: number; samples: T[] }> {
  const out: Record<
    string,
    { median: number; min: number; max: number; samples: T[] }
  > = {};
  for (const [name, list] of Object.entries(samples)) {
    const values = list.map(value).sort((a, b) => a - b);
    const mid = Math.floor(values.length / 2);
    const median = values.length % 2
      ? values[mid]!
      : (values[mid - 1]! + values[mid]!) / 2;
    out[name] = {
      median,
      min: values[0]!,
      max: values[values.length - 1]!,
      samples: list,
    };
  }
  return out;
}

type Summary = ReturnType<typeof summarize>;

/** The Markdown tables. */
function formatTables(
  names: readonly string[],
  results: {
    incr: Summary;
    evalsha: Summary;
    pubsub: Record<string, { median: number; samples: PubsubSample[] }>;
    restart: RestartResult[];
    settings: { reps: number; sampleSeconds: number; pubsubMessages: number };
  },
  versions: { nodeRedis: string; ioredis: string; redisServer: string },
): string {
  const { reps, sampleSeconds, pubsubMessages } = results.settings;
  const lines = [
    `${versions.nodeRedis} vs ${versions.ioredis}, Deno ${Deno.version.deno}, ` +
    `redis-server ${versions.redisServer}; median (min–max) of ${reps} ` +
    `alternated samples, ${sampleSeconds} s each, ` +
    `${pubsubMessages} messages per pub/sub sample`,
    "",
    "| client | INCR ×1000 ops/s | EVALSHA ×200 ops/s | pub/sub msg/s | pub/sub lost / dup / out of order |",
    "|---|---:|---:|---:|---|",
  ];
  for (const name of names) {
    const pubsub = results.pubsub[name];
    const lost = pubsub?.samples.reduce((n, s) => n + s.lost, 0) ?? 0;
    const dup = pubsub?.samples.reduce((n, s) => n + s.duplicates, 0) ?? 0;
    const order = pubsub?.samples.reduce((n, s) => n + s.outOfOrder, 0) ?? 0;
    lines.push(
      `| ${name} | ${fmtSummary(results.incr[name])} | ` +
        `${fmtSummary(results.evalsha[name])} | ` +
        `${fmtSummary(results.pubsub[name] as Summary[string] | undefined)} ` +
        `| ${lost} / ${dup} / ${order} |`,
    );
  }
  lines.push(
    "",
    "Restart (SIGKILL, 300 ms down, restart on the append-only file) under " +
      "a loop of INCRs:",
    "",
    "| client | reconnects | ready after (ms) | resubscribes | in flight at loss: resolved (re-sent) / rejected / hung | issued while down: resolved / rejected | INCRs resolved | counter in Redis | counter − resolved |",
    "|---|---|---:|---|---|---|---:|---:|---:|",
  );
  for (const r of results.restart) {
    lines.push(
      `| ${r.client} | ${r.reconnected ? "yes" : "no"} | ` +
        `${r.reconnectMs ?? "–"} | ` +
        `${r.resubscribed ? `yes (${r.resubscribeMs} ms)` : "no"} | ` +
        `${r.inFlight.issued}: ${r.inFlight.resolved} / ` +
        `${r.inFlight.rejected} / ${r.inFlight.hung} | ` +
        `${r.whileDown.issued}: ${r.whileDown.resolved} / ` +
        `${r.whileDown.rejected} | ${r.all.resolved} | ${r.counter} | ` +
        `${r.ranWithoutReply} |`,
    );
  }
  lines.push(
    "",
    "counter − resolved: INCRs that ran but whose caller got no reply " +
      "(rejected although they ran, or run twice when sent again).",
  );
  return lines.join("\n");
}

function fmtSummary(
  s: { median: number; min: number; max: number } | undefined,
): string {
  if (!s) return "–";
  return `${fmtRate(s.median)} (${fmtRate(s.min)}–${fmtRate(s.max)})`;
}

function fmtRate(n: number): string {
  return n >= 10_000 ? `${Math.round(n / 1000)}k` : `${Math.round(n)}`;
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

function log(message: string): void {
  console.error(message);
}

if (import.meta.main) Deno.exit(await main());
