/**
 * The `hot-room` scenario (issue 15): one room of `--hot-members` users
 * (5,000; `--quick` 1,000), one connection each over the generators, of
 * whom `--hot-senders` (20) send `GroupChat`s at rising rates. On the chat
 * server the members ask for batched delivery (`?batch=1`); the relay
 * baseline cannot batch and sends one frame per delivery. A rate passes when
 * every message reached every member and p99 is at most 250 ms; the highest
 * passing rate is the room's message ceiling. Each step also reads the
 * frames per member per second (what batching saves) and the server's CPU.
 *
 * @module
 */
import type { RunReply } from "../control.ts";
import { type LoadContext, type Section, unframed } from "../context.ts";
import {
  cpuBetween,
  latency,
  MB,
  merge,
  RssSampler,
  settle,
  sleep,
  snapshot,
} from "../measure.ts";
import {
  type Deployment,
  type Generator,
  type ServerKind,
  session,
} from "../processes.ts";
import { log } from "../report.ts";
import { bigRoomSpecs, fillRoom, receivedStats } from "./big_room.ts";

/** One rate in the hot room. */
export interface HotStep {
  /** Messages per second, all senders together. */
  rate: number;
  sent: number;
  /** Deliveries due: every message to every member (its sender included). */
  expected: number;
  received: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Frames each member received per second (a `Batch` is one). */
  framesPerMemberPerSec: number;
  serverCpuPct: number;
  serverRssMaxMb: number;
  closes: number;
  pass: boolean;
}

/** One server's climb in the hot room. */
export interface HotRoomResult {
  server: ServerKind;
  members: number;
  senders: number;
  batch: boolean;
  fillSeconds: number;
  /** The p99 a rate had to keep to pass (`--hot-p99`). */
  p99LimitMs: number;
  steps: HotStep[];
  /** Highest passing rate, messages/s. */
  ceiling: number;
  /** `false` when the highest rate tried passed: the ceiling is a lower bound. */
  ceilingReached: boolean;
}

/** Sends `rate` messages/s from the senders for a warm-up and a step, and reads what arrived. */
async function hotStep(
  context: LoadContext,
  servers: Deployment,
  generators: Generator[],
  sendersEach: number,
  rate: number,
): Promise<HotStep> {
  const { options } = context;
  const step = context.steps.next();
  const warmupMs = options.warmupSeconds * 1000;
  const measureMs = options.stepSeconds * 1000;
  const startAt = Date.now() + 300;
  const framesBefore = await receivedStats(generators);
  const rss = new RssSampler(servers.nodes.map((node) => node.pid));
  const a = snapshot(servers, generators);
  const replies = await Promise.all(generators.map((g) =>
    g.call<RunReply>({
      cmd: "run",
      mode: "group",
      step,
      startAt,
      phases: [{ rate: rate / generators.length, ms: warmupMs + measureMs }],
      warmupMs,
      windowMs: 0,
      drainMs: 10_000,
      quietMs: 1000,
      checkOrder: false,
      contentChars: options.contentChars,
      senders: sendersEach,
      untilQuiet: true,
    })
  ));
  const b = snapshot(servers, generators);
  rss.stop();
  const framesAfter = await receivedStats(generators);
  const merged = merge(replies);
  const lat = latency(merged.hist);
  const expected = merged.sent * merged.alive;
  const closes = Object.values(merged.closes).reduce((s, n) => s + n, 0);
  const seconds = (b.at - a.at) / 1000;
  const result: HotStep = {
    rate: Math.round(rate),
    sent: merged.sent,
    expected,
    received: merged.received,
    p50Ms: lat.p50Ms,
    p99Ms: lat.p99Ms,
    maxMs: lat.maxMs,
    framesPerMemberPerSec: Math.round(
      (framesAfter.frames - framesBefore.frames) /
        Math.max(1, merged.alive) / seconds * 10,
    ) / 10,
    serverCpuPct: cpuBetween(a, b).serverPct,
    serverRssMaxMb: Math.round(rss.max / MB * 10) / 10,
    closes,
    pass: merged.received >= expected && closes === 0 &&
      lat.p99Ms <= options.hotP99Ms,
  };
  log(
    `    ${servers.name} ${result.rate} msg/s: ${result.received}/${result.expected} delivered, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.framesPerMemberPerSec} frames/member/s, server CPU ${result.serverCpuPct}%${
      result.pass ? "" : "  FAIL"
    }`,
  );
  return result;
}

/** Fills the hot room on `kind` and climbs its rates. */
async function hotRoom(
  context: LoadContext,
  kind: "chat" | "baseline",
): Promise<HotRoomResult> {
  const { options } = context;
  const members = options.hotMembers;
  const senders = Math.min(options.hotSenders, members);
  const g = Math.max(1, Math.min(options.generators, senders));
  const sendersEach = Math.ceil(senders / g);
  const batch = kind === "chat";
  return await session(context, { kind }, g, async (servers, generators) => {
    const specs = bigRoomSpecs(members, g, "h", "hot", batch);
    const fill = await fillRoom(servers, generators, specs);
    if (fill.connected < members) {
      throw new Error(
        `${fill.connected}/${members} members in (${fill.firstError})`,
      );
    }
    log(
      `  ${servers.name} hot-room: ${members} members in ${fill.seconds} s; ${
        sendersEach * g
      } senders${batch ? ", ?batch=1" : ""}`,
    );
    await settle(servers, generators);
    await sleep(500);
    const steps: HotStep[] = [];
    let pass: HotStep | null = null;
    let fail: HotStep | null = null;
    const factor = options.quick ? 2 : 1.5;
    // From 2 msg/s: on a 2-core machine with 5,000 sockets in the
    // generators, the relay already fails at 10 msg/s (one frame per delivery).
    for (let rate = 2; rate <= 20_000; rate *= factor) {
      const result = await hotStep(
        context,
        servers,
        generators,
        sendersEach,
        rate,
      );
      steps.push(result);
      await settle(servers, generators);
      if (!result.pass) {
        fail = result;
        break;
      }
      pass = result;
    }
    // Narrow the ceiling between the last pass and the first failure.
    for (let i = 0; !options.quick && pass && fail && i < 2; i++) {
      const mid = Math.sqrt(pass.rate * fail.rate);
      if (fail.rate - pass.rate < pass.rate * 0.1) break;
      const result = await hotStep(
        context,
        servers,
        generators,
        sendersEach,
        mid,
      );
      steps.push(result);
      await settle(servers, generators);
      if (result.pass) pass = result;
      else fail = result;
    }
    return {
      server: kind,
      members,
      senders: sendersEach * g,
      batch,
      fillSeconds: fill.seconds,
      p99LimitMs: options.hotP99Ms,
      steps,
      ceiling: pass?.rate ?? 0,
      ceilingReached: fail !== null,
    };
  });
}

/** The `hot-room` scenario on the chat server and the relay baseline. */
export async function runHotRoom(
  context: LoadContext,
  results: { hotRoom?: HotRoomResult[] },
  section: Section,
): Promise<void> {
  for (const kind of unframed(context.options)) {
    await section(`hot-room, ${kind}`, async () => {
      (results.hotRoom ??= []).push(await hotRoom(context, kind));
    });
  }
}
