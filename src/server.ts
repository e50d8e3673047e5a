/**
 * The transport: the `Deno.serve` handler. It routes HTTP, refuses an
 * upgrade early (draining, origin, `MAX_CONNECTIONS`, a bad `?token=`),
 * upgrades, and hands each socket to the runner. It decides no chat rule.
 *
 * @module
 */
import { RedisBus } from "./cluster_bus.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import {
  type ChatSettings,
  contributions,
  createState,
  OFFLINE_PAGE_BYTES,
} from "./reducer.ts";
import { connectRedis, type RedisConnection } from "./redis_connection.ts";
import { RedisStorage } from "./redis_storage.ts";
import { Runner } from "./runner.ts";
import { openSqliteStorage } from "./sqlite_storage.ts";
import { MemoryStorage, type Storage } from "./storage.ts";
import { handleTokenApi } from "./token_api.ts";
import { WEB_PAGE } from "./web_page.ts";

/** The server's name and version, sent in `Welcome`. */
export const SERVER_NAME = "deno-chat/0.1.0";

/** A running server. */
export interface ChatServer {
  /** The address it listens on, with the real port when `PORT=0`. */
  readonly hostname: string;
  readonly port: number;
  /** The runner, for tests and health. */
  readonly runner: Runner;
  /** The cluster bus when `REDIS_URL` is set. */
  readonly bus: RedisBus | undefined;
  /** Drains and stops; resolves when every socket is closed or the grace passed. */
  shutdown(): Promise<void>;
}

/** Opens the storage that `DATABASE_PATH` names. */
export function openStorage(config: Config): Storage {
  return config.databasePath === ":memory:"
    ? new MemoryStorage(config.historySize)
    : openSqliteStorage(config.databasePath, config.historySize);
}

function json(
  body: unknown,
  status = 200,
  headers: HeadersInit = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function refuse(
  status: number,
  reason: string,
  headers: HeadersInit = {},
): Response {
  return json({ error: reason }, status, headers);
}

/** Starts serving `config`; logs the real address once it listens. */
export async function startServer(
  config: Config,
  log: Logger,
): Promise<ChatServer> {
  const nodeId = crypto.randomUUID();
  let redis: RedisConnection | undefined;
  let storage: Storage;
  if (config.redisUrl === undefined) storage = openStorage(config);
  else {
    // A cluster keeps history and tokens in Redis, not in DATABASE_PATH.
    redis = connectRedis(config.redisUrl, { name: "commands", log });
    storage = new RedisStorage(redis, {
      nodeId,
      historySize: config.historySize,
      authEnabled: config.authEnabled,
    });
  }
  const settings: ChatSettings = {
    serverName: SERVER_NAME,
    authEnabled: config.authEnabled,
    defaultRoom: config.defaultRoom,
    maxMessageBytes: config.maxMessageBytes,
    maxContentChars: config.maxContentChars,
    maxRoomsPerConnection: config.maxRoomsPerConnection,
    rateLimitPerSecond: config.rateLimitPerSecond,
    rateLimitBurst: config.rateLimitBurst,
    maxConsecutiveErrors: config.maxConsecutiveErrors,
    maxOfflineMessages: config.maxOfflineMessages,
    // A page drains long before the slow-consumer check could see it.
    offlinePageBytes: Math.max(
      1,
      Math.min(OFFLINE_PAGE_BYTES, Math.floor(config.maxBufferedBytes / 4)),
    ),
    cluster: redis !== undefined,
  };
  const state = createState(settings, await storage.roomSeqs());
  const metrics = new Metrics();
  const bus = redis && new RedisBus(redis, {
    message: (message) => chat.hear(message),
    synced: () => chat.synced(),
    snapshot: () => contributions(chat.state),
  }, { nodeId, log });
  const chat: Runner = new Runner(state, {
    storage,
    metrics,
    log,
    maxBufferedBytes: config.maxBufferedBytes,
    // A cluster room missing a seq is read back within a tick or two.
    ...(bus ? { bus, tickMs: 100 } : {}),
  });
  await bus?.start();
  metrics.observe({
    connections: () => chat.openSockets,
    rooms: () => chat.state.rooms.size,
    users: () => chat.state.users.size,
  });
  if (bus) metrics.observeCluster(() => bus.up);
  const started = performance.now();
  const anyOrigin = config.allowedOrigins.includes("*");
  const origins = new Set(config.allowedOrigins);
  let draining = false;

  async function upgrade(request: Request, url: URL): Promise<Response> {
    if (draining) {
      metrics.refused.inc({ status: "503" });
      return refuse(503, "server shutting down", { "retry-after": "5" });
    }
    const origin = request.headers.get("origin");
    if (origin !== null && !anyOrigin && !origins.has(origin)) {
      metrics.refused.inc({ status: "403" });
      return refuse(403, `origin ${origin} is not allowed`);
    }
    if (chat.overloaded) {
      metrics.refused.inc({ status: "503" });
      return refuse(503, "server overloaded", { "retry-after": "1" });
    }
    if (chat.openSockets >= config.maxConnections) {
      metrics.refused.inc({ status: "503" });
      return refuse(503, "too many connections", { "retry-after": "1" });
    }
    const token = url.searchParams.get("token")?.toLowerCase();
    let grant;
    if (config.authEnabled && token) {
      try {
        grant = await chat.checkToken(token);
      } catch {
        metrics.refused.inc({ status: "503" });
        return refuse(503, "the token cannot be checked now", {
          "retry-after": "1",
        });
      }
      if (!grant) {
        metrics.refused.inc({ status: "401" });
        return refuse(401, "token unknown, revoked or expired");
      }
    }
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: config.idleTimeoutSeconds,
    });
    chat.attach(socket, token && grant ? { token, grant } : {});
    return response;
  }

  async function handler(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    if (path.startsWith("/api/tokens")) {
      return await handleTokenApi(request, path, {
        adminToken: config.adminToken,
        ttlSeconds: config.tokenTtlSeconds,
        tokens: chat,
      });
    }
    if (
      path !== "/" && path !== "/ws" && path !== "/healthz" &&
      path !== "/metrics"
    ) {
      return refuse(404, "not found");
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return refuse(405, "method not allowed", { allow: "GET, HEAD" });
    }
    if (
      (path === "/" || path === "/ws") &&
      request.headers.get("upgrade")?.toLowerCase() === "websocket"
    ) {
      return await upgrade(request, url);
    }
    switch (path) {
      case "/healthz":
        return json({
          status: draining ? "draining" : bus && !bus.up ? "degraded" : "ok",
          ...(bus
            ? { cluster: { node: nodeId, redis: bus.up ? "up" : "down" } }
            : {}),
          overloaded: chat.overloaded,
          uptime_seconds: Math.round((performance.now() - started) / 1000),
          connections: chat.openSockets,
          rooms: chat.state.rooms.size,
          users: chat.state.users.size,
        }, draining ? 503 : 200);
      case "/metrics":
        return new Response(await metrics.render(), {
          headers: { "content-type": metrics.registry.contentType },
        });
      case "/":
        return new Response(WEB_PAGE, {
          headers: { "content-type": "text/html; charset=utf-8" },
        });
      default:
        return refuse(426, "this endpoint takes a WebSocket upgrade", {
          upgrade: "websocket",
        });
    }
  }

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve({
    hostname: config.host,
    port: config.port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, handler);
  const addr = await listening.promise;
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
    bus,
    shutdown() {
      stopping ??= (async () => {
        draining = true;
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
