/**
 * The chat server's entry point: reads the settings, serves, and stops
 * cleanly on SIGINT or SIGTERM.
 *
 * @module
 */
import {
  changedSettings,
  ConfigError,
  helpText,
  loadConfig,
  readDotenv,
} from "./src/config.ts";
import { createLogger } from "./src/log.ts";
import { startServer } from "./src/server.ts";

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
  const server = await startServer(config, log);
  log("info", "stopping", { signal: await stopped });
  await server.shutdown();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
