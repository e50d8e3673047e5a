/**
 * The names of every Redis key and pub/sub channel of the cluster, laid out
 * for Redis Cluster: each key carries a hash tag (`{...}`), so that all the
 * keys one Lua script touches share one hash slot, on a standalone Redis
 * and on a Redis Cluster alike.
 *
 * Four kinds of slot:
 *
 * ```
 * room R      chat:r{R}:seq              STRING  last seq of the room
 *             chat:r{R}:hist             ZSET    score = seq, member = JSON StoredGroupChat
 *             chat:r{R}:nodes            SET     node ids with members in the room
 *             chat:r{R}:presence         HASH    username -> number of nodes with that user in the room
 *             chat:r{R}:contrib:{node}   SET     usernames a node contributes to the room's presence
 *             chat:r{R}:large            STRING  set while the room has coalesced presence
 *             chat:r{R}:pv               STRING  counter ordering the room's member counts
 *             chat:r{R}:sent:{user}:{id} STRING  "fingerprint seq id timestamp" of a GroupChat stored with that client id
 * user U      chat:u{F}:usernodes:{U}    SET     node ids with a connection of U
 * (F = foldName(U))
 *             chat:u{F}:namenodes        SET     node ids holding a username of folded form F
 *             chat:u{F}:offline:{U}      LIST    JSON StoredPrivateChat to U, oldest first
 *             chat:u{F}:known:{U}        STRING  U ever held a token
 *             chat:u{F}:sent:{S}:{id}    STRING  the same for a PrivateChat from S to U
 *             chat:u{F}:ban              STRING  when a ban of the name F ends (ms), PXAT then
 * node N      chat:n{N}:alive            STRING  heartbeat with PX expiry
 *             chat:n{N}:reaped           STRING  the node was reaped (its users' Leave sent), PX expiry
 *             chat:n{N}:rooms            SET     rooms where the node may contribute (a superset)
 *             chat:n{N}:users            SET     usernames the node may hold (a superset)
 *             chat:n{N}:probe            STRING  a node's storage probe, expires at once
 * token H     chat:t{H}                  HASH    username, expires_at, created_at, revoked ("0"/"1")
 * one slot    chat:nodes                 SET     node ids
 *             chat:tokens                ZSET    token hash, score created_at
 *             chat:bans                  ZSET    banned folded names, score when the ban ends
 * sharded     chat:r{R}:bus              a room's traffic (messages, Enter, Leave), in the room's slot
 * channels    chat:u{F}:bus              private messages to and from the users of folded name F
 *             chat:{control}             node control traffic (token revocations, admin actions)
 * ```
 *
 * Names, rooms and node ids hold no `{` or `}` (see `NAME_PATTERN`; node ids
 * are UUIDs), so the hash tag of a key is exactly its room, folded name,
 * node or token hash. A user's keys live in the slot of the user's folded
 * name, so that `Alice` and `alice` (one name) are claimed in one script.
 *
 * The layout is new with issue 16: a Redis written by an older version
 * holds keys (`chat:seq:R`, `chat:token:H`, ...) this version does not read.
 *
 * The channels are sharded pub/sub channels (`SPUBLISH`/`SSUBSCRIBE`,
 * Redis 7): each lives in the slot of its hash tag, so a room's messages
 * touch only the shard of the room, and a script publishes on the channel
 * of its own slot. A payload is one letter (see {@linkcode PAYLOAD}), the
 * node that published it, a space, and the rest: a node drops its own.
 *
 * @module
 */
import { foldName } from "../wire/names.ts";

/** The names of the cluster's Redis keys and channels. */
export const KEYS = {
  /** STRING: the last `seq` of a room. */
  seq: (room: string): string => `chat:r{${room}}:seq`,
  /** ZSET: a room's recent messages, score `seq`, member JSON. */
  hist: (room: string): string => `chat:r{${room}}:hist`,
  /** SET: ids of the nodes with members in a room. */
  roomNodes: (room: string): string => `chat:r{${room}}:nodes`,
  /** HASH: username to the number of nodes with that user in a room. */
  presence: (room: string): string => `chat:r{${room}}:presence`,
  /** STRING: set while a room has coalesced presence (past `PRESENCE_FULL_LIMIT`). */
  large: (room: string): string => `chat:r{${room}}:large`,
  /** STRING: a counter that orders a large room's member counts. */
  presenceVersion: (room: string): string => `chat:r{${room}}:pv`,
  /** SET: the usernames a node contributes to a room's presence. */
  contrib: (room: string, node: string): string =>
    `chat:r{${room}}:contrib:${node}`,
  /**
   * STRING: `fingerprint seq id timestamp` of the `GroupChat` a user stored
   * in a room with client `id`, expiring after the idempotency window.
   */
  groupSent: (room: string, username: string, id: string): string =>
    `chat:r{${room}}:sent:${username}:${id}`,
  /** SET: ids of the nodes with a connection of a user. */
  userNodes: (username: string): string =>
    `chat:u{${foldName(username)}}:usernodes:${username}`,
  /** SET: ids of the nodes holding a username of this folded form (`foldName`). */
  nameNodes: (folded: string): string => `chat:u{${folded}}:namenodes`,
  /** LIST: JSON `StoredPrivateChat`s waiting for a user, oldest first. */
  offline: (username: string): string =>
    `chat:u{${foldName(username)}}:offline:${username}`,
  /** STRING: the user ever held a token (`PrivateChat`s to others are `unknown_user`). */
  known: (username: string): string =>
    `chat:u{${foldName(username)}}:known:${username}`,
  /**
   * STRING: `fingerprint 0 id timestamp` of the `PrivateChat` `sender`
   * stored for `target` with client `id` (in the target's slot).
   */
  privateSent: (target: string, sender: string, id: string): string =>
    `chat:u{${foldName(target)}}:sent:${sender}:${id}`,
  /** STRING: when the ban of a folded name ends (ms), expiring then. */
  ban: (folded: string): string => `chat:u{${folded}}:ban`,
  /** ZSET: banned folded names, score when the ban ends. */
  bans: "chat:bans",
  /** SET: every node id. */
  nodes: "chat:nodes",
  /** STRING: a node's heartbeat, with a `PX` expiry. */
  alive: (node: string): string => `chat:n{${node}}:alive`,
  /**
   * STRING: the node was reaped as dead and its users' `Leave` sent; if it
   * comes back, its resync announces them again (with a `PX` expiry).
   */
  reaped: (node: string): string => `chat:n{${node}}:reaped`,
  /** SET: rooms where a node may contribute to presence (a superset). */
  nodeRooms: (node: string): string => `chat:n{${node}}:rooms`,
  /** SET: usernames a node may hold (a superset). */
  nodeUsers: (node: string): string => `chat:n{${node}}:users`,
  /** HASH: a token by its hash: username, expires_at, created_at, revoked. */
  token: (hash: string): string => `chat:t{${hash}}`,
  /** ZSET: token hashes, score created_at. */
  tokens: "chat:tokens",
  /** STRING: a node's storage probe while writes fail, with a short expiry. */
  probe: (node: string): string => `chat:n{${node}}:probe`,
  /** Sharded channel of a room's traffic, in the room's slot. */
  roomChannel: (room: string): string => `chat:r{${room}}:bus`,
  /**
   * Sharded channel of the private messages to and from the users of one
   * folded name, in their slot.
   */
  userChannel: (username: string): string =>
    `chat:u{${foldName(username)}}:bus`,
  /** Sharded channel of node control traffic (token revocations, admin actions). */
  control: "chat:{control}",
} as const;

/** The first letter of a payload on a channel. */
export const PAYLOAD = {
  /** JSON of a `StoredGroupChat` (with its `seq`). */
  group: "g",
  /** JSON of a `StoredPrivateChat`. */
  private: "p",
  /** JSON `{room, sender_username, timestamp}`: a user entered a room. */
  enter: "e",
  /** The same with `reason`: a user left a room. */
  leave: "l",
  /** A revoked token. */
  revoked: "r",
  /**
   * JSON of a `TypingNotice` with a `nonce` (equal notices are distinct
   * payloads): someone is typing (or stopped).
   */
  typing: "t",
  /** JSON of an administrator's action (`AdminAction`: kick, ban, unban, deleted). */
  admin: "a",
  /** JSON: a large room's joins and leaves on one node in one tick, with the count. */
  presence: "b",
  /** JSON `{room, members, count, v}`: a large room is back to full presence. */
  full: "f",
} as const;

/**
 * The payload letters as Lua string literals, for the scripts (which take
 * every key in `KEYS` and their channel in `ARGV`, never build one).
 */
export const LUA = {
  group: JSON.stringify(PAYLOAD.group),
  private: JSON.stringify(PAYLOAD.private),
  enter: JSON.stringify(PAYLOAD.enter),
  leave: JSON.stringify(PAYLOAD.leave),
  revoked: JSON.stringify(PAYLOAD.revoked),
  presence: JSON.stringify(PAYLOAD.presence),
  full: JSON.stringify(PAYLOAD.full),
} as const;
