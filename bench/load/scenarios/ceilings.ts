/**
 * The `fanout`, `dm` and `sqlite` scenarios: the ceiling of one server, the
 * highest rate it serves with every message delivered in order and p99
 * within the limit. `fanout` sends into rooms of 100, `dm` sends
 * `PrivateChat`s, `sqlite` climbs the fan-out ladder again with the chat
 * server on a SQLite file. By default the servers' ladders are climbed in
 * turn (see {@linkcode pairedLadders}); the ladder itself is `ladder.ts`'s.
 *
 * @module
 */
import type { LoadContext, Section } from "../context.ts";
import type { BenchResults } from "../report.ts";
import { ladder, pairedLadders } from "./ladder.ts";

/** `fanout` (`group`) or `dm` (`private`) on every server of the run. */
export async function runCeiling(
  context: LoadContext,
  mode: "group" | "private",
  results: BenchResults,
  section: Section,
): Promise<void> {
  const { options } = context;
  const servers = options.servers;
  const title = mode === "group" ? "fan-out" : "direct messages";
  if (options.sequential || servers.length === 1) {
    for (const kind of servers) {
      await section(`${title}, ${kind}`, async () => {
        results.ladders.push(await ladder(context, { kind }, mode));
      });
    }
    return;
  }
  await section(`${title}, ${servers.join(" and ")} in turn`, async () => {
    results.ladders.push(
      ...await pairedLadders(
        context,
        servers.map((kind) => ({ kind })),
        mode,
      ),
    );
  });
}

/** `sqlite`: the fan-out ladder of the chat server on a SQLite file. */
export async function runSqlite(
  context: LoadContext,
  results: BenchResults,
  section: Section,
): Promise<void> {
  if (!context.options.servers.includes("chat")) return;
  await section("fan-out, chat with a SQLite file", async () => {
    results.ladders.push(
      await ladder(context, { kind: "chat-sqlite" }, "group"),
    );
  });
}
