/**
 * What every part of `deno task bench` is handed: the options the command
 * line set ({@linkcode BenchOptions}, with their defaults), the temporary
 * directory of the run and the counter that numbers the generators' runs.
 * One {@linkcode LoadContext} is made in `cli.ts` and passed down; nothing
 * here is module state. It does not parse arguments (`cli.ts` does).
 *
 * @module
 */

/** The repository's root directory, with a trailing slash. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

/** Every scenario, in the order they run. */
export const SCENARIOS = [
  "fanout",
  "dm",
  "sqlite",
  "idle",
  "overload",
  "scale",
  "cluster",
  "hot-room",
  "room-fill",
] as const;

/** A scenario's name. */
export type Scenario = typeof SCENARIOS[number];

/** What the command line sets. */
export interface BenchOptions {
  scenarios: Scenario[];
  quick: boolean;
  /** Generator processes for the message scenarios. */
  generators: number;
  /** Clients of the fan-out and direct-message scenarios. */
  clients: number;
  roomSize: number;
  contentChars: number;
  idleClients: number;
  scaleClients: number;
  /** Users that the scale clients belong to (several connections each); `0`: one user per client. */
  scaleUsers: number;
  /** Connections of the cluster scenario's one room, spread over its two nodes. */
  clusterClients: number;
  /** Members of the `hot-room` scenario's room, one user and connection each. */
  hotMembers: number;
  /** Of them, how many send. */
  hotSenders: number;
  /** The p99 a hot-room rate must keep to pass, in ms (the 250). */
  hotP99Ms: number;
  /** Users that join one room in the `room-fill` scenario. */
  fillUsers: number;
  /** Users that join one room across `fillNodes` cluster nodes in `room-fill` (`0` skips it). */
  fillClusterUsers: number;
  /** Chat nodes (on one redis-server) of that cluster fill. */
  fillNodes: number;
  /** Seconds measured per rate (after a warm-up). */
  stepSeconds: number;
  warmupSeconds: number;
  /** p99 at or under this passes, in milliseconds. */
  p99LimitMs: number;
  /** Overload: seconds at twice the ceiling. */
  overloadSeconds: number;
  /** Rates to measure instead of the ladder (messages/s per 1000 clients). */
  rates: number[] | null;
  /** Fan-out ceiling (messages/s) for `overload` when `fanout` does not run. */
  ceiling: number | null;
  /**
   * `fanout` and `dm` climb one server's ladder after the other's, instead of
   * measuring each rate on every server in turn.
   */
  sequential: boolean;
  /** Servers to measure; `baseline-framed` runs in `fanout` and `dm` only. */
  servers: ("chat" | "baseline" | "baseline-framed")[];
  /** Directory for the chat server's `--cpu-prof` output. */
  cpuProfDir: string | null;
  /** Directory holding the chat server's `main.ts` (a snapshot, say). */
  serverDir: string;
  /** What the results call that server (a commit, say). */
  serverLabel: string | null;
  out: string;
}

/** The defaults; `quick` shortens the steps and shrinks the counts. */
export function defaultOptions(quick: boolean): BenchOptions {
  return {
    scenarios: [...SCENARIOS],
    quick,
    generators: 2,
    clients: 1000,
    roomSize: 100,
    contentChars: 64,
    idleClients: quick ? 2000 : 10000,
    scaleClients: quick ? 3000 : 15000,
    scaleUsers: 150,
    clusterClients: quick ? 4000 : 30000,
    hotMembers: quick ? 1000 : 5000,
    hotSenders: 20,
    hotP99Ms: 250,
    fillUsers: quick ? 2000 : 10000,
    fillClusterUsers: quick ? 3000 : 30000,
    fillNodes: 3,
    stepSeconds: quick ? 2 : 8,
    warmupSeconds: quick ? 0.5 : 1,
    p99LimitMs: 50,
    overloadSeconds: quick ? 8 : 20,
    ceiling: null,
    rates: null,
    servers: ["chat", "baseline"],
    sequential: false,
    cpuProfDir: null,
    serverDir: ROOT,
    serverLabel: null,
    out: `${ROOT}bench/results`,
  };
}

/**
 * Numbers the runs a generator is told to do, over the whole benchmark, so
 * that a frame of an earlier run is known as stale.
 */
export class StepCounter {
  #last = 0;

  /** The next run's number, from 1. */
  next(): number {
    return ++this.#last;
  }
}

/** What the scenarios and the process helpers are handed. */
export interface LoadContext {
  readonly options: BenchOptions;
  /** Temporary directory of this run (SQLite files, redis-server data). */
  readonly tmp: string;
  readonly steps: StepCounter;
}

/**
 * Runs one part of a scenario under a title: a failure is printed and kept
 * in the results' notes, and the run goes on with the next part.
 */
export type Section = (what: string, fn: () => Promise<void>) => Promise<void>;

/**
 * The servers of the run without `baseline-framed`, a diagnostic of the two
 * ceilings that runs in `fanout` and `dm` only.
 */
export function unframed(
  options: BenchOptions,
): ("chat" | "baseline")[] {
  return options.servers.filter((kind) => kind !== "baseline-framed");
}
