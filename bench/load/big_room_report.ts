/**
 * The tables of the `hot-room` and `room-fill` scenarios at the end of a
 * run (and of `--report FILE`): each server's ceiling in the hot room and
 * the chat / relay ratio, and each server's fill. It computes nothing but
 * the ratios; the scenarios measure.
 *
 * @module
 */
import type { HotRoomResult } from "./scenarios/hot_room.ts";
import type { RoomFillResult } from "./scenarios/room_fill.ts";

/** `a / b` to two decimals, `-` without both. */
function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return "-";
  return String(Math.round(a / b * 100) / 100);
}

/** The hot-room and room-fill tables, as Markdown lines (none without results). */
export function bigRoomTables(
  results: { hotRoom?: HotRoomResult[]; roomFill?: RoomFillResult[] },
): string[] {
  const lines: string[] = [];
  const hot = results.hotRoom ?? [];
  if (hot.length > 0) {
    lines.push(
      `\n## Hot room (every message delivered, p99 <= ${
        hot[0]!.p99LimitMs
      } ms)\n`,
      "| server | members | senders | batched | ceiling msg/s | deliveries/s | p99 ms at ceiling | frames/member/s at ceiling | server CPU % |",
      "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const h of hot) {
      const at = h.steps.find((s) => s.pass && s.rate === h.ceiling);
      lines.push(
        `| ${h.server} | ${h.members} | ${h.senders} | ${
          h.batch ? "yes" : "no"
        } | ${h.ceiling}${h.ceilingReached ? "" : "+"} | ${
          h.ceiling * h.members
        } | ${at?.p99Ms ?? "-"} | ${at?.framesPerMemberPerSec ?? "-"} | ${
          at?.serverCpuPct ?? "-"
        } |`,
      );
    }
    const chat = hot.find((h) => h.server === "chat")?.ceiling;
    const relay = hot.find((h) => h.server === "baseline")?.ceiling;
    lines.push(
      `\nHot-room ceiling chat / relay: ${ratio(chat, relay)} (target >= 3).`,
    );
  }
  const fill = results.roomFill ?? [];
  if (fill.length > 0) {
    lines.push(
      "\n## Room fill (distinct users, bursts of 500, retry with backoff)\n",
      "| server | users | in | fill s | refused attempts | frames/user | bytes/user | server CPU s | RSS max MB | broadcast received | p99 ms |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const f of fill) {
      lines.push(
        `| ${f.server}${(f.nodes ?? 1) > 1 ? ` ×${f.nodes}` : ""}${
          f.batch ? " (batch)" : ""
        } | ${f.users} | ${f.connected} | ${f.fillSeconds} | ${f.refused} | ${f.framesPerUser} | ${f.bytesPerUser} | ${f.serverCpuSeconds} | ${f.serverRssMaxMb} | ${f.broadcast.received}/${f.broadcast.alive} | ${f.broadcast.p99Ms} |`,
      );
    }
    const chat = fill.find((f) => f.server === "chat")?.fillSeconds;
    const relay = fill.find((f) => f.server === "baseline")?.fillSeconds;
    lines.push(
      `\nFill time chat / relay: ${
        ratio(chat, relay)
      } (target <= 3); broadcast p99 target <= 300 ms.`,
    );
  }
  return lines;
}
