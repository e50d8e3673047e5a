/**
 * The chat server's room-message path against a relay's, on the same real
 * WebSockets in one process: 1000 clients (a child process that only counts)
 * in rooms of 100; each round feeds `GroupChat` frames either to the real
 * runner (validation, reducer, storage, encoding, one send per member) or to
 * a relay (parse, send the received text to every member), and reads this
 * process's CPU until every socket has drained. Rounds alternate, so drift
 * in the machine's speed hits both alike.
 *
 * ```sh
 * deno task bench:send
 * ```
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import {
  benchUsername as name,
  createBenchRunner,
  enterEvent,
} from "./chat_runner.ts";

const CLIENTS = 1000;
const ROOM_SIZE = 100;
const MESSAGES = 3000;
const ROUNDS = 4;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The child: opens the clients and reads whatever comes. */
async function clients(port: number): Promise<void> {
  for (let i = 0; i < CLIENTS; i++) {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
    socket.onmessage = () => {};
    socket.onerror = () => {};
    if (i % 50 === 49) await sleep(20);
  }
}

async function measure(): Promise<void> {
  const runner = createBenchRunner();
  const sockets: WebSocket[] = [];
  /** The runner's own `onmessage` of each socket, fed directly. */
  const feed: ((event: MessageEvent) => void)[] = [];
  const opened = Promise.withResolvers<void>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    runner.attach(socket);
    const open = socket.onopen as (event: Event) => void;
    socket.onopen = (event) => {
      open(event);
      const i = sockets.length;
      sockets.push(socket);
      const onmessage = socket.onmessage as (event: MessageEvent) => void;
      feed.push(onmessage);
      onmessage(enterEvent(i, ROOM_SIZE));
      if (sockets.length === CLIENTS) opened.resolve();
    };
    return response;
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      import.meta.filename!,
      "--clients",
      String(server.addr.port),
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await opened.promise;
    await sleep(1000);
    const rooms: WebSocket[][] = [];
    for (const [i, socket] of sockets.entries()) {
      (rooms[Math.floor(i / ROOM_SIZE)] ??= []).push(socket);
    }
    const content = "x".repeat(64);
    const frame = (sender: number) =>
      `{"message_type":"GroupChat","message_body":{"sender_username":"${
        name(sender)
      }","room":"room-${
        Math.floor(sender / ROOM_SIZE)
      }","content":"${content}"}}`;
    const drained = async () => {
      while (sockets.some((socket) => socket.bufferedAmount > 0)) {
        await sleep(1);
      }
    };
    const round = async (path: "chat" | "relay") => {
      await drained();
      await sleep(100);
      const before = process.cpuUsage();
      for (let m = 0; m < MESSAGES; m++) {
        const sender = (m * 7919) % CLIENTS;
        const text = frame(sender);
        if (path === "chat") {
          feed[sender]!(new MessageEvent("message", { data: text }));
        } else {
          const { message_body: body } = JSON.parse(text);
          for (const member of rooms[Number(body.room.slice(5))]!) {
            if (member.readyState === WebSocket.OPEN) member.send(text);
          }
        }
        // Let the writes go out now and then, as a server between frames.
        if (m % 10 === 9) await sleep(0);
      }
      await drained();
      const used = process.cpuUsage(before);
      return (used.user + used.system) / (MESSAGES * ROOM_SIZE);
    };
    const results = { chat: [] as number[], relay: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      results.chat.push(await round("chat"));
      results.relay.push(await round("relay"));
    }
    for (const [path, values] of Object.entries(results)) {
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      console.log(
        `${path.padEnd(6)} ${values.map((v) => v.toFixed(2)).join(" ")}  mean ${
          mean.toFixed(2)
        } µs of CPU per delivery`,
      );
    }
  } finally {
    child.kill();
    await child.status;
    await runner.shutdown(0);
    await server.shutdown();
  }
}

const { values } = parseArgs({
  args: Deno.args,
  options: { clients: { type: "string" } },
});
if (values.clients !== undefined) await clients(Number(values.clients));
else await measure();
