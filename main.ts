/**
 * The chat server's entry point: reads the settings, serves, and stops
 * cleanly on SIGINT or SIGTERM. A setting that cannot be used ends it with
 * one line on stderr: exit 2 for a bad value (`CONFIG.md`), exit 1 for a
 * start that fails (a database that cannot be opened, a port in use), never
 * with a stack trace.
 *
 * @module
 */
import {
  changedSettings,
  ConfigError,
  helpText,
  loadConfig,
  readDotenv,
} from "./src/runtime/config.ts";
import { SETTINGS } from "./src/runtime/settings.ts";
import { createLogger } from "./src/runtime/log.ts";
import { startServer } from "./src/http/server.ts";

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig({
      args: Deno.args,
      env: Deno.env.toObject(),
      dotenv: readDotenv(),
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`error: ${error.message}`);
      return 2;
    }
    throw error;
  }
  if (loaded.kind === "help") {
    console.log(helpText());
    return 0;
  }
  const { config, sources } = loaded;
  const log = createLogger(config.logLevel);
  // Handle signals before the first log line: a stop that arrives once the
  // server has said anything (even "listening") drains, never kills.
  const { promise: stopped, resolve } = Promise.withResolvers<string>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => resolve(signal));
  }
  log("info", "starting", { settings: changedSettings(config, sources) });
  let server;
  try {
    server = await startServer(config, log);
  } catch (error) {
    console.error(startupError(error, config));
    return 1;
  }
  log("info", "stopping", { signal: await stopped });
  await server.shutdown();
  return 0;
}

/** The settings a start-up error names. */
interface StartupSettings {
  /** Address the server listens on. */
  host: string;
  /** Port the server listens on. */
  port: number;
  /** SQLite file. */
  databasePath: string;
}

/** `NAME (--flag)` of a setting, as the config errors name it. */
function setting(key: keyof typeof SETTINGS): string {
  return `${SETTINGS[key].env} (--${SETTINGS[key].flag})`;
}

/**
 * One line saying what failed at start, naming the file, port or setting,
 * and what to do. Exported for tests.
 */
export function startupError(
  error: unknown,
  config: StartupSettings,
): string {
  const detail = (error instanceof Error ? error.message : String(error))
    .replace(/\s+/g, " ").trim();
  const where = `${config.host}:${config.port}`;
  if (error instanceof Deno.errors.AddrInUse) {
    return `error: cannot listen on ${where}: the port is in use by another process; stop it or set ${
      setting("port")
    } to a free port`;
  }
  if (
    error instanceof Deno.errors.AddrNotAvailable ||
    (error instanceof Deno.errors.PermissionDenied &&
      /listen|bind/i.test(detail))
  ) {
    return `error: cannot listen on ${where} (${detail}); set ${
      setting("host")
    } to an address of this machine, or ${
      setting("port")
    } to a port this user may open`;
  }
  if ((error as { code?: unknown })?.code === "ERR_SQLITE_ERROR") {
    const file = `${setting("databasePath")} ${config.databasePath}`;
    if (/not a database|malformed|corrupt/i.test(detail)) {
      return `error: ${file} is not a usable SQLite database (${detail}); restore it from a backup, or move it away to start with an empty one`;
    }
    if (/unable to open|readonly|read-only|permission|access/i.test(detail)) {
      return `error: cannot open ${file} (${detail}); make its directory exist and writable by this user, or point ${
        setting("databasePath")
      } to another file`;
    }
    return `error: ${file}: ${detail}; check the file, or point ${
      setting("databasePath")
    } to another file`;
  }
  return `error: the server could not start: ${detail}`;
}

if (import.meta.main) Deno.exit(await main());
