/**
 * The control channel (`chat:{control}`, one sharded channel every node
 * follows): publishing a token's revocation and an administrator's action to
 * every node, from a node or from a command (`deno task token`, `deno task
 * admin`), which is no node. Each node drops its own payloads.
 *
 * It does not subscribe or read the payloads (`bus.ts`, `bus_scripts.ts`).
 *
 * @module
 */
import type { AdminAction } from "../chat/reducer.ts";
import type { RedisConnection } from "./connection.ts";
import { busPayload } from "./bus_scripts.ts";
import { KEYS, PAYLOAD } from "./keys.ts";

/**
 * Tells every node but `from` that a token was revoked, on the control
 * channel; for the token command too, which is no node (`from` is then its
 * own name).
 */
export async function publishRevocation(
  connection: RedisConnection,
  from: string,
  token: string,
): Promise<void> {
  await connection.command([
    "SPUBLISH",
    KEYS.control,
    busPayload(PAYLOAD.revoked, from, token),
  ]);
}

/**
 * Tells every node but `from` of an administrator's action (kick, ban,
 * unban, a deleted message), on the control channel; for the admin command
 * too, which is no node.
 */
export async function publishAdminAction(
  connection: RedisConnection,
  from: string,
  action: AdminAction,
): Promise<void> {
  await connection.command([
    "SPUBLISH",
    KEYS.control,
    busPayload(PAYLOAD.admin, from, JSON.stringify(action)),
  ]);
}
