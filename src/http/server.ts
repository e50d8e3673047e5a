/**
 * The transport: the `Deno.serve` handler. It routes HTTP, sets the
 * security headers of every answer, refuses an upgrade early (draining,
 * origin, `MAX_CONNECTIONS`, `MAX_CONNECTIONS_PER_IP`, the caps on
 * unauthenticated sockets, a bad or missing `?token=`), upgrades, and hands
 * each socket to the runner. It decides no chat rule.
 *
 * @module
 */
import { RedisBus } from "../redis/bus.ts";
import type { Config } from "../runtime/config.ts";
import type { Logger } from "../runtime/log.ts";
import { Metrics } from "../runtime/metrics.ts";
import {
  type ChatSettings,
  contributions,
  createState,
  OFFLINE_PAGE_BYTES,
} from "../chat/reducer.ts";
import { openRedis, type RedisConnection } from "../redis/connection.ts";
import { RedisStorage } from "../redis/storage.ts";
import { Runner } from "../runtime/runner.ts";
import { openSqliteStorage } from "../storage/sqlite_storage.ts";
import { MemoryStorage, type Storage } from "../chat/storage.ts";
import { handleTokenApi } from "./token_api.ts";
import { WEB_PAGE, WEB_PAGE_CSP } from "../web/page.ts";

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

/** `/healthz` says `near_limit` from this share of a connection limit. */
const NEAR_LIMIT = 0.9;

/** At most one "origin refused" log line per this long (the rest are counted). */
const REFUSAL_LOG_MS = 10_000;

/** Headers of every answer: no framing, no sniffing, no referrer. */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** The CSP of every answer but the page: nothing may load, nothing may frame it. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

function json(
  body: unknown,
  status = 200,
  headers: HeadersInit = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
      ...headers,
    },
  });
}

/** Adds the security headers to an answer (a 101 upgrade is left as it is). */
function secure(response: Response): Response {
  if (response.status === 101) return response;
  const headers = response.headers;
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) {
    headers.set(name, value);
  }
  if (!headers.has("content-security-policy")) {
    headers.set("content-security-policy", API_CSP);
  }
  return response;
}

/** `::ffff:1.2.3.4` is `1.2.3.4`. */
function plainAddress(address: string): string {
  return address.toLowerCase().startsWith("::ffff:") && address.includes(".")
    ? address.slice(7)
    : address;
}

/**
 * The client's address: the peer's, or, when the peer is a trusted proxy,
 * the last address of `X-Forwarded-For` that is not a trusted proxy itself
 * (what the nearest proxy saw; earlier entries are the client's to forge).
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | null,
  trusted: ReadonlySet<string>,
): string {
  const address = plainAddress(peer);
  if (!trusted.has(address) || forwardedFor === null) return address;
  const hops = forwardedFor.split(",").map((hop) => plainAddress(hop.trim()))
    .filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i] as string;
    if (!trusted.has(hop)) return hop;
  }
  return hops[0] ?? address;
}

/**
 * Whether a browser page of `origin` may open the socket: `*` allows all;
 * `self` is the server's own origin, the one whose host is the request's
 * `Host` (under whatever name or address the server was reached); otherwise
 * the exact origins listed. No `Origin` at all (not a browser) is allowed.
 */
export function originAllowed(
  origin: string | null,
  host: string | null,
  allowed: readonly string[],
): boolean {
  if (origin === null || allowed.includes("*")) return true;
  if (allowed.includes(origin)) return true;
  if (!allowed.includes("self") || host === null) return false;
  try {
    return new URL(origin).host === new URL(`http://${host}`).host;
  } catch {
    return false;
  }
}

function refuse(
  status: number,
  reason: string,
  headers: HeadersInit = {},
): Response {
  return json({ error: reason }, status, headers);
}

/** What {@linkcode startServer} may be given besides the config. */
export interface StartOptions {
  /**
   * A storage already open, used instead of the one `DATABASE_PATH` names
   * (without `REDIS_URL`); the server closes it when it stops. Tests use it
   * to reach the server's database, e.g. to give it a page limit.
   */
  storage?: Storage;
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
    authTimeoutMs: config.authTimeoutSeconds * 1000,
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
  metrics.observeStorage(() => chat.storageFault === undefined);
  const started = performance.now();
  const trusted = new Set((config.trustedProxies ?? []).map(plainAddress));
  /** Open sockets per client address. */
  const perAddress = new Map<string, number>();
  /**
   * Per address, the connections not yet seen signed in. One that signs in
   * is dropped at the next count, so each count costs O(what it drops).
   */
  const waiting = new Map<string, Set<number>>();
  /** Sockets upgraded but not open yet (not in the reducer's `unbound`). */
  const opening = new Set<WebSocket>();
  let refusedOrigins = 0;
  let lastRefusalLog = -Infinity;
  let draining = false;

  /** Logs a refused origin, at most once per {@linkcode REFUSAL_LOG_MS}. */
  function logRefusedOrigin(origin: string, address: string): void {
    refusedOrigins++;
    const now = performance.now();
    if (now - lastRefusalLog < REFUSAL_LOG_MS) return;
    lastRefusalLog = now;
    log("warn", "upgrade refused: origin not allowed", {
      origin: origin.slice(0, 200),
      address,
      refused: refusedOrigins,
      allowed: config.allowedOrigins,
    });
    refusedOrigins = 0;
  }

  /** Sockets of `address` with no username yet (opening ones included). */
  function unauthenticatedFrom(address: string): number {
    const ids = waiting.get(address);
    if (!ids) return 0;
    for (const id of ids) {
      const conn = chat.state.connections.get(id);
      if (conn !== undefined && conn.username !== null) ids.delete(id);
    }
    return ids.size;
  }

  /** Sockets with no username yet, in all. */
  function unauthenticated(): number {
    return chat.state.unbound.size + opening.size;
  }

  function track(
    socket: WebSocket,
    address: string,
    id: number,
    signedIn: boolean,
  ): void {
    perAddress.set(address, (perAddress.get(address) ?? 0) + 1);
    if (!signedIn) {
      let ids = waiting.get(address);
      if (!ids) waiting.set(address, ids = new Set());
      ids.add(id);
      opening.add(socket);
    }
    socket.addEventListener("open", () => opening.delete(socket));
    socket.addEventListener("close", () => {
      opening.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
      const pending = waiting.get(address);
      pending?.delete(id);
      if (pending?.size === 0) waiting.delete(address);
    });
  }

  async function upgrade(
    request: Request,
    url: URL,
    address: string,
  ): Promise<Response> {
    if (draining) {
      metrics.refused.inc({ status: "503" });
      return refuse(503, "server shutting down", { "retry-after": "5" });
    }
    const origin = request.headers.get("origin");
    if (
      !originAllowed(origin, request.headers.get("host"), config.allowedOrigins)
    ) {
      metrics.refused.inc({ status: "403" });
      logRefusedOrigin(origin as string, address);
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
    const fromAddress = perAddress.get(address) ?? 0;
    if (
      config.maxConnectionsPerIp > 0 &&
      fromAddress >= config.maxConnectionsPerIp
    ) {
      metrics.refused.inc({ status: "429" });
      return refuse(
        429,
        `too many connections from ${address} (at most ${config.maxConnectionsPerIp})`,
        { "retry-after": "10" },
      );
    }
    const token = url.searchParams.get("token")?.toLowerCase();
    if (config.authEnabled && config.tokenAtUpgrade && !token) {
      metrics.refused.inc({ status: "401" });
      return refuse(401, "a token is required at upgrade: /ws?token=<token>");
    }
    if (!token || !config.authEnabled) {
      // Each of these may make the runtime hold a whole frame of up to
      // 64 MiB before its size is known (denoland/deno#15809): few per
      // address, few in all.
      const perIp = config.maxUnauthenticatedPerIp;
      if (perIp > 0 && unauthenticatedFrom(address) >= perIp) {
        metrics.refused.inc({ status: "429" });
        return refuse(
          429,
          `too many connections from ${address} that have not signed in yet (at most ${perIp})`,
          { "retry-after": String(config.authTimeoutSeconds) },
        );
      }
      const total = config.maxUnauthenticated;
      if (total > 0 && unauthenticated() >= total) {
        metrics.refused.inc({ status: "503" });
        return refuse(
          503,
          `too many connections that have not signed in yet (at most ${total})`,
          { "retry-after": String(config.authTimeoutSeconds) },
        );
      }
    }
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
    const signedIn = Boolean(token && grant);
    track(
      socket,
      address,
      chat.attach(socket, token && grant ? { token, grant } : {}),
      signedIn,
    );
    return response;
  }

  /** What the web page asks after a failed open: may it connect at all? */
  function upgradeCheck(request: Request, url: URL): Response {
    // A same-origin GET carries no Origin: the page names its own.
    const origin = request.headers.get("origin") ??
      url.searchParams.get("origin");
    return json({
      origin,
      origin_allowed: originAllowed(
        origin,
        request.headers.get("host"),
        config.allowedOrigins,
      ),
      token_at_upgrade: config.authEnabled && config.tokenAtUpgrade,
    });
  }

  async function handler(
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> {
    const address = clientAddress(
      info.remoteAddr.hostname,
      request.headers.get("x-forwarded-for"),
      trusted,
    );
    return secure(await route(request, address));
  }

  async function route(request: Request, address: string): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    if (path === "/api/upgrade-check") {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return refuse(405, "method not allowed", { allow: "GET, HEAD" });
      }
      return upgradeCheck(request, url);
    }
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
      return await upgrade(request, url, address);
    }
    switch (path) {
      case "/healthz": {
        const fault = chat.storageFault;
        // Why the server is degraded: it serves, but not everything works.
        const reasons = [
          ...(bus && !bus.up ? ["redis cannot be reached"] : []),
          ...(fault
            ? [
              `storage writes failing since ${
                new Date(fault.since).toISOString()
              }: ${fault.error}`,
            ]
            : []),
        ];
        const open = chat.openSockets;
        const waiting = unauthenticated();
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
          ...(bus
            ? { cluster: { node: nodeId, redis: bus.up ? "up" : "down" } }
            : {}),
          overloaded: chat.overloaded,
          uptime_seconds: Math.round((performance.now() - started) / 1000),
          connections: chat.openSockets,
          rooms: chat.state.rooms.size,
          users: chat.state.users.size,
        }, draining ? 503 : 200);
      }
      case "/metrics":
        return new Response(await metrics.render(), {
          headers: {
            "content-type": metrics.registry.contentType,
            "cache-control": "no-store",
          },
        });
      case "/":
        return new Response(WEB_PAGE, {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "content-security-policy": WEB_PAGE_CSP,
          },
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
