/**
 * Summarizes a V8 `.cpuprofile` (from `deno run --cpu-prof`): self time per
 * function, highest first, and total time per script.
 *
 * ```sh
 * deno task bench --scenario fanout --cpu-prof /tmp/prof
 * deno run --allow-read bench/load/profile_summary.ts /tmp/prof/*.cpuprofile
 * ```
 *
 * Each file named is summarized in turn; `TOP` (default 30; read with
 * `--allow-env`) sets how many rows each table shows.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** A node of the profile's call tree. */
interface ProfileNode {
  id: number;
  callFrame: {
    functionName: string;
    url: string;
    lineNumber: number;
    columnNumber: number;
  };
  children?: number[];
}

/** The `.cpuprofile` format. */
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the samples. */
export interface FunctionTime {
  name: string;
  location: string;
  selfMs: number;
  selfPct: number;
  /** Self time in percent of the busy (not idle) time. */
  selfBusyPct: number;
  /** Time with the functions it called, without double-counting recursion. */
  totalMs: number;
  totalPct: number;
}

function shortUrl(url: string): string {
  if (!url) return "";
  const main = url.indexOf("/main/");
  if (url.startsWith("file://") && main >= 0) return url.slice(main + 6);
  return url.replace(/^.*\/node_modules\/\.deno\//, "npm:").replace(
    /^file:\/\/.*\/(src|bench)\//,
    "$1/",
  );
}

/** Self and total time per function, highest self time first. */
export function summarize(profile: CpuProfile): {
  totalMs: number;
  functions: FunctionTime[];
  idlePct: number;
} {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const where = new Map<string, string>();
  const keyOf = (node: ProfileNode) => {
    const f = node.callFrame;
    const key = `${f.functionName || "(anonymous)"} ${f.url}:${
      f.lineNumber + 1
    }`;
    where.set(key, `${shortUrl(f.url)}:${f.lineNumber + 1}`);
    return key;
  };
  let sum = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    sum += dt;
    const node = byId.get(id);
    if (!node) return;
    if (node.callFrame.functionName === "(idle)") idle += dt;
    const key = keyOf(node);
    self.set(key, (self.get(key) ?? 0) + dt);
    const seen = new Set<string>();
    for (
      let n: ProfileNode | undefined = node;
      n;
      n = byId.get(parent.get(n.id) ?? -1)
    ) {
      const k = keyOf(n);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + dt);
    }
  });
  const functions = [...self.entries()].map(([key, ms]) => ({
    name: key.slice(0, key.indexOf(" ")),
    location: where.get(key) ?? "",
    selfMs: Math.round(ms),
    selfPct: Math.round(ms / sum * 1000) / 10,
    selfBusyPct: Math.round(ms / Math.max(1, sum - idle) * 1000) / 10,
    totalMs: Math.round(total.get(key) ?? 0),
    totalPct: Math.round((total.get(key) ?? 0) / sum * 1000) / 10,
  })).sort((a, b) => b.selfMs - a.selfMs);
  return {
    totalMs: Math.round(sum),
    functions,
    idlePct: Math.round(idle / sum * 1000) / 10,
  };
}

if (import.meta.main) {
  // No flags of its own: every argument is a profile's path (`--` before a
  // path that starts with `-`).
  const { positionals: paths } = parseArgs({
    args: Deno.args,
    options: {},
    allowPositionals: true,
  });
  // `TOP` only when env access is granted: the usage above runs with
  // `--allow-read` alone, where reading it would throw.
  const topAllowed =
    Deno.permissions.querySync({ name: "env", variable: "TOP" }).state ===
      "granted";
  const top = Number((topAllowed ? Deno.env.get("TOP") : undefined) ?? 30);
  for (const path of paths) {
    const profile = JSON.parse(await Deno.readTextFile(path)) as CpuProfile;
    const { totalMs, functions, idlePct } = summarize(profile);
    console.log(`${path}: ${totalMs} ms sampled, ${idlePct}% idle\n`);
    console.log(
      "| self % of busy | self ms | self % | total % | function | where |",
    );
    console.log("| ---: | ---: | ---: | ---: | --- | --- |");
    for (
      const f of functions.filter((f) => f.name !== "(idle)").slice(0, top)
    ) {
      console.log(
        `| ${f.selfBusyPct} | ${f.selfMs} | ${f.selfPct} | ${f.totalPct} | ${f.name} | ${f.location} |`,
      );
    }
    const interesting = functions.filter((f) =>
      /src\/|main\.ts/.test(f.location)
    ).sort((a, b) => b.totalMs - a.totalMs).slice(0, top);
    console.log("\nProject functions by total (inclusive) time:\n");
    console.log("| total % | self % | function | where |");
    console.log("| ---: | ---: | --- | --- |");
    for (const f of interesting) {
      console.log(
        `| ${f.totalPct} | ${f.selfPct} | ${f.name} | ${f.location} |`,
      );
    }
  }
}
