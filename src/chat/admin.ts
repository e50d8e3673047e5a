/**
 * An administrator's requests (`admin` events, from `src/http/admin_api.ts`
 * through the runner, or from another node through the bus): the reads of
 * this node's rooms, members and connections, answered with an
 * `admin_reply` effect; kick and ban (the user's connections leave their
 * rooms with `kicked` / `banned` and are closed); the known bans, which
 * `Enter` and tokens are checked against; a system message (a `GroupChat`
 * from the reserved sender `system`, written like any); and the `Deleted`
 * frame of a message the API deleted from storage.
 *
 * It does no I/O: bans and deletions are stored by the API before the
 * event comes, and the cluster is told by the runner. It answers for this
 * node only: in a cluster, rooms, members and connections are those on
 * this node.
 *
 * @module
 */
import type { ErrorCode } from "../wire/codes.ts";
import { foldName, SYSTEM_SENDER } from "../wire/names.ts";
import { encode, type StoredGroupChat } from "../wire/server_frames.ts";
import { close, refuse } from "./closing.ts";
import { toRoom } from "./rooms.ts";
import { readSeq, writing } from "./room_seqs.ts";
import type {
  AdminAnswer,
  AdminRequest,
  Connection,
  Ctx,
  Event,
} from "./types.ts";

/** Handles one `admin` event. */
export function admin(
  ctx: Ctx,
  event: Extract<Event, { type: "admin" }>,
): void {
  const answer = handle(ctx, event.request, event.id);
  if (answer && event.id !== null) {
    ctx.out.push({ type: "admin_reply", id: event.id, answer });
  }
}

function ok(body: Record<string, unknown>): AdminAnswer {
  return { status: 200, body };
}

/** The answer, or `undefined` when it comes later (a system message's write). */
function handle(
  ctx: Ctx,
  request: AdminRequest,
  id: number | null,
): AdminAnswer | undefined {
  const { state } = ctx;
  switch (request.kind) {
    case "rooms": {
      const names = new Set([...state.seqs.keys(), ...state.rooms.keys()]);
      const rooms = [...names].sort().map((name) => {
        const room = state.rooms.get(name);
        return {
          room: name,
          members: room?.users.size ?? 0,
          connections: room?.members.size ?? 0,
          last_seq: Math.max(
            state.seqs.get(name) ?? 0,
            room?.deliveredSeq ?? 0,
          ),
        };
      });
      return ok({ rooms });
    }
    case "members": {
      const room = state.rooms.get(request.room);
      if (!room && !state.seqs.has(request.room)) {
        return {
          status: 404,
          body: {
            error: `room '${request.room}' not found`,
            code: "not_found",
          },
        };
      }
      const all = [...(room?.users ?? new Map<string, number>())]
        .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
      const after = request.cursor;
      const start = after === undefined
        ? 0
        : all.findIndex(([name]) => name > after);
      const page = start < 0 ? [] : all.slice(start, start + request.limit);
      const more = start >= 0 && start + request.limit < all.length;
      return ok({
        room: request.room,
        members: page.map(([username, connections]) => ({
          username,
          connections,
        })),
        next_cursor: more ? page.at(-1)?.[0] ?? null : null,
      });
    }
    case "user": {
      const username = holder(ctx, request.username);
      const connections = [...state.users.get(username) ?? []].flatMap(
        (id) => {
          const conn = state.connections.get(id);
          return conn
            ? [{ id: conn.publicId, rooms: [...conn.rooms].sort() }]
            : [];
        },
      );
      const until = bannedUntil(ctx, username);
      return ok({
        username,
        connections,
        banned_until: until,
      });
    }
    case "kick": {
      const closed = endUser(ctx, request.username, "kicked");
      return ok({ username: request.username, closed });
    }
    case "ban": {
      state.bans.set(foldName(request.username), request.until);
      const closed = endUser(ctx, request.username, "banned");
      return ok({
        username: request.username,
        until: request.until,
        closed,
      });
    }
    case "unban":
      state.bans.delete(foldName(request.username));
      return ok({ username: request.username });
    case "bans": {
      const known = state.bans;
      const fresh = new Map(request.bans);
      for (const [folded, until] of fresh) {
        // A ban made elsewhere (the admin command on the database) ends the
        // connections here too.
        if (known.get(folded) !== until && until > state.now) {
          const name = state.names.get(folded);
          if (name !== undefined) endUser(ctx, name, "banned");
        }
      }
      known.clear();
      for (const [folded, until] of fresh) known.set(folded, until);
      return ok({ bans: known.size });
    }
    case "say": {
      const message: StoredGroupChat = {
        id: request.id,
        seq: 0,
        room: request.room,
        sender_username: SYSTEM_SENDER,
        content: request.content,
        timestamp: state.now,
      };
      if (!state.settings.cluster) {
        if (!state.seqs.has(request.room)) {
          // A room forgotten while idle: its `seq` is read from storage
          // first, and this request handled again then (`seq_loaded`).
          readSeq(ctx, request.room);
          state.seqWaiters.get(request.room)?.push({
            conn: null,
            admin: id,
            request,
          });
          return undefined;
        }
        message.seq = (state.seqs.get(request.room) ?? 0) + 1;
        state.seqs.set(request.room, message.seq);
        writing(state, request.room);
      }
      ctx.out.push({
        type: "persist",
        request: {
          conn: null,
          op: { kind: "group", message },
          ...(id === null ? {} : { admin: id }),
        },
      });
      return undefined;
    }
    case "deleted": {
      const room = state.rooms.get(request.room);
      if (room) {
        const { room: name, id: messageId, seq } = request;
        toRoom(
          room,
          "Deleted",
          encode("Deleted", { room: name, id: messageId, seq }),
          ctx.out,
        );
      }
      return ok({ room: request.room, id: request.id, seq: request.seq });
    }
    default:
      request satisfies never;
  }
}

/** The name a user is connected under here (its case), or `name` itself. */
function holder(ctx: Ctx, name: string): string {
  return ctx.state.names.get(foldName(name)) ?? name;
}

/**
 * Ends every connection of the user on this node: each leaves its rooms
 * (the others see `Leave` with `reason`) and is closed. Returns how many.
 */
function endUser(
  ctx: Ctx,
  name: string,
  reason: "kicked" | "banned",
): number {
  const { state } = ctx;
  const username = holder(ctx, name);
  const conns = [...state.users.get(username) ?? []];
  const until = bannedUntil(ctx, username);
  const message = reason === "kicked"
    ? "an administrator kicked this user; the message was not handled"
    : `this user is banned until ${
      new Date(until ?? state.now).toISOString()
    }; the message was not handled`;
  const answer: ErrorCode = reason === "banned" ? "banned" : "unavailable";
  let closed = 0;
  for (const id of conns) {
    const conn = state.connections.get(id);
    if (!conn || conn.closing) continue;
    close(ctx, conn, reason, undefined, { answer, message }, reason);
    closed++;
  }
  return closed;
}

/** When the user's ban ends, or `null` when not banned now. */
export function bannedUntil(ctx: Ctx, username: string): number | null {
  const until = ctx.state.bans.get(foldName(username));
  return until !== undefined && until > ctx.state.now ? until : null;
}

/**
 * Refuses a message of a banned user with `banned`; `true` when it did.
 * Called when a connection binds a username (first `Enter`, or a token).
 */
export function refuseBanned(
  ctx: Ctx,
  conn: Connection,
  username: string,
  ref: string | undefined,
): boolean {
  const until = bannedUntil(ctx, username);
  if (until === null) return false;
  refuse(
    ctx,
    conn,
    "banned",
    `'${username}' is banned until ${new Date(until).toISOString()}`,
    ref,
  );
  return true;
}
