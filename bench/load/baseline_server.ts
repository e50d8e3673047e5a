/**
 * The benchmark's baseline: the least a Deno WebSocket server can do to
 * carry this chat. On a frame it parses the JSON only to find
 * `message_type` and the room or target, keeps room sets and a username map,
 * and forwards the very text it received: a `GroupChat` to every member of
 * the room (the sender included, as the chat server does), a `PrivateChat`
 * to the target and back to the sender (the chat server sends it to both).
 * It answers `Enter` with a `Presence`-like frame so that the load generator
 * drives both servers with one code path. No validation, no ids, no
 * history, no limits.
 *
 * With `--framed` (the benchmark's `baseline-framed`, a diagnostic) it sends,
 * instead of the text it received, the frame the chat server would send,
 * built once per message: a `GroupChat` with `id`, a per-room `seq`, `room`
 * and `timestamp`, a `PrivateChat` with `id` and `timestamp`, in the field
 * order of `StoredGroupChat` and `StoredPrivateChat` (`src/wire/protocol.ts`).
 * Still no validation, no storage, no `Ack`.
 *
 * ```sh
 * deno run --allow-net bench/load/baseline_server.ts --port 0
 * deno run --allow-net bench/load/baseline_server.ts --port 0 --framed
 * ```
 *
 * It logs one JSON line `{"msg":"listening","port":N}` on stderr.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** What one connection holds. */
interface Peer {
  username: string | null;
  rooms: Set<string>;
}

/** How the baseline runs. */
export interface BaselineOptions {
  /** Send the chat server's frames instead of the text received (default `false`). */
  framed?: boolean;
}

/** Starts the baseline on `hostname:port`; resolves once it listens. */
export function startBaseline(
  hostname: string,
  port: number,
  options: BaselineOptions = {},
): Promise<{ port: number; server: Deno.HttpServer }> {
  const framed = options.framed ?? false;
  const rooms = new Map<string, Set<WebSocket>>();
  const users = new Map<string, WebSocket>();
  const peers = new Map<WebSocket, Peer>();
  /** `--framed`: the last `seq` of each room, as the chat server counts it. */
  const seqs = new Map<string, number>();

  function leaveAll(socket: WebSocket): void {
    const peer = peers.get(socket);
    if (!peer) return;
    for (const name of peer.rooms) {
      const room = rooms.get(name);
      room?.delete(socket);
      if (room?.size === 0) rooms.delete(name);
    }
    if (peer.username !== null && users.get(peer.username) === socket) {
      users.delete(peer.username);
    }
    peers.delete(socket);
  }

  function onFrame(socket: WebSocket, text: string): void {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const body = frame?.message_body ?? {};
    const peer = peers.get(socket);
    if (!peer) return;
    switch (frame?.message_type) {
      case "Enter": {
        const name = String(body.room ?? "general");
        if (peer.username === null) {
          peer.username = String(body.sender_username);
          users.set(peer.username, socket);
        }
        let room = rooms.get(name);
        if (!room) rooms.set(name, room = new Set());
        room.add(socket);
        peer.rooms.add(name);
        socket.send(
          `{"message_type":"Presence","message_body":{"room":${
            JSON.stringify(name)
          },"members":[]}}`,
        );
        break;
      }
      case "GroupChat": {
        const name = String(body.room ?? "general");
        const room = rooms.get(name);
        if (!room) return;
        let data = text;
        if (framed) {
          const seq = (seqs.get(name) ?? 0) + 1;
          seqs.set(name, seq);
          data = JSON.stringify({
            message_type: "GroupChat",
            message_body: {
              id: crypto.randomUUID(),
              seq,
              room: name,
              sender_username: String(body.sender_username),
              content: String(body.content),
              timestamp: Date.now(),
            },
          });
        }
        for (const member of room) {
          if (member.readyState === WebSocket.OPEN) member.send(data);
        }
        break;
      }
      case "PrivateChat": {
        const targetName = String(body.target_username);
        const target = users.get(targetName);
        const data = framed
          ? JSON.stringify({
            message_type: "PrivateChat",
            message_body: {
              id: crypto.randomUUID(),
              sender_username: String(body.sender_username),
              target_username: targetName,
              content: String(body.content),
              timestamp: Date.now(),
            },
          })
          : text;
        if (target && target.readyState === WebSocket.OPEN) target.send(data);
        if (target !== socket) socket.send(data);
        break;
      }
    }
  }

  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname,
    port,
    onListen: (addr) => listening.resolve(addr.port),
  }, (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("baseline: WebSocket only\n", { status: 426 });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    peers.set(socket, { username: null, rooms: new Set() });
    socket.onmessage = (event) => {
      if (typeof event.data === "string") onFrame(socket, event.data);
    };
    socket.onclose = () => leaveAll(socket);
    socket.onerror = () => {};
    return response;
  });
  return listening.promise.then((port) => ({ port, server }));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8090" },
      framed: { type: "boolean", default: false },
    },
  });
  const { port } = await startBaseline(values.host, Number(values.port), {
    framed: values.framed,
  });
  console.error(JSON.stringify({ msg: "listening", port }));
  // Nothing to flush: stop at once, open sockets and all.
  const stop = () => Deno.exit(0);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
