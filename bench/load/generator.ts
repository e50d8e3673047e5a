/**
 * A load generator process of the benchmark. `bench/load/cli.ts` starts
 * several, each with its share of the clients, and drives them with the
 * commands of `bench/load/control.ts` on stdin; each answers on stdout, one
 * JSON line per reply. It uses Deno's own `WebSocket` client. It measures
 * only what its clients see (sends, receipts, latency, order, closes); the
 * servers' CPU and memory are `measure.ts`'s.
 *
 * A message's `content` carries its run, its sender, the sender's count and
 * the time it was sent (`performance.timeOrigin + performance.now()`), padded
 * to the content size: `#step|sender|n|time|.....`. All members of a room,
 * and all targets of a client's `PrivateChat`, live in the same generator, so
 * sender and receiver read one clock.
 *
 * A client may ask for batched delivery (`?batch=1`): a `Batch` frame holds
 * several messages, each read as if it had come alone.
 *
 * Why this file is long: it is one process's whole
 * program, and its clients, the tally of the current run and the command
 * loop share that process's state; split into modules, each would reach
 * into the others'.
 *
 * @module
 */
import type {
  BroadcastCommand,
  ClientSpec,
  Command,
  ConnectCommand,
  ConnectReply,
  Reply,
  RunCommand,
  RunReply,
  WindowReport,
} from "./control.ts";
import { Histogram } from "./histogram.ts";
import { cpuSeconds } from "./proc.ts";

/** Milliseconds since the epoch, with sub-millisecond precision. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One client and what the current run counts for it. */
interface Client {
  spec: ClientSpec;
  socket: WebSocket | null;
  open: boolean;
  /** Index of its room in {@linkcode rooms}. */
  room: number;
  /** Count of messages it sent, over all runs. */
  n: number;
  /** Deliveries it received in the current run. */
  received: number;
  /** Messages sent to it (private) in the current run. */
  due: number;
  /** Precomputed start of its frames, up to the content. */
  groupPrefix: string;
  privatePrefix: string;
}

/** What a run counts while it goes. */
interface Tally {
  step: number;
  mode: "group" | "private";
  start: number;
  measureFrom: number;
  windowMs: number;
  hist: Histogram;
  windows: { sent: number; received: number; hist: Histogram }[];
  receivedByWindow: number[];
  received: number;
  echoes: number;
  errors: number;
  stale: number;
  outOfOrder: number;
  duplicates: number;
  lastReceiptAt: number;
  /** Last `n` seen per (receiver, sender), when order is checked. */
  order: Int32Array | null;
  closes: Record<string, number>;
}

const clients: Client[] = [];
const rooms: { name: string; members: number[]; open: number; sent: number }[] =
  [];
let tally: Tally | null = null;
let pad = "";
/** Frames and characters every client received, all together. */
let framesIn = 0;
let bytesIn = 0;

function emptyTally(step: number, mode: "group" | "private"): Tally {
  return {
    step,
    mode,
    start: now(),
    measureFrom: 0,
    windowMs: 0,
    hist: new Histogram(),
    windows: [],
    receivedByWindow: [],
    received: 0,
    echoes: 0,
    errors: 0,
    stale: 0,
    outOfOrder: 0,
    duplicates: 0,
    lastReceiptAt: now(),
    order: null,
    closes: {},
  };
}

/** The hot path: one frame for client `index` (a `Batch`: each message in it). */
function onFrame(index: number, data: unknown): void {
  if (typeof data !== "string") return;
  framesIn++;
  bytesIn += data.length;
  const t = tally;
  let at = data.indexOf('"#');
  if (at < 0) {
    if (t && data.startsWith('{"message_type":"Error"')) t.errors++;
    return;
  }
  if (!t) return;
  while (at >= 0) {
    onMessage(t, index, data, at);
    at = data.indexOf('"#', at + 2);
  }
}

/** One message whose content starts at `at` in `data`. */
function onMessage(t: Tally, index: number, data: string, at: number): void {
  const a = data.indexOf("|", at + 2);
  const step = Number(data.slice(at + 2, a));
  if (step !== t.step) {
    t.stale++;
    return;
  }
  const b = data.indexOf("|", a + 1);
  const sender = Number(data.slice(a + 1, b));
  const c = data.indexOf("|", b + 1);
  const n = Number(data.slice(b + 1, c));
  const d = data.indexOf("|", c + 1);
  const sentAt = Number(data.slice(c + 1, d));
  const arrived = now();
  if (t.mode === "private" && sender === index) {
    t.echoes++;
    return;
  }
  t.received++;
  t.lastReceiptAt = arrived;
  const client = clients[index]!;
  client.received++;
  if (t.order) {
    const key = index * clients.length + sender;
    const last = t.order[key]!;
    if (n === last) t.duplicates++;
    else if (n < last) t.outOfOrder++;
    else t.order[key] = n;
  }
  const latencyUs = (arrived - sentAt) * 1000;
  if (sentAt >= t.measureFrom) t.hist.record(latencyUs);
  if (t.windowMs > 0) {
    const w = t.windows[Math.floor((sentAt - t.start) / t.windowMs)];
    if (w) {
      w.received++;
      w.hist.record(latencyUs);
    }
    const r = Math.floor((arrived - t.start) / t.windowMs);
    t.receivedByWindow[r] = (t.receivedByWindow[r] ?? 0) + 1;
  }
}

function content(step: number, sender: number, n: number, chars: number) {
  const head = `#${step}|${sender}|${n}|${now().toFixed(3)}|`;
  if (pad.length < chars) pad = ".".repeat(chars);
  return head.length >= chars ? head : head + pad.slice(0, chars - head.length);
}

function connectOne(
  index: number,
  url: string,
  client: Deno.HttpClient | undefined,
  timeoutMs: number,
): Promise<string | null> {
  const entry = clients[index]!;
  const { promise, resolve } = Promise.withResolvers<string | null>();
  const query = [
    ...(entry.spec.token
      ? [`token=${encodeURIComponent(entry.spec.token)}`]
      : []),
    ...(entry.spec.batch ? ["batch=1"] : []),
  ];
  const target = query.length > 0 ? `${url}?${query.join("&")}` : url;
  let socket: WebSocket;
  try {
    socket = client ? new WebSocket(target, { client }) : new WebSocket(target);
  } catch (error) {
    return Promise.resolve(String(error));
  }
  entry.socket = socket;
  const timer = setTimeout(() => {
    resolve("timed out");
    try {
      socket.close();
    } catch { /* closing anyway */ }
  }, timeoutMs);
  socket.onopen = () => {
    socket.send(JSON.stringify({
      message_type: "Enter",
      message_body: { sender_username: entry.spec.name, room: entry.spec.room },
    }));
  };
  socket.onmessage = (event) => {
    const data = event.data;
    if (typeof data !== "string") return;
    framesIn++;
    bytesIn += data.length;
    if (data.startsWith('{"message_type":"Presence"')) {
      clearTimeout(timer);
      entry.open = true;
      rooms[entry.room]!.open++;
      socket.onmessage = (e) => onFrame(index, e.data);
      resolve(null);
    } else if (data.startsWith('{"message_type":"Error"')) {
      resolve(`Error frame: ${data.slice(0, 200)}`);
    }
  };
  socket.onerror = (event) => {
    const message = (event as ErrorEvent).message ?? "error";
    resolve(message);
  };
  socket.onclose = (event) => {
    clearTimeout(timer);
    if (entry.open) {
      entry.open = false;
      rooms[entry.room]!.open--;
      if (tally) {
        const code = String(event.code);
        tally.closes[code] = (tally.closes[code] ?? 0) + 1;
      }
    }
    resolve(`closed ${event.code} ${event.reason}`);
  };
  return promise;
}

async function connect(command: ConnectCommand): Promise<ConnectReply> {
  const started = performance.now();
  const httpClients = command.localAddresses.map((localAddress) =>
    Deno.createHttpClient({ localAddress })
  );
  const roomIndex = new Map<string, number>();
  for (const spec of command.clients) {
    let room = roomIndex.get(spec.room);
    if (room === undefined) {
      room = rooms.length;
      roomIndex.set(spec.room, room);
      rooms.push({ name: spec.room, members: [], open: 0, sent: 0 });
    }
    rooms[room]!.members.push(clients.length);
    const tail = JSON.stringify(spec.name);
    clients.push({
      spec,
      socket: null,
      open: false,
      room,
      n: 0,
      received: 0,
      due: 0,
      groupPrefix:
        `{"message_type":"GroupChat","message_body":{"sender_username":${tail},"room":${
          JSON.stringify(spec.room)
        },"content":"`,
      privatePrefix:
        `{"message_type":"PrivateChat","message_body":{"sender_username":${tail},"target_username":"`,
    });
  }
  let next = 0;
  let failed = 0;
  let refused = 0;
  let firstError: string | undefined;
  const retry = command.retry;
  const one = async (index: number) => {
    const http = httpClients.length > 0
      ? httpClients[index % httpClients.length]
      : undefined;
    const attempts = retry?.attempts ?? 1;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const error = await connectOne(
        index,
        clients[index]!.spec.url ?? command.url,
        http,
        command.timeoutMs,
      );
      if (error === null) return;
      if (!retry || attempt === attempts - 1) {
        failed++;
        firstError ??= error;
        return;
      }
      refused++;
      const delay = Math.min(retry.maxMs, retry.baseMs * 2 ** attempt);
      await sleep(delay * (0.5 + Math.random() / 2));
    }
  };
  const first = clients.length - command.clients.length;
  next = first;
  if (command.burst) {
    for (let from = first; from < clients.length; from += command.burst) {
      const to = Math.min(clients.length, from + command.burst);
      const burst: Promise<void>[] = [];
      for (let index = from; index < to; index++) burst.push(one(index));
      await Promise.all(burst);
    }
  } else {
    const worker = async () => {
      while (next < clients.length) await one(next++);
    };
    await Promise.all(
      Array.from({ length: Math.max(1, command.concurrency) }, worker),
    );
  }
  return {
    id: command.id,
    connected: clients.filter((c) => c.open).length,
    failed,
    ...(firstError ? { firstError } : {}),
    ms: Math.round(performance.now() - started),
    ...(retry ? { refused } : {}),
  };
}

async function waitUntil(epochMs: number): Promise<void> {
  const wait = epochMs - Date.now();
  if (wait > 0) await sleep(wait);
}

async function run(command: RunCommand): Promise<RunReply> {
  const t = emptyTally(command.step, command.mode);
  for (const client of clients) {
    client.received = 0;
    client.due = 0;
  }
  for (const room of rooms) room.sent = 0;
  if (command.checkOrder) {
    t.order = new Int32Array(clients.length * clients.length).fill(-1);
  }
  const totalMs = command.phases.reduce((sum, p) => sum + p.ms, 0);
  if (command.windowMs > 0) {
    const count = Math.ceil(totalMs / command.windowMs) + 1;
    for (let i = 0; i < count; i++) {
      t.windows.push({ sent: 0, received: 0, hist: new Histogram() });
    }
  }
  t.windowMs = command.windowMs;
  await waitUntil(command.startAt);
  tally = t;
  const cpuAtStart = cpuSeconds("self") ?? 0;
  t.start = now();
  t.measureFrom = t.start + command.warmupMs;
  const order = clients.map((_, i) => i)
    .slice(0, command.senders ?? clients.length)
    .sort(() => Math.random() - 0.5);
  let cursor = 0;
  let sent = 0;
  let expected = 0;
  let maxLagMs = 0;

  const sendOne = () => {
    let sender: Client | undefined;
    let index = -1;
    for (let tries = 0; tries < order.length; tries++) {
      index = order[cursor]!;
      cursor = (cursor + 1) % order.length;
      if (clients[index]!.open) {
        sender = clients[index];
        break;
      }
    }
    if (!sender?.socket) return false;
    sender.n++;
    const text = content(command.step, index, sender.n, command.contentChars);
    if (command.mode === "group") {
      const room = rooms[sender.room]!;
      expected += room.open;
      room.sent++;
      sender.socket.send(sender.groupPrefix + text + '"}}');
    } else {
      const members = clients;
      let target: Client | undefined;
      for (let tries = 0; tries < 8; tries++) {
        const candidate = members[Math.floor(Math.random() * members.length)]!;
        if (candidate !== sender && candidate.open) {
          target = candidate;
          break;
        }
      }
      if (!target) return true;
      expected++;
      target.due++;
      sender.socket.send(
        `${sender.privatePrefix}${target.spec.name}","content":"${text}"}}`,
      );
    }
    sent++;
    if (t.windowMs > 0) {
      const w = t.windows[Math.floor((now() - t.start) / t.windowMs)];
      if (w) w.sent++;
    }
    return true;
  };

  let phaseStart = t.start;
  for (const phase of command.phases) {
    let phaseSent = 0;
    const phaseEnd = phaseStart + phase.ms;
    while (true) {
      const at = now();
      const elapsed = Math.min(at, phaseEnd) - phaseStart;
      const due = Math.floor(phase.rate * elapsed / 1000) - phaseSent;
      if (due > 0 && phase.rate > 0) {
        maxLagMs = Math.max(maxLagMs, due / phase.rate * 1000);
        for (let i = 0; i < due; i++) {
          if (!sendOne()) break;
          phaseSent++;
        }
        // Sending counts as done even when no client is left.
        phaseSent = Math.max(
          phaseSent,
          Math.floor(phase.rate * elapsed / 1000),
        );
      }
      if (at >= phaseEnd) break;
      await sleep(1);
    }
    phaseStart = phaseEnd;
  }
  const sendEnd = now();
  // Waiting for stragglers: done when all arrived, when nothing came for
  // quietMs, or after drainMs.
  while (true) {
    const at = now();
    if (!command.untilQuiet && t.received >= expected) break;
    if (at - t.lastReceiptAt > command.quietMs && at - sendEnd > 100) break;
    if (at - sendEnd > command.drainMs) break;
    await sleep(20);
  }
  const end = now();
  const cpuAtEnd = cpuSeconds("self") ?? cpuAtStart;
  tally = null;
  let expectedAlive = 0;
  let receivedAlive = 0;
  for (const client of clients) {
    if (!client.open) continue;
    receivedAlive += client.received;
    expectedAlive += command.mode === "group"
      ? rooms[client.room]!.sent
      : client.due;
  }
  const windows: WindowReport[] = t.windows.map((w) => ({
    sent: w.sent,
    received: w.received,
    hist: w.hist.toSparse(),
  }));
  return {
    id: command.id,
    sent,
    expected,
    received: t.received,
    expectedAlive,
    receivedAlive,
    echoes: t.echoes,
    errors: t.errors,
    stale: t.stale,
    outOfOrder: t.outOfOrder,
    duplicates: t.duplicates,
    hist: t.hist.toSparse(),
    windows,
    receivedByWindow: Array.from(t.receivedByWindow, (v) => v ?? 0),
    alive: clients.filter((c) => c.open).length,
    closes: t.closes,
    maxLagMs: Math.round(maxLagMs * 10) / 10,
    sendMs: Math.round(sendEnd - t.start),
    drainMs: Math.round(end - sendEnd),
    cpuSeconds: cpuAtEnd - cpuAtStart,
    wallSeconds: (end - t.start) / 1000,
  };
}

async function broadcast(command: BroadcastCommand): Promise<RunReply> {
  const t = emptyTally(command.step, "group");
  for (const client of clients) client.received = 0;
  const alive = clients.filter((c) => c.open).length;
  await waitUntil(command.startAt);
  tally = t;
  const cpuAtStart = cpuSeconds("self") ?? 0;
  t.start = now();
  t.measureFrom = 0;
  let sent = 0;
  const sender = clients[command.sender];
  if (command.sender >= 0 && sender?.socket && sender.open) {
    sender.n++;
    const text = content(
      command.step,
      command.sender,
      sender.n,
      command.contentChars,
    );
    sender.socket.send(sender.groupPrefix + text + '"}}');
    sent = 1;
  }
  while (t.received < alive && now() - t.start < command.timeoutMs) {
    await sleep(10);
  }
  const end = now();
  tally = null;
  const receivedAlive = clients.reduce(
    (sum, c) => sum + (c.open ? Math.min(1, c.received) : 0),
    0,
  );
  return {
    id: command.id,
    sent,
    expected: alive,
    received: t.received,
    expectedAlive: clients.filter((c) => c.open).length,
    receivedAlive,
    echoes: 0,
    errors: t.errors,
    stale: t.stale,
    outOfOrder: 0,
    duplicates: t.duplicates,
    hist: t.hist.toSparse(),
    windows: [],
    receivedByWindow: [],
    alive: clients.filter((c) => c.open).length,
    closes: t.closes,
    maxLagMs: 0,
    sendMs: 0,
    drainMs: Math.round(end - t.start),
    cpuSeconds: (cpuSeconds("self") ?? cpuAtStart) - cpuAtStart,
    wallSeconds: (end - t.start) / 1000,
  };
}

async function closeAll(): Promise<void> {
  for (const client of clients) {
    try {
      client.socket?.close(1000, "bench done");
    } catch { /* already closed */ }
  }
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline && clients.some((c) => c.open)) await sleep(50);
}

const encoder = new TextEncoder();

function reply(message: Reply): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(message) + "\n"));
}

async function handle(command: Command): Promise<void> {
  try {
    switch (command.cmd) {
      case "connect":
        reply(await connect(command));
        break;
      case "run":
        reply(await run(command));
        break;
      case "broadcast":
        reply(await broadcast(command));
        break;
      case "stats":
        reply({
          id: command.id,
          frames: framesIn,
          bytes: bytesIn,
          alive: clients.filter((c) => c.open).length,
        });
        break;
      case "close":
        await closeAll();
        reply({ id: command.id, closed: true });
        Deno.exit(0);
    }
  } catch (error) {
    reply({ id: command.id, error: String(error) });
  }
}

if (import.meta.main) {
  let buffered = "";
  for await (
    const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())
  ) {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) void handle(JSON.parse(line) as Command);
    }
  }
  // The orchestrator went away: stop.
  await closeAll();
  Deno.exit(0);
}
