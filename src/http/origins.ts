/**
 * {@linkcode originAllowed}: whether a browser page of an origin may open a
 * socket, by `ALLOWED_ORIGINS`. Used by the upgrade guard and by
 * `/api/upgrade-check`; it logs and refuses nothing itself.
 *
 * @module
 */

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
