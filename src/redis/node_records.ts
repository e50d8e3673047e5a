/**
 * A cluster node's records in Redis, kept true to what the node holds:
 * reaping the nodes whose heartbeat is gone ({@linkcode reapDead}),
 * forgetting one node's records ({@linkcode forgetNode}: its users leave
 * their rooms, their names are free), and setting this node's records to
 * what it holds after an outage ({@linkcode resyncRecords}). One call per
 * room and per user, each in its own slot; every step is idempotent, so two
 * nodes reaping one dead node at once do no harm.
 *
 * It does not keep the heartbeat, subscribe, or decide when to resync (the
 * bus, `bus.ts`, does).
 *
 * @module
 */
import type { Contributions } from "../chat/reducer.ts";
import type { RedisConnection } from "./connection.ts";
import { KEYS } from "./keys.ts";
import {
  ROOM_SYNC,
  roomKeys,
  USER_CLAIM,
  USER_RELEASE,
  userKeys,
} from "./bus_scripts.ts";

/** How long the mark of a reaped node lasts, for its return (a day). */
const REAPED_TTL_MS = 86_400_000;

/** What a resync needs of the bus besides Redis. */
export interface ResyncHooks {
  /** Renews the node's heartbeat and lists it among the nodes. */
  alive(): Promise<void>;
  /** Follows exactly these rooms' and users' channels. */
  channels(rooms: Set<string>, users: Set<string>): Promise<void>;
}

/**
 * Forgets the nodes whose heartbeat is gone, marking them reaped first;
 * returns how many. Several nodes may reap one node at once: every step
 * is idempotent.
 */
export async function reapDead(
  commands: Pick<RedisConnection, "command">,
  self: string,
): Promise<number> {
  const nodes = await commands.command<string[]>([
    "SMEMBERS",
    KEYS.nodes,
  ]);
  const others = nodes.filter((node) => node !== self);
  const alive = await Promise.all(
    others.map((node) =>
      commands.command<number>(["EXISTS", KEYS.alive(node)])
    ),
  );
  const dead = others.filter((_, i) => Number(alive[i]) === 0);
  for (const node of dead) {
    await commands.command([
      "SET",
      KEYS.reaped(node),
      "1",
      "PX",
      String(REAPED_TTL_MS),
    ]);
    await forgetNode(commands, node);
  }
  return dead.length;
}

/**
 * Removes a node's records, one slot at a time: its users leave their
 * rooms (`Leave`, reason `disconnected`) and their names are free, then
 * the node's own keys go. Its lists of rooms and users may hold more than
 * it has (they are written before the rooms and users): those steps do
 * nothing.
 */
export async function forgetNode(
  commands: Pick<RedisConnection, "command">,
  node: string,
): Promise<void> {
  const [rooms, users] = await Promise.all([
    commands.command<string[]>(["SMEMBERS", KEYS.nodeRooms(node)]),
    commands.command<string[]>(["SMEMBERS", KEYS.nodeUsers(node)]),
  ]);
  await Promise.all([
    ...rooms.map((room) =>
      ROOM_SYNC.run(commands, roomKeys(room, node), [
        node,
        room,
        "0",
        "0",
        "",
        KEYS.roomChannel(room),
      ])
    ),
    ...users.map((user) => USER_RELEASE.run(commands, userKeys(user), [node])),
  ]);
  await Promise.all([
    commands.command([
      "DEL",
      KEYS.nodeRooms(node),
      KEYS.nodeUsers(node),
    ]),
    commands.command(["DEL", KEYS.alive(node)]),
    commands.command(["SREM", KEYS.nodes, node]),
  ]);
}

/**
 * Sets the node's records to what it holds. Its users' presence is
 * restored quietly: the other nodes were never told they left (Redis lost
 * the records, say it restarted empty), so an `Enter` would announce
 * users whose state did not change. Only a node that was reaped, whose
 * users' `Leave` the others got, announces them again. Entries it no
 * longer holds leave with a `Leave`: those users did go. One call per
 * room and per user, each in its slot; the node's lists of rooms and
 * users grow before and shrink after, so that they always cover what it
 * has in Redis.
 */
export async function resyncRecords(
  commands: Pick<RedisConnection, "command">,
  node: string,
  snapshot: Contributions,
  hooks: ResyncHooks,
): Promise<void> {
  const announce = Number(
    await commands.command(["DEL", KEYS.reaped(node)]),
  ) === 1;
  await hooks.alive();
  const [oldRooms, oldUsers] = await Promise.all([
    commands.command<string[]>(["SMEMBERS", KEYS.nodeRooms(node)]),
    commands.command<string[]>(["SMEMBERS", KEYS.nodeUsers(node)]),
  ]);
  const users = new Set(snapshot.users);
  const inRoom = new Map<string, string[]>();
  for (const [room, user] of snapshot.presence) {
    const list = inRoom.get(room) ?? [];
    list.push(user);
    inRoom.set(room, list);
  }
  const seqs = new Map(snapshot.seqs);
  const rooms = new Set([...inRoom.keys(), ...seqs.keys()]);
  if (rooms.size > 0) {
    await commands.command(["SADD", KEYS.nodeRooms(node), ...rooms]);
  }
  if (users.size > 0) {
    await commands.command(["SADD", KEYS.nodeUsers(node), ...users]);
  }
  const staleUsers = oldUsers.filter((user) => !users.has(user));
  // The channels first, so that nothing published after a record is put
  // back is missed; then the channels of what the node no longer holds go.
  await hooks.channels(rooms, users);
  await Promise.all([
    ...[...new Set([...oldRooms, ...rooms])].map((room) =>
      ROOM_SYNC.run(commands, roomKeys(room, node), [
        node,
        room,
        announce ? "1" : "0",
        rooms.has(room) ? "1" : "0",
        seqs.has(room) ? seqs.get(room)! : "",
        KEYS.roomChannel(room),
        ...inRoom.get(room) ?? [],
      ])
    ),
    ...staleUsers.map((user) =>
      USER_RELEASE.run(commands, userKeys(user), [node])
    ),
    ...[...users].map((user) =>
      USER_CLAIM.run(commands, userKeys(user), [node, "0"])
    ),
  ]);
  const staleRooms = oldRooms.filter((room) => !rooms.has(room));
  if (staleRooms.length > 0) {
    await commands.command([
      "SREM",
      KEYS.nodeRooms(node),
      ...staleRooms,
    ]);
  }
  if (staleUsers.length > 0) {
    await commands.command([
      "SREM",
      KEYS.nodeUsers(node),
      ...staleUsers,
    ]);
  }
}
