/**
 * The settings table: every setting of the server with its environment
 * variable, flag, default, help text and zod schema for its text value, as in
 * `docs/configuration.md`.
 *
 * It does not read flags, the environment or `.env`, nor build the
 * `Config` type: that is `config.ts`.
 *
 * @module
 */
import { z } from "zod";
import { NAME_PATTERN } from "../wire/names.ts";

const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** A log level, lowest first. */
export type LogLevel = typeof LOG_LEVELS[number];

const boolean = z.union([
  z.enum(["true", "1"]).transform(() => true),
  z.enum(["false", "0"]).transform(() => false),
], { error: "takes true, false, 1 or 0" });

/**
 * A whole number from `min` to `max`; with no `max`, the largest a number
 * holds exactly (`Number.MAX_SAFE_INTEGER`), so the message always states
 * the real bounds.
 */
function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  const takes = `takes a whole number from ${min} to ${max}`;
  return z.string().regex(/^\d+$/, takes).transform(Number).pipe(
    z.number().min(min, takes).max(max, takes),
  );
}

const nonEmpty = z.string().min(1, "takes a non-empty value");
const roomName = z.string().regex(
  NAME_PATTERN,
  "takes 1 to 32 letters, digits, '_', '-' or '.'",
);
const redisUrl = z.string().regex(
  /^rediss?:\/\/\S+$/,
  "takes a redis:// or rediss:// URL",
);

/** One row of the settings table. */
export interface SettingSpec {
  /** Environment variable and `.env` key. */
  readonly env: string;
  /** Command-line flag, without the leading dashes. */
  readonly flag: string;
  /** For booleans: the flag that sets `false`. */
  readonly negation?: string;
  /** The default, as text; absent when the setting has none. */
  readonly fallback?: string;
  /** What the setting does, for `--help`. */
  readonly help: string;
  /** Validates and converts the text value. */
  readonly schema: z.ZodType;
  /** A secret is never logged. */
  readonly secret?: boolean;
  /**
   * Environment or `.env` only: the flag exists only to be refused with a
   * message saying where the value goes (a flag shows in `ps`).
   */
  readonly envOnly?: boolean;
}

/** Every setting of the server, as in `docs/configuration.md`. */
export const SETTINGS = {
  host: {
    env: "HOST",
    flag: "host",
    fallback: "127.0.0.1",
    help: "address to listen on",
    schema: z.string().regex(
      /^[\w.:%-]+$/,
      "takes a host name or IP address",
    ),
  },
  port: {
    env: "PORT",
    flag: "port",
    fallback: "8080",
    help: "port to listen on; 0 picks a free one",
    schema: integer(0, 65535),
  },
  maxConnections: {
    env: "MAX_CONNECTIONS",
    flag: "max-connections",
    fallback: "10000",
    help: "open WebSockets; the next upgrade gets HTTP 503",
    schema: integer(1),
  },
  authEnabled: {
    env: "AUTH_ENABLED",
    flag: "auth",
    negation: "no-auth",
    fallback: "false",
    help: "require a valid token on every message",
    schema: boolean,
  },
  tokenAtUpgrade: {
    env: "TOKEN_AT_UPGRADE",
    flag: "token-at-upgrade",
    negation: "no-token-at-upgrade",
    fallback: "false",
    help:
      "auth on: an upgrade without a valid ?token= gets 401, so no unauthenticated socket ever opens",
    schema: boolean,
  },
  adminToken: {
    env: "ADMIN_TOKEN",
    flag: "admin-token",
    help:
      "bearer secret for /api/tokens and the admin API (/api/rooms, /api/users, /api/bans); without it both answer 404 (environment or .env only)",
    schema: nonEmpty,
    secret: true,
    envOnly: true,
  },
  tokenTtlSeconds: {
    env: "TOKEN_TTL_SECONDS",
    flag: "token-ttl",
    fallback: "86400",
    help: "lifetime of an issued token when the request names none",
    schema: integer(1),
  },
  defaultRoom: {
    env: "DEFAULT_ROOM",
    flag: "default-room",
    fallback: "general",
    help: "room for Enter without room",
    schema: roomName,
  },
  maxMessageBytes: {
    env: "MAX_MESSAGE_BYTES",
    flag: "max-message-bytes",
    fallback: "65536",
    help: "largest frame; a larger one closes with 1009",
    schema: integer(64),
  },
  maxContentChars: {
    env: "MAX_CONTENT_CHARS",
    flag: "max-content-chars",
    fallback: "4000",
    help: "longest content",
    schema: integer(1),
  },
  maxRoomsPerConnection: {
    env: "MAX_ROOMS_PER_CONNECTION",
    flag: "max-rooms",
    fallback: "50",
    help: "rooms one connection may be in",
    schema: integer(1),
  },
  presenceFullLimit: {
    env: "PRESENCE_FULL_LIMIT",
    flag: "presence-full-limit",
    fallback: "200",
    help:
      "members a room may have with full presence (Enter/Leave per user); above it, coalesced presence",
    schema: integer(1),
  },
  rateLimitPerSecond: {
    env: "RATE_LIMIT_PER_SECOND",
    flag: "rate-limit",
    fallback: "20",
    help: "sustained messages per second per connection; 0 is no limit",
    schema: integer(0),
  },
  rateLimitBurst: {
    env: "RATE_LIMIT_BURST",
    flag: "rate-burst",
    fallback: "40",
    help: "messages a connection may send at once before the rate applies",
    schema: integer(1),
  },
  maxConsecutiveErrors: {
    env: "MAX_CONSECUTIVE_ERRORS",
    flag: "max-errors",
    fallback: "10",
    help: "errors in a row before a close with 1008",
    schema: integer(1),
  },
  maxBufferedBytes: {
    env: "MAX_BUFFERED_BYTES",
    flag: "max-buffered-bytes",
    fallback: "1048576",
    help: "unsent bytes to one connection before it is closed as slow",
    schema: integer(1),
  },
  batchWindowMs: {
    env: "BATCH_WINDOW_MS",
    flag: "batch-window-ms",
    fallback: "20",
    help:
      "how long a busy room's messages are gathered for ?batch=1 clients (0: per event-loop turn only)",
    schema: integer(0, 50),
  },
  idleTimeoutSeconds: {
    env: "IDLE_TIMEOUT_SECONDS",
    flag: "idle-timeout",
    fallback: "60",
    help: "a connection that answers no ping for this long is closed",
    schema: integer(1),
  },
  allowedOrigins: {
    env: "ALLOWED_ORIGINS",
    flag: "allowed-origins",
    fallback: "self",
    help:
      "comma-separated Origin values allowed to upgrade, 'self' (the server's own origin) or *; others get 403",
    schema: nonEmpty.transform((value) =>
      value.split(",").map((origin) => origin.trim()).filter(Boolean)
    ).pipe(z.array(z.string()).min(1, "takes at least one origin, or *")),
  },
  authTimeoutSeconds: {
    env: "AUTH_TIMEOUT_SECONDS",
    flag: "auth-timeout",
    fallback: "10",
    help:
      "a connection not authenticated (auth on) or without Enter (auth off) this long is closed with 1008",
    schema: integer(1, 3600),
  },
  maxConnectionsPerIp: {
    env: "MAX_CONNECTIONS_PER_IP",
    flag: "max-connections-per-ip",
    fallback: "256",
    help:
      "open WebSockets from one client address; the next upgrade gets 429; 0 is no limit",
    schema: integer(0),
  },
  maxUnauthenticatedPerIp: {
    env: "MAX_UNAUTHENTICATED_PER_IP",
    flag: "max-unauthenticated-per-ip",
    fallback: "4",
    help:
      "sockets from one address that have not signed in yet; the next upgrade gets 429; 0 is no limit",
    schema: integer(0),
  },
  maxUnauthenticated: {
    env: "MAX_UNAUTHENTICATED",
    flag: "max-unauthenticated",
    fallback: "64",
    help:
      "sockets in all that have not signed in yet; the next upgrade gets 503; 0 is no limit",
    schema: integer(0),
  },
  trustedProxies: {
    env: "TRUSTED_PROXIES",
    flag: "trusted-proxies",
    help:
      "comma-separated proxy addresses whose X-Forwarded-For names the client address",
    schema: z.string().transform((value) =>
      value.split(",").map((address) => address.trim()).filter(Boolean)
    ).pipe(z.array(
      z.string().regex(/^[0-9a-fA-F.:]+$/, "takes IP addresses"),
    )),
  },
  historySize: {
    env: "HISTORY_SIZE",
    flag: "history-size",
    fallback: "1000",
    help: "messages kept per room",
    schema: integer(0),
  },
  maxOfflineMessages: {
    env: "MAX_OFFLINE_MESSAGES",
    flag: "max-offline-messages",
    fallback: "10000",
    help:
      "PrivateChats kept for one offline user (auth on); the next gets inbox_full",
    schema: integer(1),
  },
  databasePath: {
    env: "DATABASE_PATH",
    flag: "database",
    fallback: "data/chat.db",
    help:
      "SQLite file for history, tokens and offline messages; :memory: keeps nothing",
    schema: nonEmpty,
  },
  redisUrl: {
    env: "REDIS_URL",
    flag: "redis",
    help: "run as one node of a cluster that shares state through Redis",
    schema: redisUrl,
    secret: true,
  },
  redisWaitReplicas: {
    env: "REDIS_WAIT_REPLICAS",
    flag: "redis-wait-replicas",
    fallback: "0",
    help:
      "acknowledge a chat message only once this many Redis replicas have it (WAIT); 0: at once",
    schema: integer(0),
  },
  shutdownGraceSeconds: {
    env: "SHUTDOWN_GRACE_SECONDS",
    flag: "shutdown-grace",
    fallback: "10",
    help: "how long a stop waits for queued messages to flush",
    schema: integer(0),
  },
  logLevel: {
    env: "LOG_LEVEL",
    flag: "log-level",
    fallback: "info",
    help: "debug, info, warn or error; JSON lines on stderr",
    schema: z.enum(LOG_LEVELS, { error: "takes debug, info, warn or error" }),
  },
} as const satisfies Record<string, SettingSpec>;

/** A key of the settings table, and of {@linkcode Config}. */
export type SettingName = keyof typeof SETTINGS;
