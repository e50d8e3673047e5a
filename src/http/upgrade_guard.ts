/**
 * {@linkcode UpgradeGuard}: decides whether a WebSocket upgrade may go
 * ahead, and hands the socket to the runner when it may. It refuses early,
 * before any frame is read: while draining, a foreign origin
 * (`ALLOWED_ORIGINS`, logged at most once per {@linkcode REFUSAL_LOG_MS}),
 * overload, `MAX_CONNECTIONS`, `MAX_CONNECTIONS_PER_IP`, the caps on sockets
 * not signed in yet (`MAX_UNAUTHENTICATED_PER_IP`, `MAX_UNAUTHENTICATED`),
 * a missing or bad `?token=`, and a `?batch=` that is not `1`/`true`/`0`/
 * `false` (400). It counts open sockets per client
 * address itself; it decides no chat rule.
 *
 * @module
 */
import type { Config } from "../runtime/config.ts";
import type { Logger } from "../runtime/log.ts";
import type { Metrics } from "../runtime/metrics.ts";
import type { Runner } from "../runtime/runner.ts";
import { originAllowed } from "./origins.ts";
import { refuse } from "./respond.ts";
import type { TokenService } from "./token_service.ts";

/** At most one "origin refused" log line per this long (the rest are counted). */
export const REFUSAL_LOG_MS = 10_000;

/** What an {@linkcode UpgradeGuard} works with. */
export interface UpgradeGuardOptions {
  config: Config;
  runner: Runner;
  tokens: Pick<TokenService, "check" | "bannedUntil">;
  metrics: Metrics;
  log: Logger;
}

/**
 * Whether the upgrade asks for batched delivery (`?batch=1`); `null` for a
 * value that is neither yes nor no.
 */
export function batchRequested(url: URL): boolean | null {
  const value = url.searchParams.get("batch");
  if (value === null || value === "0" || value === "false") return false;
  if (value === "1" || value === "true" || value === "") return true;
  return null;
}

/** The gate of `/ws`: refuses or upgrades, and counts sockets per address. */
export class UpgradeGuard {
  #config: Config;
  #runner: Runner;
  #tokens: Pick<TokenService, "check" | "bannedUntil">;
  #metrics: Metrics;
  #log: Logger;
  /** Open sockets per client address. */
  #perAddress = new Map<string, number>();
  /**
   * Per address, the connections not yet seen signed in. One that signs in
   * is dropped at the next count, so each count costs O(what it drops).
   */
  #waiting = new Map<string, Set<number>>();
  /** Sockets upgraded but not open yet (not in the reducer's `unbound`). */
  #opening = new Set<WebSocket>();
  #refusedOrigins = 0;
  #lastRefusalLog = -Infinity;
  #draining = false;

  /** A guard that lets sockets in until {@linkcode UpgradeGuard.drain}. */
  constructor(options: UpgradeGuardOptions) {
    this.#config = options.config;
    this.#runner = options.runner;
    this.#tokens = options.tokens;
    this.#metrics = options.metrics;
    this.#log = options.log;
  }

  /** Whether the server is shutting down (every upgrade is refused). */
  get draining(): boolean {
    return this.#draining;
  }

  /** Refuses every upgrade from now on. */
  drain(): void {
    this.#draining = true;
  }

  /** Sockets with no username yet, in all (opening ones included). */
  unauthenticated(): number {
    return this.#runner.state.unbound.size + this.#opening.size;
  }

  /** Upgrades `request` from `address`, or answers why not. */
  async upgrade(
    request: Request,
    url: URL,
    address: string,
  ): Promise<Response> {
    const config = this.#config;
    const chat = this.#runner;
    const metrics = this.#metrics;
    if (this.#draining) {
      metrics.refused.inc({ status: "503" });
      return refuse(503, "server shutting down", { "retry-after": "5" });
    }
    const origin = request.headers.get("origin");
    if (
      !originAllowed(origin, request.headers.get("host"), config.allowedOrigins)
    ) {
      metrics.refused.inc({ status: "403" });
      this.#logRefusedOrigin(origin as string, address);
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
    const fromAddress = this.#perAddress.get(address) ?? 0;
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
    const batch = batchRequested(url);
    if (batch === null) {
      metrics.refused.inc({ status: "400" });
      return refuse(400, "batch takes 1, true, 0 or false: /ws?batch=1");
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
      if (perIp > 0 && this.#unauthenticatedFrom(address) >= perIp) {
        metrics.refused.inc({ status: "429" });
        return refuse(
          429,
          `too many connections from ${address} that have not signed in yet (at most ${perIp})`,
          { "retry-after": String(config.authTimeoutSeconds) },
        );
      }
      const total = config.maxUnauthenticated;
      if (total > 0 && this.unauthenticated() >= total) {
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
        grant = await this.#tokens.check(token);
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
      const until = await this.#tokens.bannedUntil(grant.username).catch(
        () => null,
      );
      if (until !== null) {
        metrics.refused.inc({ status: "403" });
        return refuse(
          403,
          `banned: '${grant.username}' is banned until ${
            new Date(until).toISOString()
          }`,
        );
      }
    }
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: config.idleTimeoutSeconds,
    });
    const signedIn = Boolean(token && grant);
    this.#track(
      socket,
      address,
      chat.attach(socket, {
        ...(token && grant ? { token, grant } : {}),
        ...(batch ? { batch: true } : {}),
      }),
      signedIn,
    );
    return response;
  }

  /** Logs a refused origin, at most once per {@linkcode REFUSAL_LOG_MS}. */
  #logRefusedOrigin(origin: string, address: string): void {
    this.#refusedOrigins++;
    const now = performance.now();
    if (now - this.#lastRefusalLog < REFUSAL_LOG_MS) return;
    this.#lastRefusalLog = now;
    this.#log("warn", "upgrade refused: origin not allowed", {
      origin: origin.slice(0, 200),
      address,
      refused: this.#refusedOrigins,
      allowed: this.#config.allowedOrigins,
    });
    this.#refusedOrigins = 0;
  }

  /** Sockets of `address` with no username yet (opening ones included). */
  #unauthenticatedFrom(address: string): number {
    const ids = this.#waiting.get(address);
    if (!ids) return 0;
    for (const id of ids) {
      const conn = this.#runner.state.connections.get(id);
      if (conn !== undefined && conn.username !== null) ids.delete(id);
    }
    return ids.size;
  }

  /** Counts a new socket of `address` until it closes. */
  #track(
    socket: WebSocket,
    address: string,
    id: number,
    signedIn: boolean,
  ): void {
    const perAddress = this.#perAddress;
    const waiting = this.#waiting;
    const opening = this.#opening;
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
}
