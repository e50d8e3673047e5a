/**
 * A Jepsen-style fault-injection run against a real cluster: `main.ts`
 * nodes as subprocesses, each talking to a real `redis-server` through a
 * {@linkcode FaultProxy}; clients on real WebSockets that send `GroupChat`s
 * with unique ids, resend with the same id whenever the outcome is unknown
 * (an `unavailable` error, a timeout, a dropped connection), reconnect to
 * any live node with `since`, and record every `Ack` and every frame; a
 * seeded nemesis that kills (`-9`) and pauses (`SIGSTOP`/`SIGCONT`) nodes
 * and Redis, and holds up or cuts a node's link to Redis. After the faults
 * everything is healed, the clients finish their sends, and
 * {@linkcode check} compares what they saw with the rooms' history in Redis.
 *
 * Checked: no acknowledged message lost (its `id` and `seq` in history); no
 * `seq` that history holds skipped on a connection; no duplicate `seq` on a
 * connection, and `seq`s in increasing order; `since: N` replays nothing at
 * or below N; no message stored twice (two `seq`s for one client id); a
 * resend's `Ack` equals the first one's; every connection open at the end
 * got every message.
 *
 * No timing is asserted: waits only bound how long the run may take.
 *
 * `deno task chaos --seeds 5 --duration 30` runs it from the command line
 * (`--seed N` for one seed, `--nodes`, `--clients`); `tests/server/chaos_test.ts`
 * runs a short seeded form in `deno task test`. The nemesis draws from the
 * seed's own stream, so a seed's faults are the same on every run (their
 * timing and the clients' traffic are not).
 *
 * One file of some 670 lines: the nemesis, the clients and the checker
 * share the run's record types and are read together as one experiment;
 * the checker's own table tests are in `tests/server/chaos_test.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type LocalRedis, startLocalRedis } from "../../tools/local_redis.ts";
import { connectRedis } from "../../src/redis/connection.ts";
import { KEYS } from "../../src/redis/keys.ts";
import type { StoredGroupChat } from "../../src/wire/protocol.ts";
import { type NodeProcess, spawnNode } from "./cluster_helpers.ts";
import { FaultProxy } from "./fault_proxy.ts";

/** Options of {@linkcode runChaos}. */
export interface ChaosOptions {
  seed: number;
  /** How long the nemesis injects faults. */
  durationMs: number;
  nodes: number;
  clients: number;
  rooms: readonly string[];
  /** Progress lines; nothing by default. */
  log?: (line: string) => void;
}

/** What one connection of a client received, in order. */
export interface ConnectionLog {
  client: string;
  /** Per room: the `since` it entered with. */
  since: Map<string, number>;
  /** Per room: the `seq`s it got, `History` replays and live frames, in order. */
  seqs: Map<string, number[]>;
  /** Per room: the first seq of a `History` that was not complete, if any. */
  incompleteFrom: Map<string, number>;
  /** Open at the end of the run, after healing (its tail is checked too). */
  openAtEnd: boolean;
}

/** One `Ack` a client got for a `GroupChat`. */
export interface AckLog {
  client: string;
  room: string;
  /** The client's id (also in the content). */
  ref: string;
  id: string;
  seq: number;
}

/** What a run saw, for {@linkcode check}. */
export interface Observations {
  history: Map<string, StoredGroupChat[]>;
  connections: ConnectionLog[];
  acks: AckLog[];
  /** Client ids sent but never acknowledged, even after healing. */
  unacked: string[];
}

/** The result of a run. */
export interface ChaosReport {
  seed: number;
  faults: string[];
  sent: number;
  acked: number;
  /** Messages acknowledged only after a resend with the same `id`. */
  resentAcked: number;
  stored: number;
  connections: number;
  violations: string[];
}

/** A small seeded PRNG (mulberry32): the same seed, the same faults. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The content a client sends: it names the client id, to find it in history. */
function contentOf(ref: string): string {
  return `chaos ${ref}`;
}

/**
 * Checks the invariants over what a run saw; returns the violations, one
 * line each (empty when all hold).
 */
export function check(observed: Observations): string[] {
  const violations: string[] = [];
  const byRoom = new Map<string, Map<number, StoredGroupChat>>();
  for (const [room, messages] of observed.history) {
    const bySeq = new Map<number, StoredGroupChat>();
    for (const message of messages) bySeq.set(message.seq, message);
    byRoom.set(room, bySeq);
    // Stored once: one seq per client id.
    const seen = new Map<string, number>();
    for (const message of messages) {
      const first = seen.get(message.content);
      if (first !== undefined) {
        violations.push(
          `${room}: '${message.content}' stored twice, seq ${first} and ${message.seq}`,
        );
      } else seen.set(message.content, message.seq);
    }
  }
  // Acknowledged, never lost; a resend's Ack is the first one's.
  const ackOf = new Map<string, AckLog>();
  for (const ack of observed.acks) {
    const stored = byRoom.get(ack.room)?.get(ack.seq);
    if (!stored || stored.id !== ack.id) {
      violations.push(
        `${ack.room}: ack of ${ack.ref} (seq ${ack.seq}, id ${ack.id}) not in history`,
      );
    } else if (stored.content !== contentOf(ack.ref)) {
      violations.push(
        `${ack.room}: ack of ${ack.ref} names seq ${ack.seq}, which holds '${stored.content}'`,
      );
    }
    const first = ackOf.get(ack.ref);
    if (first && (first.seq !== ack.seq || first.id !== ack.id)) {
      violations.push(
        `${ack.ref}: acked as seq ${first.seq} and again as seq ${ack.seq}`,
      );
    }
    ackOf.set(ack.ref, first ?? ack);
  }
  for (const ref of observed.unacked) {
    violations.push(`${ref}: never acknowledged, even after healing`);
  }
  // Per connection: increasing, no duplicate, nothing history holds skipped.
  for (const [index, conn] of observed.connections.entries()) {
    const name = `${conn.client} connection ${index}`;
    for (const [room, seqs] of conn.seqs) {
      const held = [...(byRoom.get(room)?.keys() ?? [])].sort((a, b) => a - b);
      const since = conn.since.get(room) ?? 0;
      let previous = since;
      const incomplete = conn.incompleteFrom.get(room);
      for (const [i, seq] of seqs.entries()) {
        if (seq <= previous) {
          violations.push(
            `${name}, ${room}: seq ${seq} after ${previous}` +
              (seq <= since ? ` (entered with since ${since})` : ""),
          );
          continue;
        }
        // A History that said complete: false starts where history starts.
        const from = i === 0 && incomplete === seq ? seq - 1 : previous;
        const skipped = held.filter((h) => h > from && h < seq);
        if (skipped.length > 0) {
          violations.push(
            `${name}, ${room}: skipped ${
              skipped.join(",")
            } (got ${seq} after ${previous})`,
          );
        }
        previous = seq;
      }
      if (conn.openAtEnd) {
        const missing = held.filter((h) => h > previous);
        if (missing.length > 0) {
          violations.push(
            `${name}, ${room}: open at the end but never got ${
              missing.join(",")
            }`,
          );
        }
      }
    }
  }
  return violations;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One node slot: a proxy to Redis and the process behind it, if running. */
class NodeSlot {
  readonly proxy: FaultProxy;
  process: NodeProcess | null = null;
  paused = false;
  constructor(redisPort: number) {
    this.proxy = FaultProxy.start(redisPort);
  }
  get wsUrl(): string | null {
    return this.process && !this.paused ? this.process.wsUrl : null;
  }
  async start(): Promise<void> {
    this.process = await spawnNode(this.proxy.url, [
      "--history-size",
      "1000",
      "--idle-timeout",
      "5",
    ]);
    this.paused = false;
  }
  async kill(): Promise<void> {
    const process = this.process;
    this.process = null;
    this.paused = false;
    await process?.[Symbol.asyncDispose]();
  }
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    if (!this.process) return;
    try {
      Deno.kill(this.process.process.pid, signal);
      this.paused = signal === "SIGSTOP";
    } catch {
      // It exited.
    }
  }
}

interface Outgoing {
  room: string;
  ref: string;
  /** Times sent (a resend keeps the same `ref`). */
  tries: number;
}

/** A client: one username, every room, one connection at a time. */
class ChaosClient {
  readonly name: string;
  readonly logs: ConnectionLog[] = [];
  readonly acks: AckLog[] = [];
  /** Sent, not acknowledged yet: resent with the same id. */
  readonly outbox: Outgoing[] = [];
  lastSeq = new Map<string, number>();
  #socket: WebSocket | null = null;
  #log: ConnectionLog | null = null;
  #waiter:
    | ((frame: { type: string; body: Record<string, unknown> }) => void)
    | null = null;
  #counter = 0;
  #stopped = false;
  #sending = true;
  #random: () => number;
  #rooms: readonly string[];
  #done: Promise<void> = Promise.resolve();
  sent = 0;
  /** Messages acknowledged after being sent more than once (same `id`). */
  resentAcked = 0;

  constructor(name: string, rooms: readonly string[], random: () => number) {
    this.name = name;
    this.#rooms = rooms;
    this.#random = random;
  }

  start(pick: () => string | null): void {
    this.#done = this.#loop(pick);
  }

  /** Stops making new messages; resends go on. */
  finishSending(): void {
    this.#sending = false;
  }

  /** Whether every message was acknowledged. */
  get settled(): boolean {
    return this.outbox.length === 0;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#socket?.close();
    this.#waiter?.({ type: "closed", body: {} });
    await this.#done;
  }

  /** Marks the open connection as open at the end; returns it. */
  markOpen(): ConnectionLog | null {
    if (this.#log && this.#socket?.readyState === WebSocket.OPEN) {
      this.#log.openAtEnd = true;
      return this.#log;
    }
    return null;
  }

  async #loop(pick: () => string | null): Promise<void> {
    while (!this.#stopped) {
      const url = pick();
      if (!url) {
        await sleep(100);
        continue;
      }
      try {
        await this.#session(url);
      } catch {
        // The connection failed: try again.
      }
      const socket = this.#socket;
      this.#socket = null;
      if (socket && socket.readyState !== WebSocket.CLOSED) {
        const closed = new Promise((resolve) =>
          socket.addEventListener("close", resolve, { once: true })
        );
        socket.close();
        await Promise.race([closed, sleep(2000)]);
      }
      if (!this.#stopped) await sleep(50 + this.#random() * 200);
    }
  }

  /** The next frame that answers `ref` (or the end of the connection), within `ms`. */
  #answer(
    ref: string,
    ms: number,
  ): Promise<{ type: string; body: Record<string, unknown> }> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        resolve({ type: "timeout", body: {} });
      }, ms);
      this.#waiter = (frame) => {
        if (
          frame.type === "closed" ||
          ((frame.type === "Ack" || frame.type === "Error") &&
            frame.body.ref === ref)
        ) {
          clearTimeout(timer);
          this.#waiter = null;
          resolve(frame);
        }
      };
    });
  }

  #receive(log: ConnectionLog, text: string): void {
    const frame = JSON.parse(text);
    const type = String(frame.message_type);
    const body = frame.message_body as Record<string, unknown>;
    const record = (room: string, seq: number) => {
      log.seqs.get(room)?.push(seq);
      this.lastSeq.set(room, Math.max(this.lastSeq.get(room) ?? 0, seq));
    };
    if (type === "GroupChat") {
      record(String(body.room), Number(body.seq));
    } else if (type === "History") {
      const room = String(body.room);
      const messages = body.messages as StoredGroupChat[];
      if (body.complete === false && messages[0]) {
        log.incompleteFrom.set(room, messages[0].seq);
      }
      for (const message of messages) record(room, message.seq);
    }
    this.#waiter?.({ type, body });
  }

  async #session(url: string): Promise<void> {
    const socket = new WebSocket(url);
    this.#socket = socket;
    const log: ConnectionLog = {
      client: this.name,
      since: new Map(),
      seqs: new Map(),
      incompleteFrom: new Map(),
      openAtEnd: false,
    };
    socket.addEventListener("message", (event) => {
      if (this.#log === log) this.#receive(log, String(event.data));
    });
    socket.addEventListener("close", () => {
      this.#waiter?.({ type: "closed", body: {} });
    });
    const opened = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 3000);
      socket.addEventListener("open", () => {
        clearTimeout(timer);
        resolve(true);
      }, { once: true });
      socket.addEventListener("close", () => {
        clearTimeout(timer);
        resolve(false);
      }, { once: true });
    });
    if (!opened || this.#stopped) return;
    this.#log = log;
    this.logs.push(log);
    for (const room of this.#rooms) {
      const since = this.lastSeq.get(room) ?? 0;
      log.since.set(room, since);
      log.seqs.set(room, []);
      const ref = `${this.name}-enter-${++this.#counter}`;
      socket.send(JSON.stringify({
        message_type: "Enter",
        message_body: { sender_username: this.name, room, since },
        id: ref,
      }));
      const answer = await this.#answer(ref, 5000);
      if (answer.type !== "Ack") return;
    }
    while (!this.#stopped) {
      let next = this.outbox[0];
      if (!next) {
        if (!this.#sending) {
          await sleep(50);
          if (socket.readyState !== WebSocket.OPEN) return;
          continue;
        }
        const room = this
          .#rooms[Math.floor(this.#random() * this.#rooms.length)]!;
        next = { room, ref: `${this.name}-${++this.#counter}`, tries: 0 };
        this.outbox.push(next);
        this.sent++;
      }
      next.tries++;
      socket.send(JSON.stringify({
        message_type: "GroupChat",
        message_body: {
          sender_username: this.name,
          room: next.room,
          content: contentOf(next.ref),
        },
        id: next.ref,
      }));
      // Longer than the node's reply timeout: a late answer is not a loss.
      const answer = await this.#answer(next.ref, 6000);
      if (answer.type === "Ack") {
        this.acks.push({
          client: this.name,
          room: next.room,
          ref: next.ref,
          id: String(answer.body.id),
          seq: Number(answer.body.seq),
        });
        if (next.tries > 1) this.resentAcked++;
        this.outbox.shift();
        await sleep(this.#random() * 40);
      } else if (answer.type === "Error") {
        // Outcome unknown or not stored: the same id again, a bit later.
        await sleep(100);
      } else return; // timeout or closed: reconnect and resend
    }
  }
}

/** Runs one seeded chaos run and checks it. */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  // The nemesis draws from its own stream, the node picks of reconnecting
  // clients from another: the faults of a seed do not depend on how often
  // clients reconnect.
  const random = prng(options.seed);
  const pickRandom = prng(options.seed * 7919 + 17);
  const log = options.log ?? (() => {});
  const faults: string[] = [];
  const redis: LocalRedis = await startLocalRedis();
  const slots: NodeSlot[] = [];
  const clients: ChaosClient[] = [];
  let redisPaused = false;
  try {
    for (let i = 0; i < options.nodes; i++) {
      const slot = new NodeSlot(redis.port);
      slots.push(slot);
      await slot.start();
    }
    const pick = () => {
      const live = slots.map((slot) => slot.wsUrl).filter((url) =>
        url !== null
      );
      return live.length === 0
        ? null
        : live[Math.floor(pickRandom() * live.length)]!;
    };
    for (let i = 0; i < options.clients; i++) {
      const client = new ChaosClient(
        `c${i}`,
        options.rooms,
        prng(options.seed * 31 + i),
      );
      clients.push(client);
      client.start(pick);
    }
    // The nemesis: one fault at a time, each healed before the next.
    const end = Date.now() + options.durationMs;
    while (Date.now() < end) {
      await sleep(300 + random() * 700);
      const slot = slots[Math.floor(random() * slots.length)]!;
      const roll = random();
      // Up to past the nodes' reply timeout (3 s): outcomes go unknown.
      const ms = 500 + Math.floor(random() * 3500);
      if (roll < 0.2) {
        faults.push(`kill -9 node ${slots.indexOf(slot)}`);
        await slot.kill();
        await sleep(ms);
        await slot.start();
      } else if (roll < 0.35) {
        faults.push(`pause node ${slots.indexOf(slot)} ${ms} ms`);
        slot.signal("SIGSTOP");
        await sleep(ms);
        slot.signal("SIGCONT");
      } else if (roll < 0.5) {
        faults.push(`kill -9 redis, restart after ${ms} ms`);
        await redis.kill("SIGKILL");
        await sleep(ms);
        await redis.start();
      } else if (roll < 0.65) {
        faults.push(`pause redis ${ms} ms`);
        const pid = redis.pid;
        if (pid !== undefined) {
          Deno.kill(pid, "SIGSTOP");
          redisPaused = true;
          await sleep(ms);
          Deno.kill(pid, "SIGCONT");
          redisPaused = false;
        }
      } else if (roll < 0.8) {
        const direction = random() < 0.5 ? "toClient" : "both";
        const name = random() < 0.5 ? "subscriber" : undefined;
        faults.push(
          `hold node ${slots.indexOf(slot)}'s link (${
            name ?? "all"
          }, ${direction}) ${ms} ms`,
        );
        slot.proxy.hold({ direction, ...(name ? { name } : {}) });
        await sleep(ms);
        slot.proxy.release();
      } else {
        faults.push(`cut node ${slots.indexOf(slot)}'s link`);
        slot.proxy.cut();
      }
      log(`seed ${options.seed}: ${faults.at(-1)}`);
    }
    // Heal, then let every client finish its sends.
    for (const client of clients) client.finishSending();
    const settleBy = Date.now() + 30_000;
    while (Date.now() < settleBy && !clients.every((c) => c.settled)) {
      await sleep(100);
    }
    // Every open connection gets what history holds (bounded wait).
    const history = await readHistory(redis, options.rooms);
    const open = clients.map((client) => ({ client, log: client.markOpen() }));
    const caughtUpBy = Date.now() + 15_000;
    const last = new Map(
      [...history].map(([room, messages]) => [room, messages.at(-1)?.seq ?? 0]),
    );
    while (Date.now() < caughtUpBy) {
      const behind = open.some(({ log }) =>
        log !== null &&
        [...last].some(([room, seq]) => (log.seqs.get(room)?.at(-1) ?? 0) < seq)
      );
      if (!behind) break;
      await sleep(100);
    }
    const unacked = clients.flatMap((client) =>
      client.outbox.map((o) => o.ref)
    );
    for (const client of clients) await client.stop();
    const finalHistory = await readHistory(redis, options.rooms);
    const observed: Observations = {
      history: finalHistory,
      connections: clients.flatMap((client) => client.logs),
      acks: clients.flatMap((client) => client.acks),
      unacked,
    };
    return {
      seed: options.seed,
      faults,
      sent: clients.reduce((sum, client) => sum + client.sent, 0),
      acked: observed.acks.length,
      resentAcked: clients.reduce((sum, client) => sum + client.resentAcked, 0),
      stored: [...finalHistory.values()].reduce((n, m) => n + m.length, 0),
      connections: observed.connections.length,
      violations: check(observed),
    };
  } finally {
    for (const client of clients) await client.stop();
    const pid = redis.pid;
    if (redisPaused && pid !== undefined) Deno.kill(pid, "SIGCONT");
    for (const slot of slots) {
      slot.signal("SIGCONT");
      await slot.kill();
      await slot.proxy.close();
    }
    await redis.stop();
  }
}

/** Every kept message of `rooms`, read from Redis directly. */
async function readHistory(
  redis: LocalRedis,
  rooms: readonly string[],
): Promise<Map<string, StoredGroupChat[]>> {
  if (!redis.running) await redis.start();
  const connection = connectRedis(redis.url, {
    name: "checker",
    log: () => {},
  });
  try {
    const deadline = Date.now() + 10_000;
    while (!connection.up) {
      if (Date.now() > deadline) throw new Error("redis not reachable");
      await sleep(20);
    }
    const history = new Map<string, StoredGroupChat[]>();
    for (const room of rooms) {
      const members = await connection.command<string[]>([
        "ZRANGE",
        KEYS.hist(room),
        "0",
        "-1",
      ]);
      history.set(room, members.map((json) => JSON.parse(json)));
    }
    return history;
  } finally {
    await connection.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seeds: { type: "string", default: "5" },
      seed: { type: "string" },
      duration: { type: "string", default: "20" },
      nodes: { type: "string", default: "2" },
      clients: { type: "string", default: "4" },
      quiet: { type: "boolean", default: false },
    },
  });
  const seeds = values.seed !== undefined
    ? [Number(values.seed)]
    : Array.from({ length: Number(values.seeds) }, (_, i) => i + 1);
  let failed = 0;
  for (const seed of seeds) {
    const report = await runChaos({
      seed,
      durationMs: Number(values.duration) * 1000,
      nodes: Number(values.nodes),
      clients: Number(values.clients),
      rooms: ["r1", "r2"],
      log: values.quiet ? undefined : (line) => console.error(line),
    });
    const status = report.violations.length === 0 ? "ok" : "FAILED";
    console.log(
      `seed ${seed}: ${status}: ${report.faults.length} faults, ${report.sent} sent, ` +
        `${report.acked} acked (${report.resentAcked} on a resend), ${report.stored} stored, ${report.connections} connections`,
    );
    for (const violation of report.violations) console.log(`  ${violation}`);
    if (report.violations.length > 0) failed++;
  }
  console.log(`${seeds.length - failed}/${seeds.length} seeds passed`);
  Deno.exit(failed === 0 ? 0 : 1);
}
