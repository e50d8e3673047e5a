/**
 * `deno task bench:oversized`: what oversized frames from clients that never
 * sign in make the server process hold. It starts a server (`main.ts`, or
 * the one `--server` names, e.g. an older build), opens `--connections`
 * raw WebSockets, each from its own address (`X-Forwarded-For` through the
 * trusted proxy 127.0.0.1, since a client here cannot pick its source
 * address) or all from one, and sends one `--mb` MB text frame on each.
 * It prints the server's resident memory before, at its peak (VmHWM) and a
 * few seconds after, and how many upgrades were taken. It is a measurement,
 * not a test: nothing is asserted.
 *
 * ```sh
 * deno task bench:oversized --connections 10 --mb 50
 * deno task bench:oversized --connections 100 --spread --mb 50
 * deno task bench:oversized --connections 100 --spread --mb 50 --token-at-upgrade
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { rssBytes, statusBytes } from "../load/proc.ts";

const { values } = parseArgs({
  options: {
    server: {
      type: "string",
      default: new URL("../../main.ts", import.meta.url).pathname,
    },
    connections: { type: "string", default: "10" },
    mb: { type: "string", default: "50" },
    spread: { type: "boolean", default: false },
    "token-at-upgrade": { type: "boolean", default: false },
    "settle-ms": { type: "string", default: "4000" },
  },
});

const connections = Number(values.connections);
const bytes = Number(values.mb) * 1_000_000;

/** Peak resident memory of a process (`VmHWM`), in bytes. */
function peakBytes(pid: number): number | null {
  return statusBytes(pid, "VmHWM");
}

/** One masked text frame of `size` bytes, built once and sent on every socket. */
function maskedFrame(size: number): Uint8Array {
  const frame = new Uint8Array(14 + size);
  frame[0] = 0x81;
  frame[1] = 0x80 | 127;
  new DataView(frame.buffer).setBigUint64(2, BigInt(size));
  // Mask 0: the payload is sent as is ("a" repeated).
  frame.fill(0x61, 14);
  return frame;
}

async function upgrade(
  port: number,
  address: string | null,
): Promise<{ conn: Deno.TcpConn; status: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = [
    "GET /ws HTTP/1.1",
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...(address ? [`X-Forwarded-For: ${address}`] : []),
    "",
    "",
  ];
  await conn.write(new TextEncoder().encode(lines.join("\r\n")));
  const buffer = new Uint8Array(4096);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return { conn, status: Number(head.split(" ")[1]) };
}

const dir = await Deno.makeTempDir();
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", values.server as string],
  cwd: dir,
  env: {
    PORT: "0",
    DATABASE_PATH: ":memory:",
    LOG_LEVEL: "info",
    TRUSTED_PROXIES: "127.0.0.1",
    MAX_CONNECTIONS_PER_IP: "0",
    ...(values["token-at-upgrade"]
      ? { AUTH_ENABLED: "true", TOKEN_AT_UPGRADE: "true" }
      : {}),
  },
  stdout: "null",
  stderr: "piped",
}).spawn();
const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
let port = 0;
let pending = "";
while (port === 0) {
  const { value, done } = await reader.read();
  if (done) throw new Error("the server ended before listening");
  pending += value;
  const match = /"url":"http:\/\/[^:]+:(\d+)\//.exec(pending);
  if (match) port = Number(match[1]);
}
// Keep draining the server's log so it never blocks on a full pipe.
const draining = (async () => {
  while (!(await reader.read()).done) { /* discard */ }
})();

await new Promise((resolve) => setTimeout(resolve, 1000));
const before = rssBytes(child.pid) ?? 0;

const frame = maskedFrame(bytes);
const peers = await Promise.all(
  Array.from(
    { length: connections },
    (_, i) =>
      upgrade(
        port,
        values.spread
          ? `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
          : null,
      ),
  ),
);
const taken = peers.filter((peer) => peer.status === 101);
let peak = before;
const sampler = setInterval(() => {
  peak = Math.max(peak, rssBytes(child.pid) ?? 0);
}, 20);
await Promise.all(taken.map(async ({ conn }) => {
  try {
    // write() may take part of the buffer: send it all.
    for (let at = 0; at < frame.length;) {
      at += await conn.write(frame.subarray(at));
    }
  } catch {
    // Closed by the server (1009) before the whole frame was taken.
  }
}));
await new Promise((resolve) => setTimeout(resolve, 1000));
clearInterval(sampler);
peak = Math.max(peak, peakBytes(child.pid) ?? 0);
for (const { conn } of peers) {
  try {
    conn.close();
  } catch {
    // already closed
  }
}
await new Promise((resolve) =>
  setTimeout(resolve, Number(values["settle-ms"]))
);
const after = rssBytes(child.pid) ?? 0;
child.kill("SIGTERM");
await child.status;
await draining;
await Deno.remove(dir, { recursive: true });

const mb = (n: number) => Math.round(n / 1_048_576);
console.log(JSON.stringify({
  server: values.server,
  connections,
  spread: values.spread,
  token_at_upgrade: values["token-at-upgrade"],
  frame_mb: Number(values.mb),
  upgrades_taken: taken.length,
  statuses: [...new Set(peers.map((peer) => peer.status))],
  rss_before_mib: mb(before),
  rss_peak_mib: mb(peak),
  rss_after_mib: mb(after),
}));
