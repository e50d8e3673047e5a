/**
 * The server's wiring: {@linkcode startServer} opens the storage (or a
 * cluster's Redis), builds the reducer's state, the runner, the cluster bus,
 * the metrics, the token service, the upgrade guard and the routes, listens
 * with `Deno.serve`, and stops all of it in order. It answers no request
 * itself (`routes.ts`, `upgrade_guard.ts`, `health.ts`, `token_api.ts`) and
 * decides no chat rule.
 *
 * @module
 */
import { RedisBus } from "../redis/bus.ts";
import type { Config } from "../runtime/config.ts";
import type { Logger } from "../runtime/log.ts";
import { Metrics } from "../runtime/metrics.ts";
import { contributions, createState } from "../chat/reducer.ts";
import type { RedisConnection } from "../redis/connection.ts";
import { openRedis } from "../redis/open_redis.ts";
import { RedisStorage } from "../redis/storage.ts";
import { Runner } from "../runtime/runner.ts";
import type { Storage } from "../chat/storage.ts";
import { openStorage } from "../storage/open_storage.ts";
import { chatSettings } from "./chat_settings.ts";
import { createHandler } from "./routes.ts";
import { TokenService } from "./token_service.ts";
import { UpgradeGuard } from "./upgrade_guard.ts";

/** A running server. */
export interface ChatServer {
  /** The address it listens on, with the real port when `PORT=0`. */
  readonly hostname: string;
  readonly port: number;
  /** The runner, for tests and health. */
  readonly runner: Runner;
  /** Issues, checks and revokes tokens, as the token API does. */
  readonly tokens: TokenService;
  /** The cluster bus when `REDIS_URL` is set. */
  readonly bus: RedisBus | undefined;
  /** Drains and stops; resolves when every socket is closed or the grace passed. */
  shutdown(): Promise<void>;
}

/** What {@linkcode startServer} may be given besides the config. */
export interface StartOptions {
  /**
   * A storage already open, used instead of the one `DATABASE_PATH` names
   * (without `REDIS_URL`); the server closes it when it stops. Tests use it
   * to reach the server's database, e.g. to give it a page limit.
   */
  storage?: Storage;
  /**
   * Event-loop lag that counts toward an overload (the runner's default
   * when absent). Tests raise it: many servers share a loaded machine.
   */
  overloadLagMs?: number;
}

/** Starts serving `config`; logs the real address once it listens. */
export async function startServer(
  config: Config,
  log: Logger,
  options: StartOptions = {},
): Promise<ChatServer> {
  const nodeId = crypto.randomUUID();
  let redis: RedisConnection | undefined;
  let storage: Storage;
  if (config.redisUrl === undefined) {
    storage = options.storage ?? openStorage(config);
  } else {
    // A cluster keeps history and tokens in Redis, not in DATABASE_PATH.
    redis = openRedis(config.redisUrl, { name: "commands", log });
    storage = new RedisStorage(redis, {
      nodeId,
      historySize: config.historySize,
      authEnabled: config.authEnabled,
      waitReplicas: config.redisWaitReplicas,
    });
  }
  // Rooms' seqs are read when each room opens (`load_seq`), not all now.
  const state = createState(chatSettings(config, redis !== undefined));
  const metrics = new Metrics();
  const bus = redis && new RedisBus(redis, {
    message: (message) => chat.hear(message),
    synced: () => chat.synced(),
    snapshot: () => contributions(chat.state),
  }, { nodeId, log, presenceFullLimit: config.presenceFullLimit });
  const chat: Runner = new Runner(state, {
    storage,
    metrics,
    log,
    maxBufferedBytes: config.maxBufferedBytes,
    batchWindowMs: config.batchWindowMs,
    ...(options.overloadLagMs === undefined
      ? {}
      : { overloadLagMs: options.overloadLagMs }),
    // A cluster room missing a seq is read back within a tick or two.
    ...(bus ? { bus, tickMs: 100 } : {}),
  });
  await bus?.start();
  // Bans live in storage (Redis in a cluster): read once the bus is up,
  // then every BAN_RELOAD_MS.
  await chat.reloadBans();
  metrics.observe({
    connections: () => chat.openSockets,
    rooms: () => chat.state.rooms.size,
    users: () => chat.state.users.size,
  });
  if (bus) metrics.observeCluster(() => bus.up);
  metrics.observeStorage(() => chat.storageFault === undefined);
  const tokens = new TokenService({
    storage,
    revoked: (token) => chat.tokenRevoked(token),
  });
  const guard = new UpgradeGuard({
    config,
    runner: chat,
    tokens,
    metrics,
    log,
  });
  const handler = createHandler({
    config,
    metrics,
    guard,
    tokens,
    admin: {
      adminToken: config.adminToken,
      runner: chat,
      storage,
      log,
      maxContentChars: config.maxContentChars,
      ...(bus ? { node: nodeId } : {}),
    },
    health: {
      config,
      runner: chat,
      ...(bus ? { cluster: { node: nodeId, up: () => bus.up } } : {}),
      draining: () => guard.draining,
      unauthenticated: () => guard.unauthenticated(),
      started: performance.now(),
    },
  });

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, handler);
  const addr = await listening.promise;
  if (config.allowedOrigins.includes("*")) {
    log(
      "warn",
      "ALLOWED_ORIGINS=* lets any web site's pages open sockets here with their visitors' browsers",
      {},
    );
  }
  if (config.authEnabled && config.adminToken === undefined) {
    log(
      "warn",
      "AUTH_ENABLED=true without ADMIN_TOKEN: /api/tokens is off (404); tokens can only be issued with deno task token",
      {},
    );
  }
  log("info", "listening", {
    url: `http://${addr.hostname}:${addr.port}/`,
    websocket: `ws://${addr.hostname}:${addr.port}/ws`,
    storage: redis ? "redis" : config.databasePath,
    ...(bus ? { node: nodeId } : {}),
  });

  let stopping: Promise<void> | undefined;
  return {
    hostname: addr.hostname,
    port: addr.port,
    runner: chat,
    tokens,
    bus,
    shutdown() {
      stopping ??= (async () => {
        guard.drain();
        log("info", "draining", { connections: chat.openSockets });
        await chat.shutdown(config.shutdownGraceSeconds * 1000);
        // Other nodes see this node's users leave now, not at its expiry.
        await bus?.stop();
        await http.shutdown();
        await storage.close();
        await redis?.close();
        log("info", "stopped");
      })();
      return stopping;
    },
  };
}
