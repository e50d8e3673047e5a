/**
 * The `idle` scenario: how much RSS each open, signed-in, idle connection
 * costs a server (10 000 connections by default, in rooms of 100). It sends
 * no message; the other scenarios measure traffic.
 *
 * @module
 */
import type { BenchResults } from "../report.ts";
import { type LoadContext, type Section, unframed } from "../context.ts";
import { MB, sleep } from "../measure.ts";
import {
  connectAll,
  roomClients,
  type ServerKind,
  type ServerSetup,
  session,
} from "../processes.ts";
import { rssBytes } from "../proc.ts";
import { log } from "../report.ts";

/** Idle memory: RSS per open connection. */
export interface IdleResult {
  server: ServerKind;
  connections: number;
  connectSeconds: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  bytesPerConnection: number;
}

/** Opens the idle connections on a fresh `setup` and reads its RSS before and after. */
export async function idle(
  context: LoadContext,
  setup: ServerSetup,
): Promise<IdleResult> {
  const { options } = context;
  const g = Math.max(options.generators, Math.ceil(options.idleClients / 5000));
  const specs = roomClients(options.idleClients, options.roomSize, g, "i");
  return await session(context, setup, g, async (servers, generators) => {
    const server = servers.nodes[0]!;
    await sleep(1500);
    const before = rssBytes(server.pid) ?? 0;
    const connect = await connectAll(servers, generators, specs, 100);
    await sleep(3000);
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      samples.push(rssBytes(server.pid) ?? 0);
      await sleep(400);
    }
    samples.sort((x, y) => x - y);
    const after = samples[2]!;
    const result: IdleResult = {
      server: setup.kind,
      connections: connect.connected,
      connectSeconds: connect.seconds,
      rssBeforeMb: Math.round(before / MB * 10) / 10,
      rssAfterMb: Math.round(after / MB * 10) / 10,
      bytesPerConnection: Math.round((after - before) / connect.connected),
    };
    log(
      `  ${server.name} idle: ${result.connections} connections, RSS ${result.rssBeforeMb} -> ${result.rssAfterMb} MB, ${result.bytesPerConnection} B/connection`,
    );
    return result;
  });
}

/** The `idle` scenario on every server of the run but `baseline-framed`. */
export async function runIdle(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  for (const kind of unframed(context.options)) {
    await section(`idle memory, ${kind}`, async () => {
      results.idle.push(await idle(context, { kind }));
    });
  }
}
