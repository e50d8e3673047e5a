/**
 * The `room-fill` scenario (issue 15): `--fill-users` distinct users (10,000;
 * `--quick` 2,000) join one room, one connection each, spread over the
 * generators' loopback source addresses, in bursts of 500 with the typed
 * client's retry on a refused upgrade; then one `GroupChat` to all of them.
 * It reads the time until every user has its `Presence`, the frames and
 * bytes per user (until the room is quiet), refused attempts, server CPU and
 * RSS during the fill, and the broadcast's delivery, on the chat server
 * (clients asking for `?batch=1`, as the typed client does) and on the
 * relay baseline in the same run. Then (unless `--fill-cluster-users 0`)
 * the same fill of `--fill-cluster-users` users (30,000; `--quick` 3,000)
 * into one room across `--fill-nodes` chat nodes (3) sharing a local
 * redis-server, each user dealt to one node: the chat server only, as the
 * relay has no cluster.
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
  sleep,
  snapshot,
} from "../measure.ts";
import {
  nodeUrls,
  type ServerKind,
  type ServerSetup,
  session,
  setupName,
  sourceAddresses,
} from "../processes.ts";
import { log } from "../report.ts";
import {
  bigRoomSpecs,
  FILL_BURST,
  fillRoom,
  quietStats,
  receivedStats,
} from "./big_room.ts";

/** What one server did with the fill. */
export interface RoomFillResult {
  server: ServerKind;
  /** Chat nodes sharing one redis-server (1: a single process). */
  nodes?: number;
  users: number;
  /** The clients asked for batched delivery. */
  batch: boolean;
  generators: number;
  sourceAddresses: number;
  burst: number;
  /** Until every user had its `Presence`. */
  fillSeconds: number;
  connected: number;
  failed: number;
  /** Attempts refused (503 while shedding load, mostly) and tried again. */
  refused: number;
  firstError?: string;
  /** Frames and bytes the users received from the start until the room was quiet, per user. */
  framesPerUser: number;
  bytesPerUser: number;
  /** Server CPU from the first join until the room was quiet: percent of one core, and seconds. */
  serverCpuPct: number;
  serverCpuSeconds: number;
  serverRssMaxMb: number;
  /** One `GroupChat` to the full room. */
  broadcast: {
    alive: number;
    received: number;
    p50Ms: number;
    p99Ms: number;
    maxMs: number;
  };
  /** Every user in, and every one got the broadcast. */
  allIn: boolean;
}

/** Fills one room of `setup` with `users` and broadcasts to it once. */
async function roomFill(
  context: LoadContext,
  setup: ServerSetup,
  users: number,
): Promise<RoomFillResult> {
  const { options } = context;
  const { kind } = setup;
  const g = Math.max(options.generators, Math.ceil(users / 5000));
  const batch = kind !== "baseline";
  return await session(context, setup, g, async (servers, generators) => {
    const specs = bigRoomSpecs(
      users,
      g,
      "f",
      "fill",
      batch,
      nodeUrls(servers),
    );
    const before = snapshot(servers, generators);
    const rss = new RssSampler(servers.nodes.map((node) => node.pid));
    const fill = await fillRoom(servers, generators, specs);
    log(
      `  ${servers.name} room-fill: ${fill.connected}/${users} in ${fill.seconds} s, ${fill.refused} refused attempts tried again${
        fill.failed > 0 ? `, ${fill.failed} failed (${fill.firstError})` : ""
      }`,
    );
    const stats = await quietStats(generators);
    const after = snapshot(servers, generators);
    rss.stop();
    const cpu = cpuBetween(before, after);
    log(
      `    ${Math.round(stats.frames / users)} frames, ${
        Math.round(stats.bytes / users)
      } bytes per user; server CPU ${cpu.serverPct}% of a core, RSS max ${
        Math.round(rss.max / MB)
      } MB`,
    );
    await sleep(1000);
    const step = context.steps.next();
    const startAt = Date.now() + 300;
    const replies = await Promise.all(
      generators.map((gen, i) =>
        gen.call<RunReply>({
          cmd: "broadcast",
          step,
          sender: i === 0 ? 0 : -1,
          startAt,
          timeoutMs: 30_000,
          contentChars: options.contentChars,
        })
      ),
    );
    const merged = merge(replies);
    const lat = latency(merged.hist);
    log(
      `    broadcast: ${merged.receivedAlive}/${merged.expectedAlive} received, p50 ${lat.p50Ms} ms, p99 ${lat.p99Ms} ms, last ${lat.maxMs} ms`,
    );
    const alive = (await receivedStats(generators)).alive;
    return {
      server: kind,
      nodes: servers.nodes.length,
      users,
      batch,
      generators: g,
      sourceAddresses: g * sourceAddresses(0).length,
      burst: FILL_BURST,
      fillSeconds: fill.seconds,
      connected: fill.connected,
      failed: fill.failed,
      refused: fill.refused,
      ...(fill.firstError ? { firstError: fill.firstError } : {}),
      framesPerUser: Math.round(stats.frames / users * 10) / 10,
      bytesPerUser: Math.round(stats.bytes / users),
      serverCpuPct: cpu.serverPct,
      serverCpuSeconds: Math.round(
        (after.nodes.reduce((s, n) => s + n, 0) -
          before.nodes.reduce((s, n) => s + n, 0)) * 10,
      ) / 10,
      serverRssMaxMb: Math.round(rss.max / MB * 10) / 10,
      broadcast: {
        alive: merged.expectedAlive,
        received: merged.receivedAlive,
        p50Ms: lat.p50Ms,
        p99Ms: lat.p99Ms,
        maxMs: lat.maxMs,
      },
      allIn: fill.connected === users && alive === users &&
        merged.receivedAlive === users,
    };
  });
}

/** The `room-fill` scenario on the chat server and the relay baseline. */
export async function runRoomFill(
  context: LoadContext,
  results: { roomFill?: RoomFillResult[] },
  section: Section,
): Promise<void> {
  const { options } = context;
  for (const kind of unframed(options)) {
    await section(`room-fill, ${kind}`, async () => {
      (results.roomFill ??= []).push(
        await roomFill(context, { kind }, options.fillUsers),
      );
    });
  }
  if (options.fillClusterUsers <= 0 || !options.servers.includes("chat")) {
    return;
  }
  const setup: ServerSetup = { kind: "chat-redis", nodes: options.fillNodes };
  await section(
    `room-fill, ${options.fillClusterUsers} users on ${setupName(setup)}`,
    async () => {
      (results.roomFill ??= []).push(
        await roomFill(context, setup, options.fillClusterUsers),
      );
    },
  );
}
