/**
 * The Redis side of moderation (`Moderation` in `src/chat/storage.ts`) for
 * `RedisStorage` and the admin command: a ban is a key in the user's hash
 * slot (`chat:u{folded}:ban`, the time it ends, expiring then) and an entry
 * of the one listing `chat:bans` (a sorted set by end time); deleting a
 * room's message is one script in the room's slot. It decides nothing about
 * who is banned, and tells no node (the API does, through the bus).
 *
 * @module
 */
import type { BanRow, MessageMatch } from "../chat/storage.ts";
import { foldName } from "../wire/names.ts";
import {
  parseStoredGroupChat,
  type StoredGroupChat,
} from "../wire/protocol.ts";
import { RedisScript } from "./connection.ts";
import type { RedisConnection } from "./connection.ts";
import { KEYS } from "./keys.ts";

type Commands = Pick<RedisConnection, "command">;

/**
 * KEYS: the room's history. ARGV: `id` or `seq`, and the value. Removes the
 * message and returns its JSON, or `false` when the room keeps none such.
 */
const DELETE_MESSAGE = new RedisScript(`
if ARGV[1] == 'seq' then
  local found = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[2], 'BYSCORE')
  if #found == 0 then return false end
  redis.call('ZREM', KEYS[1], found[1])
  return found[1]
end
for _, json in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local ok, message = pcall(cjson.decode, json)
  if ok and message.id == ARGV[2] then
    redis.call('ZREM', KEYS[1], json)
    return json
  end
end
return false
`);

/** Bans `username` (folded) until `until`: the user's key, then the listing. */
export async function redisBan(
  connection: Commands,
  username: string,
  until: number,
  now: number,
): Promise<void> {
  const folded = foldName(username);
  if (until <= now) return;
  await connection.command([
    "SET",
    KEYS.ban(folded),
    String(until),
    "PXAT",
    String(until),
  ]);
  await connection.command(["ZADD", KEYS.bans, String(until), folded]);
}

/** Lifts a ban; `false` when none ran. */
export async function redisUnban(
  connection: Commands,
  username: string,
): Promise<boolean> {
  const folded = foldName(username);
  const removed = await connection.command<number>(["DEL", KEYS.ban(folded)]);
  await connection.command(["ZREM", KEYS.bans, folded]);
  return Number(removed) > 0;
}

/** When the ban of `username` ends, or `null`. */
export async function redisBannedUntil(
  connection: Commands,
  username: string,
  now: number,
): Promise<number | null> {
  const until = await connection.command<string | null>([
    "GET",
    KEYS.ban(foldName(username)),
  ]);
  return until !== null && Number(until) > now ? Number(until) : null;
}

/** Every ban running at `now` (ended ones leave the listing). */
export async function redisBans(
  connection: Commands,
  now: number,
): Promise<BanRow[]> {
  await connection.command([
    "ZREMRANGEBYSCORE",
    KEYS.bans,
    "-inf",
    String(now),
  ]);
  const flat = await connection.command<string[]>([
    "ZRANGE",
    KEYS.bans,
    "0",
    "-1",
    "WITHSCORES",
  ]);
  const rows: BanRow[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    rows.push({
      username: flat[i]!,
      until: Number(flat[i + 1]),
      createdAt: 0,
    });
  }
  return rows;
}

/** Deletes a room's message from its history; the message, or `null`. */
export async function redisDeleteMessage(
  connection: Commands,
  room: string,
  match: MessageMatch,
): Promise<StoredGroupChat | null> {
  const json = await DELETE_MESSAGE.run(
    connection,
    [KEYS.hist(room)],
    "id" in match ? ["id", match.id] : ["seq", match.seq],
  );
  if (typeof json !== "string") return null;
  return parseStoredGroupChat(JSON.parse(json)) ?? null;
}
