/**
 * The Lua scripts of the cluster bus (`src/redis/bus.ts`): a room's joins,
 * parts and resync (sharing the Lua functions of {@linkcode ROOM_LIB}), a
 * user's claim and release; with the keys the room and user scripts take
 * ({@linkcode roomKeys}, {@linkcode userKeys}), the making and reading of
 * every bus payload ({@linkcode busPayload}, {@linkcode parseBusPayload}). Each script takes all its keys in `KEYS`,
 * in one hash slot, and publishes (`SPUBLISH`) only on the sharded channel
 * of that slot, which it takes in `ARGV`: Redis Cluster refuses a script
 * that publishes on another node's channel.
 *
 * It does not run the scripts, read their replies, order the calls that
 * span slots, or reap dead nodes (the bus does that).
 *
 * @module
 */
import { LEAVE_REASONS, type LeaveReason } from "../wire/codes.ts";
import { foldName } from "../wire/names.ts";
import {
  parseStoredGroupChat,
  parseStoredPrivateChat,
  parseTypingNotice,
} from "../wire/protocol.ts";
import type { AdminAction, BusMessage } from "../chat/reducer.ts";
import { RedisScript } from "./connection.ts";
import { KEYS, LUA, PAYLOAD } from "./keys.ts";

/**
 * Lua shared by the room scripts below. KEYS: [1] the room's nodes, [2] its
 * presence, [3] the node's contributions to it, [4] its seq. Each script
 * sets \`bus\` to the room's channel (\`KEYS.roomChannel\`, from ARGV) first.
 */
export const ROOM_LIB = `
local bus
local function publish(origin, letter, body)
  redis.call('SPUBLISH', bus, letter .. origin .. ' ' .. body)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function join(node, room, user, ts, quiet)
  redis.call('SADD', KEYS[1], node)
  if redis.call('SADD', KEYS[3], user) == 0 then return 0 end
  if redis.call('HINCRBY', KEYS[2], user, 1) ~= 1 then return 0 end
  if quiet then return 1 end
  publish(node, ${LUA.enter}, cjson.encode({room = room, sender_username = user, timestamp = ts}))
  return 1
end
local function part(node, room, user, reason, ts)
  if redis.call('SREM', KEYS[3], user) == 0 then return 0 end
  if redis.call('HINCRBY', KEYS[2], user, -1) > 0 then return 0 end
  redis.call('HDEL', KEYS[2], user)
  publish(node, ${LUA.leave}, cjson.encode({room = room, sender_username = user, timestamp = ts, reason = reason}))
  return 1
end
`;

/** The room keys of {@linkcode ROOM_LIB}, for `node`. */
export function roomKeys(room: string, node: string): string[] {
  return [
    KEYS.roomNodes(room),
    KEYS.presence(room),
    KEYS.contrib(room, node),
    KEYS.seq(room),
  ];
}

/**
 * In the room's slot. ARGV: node, room, announce (`1`: new entries are
 * announced with an \`Enter\`), member (`1`: the node stays among the room's
 * nodes), seq ('' for none: the room's seq is raised to it), the room's
 * channel, then the users the node holds in the room. Sets the node's
 * contributions to the room to those users: the others leave (\`Leave\`,
 * reason \`disconnected\`).
 */
export const ROOM_SYNC = new RedisScript(`${ROOM_LIB}
bus = ARGV[6]
local node, room = ARGV[1], ARGV[2]
local ts = now_ms()
local want = {}
for i = 7, #ARGV do want[ARGV[i]] = true end
for _, u in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not want[u] then part(node, room, u, 'disconnected', ts) end
end
for u in pairs(want) do join(node, room, u, ts, ARGV[3] ~= '1') end
if ARGV[5] ~= '' and tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[5]) then
  redis.call('SET', KEYS[4], ARGV[5])
end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[1], node)
else
  redis.call('SREM', KEYS[1], node)
end
return 1
`);

/** The user keys of {@linkcode USER_CLAIM} and {@linkcode USER_RELEASE}. */
export function userKeys(username: string): string[] {
  return [KEYS.userNodes(username), KEYS.nameNodes(foldName(username))];
}

/**
 * In the user's slot. KEYS: the user's nodes, the nodes of its folded name.
 * ARGV: node, exclusive (`1`: refused, 0, while another node holds any name
 * of the same folded form: \`Alice\` and \`alice\` are one name). Returns 1
 * when the node holds the user now.
 */
export const USER_CLAIM = new RedisScript(`
local node = ARGV[1]
if ARGV[2] == '1' then
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if n ~= node then return 0 end
  end
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if n ~= node then return 0 end
  end
end
redis.call('SADD', KEYS[1], node)
redis.call('SADD', KEYS[2], node)
return 1
`);

/** In the user's slot; KEYS as {@linkcode USER_CLAIM}. ARGV: node. */
export const USER_RELEASE = new RedisScript(`
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
`);

/** A payload as published: its letter, the node that sent it, the body. */
export function busPayload(
  letter: string,
  origin: string,
  body: string,
): string {
  return `${letter}${origin} ${body}`;
}

/** A payload read back: the node that published it and the message. */
export interface BusPayload {
  /** The node that published it (a node drops its own). */
  origin: string;
  message: BusMessage;
}

/** An admin action read from another node, or `null` when malformed. */
function parseAdminAction(body: Record<string, unknown>): AdminAction | null {
  const text = (key: string) =>
    typeof body[key] === "string" ? body[key] as string : null;
  const number = (key: string) =>
    typeof body[key] === "number" ? body[key] as number : null;
  const username = text("username");
  switch (body.kind) {
    case "kick":
    case "unban":
      return username === null ? null : { kind: body.kind, username };
    case "ban": {
      const until = number("until");
      return username === null || until === null
        ? null
        : { kind: "ban", username, until };
    }
    case "deleted": {
      const room = text("room");
      const id = text("id");
      const seq = number("seq");
      return room === null || id === null || seq === null
        ? null
        : { kind: "deleted", room, id, seq };
    }
  }
  return null;
}

/** Names from Lua's JSON: an empty table comes as `{}`. */
function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

/**
 * Parses a payload of a bus channel; `null` when it is not one of ours or a
 * message lacks a field (a node of another version, say).
 */
export function parseBusPayload(payload: string): BusPayload | null {
  const space = payload.indexOf(" ");
  if (space < 1) return null;
  const origin = payload.slice(1, space);
  const message = parseBody(payload[0]!, payload.slice(space + 1));
  return message && { origin, message };
}

/** The message of a payload's letter and body; `null` when not ours. */
function parseBody(kind: string, rest: string): BusMessage | null {
  try {
    switch (kind) {
      case PAYLOAD.group: {
        const message = parseStoredGroupChat(JSON.parse(rest));
        return message && { kind: "group", message };
      }
      case PAYLOAD.private: {
        const message = parseStoredPrivateChat(JSON.parse(rest));
        return message && { kind: "private", message };
      }
      case PAYLOAD.enter:
      case PAYLOAD.leave: {
        const body = JSON.parse(rest);
        const who = {
          room: String(body.room),
          username: String(body.sender_username),
          timestamp: Number(body.timestamp),
        };
        if (kind === PAYLOAD.enter) return { kind: "enter", ...who };
        const reason: LeaveReason = Object.hasOwn(LEAVE_REASONS, body.reason)
          ? body.reason
          : "disconnected";
        return { kind: "leave", ...who, reason };
      }
      case PAYLOAD.revoked:
        return { kind: "revoked", token: rest };
      case PAYLOAD.typing: {
        const notice = parseTypingNotice(JSON.parse(rest));
        return notice && { kind: "typing", notice };
      }
      case PAYLOAD.admin: {
        const request = parseAdminAction(JSON.parse(rest));
        return request && { kind: "admin", request };
      }
      case PAYLOAD.presence: {
        const body = JSON.parse(rest);
        return {
          kind: "presence",
          batch: {
            room: String(body.room),
            joined: strings(body.joined),
            joined_count: Number(body.joined_count) || 0,
            left: strings(body.left),
            left_count: Number(body.left_count) || 0,
          },
          count: Number(body.count) || 0,
          version: Number(body.v) || 0,
        };
      }
      case PAYLOAD.full: {
        const body = JSON.parse(rest);
        return {
          kind: "full",
          room: String(body.room),
          members: strings(body.members),
          count: Number(body.count) || 0,
          version: Number(body.v) || 0,
        };
      }
    }
  } catch {
    // Not JSON: not from a node of this version.
  }
  return null;
}
