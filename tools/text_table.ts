/**
 * Rows of text as an aligned table for a terminal, the way the operator
 * commands (`deno task token`, `deno task admin`) print listings. It knows
 * nothing of what the rows hold.
 *
 * @module
 */

/**
 * `head` and `rows` as lines, each column padded to its widest cell and
 * columns two spaces apart (the last one unpadded).
 */
export function textTable(
  head: readonly string[],
  rows: readonly (readonly string[])[],
): string[] {
  const lines = [head, ...rows];
  const widths = head.map((_, column) =>
    Math.max(...lines.map((line) => line[column]!.length))
  );
  return lines.map((line) =>
    line.map((cell, column) =>
      column === line.length - 1 ? cell : cell.padEnd(widths[column]!)
    ).join("  ")
  );
}
