/**
 * The Lua scripts of `RedisStorage` (`src/redis/storage.ts`):
 * storing a room's `GroupChat` with its next `seq`, a `PrivateChat` and its
 * echo to the sender's other nodes, reading a room's history, creating and
 * revoking tokens. Each script takes all its keys in `KEYS`, in one hash
 * slot, so it runs on a Redis Cluster as on a standalone Redis.
 *
 * It holds the scripts only: it does not build their keys or arguments,
 * run them, or read their replies (the storage class does that).
 *
 * @module
 */
import { RedisScript } from "./connection.ts";
import { LUA } from "./keys.ts";

/**
 * KEYS: the room's seq, hist, and (only with a client id) the idempotency
 * key (`KEYS.groupSent`). ARGV: node, json before the seq, json after it,
 * how many to keep, the window in ms, the message's `fingerprint`, `id
 * timestamp`, the room's channel (`KEYS.roomChannel`). Returns `seq id
 * timestamp` of the message stored before under the key with the same
 * fingerprint, if any. Otherwise gives the message the room's next seq,
 * stores it (and the key), trims the room, and publishes it once on the
 * room's sharded channel, where every node with members in the room
 * listens. Returns the seq.
 */
export const GROUP = new RedisScript(`
local node, before, after = ARGV[1], ARGV[2], ARGV[3]
local keep = tonumber(ARGV[4])
local sent, print = KEYS[3], ARGV[6]
if sent then
  local first = redis.call('GET', sent)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return string.sub(first, #print + 2)
  end
end
local hist = KEYS[2]
local seq = redis.call('INCR', KEYS[1])
local json = before .. string.format('%d', seq) .. after
redis.call('ZADD', hist, seq, json)
if sent then
  redis.call('SET', sent, print .. ' ' .. string.format('%d', seq) .. ' ' ..
    ARGV[7], 'PX', ARGV[5])
end
redis.call('ZREMRANGEBYRANK', hist, 0, -(keep + 1))
redis.call('SPUBLISH', ARGV[8], ${LUA.group} .. node .. ' ' .. json)
return seq
`);

/**
 * In the target's slot. KEYS: the target's nodes, offline list, known
 * mark, and (only with a client id) the idempotency key
 * (`KEYS.privateSent`). ARGV: node, json, auth "1"/"0", delivered
 * "1"/"0", the window in ms, the fingerprint, `id timestamp`, cap ('' for
 * none), the target's channel (`KEYS.userChannel`). Returns `{"dup", "seq
 * id timestamp"}` of the message stored before under the key with the same
 * fingerprint, if any. Otherwise keeps the message for later when no node
 * holds the target and fewer than `cap` wait, and publishes it on the
 * target's sharded channel, where the target's nodes listen. Returns the
 * answer ("remote": another node holds the target, "ok", "not_connected",
 * "unknown_user" or "inbox_full"); the key is kept only for a message that
 * was taken.
 */
export const PRIVATE = new RedisScript(`
local node, json, auth, delivered = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key, print = KEYS[4], ARGV[6]
if key then
  local first = redis.call('GET', key)
  if first and string.sub(first, 1, #print + 1) == print .. ' ' then
    return {'dup', string.sub(first, #print + 2)}
  end
end
local targets = redis.call('SMEMBERS', KEYS[1])
local remote = false
for _, n in ipairs(targets) do
  if n ~= node then remote = true break end
end
if delivered == '0' and not remote then
  if auth == '0' then return {'not_connected'} end
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'unknown_user'} end
  if ARGV[8] ~= '' and redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[8]) then
    return {'inbox_full'}
  end
  redis.call('RPUSH', KEYS[2], json)
end
if remote then
  redis.call('SPUBLISH', ARGV[9], ${LUA.private} .. node .. ' ' .. json)
end
if key then
  redis.call('SET', key, print .. ' 0 ' .. ARGV[7], 'PX', ARGV[5])
end
if remote then return {'remote'} end
return {'ok'}
`);

/**
 * KEYS: the room's hist. ARGV: visible (how many of the newest are
 * visible, > 0), highest score, lowest score, limit. Returns the oldest
 * visible seq ('' when none) and, newest first, at most `limit` messages
 * between the two scores.
 */
export const HISTORY = new RedisScript(`
local hist = KEYS[1]
local visible = tonumber(ARGV[1])
local oldest = redis.call('ZRANGE', hist, visible - 1, visible - 1, 'REV',
  'WITHSCORES')
if #oldest == 0 then
  oldest = redis.call('ZRANGE', hist, 0, 0, 'WITHSCORES')
end
local messages = redis.call('ZRANGE', hist, ARGV[2], ARGV[3], 'BYSCORE',
  'REV', 'LIMIT', 0, ARGV[4])
return {oldest[2] or '', messages}
`);

/**
 * KEYS: the token. ARGV: username, expires_at, created_at. Fails if the
 * token exists.
 */
export const CREATE_TOKEN = new RedisScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR token exists')
end
redis.call('HSET', KEYS[1], 'username', ARGV[1], 'expires_at', ARGV[2],
  'created_at', ARGV[3], 'revoked', '0')
return 'OK'
`);

/** KEYS: the token. Returns 1 when it revoked the token, 0 when unknown or revoked. */
export const REVOKE_TOKEN = new RedisScript(`
if redis.call('HGET', KEYS[1], 'revoked') == '0' then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 1
end
return 0
`);
