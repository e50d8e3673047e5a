/**
 * All chat rules, as one transition function:
 * `reduce(state, event) -> [state, effects]`.
 *
 * The reducer does no I/O and reads no clock and no randomness: the event
 * carries the time and fresh ids, and everything the server does goes out as
 * an {@linkcode Effect} for the runner to apply. Answers that need I/O first
 * (a write before an `Ack`, a history read, a token lookup) go out as effects
 * and come back as events; meanwhile the connection waits and its later
 * frames queue behind (bounded), so its messages take effect in order.
 *
 * The state is plain data owned by the reducer: `reduce` returns the state it
 * was given, updated in place, so a message costs O(1) plus its recipients
 * instead of a copy of every map. Callers hand the state over and use the one
 * returned; the tests assert on both.
 *
 * The rules are split by concern into the modules beside this one
 * (`arrival`, `auth`, `binding`, `membership`, `commands`, `answers`,
 * `offline`, `cluster`, `rooms`, `closing`, `emit`), each handler taking one
 * {@linkcode Ctx}. A handler whose connection no longer waits for I/O only
 * lists it (`goOn`, in `state.ready`); `reduce` handles its queued frames
 * after the event, so no handler runs another's frames. This file holds the dispatch and what
 * belongs to no one concern (the clock tick, the cluster's contributions).
 * It imports the handlers and no handler imports it back: imports among
 * these modules run one way, from `types.ts` up to here, with no cycle
 * (`tests/unit/import_cycles_test.ts`).
 *
 * @module
 */
import { createDecoder } from "../wire/client_frames.ts";
import { admin } from "./admin.ts";
import { offlineLoaded, offlineWritten } from "./offline.ts";
import { historyLoaded, persisted, seqLoaded } from "./answers.ts";
import { admit, arrive, open, resume } from "./arrival.ts";
import { revoked, tokenChecked, tokenDue } from "./auth.ts";
import { close, drop, finishClose, refuse } from "./closing.ts";
import { fillGap, fromBus, gapFilled, joined, parted } from "./cluster.ts";
import { flushPresence } from "./presence.ts";
import { membersLoaded, recount } from "./cluster_presence.ts";
import {
  type ChatSettings,
  type ChatState,
  type Connection,
  type Ctx,
  type Event,
  GAP_WAIT_MS,
  TOKEN_RECHECK_MS,
  type Transition,
} from "./types.ts";

export type * from "./types.ts";
export {
  GAP_WAIT_MS,
  MAX_PENDING,
  MAX_QUEUED_FRAMES,
  MAX_WAITING,
  OFFLINE_PAGE,
  OFFLINE_PAGE_BYTES,
  PRESENCE_DIFF_NAMES,
  PRESENCE_FULL_LIMIT,
  PRESENCE_PAGE,
  TOKEN_RECHECK_MS,
  TYPING_EXPIRES_MS,
  TYPING_INTERVAL_MS,
  TYPING_RENEW_MS,
} from "./types.ts";

/** Creates the empty state; `seqs` is each room's last `seq` from storage. */
export function createState(
  settings: ChatSettings,
  seqs: ReadonlyMap<string, number> = new Map(),
): ChatState {
  return {
    settings,
    decoder: createDecoder({ maxContentChars: settings.maxContentChars }),
    connections: new Map(),
    users: new Map(),
    names: new Map(),
    unbound: new Map(),
    rooms: new Map(),
    presenceDue: new Set(),
    presenceAt: Number.NEGATIVE_INFINITY,
    writing: new Map(),
    seqWaiters: new Map(),
    seqs: new Map(seqs),
    tokens: new Map(),
    tokenWaiters: new Map(),
    bound: new Map(),
    offlineLoading: new Set(),
    bans: new Map(),
    claiming: new Set(),
    draining: false,
    overloaded: false,
    now: 0,
    ready: [],
  };
}

/** Applies one event to the state. Pure: see the module documentation. */
export function reduce(state: ChatState, event: Event): Transition {
  const ctx: Ctx = { state, out: [] };
  const { out } = ctx;
  const { ready } = state;
  state.now = event.now;
  switch (event.type) {
    case "open":
      open(ctx, event);
      break;
    case "frame":
      arrive(ctx, event);
      break;
    case "binary": {
      const conn = state.connections.get(event.conn);
      if (
        conn && !conn.closing && admit(ctx, conn, event.size)
      ) {
        out.push({ type: "count", metric: "frames_in", label: "binary" });
        refuse(
          ctx,
          conn,
          "unsupported_frame",
          "binary frames are not supported; send JSON text",
          undefined,
        );
      }
      break;
    }
    case "closed": {
      const conn = state.connections.get(event.conn);
      if (conn) {
        out.push({
          type: "count",
          metric: "closes",
          label: String(event.code),
        });
        out.push({
          type: "log",
          level: "info",
          msg: "connection closed",
          fields: { connection: conn.publicId, code: event.code },
        });
        drop(ctx, conn);
      }
      break;
    }
    case "overflow": {
      const conn = state.connections.get(event.conn);
      if (conn && !conn.closing) {
        close(ctx, conn, "policy", "slow consumer");
      }
      break;
    }
    case "tick":
      tick(ctx);
      break;
    case "persisted":
      persisted(ctx, event);
      break;
    case "history_loaded":
      historyLoaded(ctx, event);
      break;
    case "token_checked":
      tokenChecked(ctx, event);
      break;
    case "token_revoked":
      revoked(ctx, event.token);
      break;
    case "token_due":
      tokenDue(ctx, event.token);
      break;
    case "offline_loaded":
      offlineLoaded(ctx, event);
      break;
    case "offline_written":
      offlineWritten(ctx, event);
      break;
    case "load":
      state.overloaded = event.overloaded;
      break;
    case "joined":
      joined(ctx, event);
      break;
    case "parted":
      parted(ctx, event);
      break;
    case "seq_loaded":
      for (const waiter of seqLoaded(ctx, event)) {
        if (event.seq !== null) {
          admin(ctx, {
            type: "admin",
            now: event.now,
            id: waiter.admin,
            request: waiter.request,
          });
        } else if (waiter.admin !== null) {
          ctx.out.push({
            type: "admin_reply",
            id: waiter.admin,
            answer: {
              status: 503,
              body: {
                error: "storage unavailable; the message was not stored",
                code: "unavailable",
              },
            },
          });
        }
      }
      break;
    case "bus":
      fromBus(ctx, event.message);
      break;
    case "presence_counted":
      if (event.counted) {
        const room = state.rooms.get(event.room);
        if (room) recount(state, room, event.counted);
      }
      break;
    case "members_loaded":
      membersLoaded(ctx, event);
      break;
    case "gap_filled":
      gapFilled(ctx, event);
      break;
    case "bus_synced":
      // Whatever the bus lost while it was away is in history.
      for (const room of state.rooms.values()) {
        if (room.known) fillGap(room, out);
      }
      break;
    case "admin":
      admin(ctx, event);
      break;
    case "shutdown":
      if (state.draining) {
        // Again, at the end of the grace: what still waits for I/O is
        // closed without that answer (its queued frames are answered).
        for (const conn of [...state.connections.values()]) {
          if (conn.closing) finishClose(ctx, conn);
        }
        break;
      }
      state.draining = true;
      for (const conn of [...state.connections.values()]) {
        close(ctx, conn, "going_away", undefined, {
          answer: "unavailable",
          message:
            "the server is shutting down; the message was not handled, send it again",
        });
      }
      break;
    default:
      event satisfies never;
  }
  // The connections whose I/O answer came handle what waits on them.
  for (let i = 0; i < ready.length; i++) {
    const conn = ready[i] as Connection;
    if (!conn.busy && state.connections.has(conn.id)) resume(ctx, conn);
  }
  ready.length = 0;
  return [state, out];
}

function tick(ctx: Ctx): void {
  const { state, out } = ctx;
  const now = state.now;
  const timeout = state.settings.authTimeoutMs;
  // Oldest first: stop at the first connection still within its time.
  for (const [id, opened] of state.unbound) {
    if (!timeout || now - opened < timeout) break;
    state.unbound.delete(id);
    const conn = state.connections.get(id);
    if (conn && conn.username === null) {
      close(
        ctx,
        conn,
        "policy",
        state.settings.authEnabled
          ? "no valid token in time"
          : "no Enter in time",
      );
    }
  }
  flushPresence(ctx);
  for (const [token, cached] of state.tokens) {
    if (now - cached.checkedAt > TOKEN_RECHECK_MS && !state.bound.has(token)) {
      state.tokens.delete(token);
    }
  }
  if (!state.settings.cluster) return;
  for (const room of state.rooms.values()) {
    if (
      room.gapSince !== null && !room.filling &&
      now - room.gapSince >= GAP_WAIT_MS
    ) {
      fillGap(room, out);
    }
  }
}

/**
 * Lists what this node holds in the cluster (see {@linkcode Contributions}),
 * joins in flight included: their records may already be in Redis.
 */
export function contributions(state: ChatState): Contributions {
  const presence: [string, string][] = [];
  const seqs: [string, number][] = [];
  for (const room of state.rooms.values()) {
    const usernames = new Set([...room.users.keys(), ...room.joining.keys()]);
    for (const username of usernames) presence.push([room.name, username]);
    if (room.known) seqs.push([room.name, room.deliveredSeq]);
  }
  const users = new Set([...state.users.keys(), ...state.claiming]);
  return { users: [...users], presence, seqs };
}

/** What this node holds, for the cluster to check its records against after a reconnect. */
export interface Contributions {
  /** Usernames with a connection on this node. */
  users: string[];
  /** `[room, username]` for every user in a room on this node. */
  presence: [string, string][];
  /** The last `seq` delivered in each room with members here. */
  seqs: [string, number][];
}
