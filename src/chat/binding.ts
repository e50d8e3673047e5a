/**
 * What a connection is bound to: its username (claimed in a cluster, and
 * starting its offline messages) and the tokens it was authenticated with,
 * each with one timer for its expiry or re-check. Checking tokens is in
 * `auth.ts`.
 *
 * @module
 */
import { foldName } from "../wire/names.ts";
import { startOffline } from "./offline.ts";
import { type Connection, type Ctx, TOKEN_RECHECK_MS } from "./types.ts";

/** Binds a connection to its username (the first `Enter`, or a token). */
export function bind(
  ctx: Ctx,
  conn: Connection,
  username: string,
  claimed = false,
): void {
  const { state, out } = ctx;
  conn.username = username;
  state.unbound.delete(conn.id);
  let conns = state.users.get(username);
  if (!conns) {
    state.users.set(username, conns = new Set());
    state.names.set(foldName(username), username);
    if (state.settings.cluster && !claimed) {
      out.push({ type: "claim", username });
    }
    // A user back while a pager runs gets its next pages.
    if (state.settings.authEnabled) startOffline(ctx, username);
  }
  conns.add(conn.id);
}

/** Records that `token` authenticated `conn`, arming the token's timer if new. */
export function bindToken(
  ctx: Ctx,
  conn: Connection,
  token: string,
  expiresAt: number,
): void {
  const { state } = ctx;
  if (conn.tokens.has(token)) return;
  conn.tokens.add(token);
  let bound = state.bound.get(token);
  if (!bound) {
    state.bound.set(token, bound = { conns: new Set(), expiresAt });
    armToken(ctx, token);
  }
  bound.conns.add(conn.id);
}

/** Arms a bound token's timer: at its expiry or its next re-check, the earlier. */
export function armToken(ctx: Ctx, token: string): void {
  const { state, out } = ctx;
  const bound = state.bound.get(token);
  if (!bound) return;
  const checkedAt = state.tokens.get(token)?.checkedAt ?? state.now;
  const at = Math.min(bound.expiresAt, checkedAt + TOKEN_RECHECK_MS);
  out.push({ type: "token_timer", token, at });
}

/** Forgets the tokens a connection held; a token nobody holds loses its timer. */
export function unbindTokens(ctx: Ctx, conn: Connection): void {
  const { state, out } = ctx;
  for (const token of conn.tokens) {
    const bound = state.bound.get(token);
    bound?.conns.delete(conn.id);
    if (bound?.conns.size === 0) {
      state.bound.delete(token);
      out.push({ type: "token_timer", token, at: null });
    }
  }
  conn.tokens.clear();
}
