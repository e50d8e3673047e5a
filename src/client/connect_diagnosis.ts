/**
 * Why a WebSocket does not open, for the terminal client: connects to the
 * server itself, sends the upgrade request by hand and names the problem (a
 * refused connection, a host not found, an HTTP refusal with its status and
 * the server's reason), and whether trying again can help.
 *
 * It does not retry, print or decide when to give up: that is
 * `terminal_client.ts`. Deno only (`Deno.connect`); not in the web bundle.
 *
 * @module
 */

/** Why a WebSocket could not be opened, as {@linkcode diagnoseConnect} finds. */
export interface ConnectProblem {
  /** One line for the user: what failed, and what to do. */
  text: string;
  /** Whether trying again cannot help (an HTTP 4xx other than 408 and 429). */
  final: boolean;
}

/** How long {@linkcode diagnoseConnect} waits for the server to answer. */
const PROBE_MS = 3000;

/**
 * Finds out why a WebSocket to `url` does not open: the WebSocket API says
 * only that it closed, so this connects again itself and sends the upgrade
 * request by hand to read the answer. Names a refused connection, a host
 * not found, and an HTTP refusal with its status and the server's reason.
 */
export async function diagnoseConnect(url: string): Promise<ConnectProblem> {
  const target = new URL(url);
  const secure = target.protocol === "wss:";
  const hostname = target.hostname.replace(/^\[|\]$/g, "");
  const port = Number(target.port) || (secure ? 443 : 80);
  const where = `${target.hostname}:${port}`;
  let conn: Deno.Conn;
  try {
    conn = secure
      ? await Deno.connectTls({ hostname, port })
      : await Deno.connect({ hostname, port });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof Deno.errors.ConnectionRefused) {
      return {
        text:
          `connection refused: nothing listens on ${where} (is the server running? is --url right?)`,
        final: false,
      };
    }
    if (
      error instanceof Deno.errors.NotFound ||
      /lookup address|not known|nodename nor servname/i.test(message)
    ) {
      return {
        text: `host not found: ${target.hostname} (is --url right?)`,
        final: false,
      };
    }
    return { text: `cannot reach ${where}: ${message}`, final: false };
  }
  const timer = setTimeout(() => conn.close(), PROBE_MS);
  try {
    const key = btoa(
      String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
    );
    await conn.write(
      new TextEncoder().encode(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          "Sec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    const answer = await readAnswer(conn);
    const status = Number(/^HTTP\/\d(?:\.\d)? (\d{3})/.exec(answer)?.[1]);
    if (!status) {
      return {
        text: `${where} does not answer as a chat server (no HTTP answer)`,
        final: false,
      };
    }
    if (status === 101) {
      return {
        text:
          "the server accepted the connection, then closed it before welcoming this client",
        final: false,
      };
    }
    const body = answer.slice(answer.indexOf("\r\n\r\n") + 4).trim();
    let reason = body.slice(0, 200);
    try {
      const error = (JSON.parse(body) as { error?: unknown }).error;
      if (typeof error === "string") reason = error;
    } catch {
      // not JSON: the text as it came
    }
    return {
      text: `the server refused with HTTP ${status}${
        reason === "" ? "" : `: ${reason}`
      }`,
      final: status >= 400 && status < 500 && status !== 408 && status !== 429,
    };
  } catch (error) {
    return {
      text: `${where} did not answer the upgrade: ${
        error instanceof Error ? error.message : String(error)
      }`,
      final: false,
    };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
}

/** The head and body of an HTTP answer, up to 8 KB, until the body is whole. */
async function readAnswer(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(4096);
  for (;;) {
    const read = await conn.read(buffer).catch(() => null);
    if (read === null) break;
    chunks.push(buffer.slice(0, read));
    size += read;
    const text = new TextDecoder().decode(
      new Uint8Array(chunks.flatMap((chunk) => [...chunk])),
    );
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) {
      if (/^HTTP\/\S+ 101/.test(text)) return text;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1]);
      if (Number.isFinite(length) && size >= end + 4 + length) return text;
    }
    if (size >= 8192) return text;
  }
  return new TextDecoder().decode(
    new Uint8Array(chunks.flatMap((chunk) => [...chunk])),
  );
}
