/**
 * The shape of the server's HTTP answers: JSON bodies that no cache keeps,
 * refusals as `{ "error": reason }`, and the security headers every answer
 * carries. It routes nothing and decides no status.
 *
 * @module
 */

/** Headers of every answer: no framing, no sniffing, no referrer. */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** The CSP of every answer but the page: nothing may load, nothing may frame it. */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** A JSON answer that no cache keeps. */
export function json(
  body: unknown,
  status = 200,
  headers: HeadersInit = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
      ...headers,
    },
  });
}

/**
 * An answer that no cache keeps (tokens and admin data are secrets): JSON
 * when `body` is given, else empty.
 */
export function answer(
  status: number,
  body?: unknown,
  headers: HeadersInit = {},
): Response {
  if (body === undefined) {
    return new Response(null, {
      status,
      headers: { "cache-control": "no-store", ...headers },
    });
  }
  return json(body, status, headers);
}

/** A refusal: `status` with `{ "error": reason }`. */
export function refuse(
  status: number,
  reason: string,
  headers: HeadersInit = {},
): Response {
  return json({ error: reason }, status, headers);
}

/** Adds the security headers to an answer (a 101 upgrade is left as it is). */
export function secure(response: Response): Response {
  if (response.status === 101) return response;
  const headers = response.headers;
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) {
    headers.set(name, value);
  }
  if (!headers.has("content-security-policy")) {
    headers.set("content-security-policy", API_CSP);
  }
  return response;
}
