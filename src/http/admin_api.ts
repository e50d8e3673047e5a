/**
 * The admin API under `/api/rooms`, `/api/users` and `/api/bans`, guarded
 * by `ADMIN_TOKEN` (`Authorization: Bearer`, compared in constant time);
 * without `ADMIN_TOKEN` it does not exist (404, code `admin_disabled`).
 * JSON in and out; every call is one audit line in the log (who, what,
 * target; never a message's content).
 *
 * Reads and actions on live connections go to the reducer through
 * `Runner.admin` (an `admin` event answered by an `admin_reply` effect), so
 * the state stays the reducer's. Bans and deletions are stored first (the
 * storage port's `Moderation`), then applied here and told to the other
 * nodes of a cluster (`Runner.tellCluster`). It decides no chat rule.
 *
 * @module
 */
import { z } from "zod";
import type { AdminAnswer, AdminRequest } from "../chat/reducer.ts";
import type { Moderation } from "../chat/storage.ts";
import type { AdminAction } from "../chat/types.ts";
import type { Logger } from "../runtime/log.ts";
import { NAME_PATTERN, NAME_RULE } from "../wire/names.ts";
import {
  authorized,
  decodePathPart,
  MAX_BODY_BYTES,
  readLimited,
} from "./token_api.ts";
import { answer } from "./respond.ts";

/** What the admin API works with. */
export interface AdminApiOptions {
  adminToken: string | undefined;
  runner: {
    admin(request: AdminRequest): Promise<AdminAnswer>;
    tellCluster(action: AdminAction): Promise<boolean>;
  };
  storage: Moderation;
  log: Logger;
  /** The content limit of a message (`MAX_CONTENT_CHARS`). */
  maxContentChars: number;
  /** This node's id in a cluster: reads then answer for this node only. */
  node?: string;
  now?: () => number;
}

/** The longest ban, in seconds (ten years). */
export const MAX_BAN_SECONDS = 10 * 365 * 86400;

/** The default and largest page of `GET /api/rooms/<room>/members`. */
export const MEMBERS_PAGE = { default: 100, max: 1000 } as const;

const name = z.string().regex(NAME_PATTERN, NAME_RULE);

const banBody = z.object({
  seconds: z.int("seconds: must be a whole number").min(
    1,
    "seconds: must be at least 1",
  ).max(MAX_BAN_SECONDS, "seconds: must be at most ten years"),
});

function error(status: number, code: string, message: string): Response {
  return answer(status, { error: message, code });
}

function fromReducer(reply: AdminAnswer): Response {
  return answer(reply.status, reply.body);
}

/**
 * Reads a JSON object body of at most `limit` bytes (`MAX_BODY_BYTES`, or
 * room for a longest message's content, escaped), or the refusal.
 */
async function readJson(
  request: Request,
  limit = MAX_BODY_BYTES,
): Promise<unknown | Response> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    return error(415, "invalid_body", "Content-Type: must be application/json");
  }
  const text = await readLimited(request, limit);
  if (text === null) {
    return error(413, "invalid_body", `body: must be at most ${limit} bytes`);
  }
  try {
    const body = JSON.parse(text);
    if (typeof body === "object" && body !== null && !Array.isArray(body)) {
      return body;
    }
  } catch {
    // Refused below.
  }
  return error(400, "invalid_body", "body: must be a JSON object");
}

/** The first problem zod found, naming its field. */
function problem(issues: z.core.$ZodIssue[], body: unknown): string {
  const issue = issues[0];
  const field = issue?.path.join(".") ?? "";
  if (!issue || field === "") return "body: must be a JSON object";
  if (issue.message.startsWith(`${field}:`)) return issue.message;
  return (body as Record<string, unknown>)[field] === undefined
    ? `${field}: required`
    : `${field}: ${issue.message}`;
}

/** Answers a request under `/api/rooms`, `/api/users` or `/api/bans`. */
export async function handleAdminApi(
  request: Request,
  path: string,
  address: string,
  options: AdminApiOptions,
): Promise<Response> {
  if (options.adminToken === undefined) {
    return error(
      404,
      "admin_disabled",
      "the admin API is off: set ADMIN_TOKEN to turn it on",
    );
  }
  if (!(await authorized(request, options.adminToken))) {
    await request.body?.cancel().catch(() => {});
    return answer(401, {
      error: "Authorization: Bearer <ADMIN_TOKEN> required",
      code: "unauthorized",
    }, { "www-authenticate": 'Bearer realm="chat"' });
  }
  const now = options.now ?? Date.now;
  const parts = path.split("/").slice(2).map(decodePathPart);
  const method = request.method;
  const audit = (
    action: string,
    target: Record<string, unknown>,
    status: number,
  ) =>
    options.log("info", "admin", {
      action,
      ...target,
      status,
      from: address,
      ...(options.node === undefined ? {} : { node: options.node }),
    });
  const checkName = (value: string | undefined, field: string) =>
    value !== undefined && name.safeParse(value).success
      ? null
      : error(400, "invalid_name", `${field}: ${NAME_RULE}`);
  const notAllowed = (allow: string) =>
    answer(405, { error: "method not allowed", code: "method_not_allowed" }, {
      allow,
    });
  const scope = options.node === undefined
    ? { scope: "server" }
    : { scope: "node", node: options.node };

  const [top, subject, sub, item, ...rest] = parts;
  try {
    if (top === "bans" && subject === undefined) {
      if (method !== "GET") return notAllowed("GET");
      const bans = await options.storage.bans(now());
      audit("list_bans", {}, 200);
      return answer(200, {
        bans: bans.map((row) => ({ username: row.username, until: row.until })),
      });
    }
    if (top === "rooms") {
      if (subject === undefined) {
        if (method !== "GET") return notAllowed("GET");
        const reply = await options.runner.admin({ kind: "rooms" });
        audit("list_rooms", {}, reply.status);
        return answer(reply.status, { ...scope, ...reply.body });
      }
      const bad = checkName(subject, "room");
      if (bad) return bad;
      const room = subject as string;
      if (sub === "members" && item === undefined) {
        if (method !== "GET") return notAllowed("GET");
        const url = new URL(request.url);
        const limitText = url.searchParams.get("limit");
        const limit = limitText === null
          ? MEMBERS_PAGE.default
          : Number(limitText);
        if (
          !Number.isInteger(limit) || limit < 1 || limit > MEMBERS_PAGE.max
        ) {
          return error(
            400,
            "invalid_query",
            `limit: must be a whole number from 1 to ${MEMBERS_PAGE.max}`,
          );
        }
        const cursor = url.searchParams.get("cursor");
        const reply = await options.runner.admin({
          kind: "members",
          room,
          limit,
          ...(cursor === null || cursor === "" ? {} : { cursor }),
        });
        audit("list_members", { room }, reply.status);
        return answer(reply.status, { ...scope, ...reply.body });
      }
      if (sub === "messages" && item === undefined) {
        if (method !== "POST") return notAllowed("POST");
        // Each character may take up to 12 bytes escaped (two \uXXXX).
        const body = await readJson(
          request,
          Math.max(MAX_BODY_BYTES, options.maxContentChars * 12 + 1024),
        );
        if (body instanceof Response) return body;
        const parsed = z.object({
          content: z.string().min(1, "content: must not be empty").refine(
            (text) => [...text].length <= options.maxContentChars,
            `content: at most ${options.maxContentChars} characters`,
          ).refine(
            (text) => text.isWellFormed(),
            "content: must not hold lone surrogates",
          ),
        }).safeParse(body);
        if (!parsed.success) {
          return error(400, "invalid_body", problem(parsed.error.issues, body));
        }
        const reply = await options.runner.admin({
          kind: "say",
          room,
          content: parsed.data.content,
          id: crypto.randomUUID(),
        });
        audit("system_message", {
          room,
          chars: [...parsed.data.content].length,
          ...(typeof reply.body.seq === "number"
            ? { seq: reply.body.seq }
            : {}),
        }, reply.status);
        return fromReducer(reply);
      }
      if (sub === "messages" && item !== undefined && rest.length === 0) {
        if (method !== "DELETE") return notAllowed("DELETE");
        const match = /^[0-9]{1,15}$/.test(item)
          ? { seq: Number(item) }
          : { id: item };
        const deleted = await options.storage.deleteMessage(room, match);
        if (!deleted) {
          audit("delete_message", { room, ...match }, 404);
          return error(
            404,
            "not_found",
            `room '${room}' keeps no message ${
              "seq" in match ? `with seq ${match.seq}` : `'${item}'`
            }`,
          );
        }
        const action: AdminAction = {
          kind: "deleted",
          room,
          id: deleted.id,
          seq: deleted.seq,
        };
        const reply = await options.runner.admin(action);
        const told = await options.runner.tellCluster(action);
        audit(
          "delete_message",
          { room, id: deleted.id, seq: deleted.seq },
          200,
        );
        return answer(200, { ...reply.body, cluster_told: told });
      }
      return error(404, "not_found", "not found");
    }
    if (top === "users" && subject !== undefined) {
      const bad = checkName(subject, "username");
      if (bad) return bad;
      const username = subject;
      if (sub === undefined) {
        if (method !== "GET") return notAllowed("GET");
        const reply = await options.runner.admin({ kind: "user", username });
        audit("show_user", { username }, reply.status);
        return answer(reply.status, { ...scope, ...reply.body });
      }
      if (sub === "kick" && item === undefined) {
        if (method !== "POST") return notAllowed("POST");
        await request.body?.cancel().catch(() => {});
        const action: AdminAction = { kind: "kick", username };
        const reply = await options.runner.admin(action);
        const told = await options.runner.tellCluster(action);
        audit("kick", { username, closed: reply.body.closed }, reply.status);
        return answer(reply.status, { ...reply.body, cluster_told: told });
      }
      if (sub === "ban" && item === undefined) {
        if (method === "DELETE") {
          const lifted = await options.storage.unban(username);
          const action: AdminAction = { kind: "unban", username };
          await options.runner.admin(action);
          const told = await options.runner.tellCluster(action);
          audit("unban", { username }, lifted ? 200 : 404);
          return lifted
            ? answer(200, { username, cluster_told: told })
            : error(404, "not_found", `'${username}' is not banned`);
        }
        if (method !== "POST") return notAllowed("POST, DELETE");
        const body = await readJson(request);
        if (body instanceof Response) return body;
        const parsed = banBody.safeParse(body);
        if (!parsed.success) {
          return error(400, "invalid_body", problem(parsed.error.issues, body));
        }
        const at = now();
        const until = at + parsed.data.seconds * 1000;
        await options.storage.ban(username, until, at);
        const action: AdminAction = { kind: "ban", username, until };
        const reply = await options.runner.admin(action);
        const told = await options.runner.tellCluster(action);
        audit("ban", {
          username,
          until: new Date(until).toISOString(),
          closed: reply.body.closed,
        }, reply.status);
        return answer(reply.status, { ...reply.body, cluster_told: told });
      }
    }
  } catch (cause) {
    options.log("error", "admin request failed", {
      path,
      error: String(cause),
    });
    return answer(503, {
      error: "storage unavailable; try again",
      code: "unavailable",
    }, { "retry-after": "1" });
  }
  return error(404, "not_found", "not found");
}
