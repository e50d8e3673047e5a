/**
 * Who a request comes from: the peer's address, or behind trusted proxies
 * (`TRUSTED_PROXIES`) the address the nearest proxy saw. It counts and
 * refuses nothing (the upgrade guard does).
 *
 * @module
 */

/** `::ffff:1.2.3.4` is `1.2.3.4`. */
export function plainAddress(address: string): string {
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
