/**
 * {@linkcode TokenService}: issues, checks and revokes tokens in the storage,
 * for the token API (`token_api.ts`) and the upgrade guard's `?token=` check.
 * A revocation is handed on (to the runner, which closes the token's
 * connections and tells the cluster). It keeps no state of its own and
 * decides no chat rule.
 *
 * @module
 */
import type { Storage, TokenGrant } from "../chat/storage.ts";
import { isReservedName } from "../wire/names.ts";

/** A token the service will not issue: the name is reserved, or banned. */
export class TokenRefused extends Error {
  /** `name_reserved` or `banned`, as the API answers it. */
  readonly code: "name_reserved" | "banned";

  /** A refusal with its code and a message naming the field. */
  constructor(code: "name_reserved" | "banned", message: string) {
    super(message);
    this.code = code;
  }
}

/** A token as the token API answers it. */
export interface IssuedToken {
  token: string;
  username: string;
  /** Milliseconds since the epoch. */
  expires_at: number;
}

/** What a {@linkcode TokenService} works with. */
export interface TokenServiceOptions {
  storage: Storage;
  /** The clock (the runner's). */
  now?: () => number;
  /**
   * Called with the lowercased token after the storage revoked it, before
   * `revoke` resolves (e.g. `Runner.tokenRevoked`).
   */
  revoked?: (token: string) => Promise<void> | void;
}

/** Issues, checks and revokes tokens. */
export class TokenService {
  #storage: Storage;
  #now: () => number;
  #revoked: (token: string) => Promise<void> | void;

  /** A service on `options.storage`. */
  constructor(options: TokenServiceOptions) {
    this.#storage = options.storage;
    this.#now = options.now ?? Date.now;
    this.#revoked = options.revoked ?? (() => {});
  }

  /** Looks a token up: `null` when unknown, revoked or expired now. */
  check(token: string): Promise<TokenGrant | null> {
    return this.#storage.checkToken(token, this.#now());
  }

  /** When the ban of `username` ends, or `null` when it is not banned. */
  bannedUntil(username: string): Promise<number | null> {
    return this.#storage.bannedUntil(username, this.#now());
  }

  /**
   * Issues a token for `username`: a UUID v4, stored hashed. Rejects with
   * a {@linkcode TokenRefused} for the reserved name and a banned one.
   */
  async issue(username: string, ttlSeconds: number): Promise<IssuedToken> {
    if (isReservedName(username)) {
      throw new TokenRefused(
        "name_reserved",
        `username: '${username}' is reserved for the server's own messages`,
      );
    }
    const now = this.#now();
    const until = await this.#storage.bannedUntil(username, now);
    if (until !== null) {
      throw new TokenRefused(
        "banned",
        `username: '${username}' is banned until ${
          new Date(until).toISOString()
        }`,
      );
    }
    const token = crypto.randomUUID();
    const expiresAt = now + ttlSeconds * 1000;
    await this.#storage.createToken(token, { username, expiresAt }, now);
    return { token, username, expires_at: expiresAt };
  }

  /**
   * Revokes a token; connections using it are closed at once (see
   * {@linkcode TokenServiceOptions.revoked}). `false` if unknown.
   */
  async revoke(token: string): Promise<boolean> {
    const normalized = token.toLowerCase();
    const revoked = await this.#storage.revokeToken(normalized);
    if (revoked) await this.#revoked(normalized);
    return revoked;
  }
}
