/**
 * The offline pager: a user's `PrivateChat`s stored while it was away go
 * out a page at a time, each page marked delivered once written. Storing
 * them is decided in `commands.ts` and `answers.ts`.
 *
 * @module
 */
import { encodePrivateChat } from "../wire/server_frames.ts";
import {
  type Ctx,
  type Event,
  OFFLINE_PAGE,
  OFFLINE_PAGE_BYTES,
} from "./types.ts";

/** Starts delivering a user's offline messages, unless that runs already. */
export function startOffline(ctx: Ctx, username: string): void {
  const { state, out } = ctx;
  if (state.offlineLoading.has(username)) return;
  state.offlineLoading.add(username);
  out.push({ type: "load_offline", username, limit: OFFLINE_PAGE });
}

/**
 * Sends one page of offline messages (at most {@linkcode OFFLINE_PAGE_BYTES})
 * and waits for it to be written; the pager ends at an empty read, or when
 * the user has gone (what was not written waits for the next connection).
 */
export function offlineLoaded(
  ctx: Ctx,
  event: Extract<Event, { type: "offline_loaded" }>,
): void {
  const { state, out } = ctx;
  const conns = state.users.get(event.username);
  if (!conns || event.messages.length === 0) {
    state.offlineLoading.delete(event.username);
    return;
  }
  const ids: string[] = [];
  const budget = state.settings.offlinePageBytes ?? OFFLINE_PAGE_BYTES;
  let bytes = 0;
  for (const message of event.messages) {
    if (bytes >= budget) break;
    const data = encodePrivateChat(message);
    bytes += data.length;
    ids.push(message.id);
    out.push({
      type: "broadcast",
      conns,
      count: conns.size,
      data,
      kind: "PrivateChat",
    });
  }
  out.push({
    type: "watch_written",
    username: event.username,
    conns: [...conns],
    ids,
  });
}

/**
 * A page was written (marked delivered; the next one is read once that is
 * committed) or its connections closed first (it stays undelivered: sent
 * again next time).
 */
export function offlineWritten(
  ctx: Ctx,
  event: Extract<Event, { type: "offline_written" }>,
): void {
  const { out } = ctx;
  if (event.written) {
    out.push({
      type: "persist",
      request: {
        conn: null,
        op: { kind: "delivered", ids: event.ids, username: event.username },
      },
    });
  } else nextOfflinePage(ctx, event.username);
}

/** Reads the next page while the user is online; otherwise the pager ends. */
export function nextOfflinePage(ctx: Ctx, username: string): void {
  const { state, out } = ctx;
  if (state.users.has(username)) {
    out.push({ type: "load_offline", username, limit: OFFLINE_PAGE });
  } else state.offlineLoading.delete(username);
}
