/**
 * The rate ladder that the `fanout`, `dm`, `sqlite` and `cluster` scenarios
 * climb: one rate measured ({@linkcode measureRate}), a rising ladder on one
 * server and its ceiling ({@linkcode ladder}), and the ladders of several
 * servers climbed in turn ({@linkcode pairedLadders}). It decides what
 * passes (every message delivered in order, p99 within the limit) and
 * prints each step; the tables are `report.ts`'s.
 *
 * Why this file is long: one measured step ({@linkcode StepResult}, read
 * field by field from the generators' replies and the CPU snapshots) is a
 * third of it, and both ways to climb share the `Climber` and its pass
 * rule; kept together, what decides a ceiling is in one file.
 *
 * @module
 */
import type { RunReply } from "../control.ts";
import type { BenchOptions, LoadContext } from "../context.ts";
import {
  cpuBetween,
  deliveryRate,
  type Latency,
  latency,
  MB,
  merge,
  RssSampler,
  settle,
  sleep,
  snapshot,
} from "../measure.ts";
import {
  connectAll,
  type Deployment,
  type Generator,
  nodeUrls,
  onRedis,
  roomClients,
  roomLoad,
  type ServerKind,
  type ServerSetup,
  session,
} from "../processes.ts";
import { log, printStep } from "../report.ts";

/** One measured rate. */
export interface StepResult {
  /** When the step started (ISO 8601): paired ladders interleave. */
  startedAt?: string;
  /** Messages per second, all generators together. */
  rate: number;
  /** Deliveries per second asked for: rate times recipients. */
  offeredDeliveriesPerSec: number;
  sent: number;
  /** Messages per second actually sent. */
  sentPerSec: number;
  expected: number;
  received: number;
  deliveredPct: number;
  /** Deliveries per second, by receipt time, over the measured seconds. */
  deliveriesPerSec: number;
  latency: Latency;
  /** All server processes together (every node of a cluster). */
  serverCpuPct: number;
  serverRssMaxMb: number;
  /** A cluster's nodes, each (`chat-redis` only). */
  nodeCpuPct?: number[];
  nodeRssMaxMb?: number[];
  /** The redis-servers the nodes share, together (`chat-redis*` only). */
  redisCpuPct?: number;
  redisRssMaxMb?: number;
  /**
   * CPU microseconds each shard's master spent per message sent, in slot
   * order (one figure on a standalone Redis), less its idle CPU (measured
   * for a second before the step). `/proc` counts CPU in 10 ms ticks: a
   * figure is only as fine as 10 ms over the step's messages.
   */
  redisShardCpuUsPerMsg?: number[];
  generatorCpuPct: number[];
  machineBusyPct: number;
  /** Interrupt time (loopback networking), in percent of one core. */
  irqCpuPct: number;
  /** CPU used by other processes of the machine, in percent of one core. */
  otherCpuPct: number;
  /** Longest the send schedule ran behind, in milliseconds. */
  generatorLagMs: number;
  errors: number;
  closes: Record<string, number>;
  outOfOrder: number;
  duplicates: number;
  /** Frames of an earlier rate that arrived during this one. */
  stale: number;
  /** Milliseconds the server took to go idle after this rate. */
  settleMs: number;
  /** Per half second, by send time: messages sent, deliveries, p99 ms. */
  series: [number, number, number][];
  pass: boolean;
  /** Why it did not pass; also whether the generators kept up. */
  notes: string[];
}

/**
 * Sends `rate` messages per second (all generators together, each its
 * share) for a warm-up and the measured seconds, and reads what arrived.
 */
async function measureRate(
  context: LoadContext,
  deployment: Deployment,
  generators: Generator[],
  shares: number[],
  mode: "group" | "private",
  rate: number,
  recipients: number,
): Promise<StepResult> {
  const { options } = context;
  const step = context.steps.next();
  const warmupMs = options.warmupSeconds * 1000;
  const measureMs = options.stepSeconds * 1000;
  const windowMs = 500;
  // Redis's own idle CPU (cron, the cluster bus, replication), to take out
  // of its CPU per message: at low rates it would be most of it.
  const idleA = deployment.shards > 0 ? snapshot(deployment, generators) : null;
  if (idleA) await sleep(1000);
  const idleB = idleA && snapshot(deployment, generators);
  const startAt = Date.now() + 300;
  const rss = new RssSampler(deployment.nodes.map((node) => node.pid));
  const redisRss = deployment.redisPids.length === 0
    ? null
    : new RssSampler(deployment.redisPids);
  const replies = Promise.all(generators.map((g, i) =>
    g.call<RunReply>({
      cmd: "run",
      mode,
      step,
      startAt,
      phases: [{ rate: rate * shares[i]!, ms: warmupMs + measureMs }],
      warmupMs,
      windowMs,
      drainMs: 5000,
      quietMs: 1500,
      checkOrder: true,
      contentChars: options.contentChars,
    })
  ));
  await sleep(startAt - Date.now() + warmupMs);
  const a = snapshot(deployment, generators);
  await sleep(measureMs);
  const b = snapshot(deployment, generators);
  const merged = merge(await replies);
  rss.stop();
  redisRss?.stop();
  const cpu = cpuBetween(a, b);
  const lat = latency(merged.hist);
  const deliveredPct = merged.expected > 0
    ? Math.round(merged.received / merged.expected * 10000) / 100
    : 0;
  const notes: string[] = [];
  if (merged.received < merged.expected) {
    notes.push(`${merged.expected - merged.received} not delivered`);
  }
  if (lat.p99Ms > options.p99LimitMs) {
    notes.push(`p99 over ${options.p99LimitMs} ms`);
  }
  const closed = Object.values(merged.closes).reduce((s, n) => s + n, 0);
  if (closed > 0) notes.push(`${closed} clients closed`);
  if (merged.errors > 0) notes.push(`${merged.errors} Error frames`);
  if (merged.outOfOrder + merged.duplicates > 0) {
    notes.push(`${merged.outOfOrder} out of order, ${merged.duplicates} dup`);
  }
  const sentPerSec = Math.round(merged.sent / (merged.sendMs / 1000));
  const behind = sentPerSec < rate * 0.97 || merged.maxLagMs > 100;
  if (behind) notes.push("generators fell behind the schedule");
  if (cpu.generatorPct.some((p) => p >= 90)) {
    notes.push("a generator >= 90% CPU");
  }
  return {
    startedAt: new Date(startAt).toISOString(),
    rate: Math.round(rate),
    offeredDeliveriesPerSec: Math.round(rate * recipients),
    sent: merged.sent,
    sentPerSec,
    expected: merged.expected,
    received: merged.received,
    deliveredPct,
    deliveriesPerSec: deliveryRate(
      merged.receivedByWindow,
      windowMs,
      warmupMs,
      warmupMs + measureMs,
    ),
    latency: lat,
    serverCpuPct: cpu.serverPct,
    serverRssMaxMb: Math.round(rss.max / MB * 10) / 10,
    ...(redisRss
      ? {
        nodeCpuPct: cpu.nodePct,
        nodeRssMaxMb: rss.maxEach.map((b) => Math.round(b / MB * 10) / 10),
        redisCpuPct: cpu.redisPct,
        redisRssMaxMb: Math.round(redisRss.max / MB * 10) / 10,
        redisShardCpuUsPerMsg: a.redisEach.slice(0, deployment.shards).map((
          before,
          i,
        ) => {
          const idle = idleA && idleB
            ? (idleB.redisEach[i]! - idleA.redisEach[i]!) /
              ((idleB.at - idleA.at) / 1000)
            : 0;
          const busy = b.redisEach[i]! - before - idle * (b.at - a.at) / 1000;
          return Math.round(
            Math.max(0, busy) * 1e6 /
              Math.max(1, sentPerSec * options.stepSeconds) * 10,
          ) / 10;
        }),
      }
      : {}),
    generatorCpuPct: cpu.generatorPct,
    machineBusyPct: cpu.machineBusyPct,
    irqCpuPct: cpu.irqPct,
    otherCpuPct: cpu.otherPct,
    generatorLagMs: merged.maxLagMs,
    errors: merged.errors,
    closes: merged.closes,
    outOfOrder: merged.outOfOrder,
    duplicates: merged.duplicates,
    stale: merged.stale,
    settleMs: 0,
    series: merged.windows.map((w) => [
      w.sent,
      w.received,
      Math.round(w.hist.percentile(99) / 100) / 10,
    ]),
    pass: merged.received >= merged.expected && closed === 0 &&
      lat.p99Ms <= options.p99LimitMs && merged.errors === 0 &&
      merged.outOfOrder + merged.duplicates === 0,
    notes,
  };
}

/** A rising ladder of rates on one server, and its ceiling. */
export interface LadderResult {
  server: ServerKind;
  /** `chat-redis`: nodes sharing the redis-server, clients spread over them. */
  nodes?: number;
  mode: "group" | "private";
  clients: number;
  recipientsPerMessage: number;
  connectSeconds: number;
  steps: StepResult[];
  /** Highest rate (messages/s) with every message delivered and p99 within the limit. */
  ceiling: number;
  ceilingDeliveriesPerSec: number;
  /** `false` when even the highest rate tried passed: the ceiling is a lower bound. */
  ceilingReached: boolean;
  /** The step at the ceiling. */
  atCeiling: StepResult | null;
}

/**
 * One server's side of a ladder: its session, its steps so far, and its last
 * passing and first failing rate. {@linkcode ladder} drives one alone;
 * {@linkcode pairedLadders} drives several in turn.
 */
class Climber {
  readonly steps: StepResult[] = [];
  pass: StepResult | null = null;
  fail: StepResult | null = null;
  #context: LoadContext;
  #setup: ServerSetup;
  #mode: "group" | "private";
  #servers: Deployment;
  #generators: Generator[];
  #shares: number[];
  #recipients: number;
  #connect: { connected: number; seconds: number };

  constructor(
    context: LoadContext,
    setup: ServerSetup,
    mode: "group" | "private",
    servers: Deployment,
    generators: Generator[],
    shares: number[],
    recipients: number,
    connect: { connected: number; seconds: number },
  ) {
    this.#context = context;
    this.#setup = setup;
    this.#mode = mode;
    this.#servers = servers;
    this.#generators = generators;
    this.#shares = shares;
    this.#recipients = recipients;
    this.#connect = connect;
  }

  /** Measures one rate and waits until everything is idle again. */
  async tryRate(rate: number): Promise<StepResult> {
    const result = await measureRate(
      this.#context,
      this.#servers,
      this.#generators,
      this.#shares,
      this.#mode,
      rate,
      this.#recipients,
    );
    this.steps.push(result);
    printStep(this.#servers.name, this.#mode, result);
    for (const node of this.#servers.nodes) {
      if (!node.alive()) throw new Error(`${node.name} died`);
    }
    result.settleMs = await settle(this.#servers, this.#generators);
    return result;
  }

  /**
   * A failure is measured once more before it counts (not in --quick): on a
   * shared 2-core machine one slow second can fail a rate. When other
   * processes took CPU during a failure (over 15% of a core), it is measured
   * up to twice more. Records the outcome as this server's pass or fail.
   */
  async tryTwice(rate: number): Promise<StepResult> {
    let result = await this.tryRate(rate);
    for (
      let again = 0;
      !result.pass && !this.#context.options.quick && again < 3;
      again++
    ) {
      if (again > 0 && result.otherCpuPct <= 15) break;
      log(
        `      (again: confirming the failure${
          result.otherCpuPct > 15 ? ", other processes were busy" : ""
        })`,
      );
      result = await this.tryRate(rate);
    }
    this.record(result);
    return result;
  }

  /** Keeps the highest pass and the lowest failure. */
  record(result: StepResult): void {
    if (result.pass && result.rate > (this.pass?.rate ?? 0)) {
      this.pass = result;
    }
    if (!result.pass && (!this.fail || result.rate < this.fail.rate)) {
      this.fail = result;
    }
  }

  /** The next rate that would narrow the ceiling, or `null` when done. */
  nextBisection(): number | null {
    if (!this.pass || !this.fail) return null;
    if (this.fail.rate - this.pass.rate < this.pass.rate * 0.05) return null;
    return Math.sqrt(this.pass.rate * this.fail.rate);
  }

  /** The ladder so far, with its ceiling. */
  result(): LadderResult {
    const setup = this.#setup;
    return {
      server: setup.kind,
      ...(onRedis(setup.kind) ? { nodes: setup.nodes ?? 1 } : {}),
      mode: this.#mode,
      clients: this.#connect.connected,
      recipientsPerMessage: this.#recipients,
      connectSeconds: this.#connect.seconds,
      steps: this.steps,
      ceiling: this.pass?.rate ?? 0,
      ceilingDeliveriesPerSec: this.pass
        ? this.pass.rate * this.#recipients
        : 0,
      ceilingReached: this.fail !== null,
      atCeiling: this.pass,
    };
  }
}

/** How a ladder's rates go: start, growth, limit and bisections. */
function ladderPlan(
  options: BenchOptions,
  mode: "group" | "private",
): {
  start: number;
  factor: number;
  bisections: number;
  max: number;
  scale: number;
} {
  const scale = options.clients / 1000;
  return {
    // Start low, grow by `factor` until a rate fails, then bisect between
    // the last pass and the first failure.
    start: (mode === "group" ? 100 : 1000) * scale,
    factor: options.quick ? 2 : 1.5,
    bisections: options.quick ? 1 : 3,
    max: (mode === "group" ? 50_000 : 200_000) * scale,
    scale,
  };
}

/**
 * Opens a session on `setup`, connects the fan-out or direct-message
 * clients, and hands `fn` a {@linkcode Climber} for it.
 */
async function withClimber<T>(
  context: LoadContext,
  setup: ServerSetup,
  mode: "group" | "private",
  fn: (climber: Climber) => Promise<T>,
): Promise<T> {
  const { options } = context;
  const { generators: g, total, shares } = roomLoad(options, "u");
  const recipients = mode === "group" ? Math.min(options.roomSize, total) : 1;
  return await session(context, setup, g, async (servers, generators) => {
    const specs = roomClients(
      options.clients,
      options.roomSize,
      g,
      "u",
      nodeUrls(servers),
    );
    const connect = await connectAll(servers, generators, specs);
    log(
      `  ${servers.name} ${mode}: ${connect.connected} clients in ${connect.seconds} s`,
    );
    await sleep(1000);
    return await fn(
      new Climber(
        context,
        setup,
        mode,
        servers,
        generators,
        shares,
        recipients,
        connect,
      ),
    );
  });
}

/** A rising ladder of rates on one server, and its ceiling. */
export async function ladder(
  context: LoadContext,
  setup: ServerSetup,
  mode: "group" | "private",
): Promise<LadderResult> {
  const { options } = context;
  const plan = ladderPlan(options, mode);
  return await withClimber(context, setup, mode, async (climber) => {
    if (options.rates) {
      // Fixed rates (for profiling): each once, no ladder.
      for (const r of options.rates) {
        climber.record(await climber.tryRate(r * plan.scale));
      }
      return climber.result();
    }
    for (let rate = plan.start; rate <= plan.max; rate *= plan.factor) {
      if (!(await climber.tryTwice(rate)).pass) break;
    }
    // The first rate failed: go down until one passes.
    for (let i = 0; !climber.pass && climber.fail && i < 3; i++) {
      await climber.tryTwice(climber.fail.rate / plan.factor);
    }
    for (let i = 0; i < plan.bisections; i++) {
      const mid = climber.nextBisection();
      if (mid === null) break;
      await climber.tryTwice(mid);
    }
    return climber.result();
  });
}

/**
 * The ladders of several servers, climbed in turn: each rate is measured on
 * every server still climbing before the next rate, and each bisection round
 * takes one step per server. Every server keeps its own clients, connected
 * for the whole run and idle while another server is measured, so that the
 * servers are measured minutes apart at most, and a machine whose speed
 * drifts (a shared VM's does, by up to 1.6× within minutes) moves them
 * alike.
 */
export async function pairedLadders(
  context: LoadContext,
  setups: ServerSetup[],
  mode: "group" | "private",
): Promise<LadderResult[]> {
  const { options } = context;
  const plan = ladderPlan(options, mode);
  const climbers: Climber[] = [];
  const climb = async (): Promise<LadderResult[]> => {
    if (options.rates) {
      for (const r of options.rates) {
        for (const climber of climbers) {
          climber.record(await climber.tryRate(r * plan.scale));
        }
      }
      return climbers.map((c) => c.result());
    }
    for (let rate = plan.start; rate <= plan.max; rate *= plan.factor) {
      const climbing = climbers.filter((c) => c.fail === null);
      if (climbing.length === 0) break;
      for (const climber of climbing) await climber.tryTwice(rate);
    }
    for (let i = 0; i < 3; i++) {
      const down = climbers.filter((c) => !c.pass && c.fail);
      if (down.length === 0) break;
      for (const c of down) await c.tryTwice(c.fail!.rate / plan.factor);
    }
    for (let i = 0; i < plan.bisections; i++) {
      let stepped = false;
      for (const climber of climbers) {
        const mid = climber.nextBisection();
        if (mid === null) continue;
        await climber.tryTwice(mid);
        stepped = true;
      }
      if (!stepped) break;
    }
    return climbers.map((c) => c.result());
  };
  const open = async (index: number): Promise<LadderResult[]> => {
    const setup = setups[index];
    if (!setup) return await climb();
    return await withClimber(context, setup, mode, async (climber) => {
      climbers.push(climber);
      return await open(index + 1);
    });
  };
  return await open(0);
}
