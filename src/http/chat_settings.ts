/**
 * {@linkcode chatSettings}: the reducer's {@linkcode ChatSettings} as the
 * server's config gives them. Pure; it reads no environment (see
 * `src/runtime/config.ts`).
 *
 * @module
 */
import { type ChatSettings, OFFLINE_PAGE_BYTES } from "../chat/reducer.ts";
import type { Config } from "../runtime/config.ts";

/** The server's name and version, sent in `Welcome`. */
export const SERVER_NAME = "deno-chat/0.1.0";

/** The chat rules' settings for `config`; `cluster` when `REDIS_URL` is set. */
export function chatSettings(config: Config, cluster: boolean): ChatSettings {
  return {
    serverName: SERVER_NAME,
    authEnabled: config.authEnabled,
    defaultRoom: config.defaultRoom,
    maxMessageBytes: config.maxMessageBytes,
    maxContentChars: config.maxContentChars,
    maxRoomsPerConnection: config.maxRoomsPerConnection,
    presenceFullLimit: config.presenceFullLimit,
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
    cluster,
  };
}
