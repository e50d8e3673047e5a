/// <reference lib="dom" />
/**
 * The web app's small ties to the browser: the remembered name in
 * `localStorage`, the tab's `sessionStorage`, same-origin JSON requests and
 * the WebSocket URL of the page's server.
 *
 * Each helper tolerates storage that is turned off; none keeps state.
 *
 * @module
 */

const NAME_KEY = "chat.name";

/** The name remembered from the last sign-in, or "". */
export function remembered(): string {
  try {
    return localStorage.getItem(NAME_KEY) ?? "";
  } catch {
    return "";
  }
}

/** Remembers the name for the next sign-in. */
export function remember(name: string): void {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Storage may be off; the name is only a convenience.
  }
}

/** Forgets the remembered name. */
export function forgetName(): void {
  try {
    localStorage.removeItem(NAME_KEY);
  } catch {
    // Storage may be off: nothing was kept.
  }
}

/** The tab's `sessionStorage`, or nothing when the browser turned it off. */
export function tabStorage(): Storage | undefined {
  let storage: Storage | undefined;
  try {
    // Reading it throws where the browser blocks storage for the site.
    storage = globalThis.sessionStorage;
  } catch {
    storage = undefined;
  }
  return storage;
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A same-origin JSON answer, or `null` when there is none (no server). */
export async function getJson(
  path: string,
): Promise<Record<string, unknown> | null> {
  try {
    const response = await fetch(new URL(path, location.href), {
      cache: "no-store",
    });
    if (!response.ok) return null;
    const body: unknown = await response.json();
    return typeof body === "object" && body !== null
      ? body as Record<string, unknown>
      : null;
  } catch {
    return null;
  }
}

/** The page's server WebSocket URL (`/ws`, `wss:` under https). */
export function socketUrl(): URL {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url;
}
