/**
 * The `overload` scenario: the fan-out load at half the server's ceiling,
 * then twice the ceiling, then half again. It reads whether the server
 * stayed up, its peak RSS, the share of its ceiling it still delivered, the
 * order of what it delivered, and how soon latency came back. It does not
 * find the ceiling (the `fanout` scenario or `--ceiling` gives it).
 *
 * @module
 */
import type { Phase, RunReply } from "../control.ts";
import type { BenchResults } from "../report.ts";
import { type LoadContext, type Section, unframed } from "../context.ts";
import { Histogram } from "../histogram.ts";
import {
  cpuBetween,
  deliveryRate,
  MB,
  merge,
  RssSampler,
  sleep,
  snapshot,
} from "../measure.ts";
import {
  connectAll,
  roomLoad,
  type ServerKind,
  type ServerSetup,
  session,
} from "../processes.ts";
import { log } from "../report.ts";

/** Overload: half the ceiling, twice it, half again. */
export interface OverloadResult {
  server: ServerKind;
  ceiling: number;
  phases: { name: string; rate: number; seconds: number }[];
  serverStayedUp: boolean;
  rssMaxMb: number;
  rssSamples: [number, number][];
  /** Deliveries per second during the overload phase, by receipt time. */
  overloadDeliveriesPerSec: number;
  ceilingDeliveriesPerSec: number;
  /** overloadDeliveriesPerSec / ceilingDeliveriesPerSec. */
  overloadShareOfCeiling: number;
  /** Messages per second the generators managed during overload. */
  overloadSentPerSec: number;
  normalP99Ms: number;
  /** p99 at or under this counts as recovered. */
  recoveredThresholdMs: number;
  /** Seconds after the load dropped until every later window was back under the threshold; `null` if never. */
  recoverySeconds: number | null;
  deliveredToAlivePct: number;
  clientsClosed: Record<string, number>;
  clientsAlive: number;
  errors: number;
  outOfOrder: number;
  duplicates: number;
  serverCpuPct: number;
  generatorCpuPct: number[];
  machineBusyPct: number;
  windows: {
    t: number;
    sent: number;
    received: number;
    p99Ms: number;
    deliveriesPerSec: number;
  }[];
}

/** Runs the three phases on a fresh `setup` whose ceiling is `ceiling` msg/s. */
export async function overload(
  context: LoadContext,
  setup: ServerSetup,
  ceiling: number,
): Promise<OverloadResult> {
  const { options } = context;
  const { generators: g, specs, total, shares } = roomLoad(options, "o");
  const recipients = Math.min(options.roomSize, total);
  const calm = options.quick ? 3 : 5;
  const after = options.quick ? 6 : 10;
  const phases = [
    { name: "half", rate: ceiling / 2, seconds: calm },
    { name: "double", rate: ceiling * 2, seconds: options.overloadSeconds },
    { name: "half again", rate: ceiling / 2, seconds: after },
  ];
  const windowMs = 500;
  return await session(context, setup, g, async (servers, generators) => {
    const server = servers.nodes[0]!;
    await connectAll(servers, generators, specs);
    await sleep(1000);
    const step = context.steps.next();
    const startAt = Date.now() + 300;
    const rss = new RssSampler([server.pid]);
    const replies = Promise.all(generators.map((gen, i) =>
      gen.call<RunReply>({
        cmd: "run",
        mode: "group",
        step,
        startAt,
        phases: phases.map((p): Phase => ({
          rate: p.rate * shares[i]!,
          ms: p.seconds * 1000,
        })),
        warmupMs: 0,
        windowMs,
        drainMs: 30_000,
        quietMs: 3000,
        checkOrder: true,
        contentChars: options.contentChars,
      })
    ));
    await sleep(startAt - Date.now() + calm * 1000);
    const a = snapshot(servers, generators);
    await sleep(options.overloadSeconds * 1000);
    const b = snapshot(servers, generators);
    const merged = merge(await replies);
    rss.stop();
    const stayedUp = server.alive();
    const cpu = cpuBetween(a, b);
    const overStart = calm * 1000;
    const overEnd = overStart + options.overloadSeconds * 1000;
    const overloadDeliveriesPerSec = deliveryRate(
      merged.receivedByWindow,
      windowMs,
      overStart + 1000,
      overEnd,
    );
    let overSent = 0;
    for (let i = overStart / windowMs; i < overEnd / windowMs; i++) {
      overSent += merged.windows[i]?.sent ?? 0;
    }
    const normal = new Histogram();
    for (let i = 1000 / windowMs; i < overStart / windowMs; i++) {
      const w = merged.windows[i];
      if (w) normal.merge(w.hist);
    }
    const normalP99Ms = normal.percentile(99) / 1000;
    const threshold = Math.max(2 * normalP99Ms, normalP99Ms + 5);
    const windows = merged.windows.map((w, i) => ({
      t: i * windowMs / 1000,
      sent: w.sent,
      received: w.received,
      p99Ms: Math.round(w.hist.percentile(99) / 10) / 100,
      deliveriesPerSec: (merged.receivedByWindow[i] ?? 0) * 1000 / windowMs,
    }));
    // Recovered: from this window on (by send time), every window is under
    // the threshold with all its messages delivered to the open clients.
    const dropIndex = overEnd / windowMs;
    const lastIndex = dropIndex + (after * 1000) / windowMs;
    let recoveredAt: number | null = null;
    for (let i = lastIndex - 1; i >= dropIndex; i--) {
      const w = windows[i];
      if (!w || w.p99Ms > threshold || w.received === 0) break;
      recoveredAt = i;
    }
    const closes = Object.values(merged.closes).reduce((s, n) => s + n, 0);
    const result: OverloadResult = {
      server: setup.kind,
      ceiling,
      phases,
      serverStayedUp: stayedUp,
      rssMaxMb: Math.round(rss.max / MB * 10) / 10,
      rssSamples: rss.samples.filter((_, i) => i % 4 === 0),
      overloadDeliveriesPerSec,
      ceilingDeliveriesPerSec: ceiling * recipients,
      overloadShareOfCeiling: Math.round(
        overloadDeliveriesPerSec / (ceiling * recipients) * 1000,
      ) / 1000,
      overloadSentPerSec: Math.round(overSent / options.overloadSeconds),
      normalP99Ms: Math.round(normalP99Ms * 100) / 100,
      recoveredThresholdMs: Math.round(threshold * 100) / 100,
      recoverySeconds: recoveredAt === null
        ? null
        : (recoveredAt - dropIndex) * windowMs / 1000,
      deliveredToAlivePct: merged.expectedAlive > 0
        ? Math.round(merged.receivedAlive / merged.expectedAlive * 10000) / 100
        : 0,
      clientsClosed: merged.closes,
      clientsAlive: merged.alive,
      errors: merged.errors,
      outOfOrder: merged.outOfOrder,
      duplicates: merged.duplicates,
      serverCpuPct: cpu.serverPct,
      generatorCpuPct: cpu.generatorPct,
      machineBusyPct: cpu.machineBusyPct,
      windows,
    };
    log(
      `  ${server.name} overload at ${
        ceiling * 2
      } msg/s: up=${stayedUp} rssMax=${result.rssMaxMb} MB delivered ${overloadDeliveriesPerSec}/s (${
        (result.overloadShareOfCeiling * 100).toFixed(0)
      }% of ceiling), closed ${closes}, out-of-order ${merged.outOfOrder}, normal p99 ${result.normalP99Ms} ms, recovery ${result.recoverySeconds} s`,
    );
    return result;
  });
}

/**
 * The `overload` scenario on every server of the run but `baseline-framed`,
 * each at its own fan-out ceiling (or `--ceiling`).
 */
export async function runOverload(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  for (const kind of unframed(context.options)) {
    await section(`overload, ${kind}`, async () => {
      const own = results.ladders.find((l) =>
        l.server === kind && l.mode === "group"
      )?.ceiling;
      const ceiling = context.options.ceiling ?? own;
      if (!ceiling) {
        throw new Error(
          "no fan-out ceiling: run fanout first or pass --ceiling",
        );
      }
      results.overload.push(await overload(context, { kind }, ceiling));
    });
  }
}
