/**
 * `POST /api/tokens` and `DELETE /api/tokens/<token>`, guarded by
 * `ADMIN_TOKEN`. Without `ADMIN_TOKEN` the API does not exist (404).
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { z } from "zod";
import {
  isSingleScript,
  NAME_PATTERN,
  NAME_RULE,
  SCRIPT_RULE,
} from "../wire/names.ts";
import { answer } from "./respond.ts";
import { TokenRefused, type TokenService } from "./token_service.ts";

/** What the token API needs of the server. */
export interface TokenApiOptions {
  adminToken: string | undefined;
  /** Lifetime of a token whose request names none. */
  ttlSeconds: number;
  tokens: Pick<TokenService, "issue" | "revoke">;
}

/** The largest body `POST /api/tokens` reads; a larger one gets 413. */
export const MAX_BODY_BYTES = 16 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const createBody = z.object({
  username: z.string().regex(NAME_PATTERN, `username: ${NAME_RULE}`).refine(
    isSingleScript,
    `username: ${SCRIPT_RULE}`,
  ),
  ttl_seconds: z.int("ttl_seconds: must be a whole number").min(
    1,
    "ttl_seconds: must be at least 1",
  ).max(10 * 365 * 86400, "ttl_seconds: must be at most ten years")
    .optional(),
});

/** SHA-256 of `text`: equal-length values to compare in constant time. */
export async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
}

/** Compares the bearer secret in constant time (digests have equal length). */
export async function authorized(
  request: Request,
  adminToken: string,
): Promise<boolean> {
  const header = request.headers.get("authorization") ?? "";
  const match = /^Bearer (.+)$/i.exec(header);
  if (!match) return false;
  const [given, expected] = await Promise.all([
    digest(match[1] as string),
    digest(adminToken),
  ]);
  return timingSafeEqual(given, expected);
}

/**
 * The body as text, or `null` as soon as it passes `limit` bytes: a declared
 * `Content-Length` over the limit is refused unread, and a chunked body is
 * counted while it streams, so no more than `limit` (plus one chunk) is held.
 */
export async function readLimited(
  request: Request,
  limit: number,
): Promise<string | null> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) {
    await request.body?.cancel().catch(() => {});
    return null;
  }
  if (request.body === null) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

/** Decodes `%XX`; a malformed escape stays as it is (and is no UUID: 400). */
export function decodePathPart(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Answers a request under `/api/tokens`. */
export async function handleTokenApi(
  request: Request,
  path: string,
  options: TokenApiOptions,
): Promise<Response> {
  if (options.adminToken === undefined) {
    return answer(404, { error: "not found" });
  }
  const token = path.startsWith("/api/tokens/")
    ? decodePathPart(path.slice("/api/tokens/".length))
    : undefined;
  if (path !== "/api/tokens" && token === undefined) {
    return answer(404, { error: "not found" });
  }
  if (!(await authorized(request, options.adminToken))) {
    return answer(401, {
      error: "Authorization: Bearer <ADMIN_TOKEN> required",
    }, {
      "www-authenticate": 'Bearer realm="chat"',
    });
  }
  if (token === undefined) {
    if (request.method !== "POST") {
      return answer(405, { error: "method not allowed" }, { allow: "POST" });
    }
    const type = request.headers.get("content-type") ?? "";
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      return answer(415, {
        error: "Content-Type: must be application/json",
      }, { accept: "application/json" });
    }
    const text = await readLimited(request, MAX_BODY_BYTES);
    if (text === null) {
      return answer(413, {
        error: `body: must be at most ${MAX_BODY_BYTES} bytes`,
      });
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return answer(400, { error: "body: must be a JSON object" });
    }
    const parsed = createBody.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join(".") ?? "";
      // zod's own messages ("Invalid input: ...") name no field: say which,
      // and whether it is missing or of the wrong type.
      const reason = !issue || issue.path.length === 0
        ? "body: must be a JSON object"
        : issue.message.startsWith(`${field}:`)
        ? issue.message
        : (body as Record<string, unknown>)[field] === undefined
        ? `${field}: required`
        : `${field}: must be a ${
          "expected" in issue ? issue.expected : "valid value"
        }`;
      return answer(400, { error: reason });
    }
    try {
      const issued = await options.tokens.issue(
        parsed.data.username,
        parsed.data.ttl_seconds ?? options.ttlSeconds,
      );
      return answer(201, issued);
    } catch (error) {
      if (error instanceof TokenRefused) {
        return answer(error.code === "banned" ? 403 : 400, {
          error: error.message,
          code: error.code,
        });
      }
      return unavailable();
    }
  }
  if (request.method !== "DELETE") {
    return answer(405, { error: "method not allowed" }, { allow: "DELETE" });
  }
  if (!UUID.test(token)) return answer(400, { error: "token: must be a UUID" });
  let revoked: boolean;
  try {
    revoked = await options.tokens.revoke(token);
  } catch {
    return unavailable();
  }
  return revoked ? answer(204) : answer(404, { error: "token not found" });
}

/** The token store cannot be reached (Redis away in a cluster): try again. */
function unavailable(): Response {
  return answer(503, { error: "token store unavailable; try again" }, {
    "retry-after": "1",
  });
}
