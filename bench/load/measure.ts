/**
 * What `deno task bench` reads while a scenario runs: CPU snapshots of the
 * servers, their redis-server, the generators and the machine (from
 * `/proc`), the wait until all of them are idle, RSS sampling, latency
 * percentiles, and the generators' replies added up. It starts no process
 * and prints nothing.
 *
 * @module
 */
import type { RunReply, WindowReport } from "./control.ts";
import { Histogram } from "./histogram.ts";
import type { Deployment, Generator } from "./processes.ts";
import { cpuSeconds, machineTicks, rssBytes } from "./proc.ts";

/** Waits `ms` milliseconds. */
export const sleep = (ms: number): Promise<unknown> =>
  new Promise((r) => setTimeout(r, ms));
/** Bytes in a mebibyte. */
export const MB = 1024 * 1024;

/** CPU and time at one instant. */
export interface Snapshot {
  at: number;
  /** CPU seconds of each server process (one, or each node of a cluster). */
  nodes: number[];
  /** CPU seconds of every redis-server together, `0` without one. */
  redis: number;
  /** CPU seconds of each redis-server (`Deployment.redisPids`). */
  redisEach: number[];
  generators: number[];
  machine: ReturnType<typeof machineTicks>;
}

/** CPU seconds of every process of the run and the machine's ticks, now. */
export function snapshot(
  deployment: Deployment,
  generators: Generator[],
): Snapshot {
  const redisEach = deployment.redisPids.map((pid) => cpuSeconds(pid) ?? 0);
  return {
    at: performance.now(),
    nodes: deployment.nodes.map((node) => cpuSeconds(node.pid) ?? 0),
    redis: redisEach.reduce((x, y) => x + y, 0),
    redisEach,
    generators: generators.map((g) => cpuSeconds(g.pid) ?? 0),
    machine: machineTicks(),
  };
}

/** CPU use between two snapshots, in percent of one core. */
export function cpuBetween(a: Snapshot, b: Snapshot): {
  serverPct: number;
  nodePct: number[];
  redisPct: number;
  generatorPct: number[];
  machineBusyPct: number;
  irqPct: number;
  otherPct: number;
} {
  const seconds = (b.at - a.at) / 1000;
  const pct = (x: number) => Math.round(x / seconds * 1000) / 10;
  const nodePct = b.nodes.map((n, i) => pct(n - (a.nodes[i] ?? 0)));
  const serverPct = Math.round(nodePct.reduce((x, y) => x + y, 0) * 10) / 10;
  const redisPct = pct(b.redis - a.redis);
  const generatorPct = b.generators.map((g, i) =>
    pct(g - (a.generators[i] ?? 0))
  );
  const ticks = Math.max(1, b.machine.total - a.machine.total);
  const cores = navigator.hardwareConcurrency;
  const machineBusyPct =
    Math.round((b.machine.busy - a.machine.busy) / ticks * 1000) / 10;
  // In percent of one core, as the process figures.
  const irqPct =
    Math.round((b.machine.irq - a.machine.irq) / ticks * cores * 1000) / 10;
  const otherPct = Math.max(
    0,
    Math.round(
      (machineBusyPct * cores - irqPct - serverPct - redisPct -
        generatorPct.reduce((x, y) => x + y, 0)) * 10,
    ) / 10,
  );
  return {
    serverPct,
    nodePct,
    redisPct,
    generatorPct,
    machineBusyPct,
    irqPct,
    otherPct,
  };
}

/**
 * Waits until the server and the generators are idle (under 10% of a core
 * for half a second), so that a backlog left by a failed rate does not
 * spill into the next one. Gives up after `maxMs`; returns the wait.
 */
export async function settle(
  deployment: Deployment,
  generators: Generator[],
  maxMs = 30_000,
): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < maxMs) {
    const a = snapshot(deployment, generators);
    await sleep(500);
    const cpu = cpuBetween(a, snapshot(deployment, generators));
    if (
      cpu.nodePct.every((n) => n < 10) && cpu.redisPct < 10 &&
      cpu.generatorPct.every((g) => g < 10)
    ) break;
  }
  return Math.round(performance.now() - started);
}

/** Samples the RSS of processes every 250 ms: their sum, and each one's. */
export class RssSampler {
  /** Highest sum. */
  max = 0;
  /** Highest of each process, in the order given. */
  maxEach: number[];
  samples: [number, number][] = [];
  #timer: ReturnType<typeof setInterval>;
  #start = performance.now();

  constructor(pids: number[]) {
    this.maxEach = pids.map(() => 0);
    const sample = () => {
      let rss = 0;
      let seen = false;
      pids.forEach((pid, i) => {
        const one = rssBytes(pid);
        if (one === null) return;
        seen = true;
        rss += one;
        this.maxEach[i] = Math.max(this.maxEach[i] ?? 0, one);
      });
      if (!seen) return;
      this.max = Math.max(this.max, rss);
      this.samples.push([
        Math.round(performance.now() - this.#start),
        Math.round(rss / MB * 10) / 10,
      ]);
    };
    sample();
    this.#timer = setInterval(sample, 250);
  }

  /** Stops sampling. */
  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Latency figures in milliseconds. */
export interface Latency {
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
  count: number;
}

/** The percentiles of `h` (microseconds) in milliseconds. */
export function latency(h: Histogram): Latency {
  const ms = (us: number) => Math.round(us / 10) / 100;
  return {
    p50Ms: ms(h.percentile(50)),
    p90Ms: ms(h.percentile(90)),
    p99Ms: ms(h.percentile(99)),
    p999Ms: ms(h.percentile(99.9)),
    maxMs: ms(h.max),
    meanMs: ms(h.mean()),
    count: h.count,
  };
}

/**
 * The replies of every generator to one run, added up: the counts summed,
 * the latency histograms merged, the times the longest of any generator.
 */
export interface Merged extends
  Pick<
    RunReply,
    | "sent"
    | "expected"
    | "received"
    | "expectedAlive"
    | "receivedAlive"
    | "echoes"
    | "errors"
    | "stale"
    | "outOfOrder"
    | "duplicates"
    | "alive"
    | "closes"
    | "receivedByWindow"
    | "maxLagMs"
    | "sendMs"
    | "drainMs"
  > {
  hist: Histogram;
  windows: { sent: number; received: number; hist: Histogram }[];
  generatorCpuSeconds: number[];
}

/** Adds up the replies of every generator. */
export function merge(replies: RunReply[]): Merged {
  const merged: Merged = {
    sent: 0,
    expected: 0,
    received: 0,
    expectedAlive: 0,
    receivedAlive: 0,
    echoes: 0,
    errors: 0,
    stale: 0,
    outOfOrder: 0,
    duplicates: 0,
    alive: 0,
    closes: {},
    hist: new Histogram(),
    windows: [],
    receivedByWindow: [],
    maxLagMs: 0,
    sendMs: 0,
    drainMs: 0,
    generatorCpuSeconds: [],
  };
  for (const r of replies) {
    merged.sent += r.sent;
    merged.expected += r.expected;
    merged.received += r.received;
    merged.expectedAlive += r.expectedAlive;
    merged.receivedAlive += r.receivedAlive;
    merged.echoes += r.echoes;
    merged.errors += r.errors;
    merged.stale += r.stale;
    merged.outOfOrder += r.outOfOrder;
    merged.duplicates += r.duplicates;
    merged.alive += r.alive;
    for (const [code, n] of Object.entries(r.closes)) {
      merged.closes[code] = (merged.closes[code] ?? 0) + n;
    }
    merged.hist.merge(r.hist);
    r.windows.forEach((w: WindowReport, i: number) => {
      merged.windows[i] ??= { sent: 0, received: 0, hist: new Histogram() };
      merged.windows[i]!.sent += w.sent;
      merged.windows[i]!.received += w.received;
      merged.windows[i]!.hist.merge(w.hist);
    });
    r.receivedByWindow.forEach((n, i) => {
      merged.receivedByWindow[i] = (merged.receivedByWindow[i] ?? 0) + n;
    });
    merged.maxLagMs = Math.max(merged.maxLagMs, r.maxLagMs);
    merged.sendMs = Math.max(merged.sendMs, r.sendMs);
    merged.drainMs = Math.max(merged.drainMs, r.drainMs);
    merged.generatorCpuSeconds.push(Math.round(r.cpuSeconds * 100) / 100);
  }
  return merged;
}

/** Deliveries per second between `fromMs` and `toMs` after the start, by receipt time. */
export function deliveryRate(
  receivedByWindow: number[],
  windowMs: number,
  fromMs: number,
  toMs: number,
): number {
  const first = Math.ceil(fromMs / windowMs);
  const last = Math.floor(toMs / windowMs);
  let sum = 0;
  for (let i = first; i < last; i++) sum += receivedByWindow[i] ?? 0;
  const seconds = (last - first) * windowMs / 1000;
  return seconds > 0 ? Math.round(sum / seconds) : 0;
}
