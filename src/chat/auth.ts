/**
 * Authentication: checking the token a message carries (a cached lookup,
 * or `check_token` while the connection waits), and ending the connections
 * of a token revoked or expired. Binding a token to a connection and its
 * timer are in `binding.ts`.
 *
 * @module
 */
import type { ClientMessage } from "../wire/client_frames.ts";
import { refuseBanned } from "./admin.ts";
import { armToken, bind, bindToken } from "./binding.ts";
import { close, refuse } from "./closing.ts";
import { goOn } from "./emit.ts";
import {
  type Connection,
  type Ctx,
  type Event,
  type QueuedFrame,
  TOKEN_RECHECK_MS,
} from "./types.ts";

/**
 * Binds the connection to its token's user. `false` when the message was
 * refused, or waits for a token lookup (then it runs again afterwards).
 */
export function authenticate(
  ctx: Ctx,
  conn: Connection,
  message: ClientMessage,
  frame: QueuedFrame,
): boolean {
  const { state, out } = ctx;
  let token: string;
  if (message.token === undefined || message.token === null) {
    if (conn.token === null) {
      refuse(
        ctx,
        conn,
        "auth_required",
        "token: required, authentication is on",
        message.ref,
      );
      return false;
    }
    token = conn.token;
  } else if (typeof message.token !== "string") {
    refuse(ctx, conn, "invalid_token", "token: must be a string", message.ref);
    return false;
  } else token = message.token.toLowerCase();
  const cached = state.tokens.get(token);
  if (!cached || frame.now - cached.checkedAt > TOKEN_RECHECK_MS) {
    conn.busy = true;
    conn.queue.unshift(frame);
    const waiters = state.tokenWaiters.get(token);
    if (waiters) waiters.add(conn.id);
    else {
      state.tokenWaiters.set(token, new Set([conn.id]));
      out.push({ type: "check_token", token });
    }
    return false;
  }
  const grant = cached.grant;
  if (!grant || grant.expiresAt <= frame.now) {
    // A token this connection holds ends it (its timer may not have fired yet).
    const held = conn.tokens.has(token);
    refuse(
      ctx,
      conn,
      "invalid_token",
      "token: unknown, revoked or expired",
      message.ref,
      !held,
    );
    if (held) endToken(ctx, token);
    return false;
  }
  if (refuseBanned(ctx, conn, grant.username, message.ref)) return false;
  if (conn.username === null) bind(ctx, conn, grant.username);
  else if (conn.username !== grant.username) {
    refuse(
      ctx,
      conn,
      "sender_mismatch",
      `token: belongs to another user than '${conn.username}'`,
      message.ref,
    );
    return false;
  }
  bindToken(ctx, conn, token, grant.expiresAt);
  return true;
}

/** The answer to `check_token`: caches it, ends connections of a dead token, lets waiters go on. */
export function tokenChecked(
  ctx: Ctx,
  event: Extract<Event, { type: "token_checked" }>,
): void {
  const { state, out } = ctx;
  // A lookup that started before a revocation answers after it: keep the revocation.
  const revokedHere = state.tokens.get(event.token)?.revoked === true;
  if (event.grant !== undefined && !revokedHere) {
    state.tokens.set(event.token, { grant: event.grant, checkedAt: event.now });
  }
  const bound = state.bound.get(event.token);
  if (bound) {
    if (revokedHere || event.grant === null) {
      // Revoked (by `deno task token revoke`) or expired: the connections
      // that hold it end before the frames waiting for this lookup run.
      endToken(ctx, event.token);
    } else if (event.grant === undefined) {
      // The store cannot tell now: keep the connections, ask again later.
      out.push({
        type: "token_timer",
        token: event.token,
        at: Math.min(bound.expiresAt, event.now + TOKEN_RECHECK_MS),
      });
    } else {
      bound.expiresAt = event.grant.expiresAt;
      armToken(ctx, event.token);
    }
  }
  const waiters = state.tokenWaiters.get(event.token);
  state.tokenWaiters.delete(event.token);
  for (const id of waiters ?? []) {
    const conn = state.connections.get(id);
    if (!conn) continue;
    if (event.grant === undefined && !conn.closing) {
      // The frame that waited for the lookup is first in the queue.
      const frame = conn.queue[0]?.type === "frame"
        ? conn.queue.shift() as QueuedFrame
        : undefined;
      const decoded = frame && state.decoder.decode(frame.text);
      const ref = decoded?.ok ? decoded.message.ref : undefined;
      refuse(
        ctx,
        conn,
        "unavailable",
        "the token could not be checked; try again",
        ref,
      );
    }
    if (state.connections.has(id)) goOn(ctx, conn);
  }
}

/** A token was revoked (token API, or another node): its connections end now. */
export function revoked(ctx: Ctx, token: string): void {
  const { state } = ctx;
  const now = state.now;
  state.tokens.set(token, { grant: null, checkedAt: now, revoked: true });
  endToken(ctx, token);
}

/** A bound token's timer fired: it expired, or it is looked up again. */
export function tokenDue(ctx: Ctx, token: string): void {
  const { state, out } = ctx;
  const now = state.now;
  const bound = state.bound.get(token);
  if (!bound) return;
  const cached = state.tokens.get(token);
  if (bound.expiresAt <= now || (cached && !cached.grant)) {
    endToken(ctx, token);
  } else if (!cached || now - cached.checkedAt >= TOKEN_RECHECK_MS) {
    // Revoked by the command on the same database, the server not told:
    // a lookup tells. Its answer arms the timer again.
    if (!state.tokenWaiters.has(token)) {
      state.tokenWaiters.set(token, new Set());
      out.push({ type: "check_token", token });
    }
  } else armToken(ctx, token);
}

/**
 * Ends every connection `token` authenticated: each leaves its rooms (the
 * others see `Leave` with reason `token_revoked` or `token_expired`) and is
 * closed with 1008 once every frame it sent is answered.
 */
function endToken(ctx: Ctx, token: string): void {
  const { state } = ctx;
  const now = state.now;
  const bound = state.bound.get(token);
  if (!bound) return;
  const name = bound.expiresAt <= now ? "token_expired" : "token_revoked";
  const why = name === "token_expired" ? "expired" : "revoked";
  for (const id of [...bound.conns]) {
    const conn = state.connections.get(id);
    if (!conn || conn.closing) continue;
    close(ctx, conn, name, undefined, {
      answer: "invalid_token",
      message: `token: ${why}; the connection is closed`,
    }, name);
  }
}
