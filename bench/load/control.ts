/**
 * The messages between the benchmark's orchestrator (`bench/load/cli.ts`) and its
 * load generator processes (`bench/load/generator.ts`): one JSON object per line, on
 * the generator's stdin (commands) and stdout (replies). Every command has an
 * `id`, and its reply carries it back.
 *
 * @module
 */
import type { SparseHistogram } from "./histogram.ts";

/** One client a generator opens. */
export interface ClientSpec {
  /** Its username. */
  name: string;
  /** The room it enters. */
  room: string;
  /** A token to present at upgrade (`?token=`), when authentication is on. */
  token?: string;
  /** The server to connect to, when not the command's `url` (a cluster node). */
  url?: string;
  /** Ask for batched delivery (`?batch=1`); its `Batch` frames are unpacked. */
  batch?: boolean;
}

/** Tries again a client whose upgrade or entry failed, as the typed client does. */
export interface RetryPlan {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Delay before the second attempt; doubles each time, up to `maxMs`, jittered (½ to 1×). */
  baseMs: number;
  maxMs: number;
}

/** Opens the clients; each sends `Enter` and waits for `Presence`. */
export interface ConnectCommand {
  cmd: "connect";
  id: number;
  /** `ws://host:port/ws`, for the clients that name no `url` of their own. */
  url: string;
  clients: ClientSpec[];
  /** Source addresses to spread the clients over (`127.0.0.x`); may be empty. */
  localAddresses: string[];
  /** Connections being opened at once. */
  concurrency: number;
  /** Milliseconds one client may take to connect and enter. */
  timeoutMs: number;
  /**
   * Open the clients in bursts of this many at once, each burst after the
   * previous one is in (instead of `concurrency` workers).
   */
  burst?: number;
  /** Try failed clients again; without it a failure is final. */
  retry?: RetryPlan;
}

/** A stretch of constant message rate. */
export interface Phase {
  /** Messages per second that this generator sends. */
  rate: number;
  ms: number;
}

/** Sends chat messages on a schedule and measures their delivery. */
export interface RunCommand {
  cmd: "run";
  id: number;
  /** `GroupChat` to the sender's room, or `PrivateChat` to a random client of this generator. */
  mode: "group" | "private";
  /** Tags the messages of this run; frames of other runs are ignored. */
  step: number;
  /** Epoch milliseconds at which to start sending (all generators alike). */
  startAt: number;
  phases: Phase[];
  /** Messages sent in the first `warmupMs` count for delivery, not latency. */
  warmupMs: number;
  /** Width of the time windows reported, by send time; `0` for none. */
  windowMs: number;
  /** After the last send, wait at most this long for deliveries. */
  drainMs: number;
  /** ... and stop waiting once nothing arrived for this long. */
  quietMs: number;
  /** Check per (receiver, sender) order (costs memory: clients squared). */
  checkOrder: boolean;
  /** Only the first `senders` clients of this generator send (default: all). */
  senders?: number;
  /**
   * Wait for deliveries until nothing arrived for `quietMs` (or `drainMs`),
   * not until `expected`: a room spread over several generators, whose
   * deliveries one generator cannot count.
   */
  untilQuiet?: boolean;
  /** Characters of `content`. */
  contentChars: number;
}

/** One message from one client to its room; every client of every generator waits for it. */
export interface BroadcastCommand {
  cmd: "broadcast";
  id: number;
  step: number;
  /** Index of the local client that sends, or `-1` when this generator only receives. */
  sender: number;
  /** Epoch milliseconds at which the sender sends. */
  startAt: number;
  timeoutMs: number;
  contentChars: number;
}

/** What the clients received since they were connected: frames and bytes. */
export interface StatsCommand {
  cmd: "stats";
  id: number;
}

/** Closes every client and exits. */
export interface CloseCommand {
  cmd: "close";
  id: number;
}

/** A command to a generator. */
export type Command =
  | ConnectCommand
  | RunCommand
  | BroadcastCommand
  | StatsCommand
  | CloseCommand;

/** The answer to {@linkcode ConnectCommand}. */
export interface ConnectReply {
  id: number;
  connected: number;
  failed: number;
  firstError?: string;
  ms: number;
  /** Attempts that failed and were tried again (refused upgrades, mostly). */
  refused?: number;
}

/** The answer to {@linkcode StatsCommand}. */
export interface StatsReply {
  id: number;
  /** Text frames the clients received, all together (a `Batch` is one). */
  frames: number;
  /** Their characters (bytes for ASCII traffic). */
  bytes: number;
  alive: number;
}

/** One window of a run, by send time. */
export interface WindowReport {
  sent: number;
  received: number;
  hist: SparseHistogram;
}

/** The answer to {@linkcode RunCommand} and {@linkcode BroadcastCommand}. */
export interface RunReply {
  id: number;
  sent: number;
  /** Deliveries due: one per live recipient at send time (the sender's own copy of a `GroupChat` included, not its `PrivateChat` echo). */
  expected: number;
  received: number;
  /** Deliveries due to the clients still open at the end, and what they got. */
  expectedAlive: number;
  receivedAlive: number;
  /** `PrivateChat` copies back to the sender. */
  echoes: number;
  /** `Error` frames received. */
  errors: number;
  /** Frames of an earlier run that arrived late. */
  stale: number;
  outOfOrder: number;
  duplicates: number;
  /** Latency of the messages sent after the warm-up. */
  hist: SparseHistogram;
  windows: WindowReport[];
  /** Deliveries per window, by receipt time. */
  receivedByWindow: number[];
  alive: number;
  /** Clients closed during the run, by close code. */
  closes: Record<string, number>;
  /** Longest time the send schedule ran behind, in milliseconds. */
  maxLagMs: number;
  /** Milliseconds from the first to the last send. */
  sendMs: number;
  /** Milliseconds spent waiting for deliveries after the last send. */
  drainMs: number;
  /** CPU seconds this generator used from its first send to the end of the drain. */
  cpuSeconds: number;
  /** Wall seconds of the same span. */
  wallSeconds: number;
}

/** A reply of any kind, or a failure of a command. */
export type Reply =
  | ConnectReply
  | RunReply
  | StatsReply
  | { id: number; closed: true }
  | { id: number; error: string };
