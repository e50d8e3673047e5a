/**
 * Which chat server a run of `deno task bench` measured: the `git describe`
 * of its checkout and a SHA-256 over its sources, written into the results
 * so that two runs can be told apart. It does not read the machine
 * (`proc.ts` does).
 *
 * @module
 */
/** `git describe` of a checkout, with `+changes` when it is dirty. */
export async function gitLabel(dir: string): Promise<string> {
  try {
    const git = (...args: string[]) =>
      new Deno.Command("git", { args: ["-C", dir, ...args], stderr: "null" })
        .output();
    const head = await git("rev-parse", "--short", "HEAD");
    if (!head.success) return "unknown";
    const status = await git("status", "--porcelain", "--", "main.ts", "src");
    const dirty = new TextDecoder().decode(status.stdout).trim() !== "";
    return new TextDecoder().decode(head.stdout).trim() +
      (dirty ? "+changes" : "");
  } catch {
    return "unknown";
  }
}

/** SHA-256 over `main.ts`, `deno.json` and every file under `src/`, sorted by path. */
export async function sourceFingerprint(
  dir: string,
): Promise<{ dir: string; sha256: string; files: number }> {
  const paths: string[] = ["main.ts", "deno.json"];
  const walk = async (sub: string) => {
    for await (const entry of Deno.readDir(`${dir}${sub}`)) {
      const path = `${sub}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile) paths.push(path);
    }
  };
  await walk("src");
  paths.sort();
  const parts: Uint8Array[] = [];
  const encoder = new TextEncoder();
  for (const path of paths) {
    parts.push(encoder.encode(`${path}\0`));
    parts.push(await Deno.readFile(`${dir}${path}`));
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    all.set(part, offset);
    offset += part.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  const sha256 = [...digest].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
  return { dir, sha256, files: paths.length };
}
