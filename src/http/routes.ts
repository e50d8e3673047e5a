/**
 * The server's routes: `/` (the web page, or an upgrade), `/ws` (an
 * upgrade), `/healthz`, `/metrics`, `/api/upgrade-check`, `/api/tokens`
 * and the admin API (`/api/rooms…`, `/api/users/…`, `/api/bans`);
 * every other path is 404, a method other than the route's 405, and a plain
 * GET of `/ws` 426. Every answer gets the security headers. It decides
 * neither who may upgrade (`upgrade_guard.ts`) nor what the token API
 * answers (`token_api.ts`).
 *
 * @module
 */
import type { Config } from "../runtime/config.ts";
import type { Metrics } from "../runtime/metrics.ts";
import { WEB_PAGE, WEB_PAGE_CSP } from "../web/page.ts";
import { clientAddress, plainAddress } from "./client_address.ts";
import { type HealthSources, healthz } from "./health.ts";
import { originAllowed } from "./origins.ts";
import { json, refuse, secure } from "./respond.ts";
import { handleTokenApi } from "./token_api.ts";
import { type AdminApiOptions, handleAdminApi } from "./admin_api.ts";
import type { TokenService } from "./token_service.ts";
import type { UpgradeGuard } from "./upgrade_guard.ts";

/** What the routes answer with. */
export interface RouteOptions {
  config: Config;
  metrics: Metrics;
  guard: UpgradeGuard;
  tokens: Pick<TokenService, "issue" | "revoke">;
  health: HealthSources;
  /** The admin API's options (`admin_api.ts`). */
  admin: AdminApiOptions;
}

/** The `Deno.serve` handler of the routes. */
export function createHandler(
  options: RouteOptions,
): (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Promise<Response> {
  const { config, metrics, guard, tokens, health, admin } = options;
  const trusted = new Set((config.trustedProxies ?? []).map(plainAddress));

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
        tokens,
      });
    }
    if (
      path === "/api/bans" || path.startsWith("/api/rooms") ||
      path.startsWith("/api/users/")
    ) {
      return await handleAdminApi(request, path, address, admin);
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
      return await guard.upgrade(request, url, address);
    }
    switch (path) {
      case "/healthz":
        return healthz(health);
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

  return async (request, info) => {
    const address = clientAddress(
      info.remoteAddr.hostname,
      request.headers.get("x-forwarded-for"),
      trusted,
    );
    return secure(await route(request, address));
  };
}
