/**
 * `deno task bench`: the project's load benchmark. It starts the chat server
 * and the baseline (`bench/load/baseline_server.ts`) as subprocesses, drives
 * each with load generator processes (`bench/load/generator.ts`, coordinated
 * over stdin/stdout JSON lines), reads server CPU and memory from `/proc`,
 * prints a table and writes every figure to `bench/results/<timestamp>.json`.
 * This file reads the command line (`node:util` parseArgs) and runs the
 * chosen scenarios in order; each scenario lives in `scenarios/`, the
 * processes in `processes.ts`, the readings in `measure.ts`, the output in
 * `report.ts`.
 *
 * ```sh
 * deno task bench                              # everything (about 15 minutes)
 * deno task bench --scenario fanout --quick    # one scenario, short steps
 * deno task bench --scenario fanout,dm --clients 200 --quick
 * deno task bench --scenario cluster --quick --clients 100 --cluster-clients 2000
 * deno task bench --report bench/results/FILE.json
 * deno task bench --help
 * ```
 *
 * Scenarios: `fanout`, `dm`, `sqlite` (the fan-out ladder again with a
 * SQLite file), `idle`, `overload`, `scale`, `cluster` (the fan-out and
 * direct-message ladders of two nodes on a local redis-server and on a local
 * 3-master Redis Cluster, a master killed, then 30 000 clients across two
 * nodes), `hot-room` (one room of 5,000 batched members, 20 senders, rising
 * rates) and `room-fill` (10,000 users join one room, then one broadcast;
 * then 30,000 users join one room across three cluster nodes).
 * See `docs/performance.md`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type BenchOptions,
  defaultOptions,
  type LoadContext,
  SCENARIOS,
  type Section,
  StepCounter,
} from "./context.ts";
import { loadAverage, machineInfo } from "./proc.ts";
import { gitLabel, sourceFingerprint } from "./provenance.ts";
import { type BenchResults, log, printSummary, summarize } from "./report.ts";
import { runCeiling, runSqlite } from "./scenarios/ceilings.ts";
import { runCluster } from "./scenarios/cluster.ts";
import { runIdle } from "./scenarios/idle.ts";
import { runOverload } from "./scenarios/overload.ts";
import { runScale } from "./scenarios/scale.ts";
import { runHotRoom } from "./scenarios/hot_room.ts";
import { runRoomFill } from "./scenarios/room_fill.ts";

/** The text of `--help`. */
const HELP = `deno task bench [options]

  --scenario LIST      comma-separated: ${SCENARIOS.join(", ")} (default: all)
  --quick              short steps (2 s), coarse rate ladder, smaller idle/scale counts
  --generators N       load generator processes (default 2)
  --clients N          clients of fanout/dm (default 1000)
  --room-size N        clients per room (default 100)
  --content N          characters of content (default 64)
  --idle-clients N     connections of the idle memory scenario (default 10000)
  --scale-clients N    connections of the scale scenario (default 15000)
  --scale-users N      users they belong to, several connections each (default 150; 0 = one each)
  --cluster-clients N  connections in one room over two cluster nodes (default 30000; quick 4000; 0 skips)
  --hot-members N      members of the hot-room scenario's room (default 5000; quick 1000)
  --hot-senders N      of them, how many send (default 20)
  --hot-p99 MS         the p99 a hot-room rate must keep to pass (default 250)
  --fill-users N       users joining one room in room-fill (default 10000; quick 2000)
  --fill-cluster-users N  then users joining one room across cluster nodes
                       (default 30000; quick 3000; 0 skips)
  --fill-nodes N       chat nodes (on one redis-server) of that fill (default 3)
  --step-seconds S     seconds measured per rate (default 8; quick 2)
  --overload-seconds S seconds at twice the ceiling (default 20; quick 8)
  --rates LIST         measure these rates (msg/s per 1000 clients) instead of the ladder
  --ceiling N          fan-out ceiling in messages/s, for overload without fanout
  --servers LIST       chat,baseline,baseline-framed (default chat,baseline);
                       baseline-framed (a diagnostic: the baseline sending the
                       chat server's frames) runs in fanout and dm only
  --sequential         fanout/dm: climb each server's ladder after the other's
                       (default: every rate on every server in turn, so that
                       a machine whose speed drifts moves them alike)
  --cpu-prof DIR       run the chat server with --cpu-prof into DIR
  --server-dir DIR     run the chat server from DIR (default: this checkout)
  --server-label TEXT  name that server in the results (default: git HEAD of this checkout)
  --out DIR            results directory (default bench/results)
  --report FILE        print the tables of a results file again
`;

/** Flags that take a value, with the option each sets. */
const STRING_FLAGS = [
  "scenario",
  "scenarios",
  "generators",
  "clients",
  "room-size",
  "content",
  "idle-clients",
  "scale-clients",
  "scale-users",
  "cluster-clients",
  "hot-members",
  "hot-senders",
  "hot-p99",
  "fill-users",
  "fill-cluster-users",
  "fill-nodes",
  "step-seconds",
  "overload-seconds",
  "rates",
  "ceiling",
  "servers",
  "cpu-prof",
  "server-dir",
  "server-label",
  "out",
  "report",
] as const;

/** What the command line asks for: a run, the tables of a file, or help. */
export type Command =
  | { kind: "run"; options: BenchOptions }
  | { kind: "report"; file: string }
  | { kind: "help" };

/** Parses the command line; throws on an unknown flag or a bad value. */
export function parseCommand(args: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean" },
        sequential: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        ...Object.fromEntries(
          STRING_FLAGS.map((name) => [name, { type: "string" as const }]),
        ),
      },
    });
  } catch (error) {
    throw new Error(`${(error as Error).message}\n\n${HELP}`);
  }
  const values = parsed.values as
    & { quick?: boolean; sequential?: boolean; help?: boolean }
    & Partial<Record<typeof STRING_FLAGS[number], string>>;
  if (values.help) return { kind: "help" };
  if (values.report !== undefined) {
    return { kind: "report", file: values.report };
  }
  const options = defaultOptions(values.quick === true);
  if (values.sequential) options.sequential = true;
  const number = (flag: typeof STRING_FLAGS[number]): number | undefined => {
    const raw = values[flag];
    if (raw === undefined) return undefined;
    const v = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(v) || v < 0) {
      throw new Error(`--${flag} takes a number`);
    }
    return v;
  };
  const names = values.scenario ?? values.scenarios;
  if (names !== undefined) {
    const list = names.split(",").map((s) => s.trim()).filter(Boolean);
    for (const name of list) {
      if (!(SCENARIOS as readonly string[]).includes(name)) {
        throw new Error(`unknown scenario ${name}`);
      }
    }
    options.scenarios = SCENARIOS.filter((s) => list.includes(s));
  }
  const floor = (flag: typeof STRING_FLAGS[number], min = 0) => {
    const v = number(flag);
    return v === undefined ? undefined : Math.max(min, Math.floor(v));
  };
  options.generators = floor("generators", 1) ?? options.generators;
  options.clients = floor("clients") ?? options.clients;
  options.roomSize = floor("room-size", 1) ?? options.roomSize;
  options.contentChars = floor("content", 32) ?? options.contentChars;
  options.idleClients = floor("idle-clients") ?? options.idleClients;
  options.scaleClients = floor("scale-clients") ?? options.scaleClients;
  options.scaleUsers = floor("scale-users") ?? options.scaleUsers;
  options.clusterClients = floor("cluster-clients") ?? options.clusterClients;
  options.hotMembers = floor("hot-members", 1) ?? options.hotMembers;
  options.hotSenders = floor("hot-senders", 1) ?? options.hotSenders;
  options.hotP99Ms = floor("hot-p99", 1) ?? options.hotP99Ms;
  options.fillUsers = floor("fill-users", 1) ?? options.fillUsers;
  options.fillClusterUsers = floor("fill-cluster-users") ??
    options.fillClusterUsers;
  options.fillNodes = floor("fill-nodes", 1) ?? options.fillNodes;
  options.stepSeconds = number("step-seconds") ?? options.stepSeconds;
  options.overloadSeconds = number("overload-seconds") ??
    options.overloadSeconds;
  options.ceiling = number("ceiling") ?? options.ceiling;
  if (values.rates !== undefined) {
    options.rates = values.rates.split(",").map(Number).filter((r) => r > 0);
  }
  if (values.servers !== undefined) {
    const list = values.servers.split(",");
    options.servers = (["chat", "baseline", "baseline-framed"] as const)
      .filter((s) => list.includes(s));
  }
  if (values["cpu-prof"] !== undefined) options.cpuProfDir = values["cpu-prof"];
  if (values["server-dir"] !== undefined) {
    options.serverDir = values["server-dir"].replace(/\/?$/, "/");
  }
  if (values["server-label"] !== undefined) {
    options.serverLabel = values["server-label"];
  }
  if (values.out !== undefined) options.out = values.out;
  return { kind: "run", options };
}

/** Runs `opts.scenarios` in order and writes the results file. */
async function runBench(opts: BenchOptions): Promise<number> {
  const tmp = await Deno.makeTempDir({ prefix: "chat-bench-" });
  const context: LoadContext = { options: opts, tmp, steps: new StepCounter() };
  const machine = machineInfo();
  const started = new Date();
  log(
    `bench: ${machine.cpuModel}, ${machine.cores} cores, deno ${machine.deno}, load ${
      machine.loadAverageAtStart.join(" ")
    }; scenarios ${opts.scenarios.join(", ")}${opts.quick ? " (quick)" : ""}`,
  );
  const results: BenchResults = {
    startedAt: started.toISOString(),
    finishedAt: "",
    machine: { ...machine, loadAverageAtEnd: [0, 0, 0] },
    settings: opts,
    serverSource: {
      ...await sourceFingerprint(opts.serverDir),
      label: opts.serverLabel ?? await gitLabel(opts.serverDir),
    },
    ladders: [],
    idle: [],
    overload: [],
    scale: [],
    cluster: { ladders: [], scale: null },
    summary: {},
    notes: [],
  };
  const section: Section = async (what, fn) => {
    log(`\n# ${what}`);
    try {
      await fn();
    } catch (error) {
      const message = `${what} failed: ${(error as Error).message}`;
      log(`  ${message}`);
      results.notes.push(message);
    }
  };
  try {
    for (const scenario of opts.scenarios) {
      switch (scenario) {
        case "fanout":
          await runCeiling(context, "group", results, section);
          break;
        case "dm":
          await runCeiling(context, "private", results, section);
          break;
        case "sqlite":
          await runSqlite(context, results, section);
          break;
        case "idle":
          await runIdle(context, results, section);
          break;
        case "overload":
          await runOverload(context, results, section);
          break;
        case "scale":
          await runScale(context, results, section);
          break;
        case "cluster":
          await runCluster(context, results, section);
          break;
        case "hot-room":
          await runHotRoom(context, results, section);
          break;
        case "room-fill":
          await runRoomFill(context, results, section);
          break;
        default:
          scenario satisfies never;
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  results.finishedAt = new Date().toISOString();
  results.machine.loadAverageAtEnd = loadAverage();
  summarize(results);
  printSummary(results);
  await Deno.mkdir(opts.out, { recursive: true });
  const file = `${opts.out}/${
    started.toISOString().replace(/[:.]/g, "-")
  }.json`;
  await Deno.writeTextFile(file, JSON.stringify(results, null, 2) + "\n");
  log(`\nresults: ${file}`);
  return 0;
}

/** Reads the command line and does what it asks; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(args);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }
  switch (command.kind) {
    case "help":
      console.log(HELP);
      return 0;
    case "report": {
      // Prints the tables of a results file again.
      const results = JSON.parse(
        await Deno.readTextFile(command.file),
      ) as BenchResults;
      printSummary(results);
      return 0;
    }
    case "run":
      return await runBench(command.options);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
