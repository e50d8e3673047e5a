/**
 * JSON-line logging to stderr, filtered by level.
 *
 * @module
 */
import type { LogLevel } from "./settings.ts";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Writes one log line; `fields` must not hold message content at `info`. */
export type Logger = (
  level: LogLevel,
  msg: string,
  fields?: Record<string, unknown>,
) => void;

/** A logger that writes lines at `threshold` and above to `sink`. */
export function createLogger(
  threshold: LogLevel,
  sink: (line: string) => void = (line) => console.error(line),
): Logger {
  const min = RANK[threshold];
  return (level, msg, fields) => {
    if (RANK[level] < min) return;
    sink(
      JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }),
    );
  };
}
