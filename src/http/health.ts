/**
 * `GET /healthz`: whether the server serves, and how well: `ok`, `full`,
 * `degraded` (Redis away, storage writes failing), `draining`; its limits,
 * how near it is to them, and its gauges. It reads state and changes
 * nothing.
 *
 * @module
 */
import type { Config } from "../runtime/config.ts";
import type { Runner } from "../runtime/runner.ts";
import { json } from "./respond.ts";

/** `/healthz` says `near_limit` from this share of a connection limit. */
const NEAR_LIMIT = 0.9;

/** What `/healthz` reports on. */
export interface HealthSources {
  config: Config;
  runner: Runner;
  /** The cluster: this node's id and whether Redis is up. */
  cluster?: { node: string; up(): boolean };
  /** Whether the server is shutting down. */
  draining(): boolean;
  /** Sockets with no username yet. */
  unauthenticated(): number;
  /** `performance.now()` when the server started. */
  started: number;
}

/** The answer of `GET /healthz` (503 while draining). */
export function healthz(sources: HealthSources): Response {
  const { config, runner: chat, cluster } = sources;
  const draining = sources.draining();
  const redisUp = cluster?.up();
  const fault = chat.storageFault;
  // Why the server is degraded: it serves, but not everything works.
  const reasons = [
    ...(redisUp === false ? ["redis cannot be reached"] : []),
    ...(fault
      ? [
        `storage writes failing since ${
          new Date(fault.since).toISOString()
        }: ${fault.error}`,
      ]
      : []),
  ];
  const open = chat.openSockets;
  const waiting = sources.unauthenticated();
  const full = open >= config.maxConnections;
  // Near a limit: new users are (or soon will be) refused.
  const near = open >= config.maxConnections * NEAR_LIMIT ||
    (config.maxUnauthenticated > 0 &&
      waiting >= config.maxUnauthenticated * NEAR_LIMIT);
  return json({
    status: draining
      ? "draining"
      : reasons.length > 0
      ? "degraded"
      : full
      ? "full"
      : "ok",
    ...(reasons.length > 0 ? { reason: reasons.join("; ") } : {}),
    storage: fault
      ? {
        status: "failing",
        since: new Date(fault.since).toISOString(),
        error: fault.error,
        failed_batches: fault.failedBatches,
        failed_writes: fault.failedWrites,
      }
      : { status: "ok" },
    near_limit: near,
    limits: {
      max_connections: config.maxConnections,
      max_connections_per_ip: config.maxConnectionsPerIp,
      max_unauthenticated: config.maxUnauthenticated,
      max_unauthenticated_per_ip: config.maxUnauthenticatedPerIp,
    },
    unauthenticated: waiting,
    ...(cluster
      ? { cluster: { node: cluster.node, redis: redisUp ? "up" : "down" } }
      : {}),
    overloaded: chat.overloaded,
    uptime_seconds: Math.round((performance.now() - sources.started) / 1000),
    connections: chat.openSockets,
    rooms: chat.state.rooms.size,
    users: chat.state.users.size,
  }, draining ? 503 : 200);
}
