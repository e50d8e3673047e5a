/**
 * The failover half of the `cluster` scenario: two chat nodes on a fresh
 * local Redis Cluster (3 masters, 3 replicas, `cluster-node-timeout` 1000
 * ms), a sender on one node writing into a room every 20 ms, a member on
 * the other node, and `kill -9` of the master of the room's slot. It
 * measures the time from the kill to the first message sent after it that
 * reaches the member (the room is delivered again), how many sends were
 * answered `unavailable` meanwhile, and whether the member saw every `seq`
 * once and in order. The clients are plain WebSockets in this process (the
 * rate is low); no load generator runs.
 *
 * @module
 */
import { KEYS } from "../../../src/redis/keys.ts";
import { keySlot } from "../../../src/redis/slot.ts";
import type { LoadContext, Section } from "../context.ts";
import { nodeUrls, session } from "../processes.ts";
import { log } from "../report.ts";
import { sleep } from "../measure.ts";

/** One kill of a master. */
export interface FailoverResult {
  /** From the kill to the first message sent after it reaching the member, ms. */
  recoveryMs: number | null;
  /** Sends answered `unavailable` meanwhile. */
  unavailable: number;
  /** Messages the member received, and whether their `seq`s rose by one each. */
  received: number;
  inOrder: boolean;
}

/** How often the sender writes. */
const SEND_MS = 20;
/** How long after the kill it waits for the room to come back. */
const WAIT_MS = 20_000;

/** A WebSocket client of the chat protocol, enough for this measure. */
class Client {
  readonly frames: { type: string; body: Record<string, unknown> }[] = [];
  #socket: WebSocket;
  onFrame: (type: string, body: Record<string, unknown>) => void = () => {};

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const frame = JSON.parse(String(event.data));
      this.onFrame(frame.message_type, frame.message_body ?? {});
    };
  }

  static async open(url: string): Promise<Client> {
    const socket = new WebSocket(url);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
    return new Client(socket);
  }

  send(type: string, body: Record<string, unknown>, id?: string): void {
    this.#socket.send(
      JSON.stringify({
        message_type: type,
        message_body: body,
        ...(id ? { id } : {}),
      }),
    );
  }

  /** Enters `room` as `username`; resolves on its `Presence`. */
  async enter(username: string, room: string): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.onFrame = (type, body) => {
        if (type === "Presence") resolve();
        if (type === "Error") reject(new Error(JSON.stringify(body)));
      };
    });
    this.send("Enter", { sender_username: username, room });
    await done;
  }

  async close(): Promise<void> {
    if (this.#socket.readyState >= WebSocket.CLOSING) return;
    const closed = new Promise((resolve) => this.#socket.onclose = resolve);
    this.#socket.close();
    await closed;
  }
}

/** One kill on a fresh cluster. */
async function once(context: LoadContext): Promise<FailoverResult> {
  return await session(
    context,
    { kind: "chat-redis-cluster", nodes: 2 },
    0,
    async (deployment) => {
      const cluster = deployment.redisCluster!;
      const room = "failover";
      const master = await cluster.masterOf(keySlot(KEYS.seq(room)));
      const [urlA, urlB] = nodeUrls(deployment) as [string, string];
      const alice = await Client.open(urlA);
      const bob = await Client.open(urlB);
      try {
        await alice.enter("alice", room);
        await bob.enter("bob", room);
        let killedAt = Infinity;
        let recoveredAt: number | null = null;
        let unavailable = 0;
        let received = 0;
        let lastSeq = 0;
        let inOrder = true;
        const sentAt = new Map<string, number>();
        alice.onFrame = (type, body) => {
          if (type === "Error" && body.code === "unavailable") unavailable++;
        };
        bob.onFrame = (type, body) => {
          if (type !== "GroupChat" || body.room !== room) return;
          received++;
          const seq = Number(body.seq);
          if (seq !== lastSeq + 1) inOrder = false;
          lastSeq = seq;
          const sent = sentAt.get(String(body.content)) ?? 0;
          if (recoveredAt === null && sent > killedAt) {
            recoveredAt = performance.now();
          }
        };
        let n = 0;
        const sender = setInterval(() => {
          const content = `m${++n}`;
          sentAt.set(content, performance.now());
          alice.send(
            "GroupChat",
            { sender_username: "alice", room, content },
            content,
          );
        }, SEND_MS);
        try {
          await sleep(1000);
          await cluster.node(master.port).kill();
          killedAt = performance.now();
          const deadline = killedAt + WAIT_MS;
          while (recoveredAt === null && performance.now() < deadline) {
            await sleep(20);
          }
          await sleep(500);
        } finally {
          clearInterval(sender);
        }
        const recoveredMs = recoveredAt as number | null;
        return {
          recoveryMs: recoveredMs === null
            ? null
            : Math.round(recoveredMs - killedAt),
          unavailable,
          received,
          inOrder,
        };
      } finally {
        await alice.close();
        await bob.close();
      }
    },
  );
}

/** `repeats` kills, each on a fresh cluster, into `results`. */
export async function runFailover(
  context: LoadContext,
  results: FailoverResult[],
  section: Section,
  repeats: number,
): Promise<void> {
  for (let i = 0; i < repeats; i++) {
    await section(`failover ${i + 1} of ${repeats}`, async () => {
      const result = await once(context);
      log(
        `  master killed: delivered again after ${
          result.recoveryMs ?? "never"
        } ms; ${result.unavailable} unavailable; ${result.received} received, ${
          result.inOrder ? "in order" : "NOT in order"
        }`,
      );
      results.push(result);
    });
  }
}
