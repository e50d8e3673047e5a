/**
 * Large rooms in a cluster: the Lua scripts that join and part a room
 * counting its members (a room past `PRESENCE_FULL_LIMIT` is marked large in
 * Redis, and its joins and leaves are then not published one by one), that
 * publish one node's batch of joins and leaves per tick with the room's
 * count, and that read a page of a room's members. Every count carries a
 * version (`INCR`), so that nodes keep the newest and agree.
 *
 * It does not decide what clients see (`src/chat/presence.ts`,
 * `src/chat/cluster.ts`), nor hold the connection: `RedisBus` calls these.
 *
 * @module
 */
import type { JoinResult, PartResult } from "../chat/reducer.ts";
import type { PresenceBatch } from "../chat/cluster_port.ts";
import { type RedisConnection, RedisScript } from "./connection.ts";
import { ROOM_LIB, roomKeys } from "./bus_scripts.ts";
import { KEYS, LUA } from "./keys.ts";

/** The keys of the scripts below: the room's keys, its large flag, its version. */
export function presenceKeys(room: string, node: string): string[] {
  return [
    ...roomKeys(room, node),
    KEYS.large(room),
    KEYS.presenceVersion(room),
  ];
}

/**
 * ARGV: node, room, user, timestamp, held, limit, page size, the room's
 * channel. Joins with `ROOM_LIB`'s `join`; a join that takes the room past
 * `limit` marks it large, and a large room's joins are not published (the
 * node batches them). Returns
 * seq, new, then every member (small) or the first page by `HSCAN`
 * (large), the count, large, the version and the scan cursor.
 */
const ROOM_JOIN_COUNTED = new RedisScript(`${ROOM_LIB}
bus = ARGV[8]
local large = redis.call('EXISTS', KEYS[5]) == 1
if not large and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[6]) and redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then
  large = true
  redis.call('SET', KEYS[5], '1')
end
local new = join(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1' or large)
local seq = tonumber(redis.call('GET', KEYS[4]) or '0')
local count = redis.call('HLEN', KEYS[2])
if not large then return {seq, new, redis.call('HKEYS', KEYS[2]), count, 0, 0, '0'} end
local v = redis.call('INCR', KEYS[6])
local scan = redis.call('HSCAN', KEYS[2], '0', 'COUNT', ARGV[7])
local names = {}
for i = 1, #scan[2], 2 do names[#names + 1] = scan[2][i] end
return {seq, new, names, count, 1, v, scan[1]}
`);

/**
 * ARGV: node, room, user, reason, timestamp, empty, limit, the room's
 * channel. Parts like `ROOM_LIB`'s `part`, but a large room's leave is not
 * published; a large room below 90% of `limit` is full again: every node is
 * told, with the
 * members. Returns gone, count, large, version.
 */
const ROOM_PART_COUNTED = new RedisScript(`${ROOM_LIB}
bus = ARGV[8]
local large = redis.call('EXISTS', KEYS[5]) == 1
local gone = 0
if redis.call('SREM', KEYS[3], ARGV[3]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[3])
    gone = 1
    if not large then
      publish(ARGV[1], ${LUA.leave}, cjson.encode({room = ARGV[2], sender_username = ARGV[3], timestamp = tonumber(ARGV[5]), reason = ARGV[4]}))
    end
  end
end
if ARGV[6] == '1' then redis.call('SREM', KEYS[1], ARGV[1]) end
local count = redis.call('HLEN', KEYS[2])
if not large then return {gone, count, 0, 0} end
local v = redis.call('INCR', KEYS[6])
if count < math.ceil(tonumber(ARGV[7]) * 0.9) then
  redis.call('DEL', KEYS[5])
  local members = redis.call('HKEYS', KEYS[2])
  -- Origin '': no node drops it as its own; every node, this one too, hears it.
  publish('', ${LUA.full}, cjson.encode({room = ARGV[2], members = members, count = count, v = v}))
  return {gone, count, 0, v}
end
return {gone, count, 1, v}
`);

/**
 * ARGV: node, the batch as JSON, the room's channel. Publishes it to the
 * room's other nodes
 * with the count and a new version; returns count and version.
 */
const PRESENCE_BATCH = new RedisScript(`${ROOM_LIB}
bus = ARGV[3]
local count = redis.call('HLEN', KEYS[2])
local v = redis.call('INCR', KEYS[6])
local batch = cjson.decode(ARGV[2])
batch.count = count
batch.v = v
publish(ARGV[1], ${LUA.presence}, cjson.encode(batch))
return {count, v}
`);

/** ARGV: cursor, page size. Returns the next cursor, names, count. */
const MEMBERS_PAGE = new RedisScript(`
local scan = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', ARGV[2])
local names = {}
for i = 1, #scan[2], 2 do names[#names + 1] = scan[2][i] end
return {scan[1], names, redis.call('HLEN', KEYS[2])}
`);

/** Names of a Lua reply (an empty table may come as anything). */
function names(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

/** Joins `username` to `room`, counting; see {@linkcode ROOM_JOIN_COUNTED}. */
export async function joinCounted(
  commands: Pick<RedisConnection, "command">,
  node: string,
  request: {
    room: string;
    username: string;
    timestamp: number;
    held?: boolean | undefined;
  },
  limit: number,
  page: number,
): Promise<Extract<JoinResult, { kind: "joined" }>> {
  const reply = await ROOM_JOIN_COUNTED.run(
    commands,
    presenceKeys(request.room, node),
    [
      node,
      request.room,
      request.username,
      request.timestamp,
      request.held ? "1" : "0",
      limit,
      page,
      KEYS.roomChannel(request.room),
    ],
  ) as unknown[];
  const large = Number(reply[4]) === 1;
  return {
    kind: "joined",
    seq: Number(reply[0]),
    isNew: Number(reply[1]) === 1,
    members: names(reply[2]),
    count: Number(reply[3]),
    ...(large
      ? { large, version: Number(reply[5]), cursor: Number(reply[6]) }
      : {}),
  };
}

/** Parts `username` from `room`, counting; see {@linkcode ROOM_PART_COUNTED}. */
export async function partCounted(
  commands: Pick<RedisConnection, "command">,
  node: string,
  part: {
    room: string;
    username: string;
    reason: string;
    timestamp: number;
    empty: boolean;
  },
  limit: number,
): Promise<PartResult> {
  const reply = await ROOM_PART_COUNTED.run(
    commands,
    presenceKeys(part.room, node),
    [
      node,
      part.room,
      part.username,
      part.reason,
      part.timestamp,
      part.empty ? "1" : "0",
      limit,
      KEYS.roomChannel(part.room),
    ],
  ) as unknown[];
  return {
    gone: Number(reply[0]) === 1,
    count: Number(reply[1]),
    large: Number(reply[2]) === 1,
    version: Number(reply[3]),
  };
}

/** Publishes one node's batch of a large room; resolves with count and version. */
export async function publishBatch(
  commands: Pick<RedisConnection, "command">,
  node: string,
  batch: PresenceBatch,
): Promise<{ count: number; version: number }> {
  const reply = await PRESENCE_BATCH.run(
    commands,
    presenceKeys(batch.room, node),
    [node, JSON.stringify(batch), KEYS.roomChannel(batch.room)],
  ) as unknown[];
  return { count: Number(reply[0]), version: Number(reply[1]) };
}

/** A page of a room's members in Redis's hash order; cursor 0 is the start and the end. */
export async function membersPage(
  commands: Pick<RedisConnection, "command">,
  node: string,
  room: string,
  cursor: number,
  limit: number,
): Promise<{ names: string[]; cursor: number; count: number }> {
  const reply = await MEMBERS_PAGE.run(commands, presenceKeys(room, node), [
    cursor,
    limit,
  ]) as unknown[];
  return {
    cursor: Number(reply[0]),
    names: names(reply[1]),
    count: Number(reply[2]),
  };
}
