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

  /** Issues a token for `username`: a UUID v4, stored hashed. */
  async issue(username: string, ttlSeconds: number): Promise<IssuedToken> {
    const token = crypto.randomUUID();
    const now = this.#now();
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
