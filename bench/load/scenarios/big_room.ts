/**
 * What the `hot-room` and `room-fill` scenarios share: one room of many
 * distinct users, one connection each, dealt over the generators (and so
 * over their loopback source addresses), opened in bursts with the typed
 * client's retry and backoff ({@linkcode fillRoom}), and the frames and
 * bytes the clients received ({@linkcode receivedStats}). It measures no
 * latency and decides no pass (the scenarios do).
 *
 * @module
 */
import type {
  ClientSpec,
  ConnectReply,
  RetryPlan,
  StatsReply,
} from "../control.ts";
import { sleep } from "../measure.ts";
import {
  type Deployment,
  type Generator,
  nodeUrls,
  sourceAddresses,
} from "../processes.ts";

/** Users joining at once, in all generators together (the bursts). */
export const FILL_BURST = 500;

/** A refused upgrade is tried again as the typed client does: ½ to 1× of 100 ms, doubling, up to 3 s. */
export const FILL_RETRY: RetryPlan = { attempts: 30, baseMs: 100, maxMs: 3000 };

/**
 * `members` users `prefix0`… in one `room`, dealt in turn over `generators`
 * lists; the first `senders` users (over all generators) come first in
 * their lists, so that a generator's first clients are its senders. With
 * `urls` (cluster nodes), user `i` connects to `urls[i % urls.length]`, so
 * that every node holds an equal share of every generator's users.
 */
export function bigRoomSpecs(
  members: number,
  generators: number,
  prefix: string,
  room: string,
  batch: boolean,
  urls: string[] = [],
): ClientSpec[][] {
  const specs: ClientSpec[][] = Array.from({ length: generators }, () => []);
  for (let i = 0; i < members; i++) {
    const spec: ClientSpec = { name: `${prefix}${i}`, room };
    if (batch) spec.batch = true;
    if (urls.length > 1) {
      spec.url = urls[Math.floor(i / generators) % urls.length]!;
    }
    specs[i % generators]!.push(spec);
  }
  return specs;
}

/** How a fill went. */
export interface FillOutcome {
  connected: number;
  failed: number;
  /** Attempts refused (or failed) and tried again. */
  refused: number;
  /** Until the last generator had every one of its users in (its `Presence`). */
  seconds: number;
  firstError?: string;
}

/**
 * Opens every generator's users in bursts of {@linkcode FILL_BURST} (shared
 * among the generators), each failed attempt tried again with backoff.
 */
export async function fillRoom(
  deployment: Deployment,
  generators: Generator[],
  specs: ClientSpec[][],
): Promise<FillOutcome> {
  const started = performance.now();
  const burst = Math.max(1, Math.ceil(FILL_BURST / generators.length));
  const replies = await Promise.all(
    generators.map((g, i) =>
      g.call<ConnectReply>({
        cmd: "connect",
        url: nodeUrls(deployment)[0]!,
        clients: specs[i] ?? [],
        localAddresses: sourceAddresses(i),
        concurrency: burst,
        burst,
        retry: FILL_RETRY,
        timeoutMs: 60_000,
      })
    ),
  );
  const firstError = replies.find((r) => r.firstError)?.firstError;
  return {
    connected: replies.reduce((s, r) => s + r.connected, 0),
    failed: replies.reduce((s, r) => s + r.failed, 0),
    refused: replies.reduce((s, r) => s + (r.refused ?? 0), 0),
    seconds: Math.round((performance.now() - started) / 100) / 10,
    ...(firstError ? { firstError } : {}),
  };
}

/** Frames and bytes every client of every generator received so far. */
export async function receivedStats(
  generators: Generator[],
): Promise<{ frames: number; bytes: number; alive: number }> {
  const replies = await Promise.all(
    generators.map((g) => g.call<StatsReply>({ cmd: "stats" })),
  );
  return {
    frames: replies.reduce((s, r) => s + r.frames, 0),
    bytes: replies.reduce((s, r) => s + r.bytes, 0),
    alive: replies.reduce((s, r) => s + r.alive, 0),
  };
}

/**
 * Waits until the clients receive nothing more for a second (the joins'
 * `Enter`s have all arrived), at most `maxMs`; returns the last reading.
 */
export async function quietStats(
  generators: Generator[],
  maxMs = 120_000,
): Promise<{ frames: number; bytes: number; alive: number }> {
  const deadline = performance.now() + maxMs;
  let last = await receivedStats(generators);
  while (performance.now() < deadline) {
    await sleep(1000);
    const now = await receivedStats(generators);
    if (now.frames === last.frames) return now;
    last = now;
  }
  return last;
}
