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
 * This file runs the measures and makes the tables; the clients are in
 * `redis_adapters.ts`, the measures in `redis_measures.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startLocalRedis } from "../../tools/local_redis.ts";
import { machineInfo } from "../load/proc.ts";
import {
  type Client,
  nodeRedisOf,
  openIoredis,
  openNodeRedis,
  SCRIPT,
  type Variant,
} from "./redis_adapters.ts";
import {
  enableAppendOnly,
  infoField,
  makeMessages,
  measurePubsub,
  measureRestart,
  PUBSUB_BATCH,
  PUBSUB_MESSAGE_BYTES,
  PUBSUB_MESSAGES,
  type PubsubSample,
  rate,
  type RateSample,
  type RestartResult,
  WARMUP_MS,
} from "./redis_measures.ts";

/** Seconds each throughput sample lasts (after a short warm-up). */
const SAMPLE_SECONDS = 2;
/** Samples of each measure per client. */
const REPS = 3;
/** `INCR`s per batch. */
const INCR_BATCH = 1000;
/** `EVALSHA`s per batch. */
const EVAL_BATCH = 200;

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

function log(message: string): void {
  console.error(message);
}

if (import.meta.main) Deno.exit(await main());
