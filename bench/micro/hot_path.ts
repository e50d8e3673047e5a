/**
 * The chat server's own work per message, without the network: the real
 * {@linkcode Runner}, reducer, decoder and `MemoryStorage`, driving sockets
 * that only count what they are sent. It isolates what the chat server adds
 * to a relay (validation, the reducer, storing, encoding) from what every
 * Deno WebSocket server pays (the event plumbing and the kernel's `sendto`),
 * which `deno task bench` measures together.
 *
 * ```sh
 * deno task bench:hot
 * ```
 *
 * @module
 */
import type { Runner } from "../../src/runtime/runner.ts";
import {
  benchUsername as name,
  createBenchRunner,
  enterEvent,
} from "./chat_runner.ts";

/** A socket as the runner uses it, counting sends. */
class CountingSocket extends EventTarget {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  binaryType = "arraybuffer";
  sent = 0;
  onopen: (() => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onerror: (() => void) | null = null;
  send(_data: string): void {
    this.sent++;
  }
  close(): void {
    this.readyState = WebSocket.CLOSED;
  }
}

const CLIENTS = 1000;
const ROOM_SIZE = 100;

/**
 * A runner with every client in its room. A room that opens reads its `seq`
 * from storage first (`load_seq`, an answer that comes back as an event), so
 * the set-up waits a few turns of the event loop for those answers: the
 * measure then times messages, not messages queued behind a read.
 */
async function setup(): Promise<{ runner: Runner; sockets: CountingSocket[] }> {
  const runner = createBenchRunner();
  const sockets: CountingSocket[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const socket = new CountingSocket();
    runner.attach(socket as unknown as WebSocket);
    socket.onopen!();
    socket.onmessage!(enterEvent(i, ROOM_SIZE));
    sockets.push(socket);
  }
  for (let turn = 0; turn < 5; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return { runner, sockets };
}

async function measure(
  label: string,
  frame: (i: number) => [sender: number, text: string],
  count: number,
): Promise<void> {
  const { runner, sockets } = await setup();
  for (const socket of sockets) socket.sent = 0;
  const frames = Array.from({ length: count }, (_, i) => frame(i));
  const events = frames.map(([, data]) =>
    new MessageEvent("message", { data })
  );
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    sockets[frames[i]![0]]!.onmessage!(events[i]!);
  }
  report(label, performance.now() - started, count, sockets);
  void runner.shutdown(0);
}

/**
 * What `bench/load/baseline_server.ts` does with a frame, on the same counting
 * sockets: parse it, find the room or target, send the received text.
 */
function measureRelay(
  label: string,
  frame: (i: number) => [sender: number, text: string],
  count: number,
): void {
  const sockets = Array.from({ length: CLIENTS }, () => new CountingSocket());
  const rooms = new Map<string, Set<CountingSocket>>();
  const users = new Map<string, CountingSocket>();
  for (const [i, socket] of sockets.entries()) {
    const room = `room-${Math.floor(i / ROOM_SIZE)}`;
    let members = rooms.get(room);
    if (!members) rooms.set(room, members = new Set());
    members.add(socket);
    users.set(name(i), socket);
  }
  const onFrame = (socket: CountingSocket, text: string) => {
    const frame = JSON.parse(text);
    const body = frame.message_body;
    if (frame.message_type === "GroupChat") {
      for (const member of rooms.get(body.room) ?? []) member.send(text);
    } else if (frame.message_type === "PrivateChat") {
      users.get(body.target_username)?.send(text);
      socket.send(text);
    }
  };
  const frames = Array.from({ length: count }, (_, i) => frame(i));
  const events = frames.map(([, data]) =>
    new MessageEvent("message", { data })
  );
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const socket = sockets[frames[i]![0]]!;
    onFrame(socket, events[i]!.data);
  }
  report(label, performance.now() - started, count, sockets);
}

function report(
  label: string,
  ms: number,
  count: number,
  sockets: CountingSocket[],
): void {
  const sent = sockets.reduce((sum, s) => sum + s.sent, 0);
  if (sent < count) {
    // Each message reaches its sender at least: fewer sends means the
    // messages were not handled within the timed loop (a measure of nothing).
    throw new Error(`${label}: ${sent} sends for ${count} messages`);
  }
  console.log(
    `${label.padEnd(22)} ${
      (ms * 1000 / count).toFixed(2).padStart(7)
    } µs/message  ${
      (ms * 1e6 / sent).toFixed(0).padStart(5)
    } ns/send  (${count} messages, ${sent} sends)`,
  );
}

const content = "x".repeat(64);

function privateChat(i: number): [number, string] {
  const sender = (i * 7919) % CLIENTS;
  const target = (sender + 1 + (i % (CLIENTS - 1))) % CLIENTS;
  return [
    sender,
    `{"message_type":"PrivateChat","message_body":{"sender_username":"${
      name(sender)
    }","target_username":"${name(target)}","content":"${content}"}}`,
  ];
}

function groupChat(i: number): [number, string] {
  const sender = (i * 7919) % CLIENTS;
  return [
    sender,
    `{"message_type":"GroupChat","message_body":{"sender_username":"${
      name(sender)
    }","room":"room-${
      Math.floor(sender / ROOM_SIZE)
    }","content":"${content}"}}`,
  ];
}

// Rounds alternate, so that a machine whose speed drifts hits both alike.
for (let round = 0; round < 3; round++) {
  await measure("chat PrivateChat", privateChat, 200_000);
  measureRelay("relay PrivateChat", privateChat, 200_000);
  await measure("chat GroupChat", groupChat, 100_000);
  measureRelay("relay GroupChat", groupChat, 100_000);
}
Deno.exit(0);
