/**
 * The import graph of `src/` has no runtime cycle: imports run one way
 * (`docs/design.md`, "The reducer"). Every `.ts` file under `src/` is read
 * and its static imports and re-exports parsed; each cycle found is named
 * as a chain of files. An `import type`, an `export type`, and an import of
 * `type` names only are erased at run time and make no edge; an import
 * that names a value counts even if only its type is used (write
 * `import type` then).
 *
 * It reads statements at the start of a line, as `deno fmt` writes them;
 * it does not follow dynamic `import()`, nor specifiers that leave `src/`
 * (npm packages, `main.ts`).
 *
 * @module
 */
import assert from "node:assert/strict";

const REPO = new URL("../../", import.meta.url);
const SRC = new URL("src/", REPO);

/**
 * `import … from "x"` and `export … from "x"`: 1 the keyword, 2 `type`,
 * 3 what is imported (a default name, braces, `* as name`), 4 the specifier.
 */
const FROM =
  /^(import|export)\s+(type\s+)?((?:[\w$]+\s*,\s*)?(?:\{[^}]*\}|\*(?:\s+as\s+[\w$]+)?)|[\w$]+)\s*from\s*["']([^"']+)["']/gm;

/** `import "x"`, run for its effects: always a runtime edge. */
const BARE = /^import\s*["']([^"']+)["']/gm;

/** The specifiers of a module's imports and re-exports that remain at run time. */
function runtimeSpecifiers(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(FROM)) {
    const [, , typeOnly, what, specifier] = match;
    if (typeOnly !== undefined || specifier === undefined) continue;
    if (what?.startsWith("{")) {
      const names = what.slice(1, -1)
        .replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, "")
        .split(",").map((name) => name.trim()).filter((name) => name !== "");
      if (names.length > 0 && names.every((name) => /^type\s/.test(name))) {
        continue;
      }
    }
    found.push(specifier);
  }
  for (const [, specifier] of text.matchAll(BARE)) {
    if (specifier !== undefined) found.push(specifier);
  }
  return found;
}

/** Every `.ts` file under `dir`, recursively. */
async function sourceFiles(dir: URL): Promise<URL[]> {
  const files: URL[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory) {
      files.push(...await sourceFiles(new URL(`${entry.name}/`, dir)));
    } else if (entry.isFile && entry.name.endsWith(".ts")) {
      files.push(new URL(entry.name, dir));
    }
  }
  return files;
}

/** The runtime imports among the `.ts` files under `src/`, by path from the repository's root. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  const path = (url: URL) => url.href.slice(REPO.href.length);
  for (const file of await sourceFiles(SRC)) {
    const targets = new Set<string>();
    for (const specifier of runtimeSpecifiers(await Deno.readTextFile(file))) {
      if (!specifier.startsWith("./") && !specifier.startsWith("../")) continue;
      const target = new URL(specifier, file);
      if (target.href.startsWith(SRC.href)) targets.add(path(target));
    }
    graph.set(path(file), [...targets].sort());
  }
  return graph;
}

/**
 * The cycles of `graph`, each a chain that ends where it starts: within each
 * strongly connected component, the shortest cycle through each file (one
 * chain per cycle, starting at its first file in name order).
 */
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's strongly connected components.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: Set<string>[] = [];
  const visit = (node: string): void => {
    index.set(node, index.size);
    low.set(node, index.get(node) as number);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(
          node,
          Math.min(low.get(node) as number, low.get(next) as number),
        );
      } else if (onStack.has(next)) {
        low.set(
          node,
          Math.min(low.get(node) as number, index.get(next) as number),
        );
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component = new Set<string>();
    let member: string;
    do {
      member = stack.pop() as string;
      onStack.delete(member);
      component.add(member);
    } while (member !== node);
    const selfLoop = (graph.get(node) ?? []).includes(node);
    if (component.size > 1 || selfLoop) components.push(component);
  };
  for (const node of [...graph.keys()].sort()) {
    if (!index.has(node)) visit(node);
  }
  const chains = new Map<string, string[]>();
  for (const component of components) {
    for (const start of [...component].sort()) {
      const chain = shortestBack(graph, component, start);
      if (!chain) continue;
      // The same cycle through another of its files: keyed by its rotation
      // that starts at its first file in name order.
      const ring = chain.slice(0, -1);
      const first = ring.indexOf([...ring].sort()[0] as string);
      const rotated = [...ring.slice(first), ...ring.slice(0, first)];
      rotated.push(rotated[0] as string);
      chains.set(rotated.join(" → "), rotated);
    }
  }
  return [...chains.values()];
}

/** The shortest chain from `start` back to itself inside `component` (breadth first). */
function shortestBack(
  graph: ReadonlyMap<string, readonly string[]>,
  component: ReadonlySet<string>,
  start: string,
): string[] | null {
  const from = new Map<string, string>();
  let frontier = [start];
  while (frontier.length > 0) {
    const next: string[] = [];
    for (const node of frontier) {
      for (const target of graph.get(node) ?? []) {
        if (!component.has(target)) continue;
        if (target === start) {
          const path: string[] = [];
          for (let at = node; at !== start; at = from.get(at) as string) {
            path.push(at);
          }
          return [start, ...path.reverse(), start];
        }
        if (from.has(target)) continue;
        from.set(target, node);
        next.push(target);
      }
    }
    frontier = next;
  }
  return null;
}

Deno.test("runtimeSpecifiers: type-only imports and re-exports are no runtime edge", () => {
  const text = [
    `import { a } from "./a.ts";`,
    `import type { B } from "./b.ts";`,
    `import { type C, type D } from "./c.ts";`,
    `import { type E, e } from "./e.ts";`,
    `import {\n  type F,\n  f, // a comment\n} from "./f.ts";`,
    `import {\n  type G,\n  type H, // a comment\n} from "./g.ts";`,
    `import i, { type I } from "./i.ts";`,
    `import * as j from "./j.ts";`,
    `import "./k.ts";`,
    `export { l } from "./l.ts";`,
    `export type { M } from "./m.ts";`,
    `export * from "./n.ts";`,
    `export type * from "./o.ts";`,
    `export function p(): void {}`,
    ` * import { q } from "./q.ts";`,
    `const r = "import { r } from './r.ts'";`,
  ].join("\n");
  assert.deepEqual(runtimeSpecifiers(text).sort(), [
    "./a.ts",
    "./e.ts",
    "./f.ts",
    "./i.ts",
    "./j.ts",
    "./k.ts",
    "./l.ts",
    "./n.ts",
  ]);
});

Deno.test("cycles: each cycle once, as a chain from its first file in name order", () => {
  const graph = new Map<string, string[]>([
    ["a", ["b"]],
    ["b", ["c", "a"]],
    ["c", ["a"]],
    ["d", ["d", "a"]],
    ["e", []],
  ]);
  assert.deepEqual(cycles(graph), [
    ["a", "b", "a"],
    ["a", "b", "c", "a"],
    ["d", "d"],
  ]);
  assert.deepEqual(cycles(new Map([["a", ["b"]], ["b", []]])), []);
});

Deno.test("src/ has no runtime import cycle", async () => {
  const graph = await importGraph();
  // The parser sees the imports at all (a graph without edges has no cycle).
  assert.ok(
    graph.get("src/chat/reducer.ts")?.includes("src/chat/arrival.ts"),
    "src/chat/reducer.ts should import src/chat/arrival.ts",
  );
  const found = cycles(graph);
  if (found.length > 0) {
    assert.fail(
      `${found.length} runtime import cycle(s) under src/ ` +
        "(move the shared helper down, or import type):\n" +
        found.map((chain) => `  ${chain.join(" → ")}`).join("\n"),
    );
  }
});
