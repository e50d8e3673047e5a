/**
 * `loadConfig` against every row of the settings contract (CONFIG.md):
 * default, flag, environment variable, `.env` line and invalid values, then
 * precedence, flag forms, help and the masked startup summary.
 *
 * Why this file is long: `ROWS` is one row per setting of CONFIG.md (most
 * of the file), and the first test fails when a setting has none; kept
 * together so a missing setting is one place to look.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  changedSettings,
  type Config,
  ConfigError,
  type ConfigInputs,
  helpText,
  loadConfig,
  type Sources,
} from "../../src/runtime/config.ts";
import { type SettingName, SETTINGS } from "../../src/runtime/settings.ts";

/** One row of the contract's table, with values to try. */
type Row = {
  [K in SettingName]: {
    /** The `Config` key. */
    key: K;
    /** Environment variable and `.env` key. */
    env: string;
    /** Flag, without dashes. */
    flag: string;
    /** For booleans: the flag that sets `false`. */
    negation?: string;
    /** A secret taken from the environment or `.env` only: its flag is refused. */
    envOnly?: true;
    /** The default as `--help` prints it, or `undefined` for none. */
    fallbackText: string | undefined;
    /** The parsed default. */
    fallback: Config[K];
    /** A valid non-default value, as text, and what it parses to. */
    sample: string;
    parsed: Config[K];
    /** Values that must be refused. */
    invalid: readonly string[];
  };
}[SettingName];

/** The whole contract, one row per setting, in CONFIG.md's order. */
const ROWS: readonly Row[] = [
  {
    key: "host",
    env: "HOST",
    flag: "host",
    fallbackText: "127.0.0.1",
    fallback: "127.0.0.1",
    sample: "0.0.0.0",
    parsed: "0.0.0.0",
    invalid: ["", "   ", "a b"],
  },
  {
    key: "port",
    env: "PORT",
    flag: "port",
    fallbackText: "8080",
    fallback: 8080,
    sample: "9090",
    parsed: 9090,
    invalid: ["abc", "-1", "65536", "80.5", "1e3", ""],
  },
  {
    key: "maxConnections",
    env: "MAX_CONNECTIONS",
    flag: "max-connections",
    fallbackText: "10000",
    fallback: 10000,
    sample: "5",
    parsed: 5,
    invalid: ["0", "-5", "many", "9007199254740992", "99999999999999999999"],
  },
  {
    key: "authEnabled",
    env: "AUTH_ENABLED",
    flag: "auth",
    negation: "no-auth",
    fallbackText: "false",
    fallback: false,
    sample: "true",
    parsed: true,
    invalid: ["yes", "no", "on", "2", "TRUE", ""],
  },
  {
    key: "tokenAtUpgrade",
    env: "TOKEN_AT_UPGRADE",
    flag: "token-at-upgrade",
    negation: "no-token-at-upgrade",
    fallbackText: "false",
    fallback: false,
    sample: "true",
    parsed: true,
    invalid: ["yes", "2", ""],
  },
  {
    key: "adminToken",
    env: "ADMIN_TOKEN",
    flag: "admin-token",
    envOnly: true,
    fallbackText: undefined,
    fallback: undefined,
    sample: "s3cret-admin",
    parsed: "s3cret-admin",
    invalid: ["", "  "],
  },
  {
    key: "tokenTtlSeconds",
    env: "TOKEN_TTL_SECONDS",
    flag: "token-ttl",
    fallbackText: "86400",
    fallback: 86400,
    sample: "3600",
    parsed: 3600,
    invalid: ["0", "-1", "1h"],
  },
  {
    key: "defaultRoom",
    env: "DEFAULT_ROOM",
    flag: "default-room",
    fallbackText: "general",
    fallback: "general",
    sample: "lobby.main-1",
    parsed: "lobby.main-1",
    invalid: ["the lobby", "", "a/b", "x".repeat(33)],
  },
  {
    key: "maxMessageBytes",
    env: "MAX_MESSAGE_BYTES",
    flag: "max-message-bytes",
    fallbackText: "65536",
    fallback: 65536,
    sample: "1024",
    parsed: 1024,
    invalid: ["-1", "63", "64k"],
  },
  {
    key: "maxContentChars",
    env: "MAX_CONTENT_CHARS",
    flag: "max-content-chars",
    fallbackText: "4000",
    fallback: 4000,
    sample: "280",
    parsed: 280,
    invalid: ["0", "-280", "lots"],
  },
  {
    key: "maxRoomsPerConnection",
    env: "MAX_ROOMS_PER_CONNECTION",
    flag: "max-rooms",
    fallbackText: "50",
    fallback: 50,
    sample: "3",
    parsed: 3,
    invalid: ["0", "-3", "3.5"],
  },
  {
    key: "presenceFullLimit",
    env: "PRESENCE_FULL_LIMIT",
    flag: "presence-full-limit",
    fallbackText: "200",
    fallback: 200,
    sample: "5",
    parsed: 5,
    invalid: ["0", "-5", "many"],
  },
  {
    key: "rateLimitPerSecond",
    env: "RATE_LIMIT_PER_SECOND",
    flag: "rate-limit",
    fallbackText: "20",
    fallback: 20,
    sample: "0",
    parsed: 0,
    invalid: ["-1", "fast", "2.5"],
  },
  {
    key: "rateLimitBurst",
    env: "RATE_LIMIT_BURST",
    flag: "rate-burst",
    fallbackText: "40",
    fallback: 40,
    sample: "100",
    parsed: 100,
    invalid: ["0", "-40", "x"],
  },
  {
    key: "maxConsecutiveErrors",
    env: "MAX_CONSECUTIVE_ERRORS",
    flag: "max-errors",
    fallbackText: "10",
    fallback: 10,
    sample: "3",
    parsed: 3,
    invalid: ["0", "-10", "ten"],
  },
  {
    key: "maxBufferedBytes",
    env: "MAX_BUFFERED_BYTES",
    flag: "max-buffered-bytes",
    fallbackText: "1048576",
    fallback: 1048576,
    sample: "4096",
    parsed: 4096,
    invalid: ["0", "-1", "1MB"],
  },
  {
    key: "batchWindowMs",
    env: "BATCH_WINDOW_MS",
    flag: "batch-window-ms",
    fallbackText: "20",
    fallback: 20,
    sample: "5",
    parsed: 5,
    invalid: ["-1", "51", "10ms"],
  },
  {
    key: "idleTimeoutSeconds",
    env: "IDLE_TIMEOUT_SECONDS",
    flag: "idle-timeout",
    fallbackText: "60",
    fallback: 60,
    sample: "5",
    parsed: 5,
    invalid: ["0", "-60", "1m"],
  },
  {
    key: "allowedOrigins",
    env: "ALLOWED_ORIGINS",
    flag: "allowed-origins",
    fallbackText: "self",
    fallback: ["self"],
    sample: "https://a.example,https://b.example",
    parsed: ["https://a.example", "https://b.example"],
    invalid: ["", "  "],
  },
  {
    key: "authTimeoutSeconds",
    env: "AUTH_TIMEOUT_SECONDS",
    flag: "auth-timeout",
    fallbackText: "10",
    fallback: 10,
    sample: "3",
    parsed: 3,
    invalid: ["0", "-1", "10s", "3601"],
  },
  {
    key: "maxConnectionsPerIp",
    env: "MAX_CONNECTIONS_PER_IP",
    flag: "max-connections-per-ip",
    fallbackText: "256",
    fallback: 256,
    sample: "0",
    parsed: 0,
    invalid: ["-1", "many", "1.5"],
  },
  {
    key: "maxUnauthenticatedPerIp",
    env: "MAX_UNAUTHENTICATED_PER_IP",
    flag: "max-unauthenticated-per-ip",
    fallbackText: "4",
    fallback: 4,
    sample: "0",
    parsed: 0,
    invalid: ["-1", "four"],
  },
  {
    key: "maxUnauthenticated",
    env: "MAX_UNAUTHENTICATED",
    flag: "max-unauthenticated",
    fallbackText: "64",
    fallback: 64,
    sample: "1000",
    parsed: 1000,
    invalid: ["-1", "1e3"],
  },
  {
    key: "trustedProxies",
    env: "TRUSTED_PROXIES",
    flag: "trusted-proxies",
    fallbackText: undefined,
    fallback: undefined,
    sample: "127.0.0.1, ::1",
    parsed: ["127.0.0.1", "::1"],
    invalid: ["proxy.example", "10.0.0.0/8"],
  },
  {
    key: "historySize",
    env: "HISTORY_SIZE",
    flag: "history-size",
    fallbackText: "1000",
    fallback: 1000,
    sample: "0",
    parsed: 0,
    invalid: ["-1", "all"],
  },
  {
    key: "maxOfflineMessages",
    env: "MAX_OFFLINE_MESSAGES",
    flag: "max-offline-messages",
    fallbackText: "10000",
    fallback: 10000,
    sample: "50",
    parsed: 50,
    invalid: ["0", "-1", "many", "1.5"],
  },
  {
    key: "databasePath",
    env: "DATABASE_PATH",
    flag: "database",
    fallbackText: "data/chat.db",
    fallback: "data/chat.db",
    sample: ":memory:",
    parsed: ":memory:",
    invalid: ["", " "],
  },
  {
    key: "redisUrl",
    env: "REDIS_URL",
    flag: "redis",
    fallbackText: undefined,
    fallback: undefined,
    sample: "redis://cache.internal:6379/0",
    parsed: "redis://cache.internal:6379/0",
    invalid: ["http://x", "redis://", "cache.internal:6379", ""],
  },
  {
    key: "redisWaitReplicas",
    env: "REDIS_WAIT_REPLICAS",
    flag: "redis-wait-replicas",
    fallbackText: "0",
    fallback: 0,
    sample: "1",
    parsed: 1,
    invalid: ["-1", "one", "1.5", ""],
  },
  {
    key: "shutdownGraceSeconds",
    env: "SHUTDOWN_GRACE_SECONDS",
    flag: "shutdown-grace",
    fallbackText: "10",
    fallback: 10,
    sample: "0",
    parsed: 0,
    invalid: ["-1", "soon", "1.5"],
  },
  {
    key: "logLevel",
    env: "LOG_LEVEL",
    flag: "log-level",
    fallbackText: "info",
    fallback: "info",
    sample: "debug",
    parsed: "debug",
    invalid: ["loud", "INFO", "trace", ""],
  },
];

const NONE: ConfigInputs = { args: [], env: {}, dotenv: undefined };

/** Loads settings that must be valid; fails on a help request. */
function load(inputs: Partial<ConfigInputs> = {}): {
  config: Config;
  sources: Sources;
} {
  const loaded = loadConfig({ ...NONE, ...inputs });
  assert.equal(loaded.kind, "config");
  if (loaded.kind !== "config") throw new Error("unreachable");
  return loaded;
}

/** Asserts a ConfigError whose one-line message names `row`'s variable. */
function assertRefused(
  inputs: Partial<ConfigInputs>,
  row: Row,
  raw: string,
): void {
  assert.throws(
    () => loadConfig({ ...NONE, ...inputs }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
      const { message } = error;
      assert.ok(
        message.startsWith(`${row.env} (--${row.flag}) takes `),
        `message does not name ${row.env} and what it takes: ${message}`,
      );
      assert.ok(!message.includes("\n"), `not one line: ${message}`);
      // A whole number states both of its bounds, the upper one too.
      if (message.includes("whole number")) {
        assert.match(message, / takes a whole number from \d+ to \d+; got '/);
      }
      // A secret (ADMIN_TOKEN, REDIS_URL with its password) is never echoed.
      const secret = row.env === "ADMIN_TOKEN" || row.env === "REDIS_URL";
      const shown = secret ? "(hidden)" : raw;
      assert.ok(message.includes(`got '${shown}'`), message);
      return true;
    },
  );
}

Deno.test("the table covers every setting of src/runtime/settings.ts, with its flag and default", () => {
  assert.deepEqual(
    ROWS.map((row) => row.key).sort(),
    Object.keys(SETTINGS).sort(),
  );
  for (const row of ROWS) {
    const spec: {
      env: string;
      flag: string;
      negation?: string;
      fallback?: string;
    } = SETTINGS[row.key];
    assert.equal(spec.env, row.env, row.key);
    assert.equal(spec.flag, row.flag, row.key);
    assert.equal(spec.negation, row.negation, row.key);
    assert.equal(spec.fallback, row.fallbackText, row.key);
  }
});

Deno.test("nothing given: every setting has its default and no source", () => {
  const { config, sources } = load();
  for (const row of ROWS) {
    assert.deepEqual(config[row.key], row.fallback, row.env);
  }
  assert.deepEqual(sources, {});
});

for (const row of ROWS) {
  Deno.test(`${row.env}: default is ${row.fallbackText ?? "none"}`, () => {
    assert.deepEqual(load().config[row.key], row.fallback);
  });

  Deno.test(`${row.env}: environment variable ${row.env}=${row.sample}`, () => {
    const { config, sources } = load({ env: { [row.env]: row.sample } });
    assert.deepEqual(config[row.key], row.parsed);
    assert.deepEqual(sources, { [row.key]: "env" });
  });

  Deno.test(`${row.env}: .env line ${row.env}=${row.sample}`, () => {
    const { config, sources } = load({
      dotenv: `# settings\n${row.env}=${row.sample}\n`,
    });
    assert.deepEqual(config[row.key], row.parsed);
    assert.deepEqual(sources, { [row.key]: ".env" });
  });

  if (row.envOnly) {
    Deno.test(`${row.env}: flag --${row.flag} is refused, naming the environment and .env, without the value`, () => {
      for (
        const args of [[`--${row.flag}=${row.sample}`], [
          `--${row.flag}`,
          row.sample,
        ]]
      ) {
        assert.throws(
          () => loadConfig({ ...NONE, args }),
          (error: unknown) =>
            error instanceof ConfigError &&
            error.message.includes(
              `set ${row.env} in the environment or in .env`,
            ) &&
            !error.message.includes(row.sample) &&
            !error.message.includes("\n"),
        );
      }
    });
  } else if (row.negation === undefined) {
    Deno.test(`${row.env}: flag --${row.flag}=${row.sample} and --${row.flag} ${row.sample}`, () => {
      for (
        const args of [[`--${row.flag}=${row.sample}`], [
          `--${row.flag}`,
          row.sample,
        ]]
      ) {
        const { config, sources } = load({ args });
        assert.deepEqual(config[row.key], row.parsed, args.join(" "));
        assert.deepEqual(sources, { [row.key]: "flag" });
      }
    });
  } else {
    Deno.test(`${row.env}: flags --${row.flag} and --${row.negation}`, () => {
      const on = load({ args: [`--${row.flag}`] });
      assert.equal(on.config[row.key], true);
      assert.deepEqual(on.sources, { [row.key]: "flag" });
      const off = load({
        args: [`--${row.negation}`],
        env: { [row.env]: "true" },
      });
      assert.equal(off.config[row.key], false);
      assert.deepEqual(off.sources, { [row.key]: "flag" });
    });
  }

  for (const raw of row.invalid) {
    Deno.test(`${row.env}: '${raw}' is refused, naming ${row.env}`, () => {
      assertRefused({ env: { [row.env]: raw } }, row, raw);
      assertRefused({ dotenv: `${row.env}='${raw}'\n` }, row, raw);
      if (row.negation === undefined && !row.envOnly) {
        assertRefused({ args: [`--${row.flag}=${raw}`] }, row, raw);
        assertRefused({ args: [`--${row.flag}`, raw] }, row, raw);
      }
    });
  }
}

// Bounds in the message -----------------------------------------------------

/** Refusals whose message must state the real bounds, the upper one too. */
const BOUNDS: readonly { env: string; raw: string; message: string }[] = [
  {
    env: "MAX_CONNECTIONS",
    raw: "99999999999999999999",
    message:
      "MAX_CONNECTIONS (--max-connections) takes a whole number from 1 to 9007199254740991; got '99999999999999999999'",
  },
  {
    env: "MAX_CONNECTIONS",
    raw: "0",
    message:
      "MAX_CONNECTIONS (--max-connections) takes a whole number from 1 to 9007199254740991; got '0'",
  },
  {
    env: "HISTORY_SIZE",
    raw: "9007199254740992",
    message:
      "HISTORY_SIZE (--history-size) takes a whole number from 0 to 9007199254740991; got '9007199254740992'",
  },
  {
    env: "PORT",
    raw: "65536",
    message: "PORT (--port) takes a whole number from 0 to 65535; got '65536'",
  },
];

for (const { env, raw, message } of BOUNDS) {
  Deno.test(`${env}=${raw}: the message states the real bounds`, () => {
    assert.throws(
      () => loadConfig({ ...NONE, env: { [env]: raw } }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, `not a ConfigError: ${error}`);
        assert.equal(error.message, message);
        return true;
      },
    );
  });
}

Deno.test("the largest exact whole number is taken", () => {
  const { config } = load({ env: { MAX_CONNECTIONS: "9007199254740991" } });
  assert.equal(config.maxConnections, Number.MAX_SAFE_INTEGER);
});

// Booleans ------------------------------------------------------------------

const BOOLEANS: readonly { raw: string; value: boolean }[] = [
  { raw: "true", value: true },
  { raw: "1", value: true },
  { raw: "false", value: false },
  { raw: "0", value: false },
];

for (const { raw, value } of BOOLEANS) {
  Deno.test(`AUTH_ENABLED=${raw} is ${value}, from env and .env`, () => {
    assert.equal(
      load({ env: { AUTH_ENABLED: raw } }).config.authEnabled,
      value,
    );
    assert.equal(
      load({ dotenv: `AUTH_ENABLED=${raw}` }).config.authEnabled,
      value,
    );
  });
}

Deno.test("--auth and --no-auth take no value; the last one given wins", () => {
  assert.throws(
    () => loadConfig({ ...NONE, args: ["--auth=true"] }),
    (error: unknown) =>
      error instanceof ConfigError &&
      /--auth takes no value/.test(error.message),
  );
  assert.throws(
    () => loadConfig({ ...NONE, args: ["--no-auth=1"] }),
    (error: unknown) =>
      error instanceof ConfigError &&
      /--no-auth takes no value/.test(error.message),
  );
  assert.equal(
    load({ args: ["--auth", "--no-auth"] }).config.authEnabled,
    false,
  );
  assert.equal(
    load({ args: ["--no-auth", "--auth"] }).config.authEnabled,
    true,
  );
});

// Precedence ----------------------------------------------------------------

type Layer = string | undefined;
const PRECEDENCE: readonly {
  name: string;
  flag: Layer;
  env: Layer;
  dotenv: Layer;
  port: number;
  source: "flag" | "env" | ".env" | undefined;
}[] = [
  {
    name: "all four",
    flag: "1001",
    env: "1002",
    dotenv: "1003",
    port: 1001,
    source: "flag",
  },
  {
    name: "flag over .env",
    flag: "1001",
    env: undefined,
    dotenv: "1003",
    port: 1001,
    source: "flag",
  },
  {
    name: "flag over env",
    flag: "1001",
    env: "1002",
    dotenv: undefined,
    port: 1001,
    source: "flag",
  },
  {
    name: "env over .env",
    flag: undefined,
    env: "1002",
    dotenv: "1003",
    port: 1002,
    source: "env",
  },
  {
    name: ".env over default",
    flag: undefined,
    env: undefined,
    dotenv: "1003",
    port: 1003,
    source: ".env",
  },
  {
    name: "default",
    flag: undefined,
    env: undefined,
    dotenv: undefined,
    port: 8080,
    source: undefined,
  },
];

for (const row of PRECEDENCE) {
  Deno.test(`precedence flag > env > .env > default: ${row.name}`, () => {
    const { config, sources } = load({
      args: row.flag === undefined ? [] : ["--port", row.flag],
      env: row.env === undefined ? {} : { PORT: row.env },
      dotenv: row.dotenv === undefined ? undefined : `PORT=${row.dotenv}\n`,
    });
    assert.equal(config.port, row.port);
    assert.equal(sources.port, row.source);
  });
}

Deno.test("precedence holds per setting: each comes from its own highest layer", () => {
  const { config, sources } = load({
    args: ["--default-room", "from-flag"],
    env: { DEFAULT_ROOM: "from-env", LOG_LEVEL: "warn" },
    dotenv: "DEFAULT_ROOM=from-dotenv\nLOG_LEVEL=debug\nHISTORY_SIZE=7\n",
  });
  assert.equal(config.defaultRoom, "from-flag");
  assert.equal(config.logLevel, "warn");
  assert.equal(config.historySize, 7);
  assert.deepEqual(sources, {
    defaultRoom: "flag",
    logLevel: "env",
    historySize: ".env",
  });
});

// Flags and .env forms ------------------------------------------------------

Deno.test("--flag=value and --flag value give the same settings", () => {
  const joined = load({
    args: [
      "--port=9000",
      "--log-level=warn",
      "--allowed-origins=https://x.example",
    ],
  });
  const split = load({
    args: [
      "--port",
      "9000",
      "--log-level",
      "warn",
      "--allowed-origins",
      "https://x.example",
    ],
  });
  assert.deepEqual(joined, split);
  assert.equal(joined.config.port, 9000);
});

Deno.test("--flag=value keeps '=' inside the value", () => {
  assert.deepEqual(
    load({ args: ["--allowed-origins=a=b=c"] }).config.allowedOrigins,
    ["a=b=c"],
  );
});

Deno.test("--redis with a password is refused (it would show in ps); without one it is taken", () => {
  assert.throws(
    () => loadConfig({ ...NONE, args: ["--redis", "redis://:pa55@r:6379"] }),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.message.includes("set REDIS_URL in the environment or in .env") &&
      !error.message.includes("pa55"),
  );
  assert.equal(
    load({ args: ["--redis", "redis://r:6379"] }).config.redisUrl,
    "redis://r:6379",
  );
});

Deno.test("a flag repeated: the last one wins", () => {
  assert.equal(load({ args: ["--port", "1", "--port=2"] }).config.port, 2);
});

Deno.test("a flag without its value is a ConfigError", () => {
  assert.throws(
    () => loadConfig({ ...NONE, args: ["--port"] }),
    (error: unknown) =>
      error instanceof ConfigError &&
      /--port needs a value/.test(error.message),
  );
});

const REFUSED_ARGS: readonly { args: string[]; pattern: RegExp }[] = [
  { args: ["--colour=blue"], pattern: /^unknown flag --colour\b/ },
  { args: ["--port", "1", "--verbose"], pattern: /^unknown flag --verbose\b/ },
  { args: ["--PORT=1"], pattern: /^unknown flag --PORT\b/ },
  { args: ["serve"], pattern: /^unexpected argument 'serve'/ },
  { args: ["--port", "1", "extra"], pattern: /^unexpected argument 'extra'/ },
  { args: ["-p", "1"], pattern: /^unexpected argument '-p'/ },
];

for (const { args, pattern } of REFUSED_ARGS) {
  Deno.test(`arguments ${JSON.stringify(args)} are a ConfigError`, () => {
    assert.throws(
      () => loadConfig({ ...NONE, args }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, pattern);
        assert.ok(!error.message.includes("\n"));
        return true;
      },
    );
  });
}

Deno.test("--help and -h ask for help, whatever else is given", () => {
  for (
    const args of [["--help"], ["-h"], ["--port", "1", "--help"], [
      "--help",
      "--port=abc",
    ]]
  ) {
    assert.deepEqual(loadConfig({ ...NONE, args }), { kind: "help" });
  }
});

Deno.test("helpText names every variable, flag and default", () => {
  const text = helpText();
  for (const row of ROWS) {
    assert.ok(text.includes(row.env), row.env);
    assert.ok(
      text.includes(row.envOnly ? "environment or .env only" : `--${row.flag}`),
      row.flag,
    );
    if (row.negation) assert.ok(text.includes(`--${row.negation}`));
    assert.ok(
      text.includes(
        row.fallbackText === undefined
          ? "default none"
          : `default '${row.fallbackText}'`,
      ),
      `${row.env} default`,
    );
  }
  assert.match(text, /flag > environment > \.env > default/);
});

Deno.test(".env: comments, quotes, export and blank lines are understood", () => {
  const { config } = load({
    dotenv: [
      "# chat server",
      "",
      'DEFAULT_ROOM="lobby" # the room',
      "export PORT=8181",
      "LOG_LEVEL='warn'",
      "UNRELATED=whatever",
    ].join("\n"),
  });
  assert.equal(config.defaultRoom, "lobby");
  assert.equal(config.port, 8181);
  assert.equal(config.logLevel, "warn");
});

Deno.test("values are trimmed", () => {
  const { config } = load({ env: { PORT: " 81 ", DEFAULT_ROOM: " lobby " } });
  assert.equal(config.port, 81);
  assert.equal(config.defaultRoom, "lobby");
});

for (const host of ["localhost", "0.0.0.0", "::", "::1", "chat-1.internal"]) {
  Deno.test(`HOST='${host}' is accepted`, () => {
    assert.equal(load({ env: { HOST: host } }).config.host, host);
  });
}

Deno.test("a value with a line break is still reported on one line", () => {
  const row = ROWS.find((r) => r.key === "defaultRoom") as Row;
  assert.throws(
    () => loadConfig({ ...NONE, dotenv: 'DEFAULT_ROOM="a\nb"\n' }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.message.startsWith(`${row.env} (--${row.flag}) takes `));
      assert.ok(!error.message.includes("\n"), error.message);
      return true;
    },
  );
});

// ALLOWED_ORIGINS -----------------------------------------------------------

const ORIGINS: readonly { raw: string; origins: string[] }[] = [
  { raw: "*", origins: ["*"] },
  { raw: "https://chat.example", origins: ["https://chat.example"] },
  {
    raw: "https://a.example,http://localhost:3000",
    origins: ["https://a.example", "http://localhost:3000"],
  },
  {
    raw: " https://a.example , https://b.example ,, ",
    origins: ["https://a.example", "https://b.example"],
  },
];

for (const { raw, origins } of ORIGINS) {
  Deno.test(`ALLOWED_ORIGINS='${raw}' splits on commas`, () => {
    assert.deepEqual(
      load({ env: { ALLOWED_ORIGINS: raw } }).config.allowedOrigins,
      origins,
    );
  });
}

// changedSettings -----------------------------------------------------------

Deno.test("changedSettings: nothing set, nothing reported", () => {
  const { config, sources } = load();
  assert.deepEqual(changedSettings(config, sources), {});
});

Deno.test("changedSettings: set settings by variable name, secrets masked", () => {
  const { config, sources } = load({
    args: ["--port", "0"],
    env: {
      ADMIN_TOKEN: "hunter2-admin",
      REDIS_URL: "redis://:pa55word@redis.internal:6379",
    },
    dotenv:
      "ALLOWED_ORIGINS=https://a.example,https://b.example\nAUTH_ENABLED=1\n",
  });
  const changed = changedSettings(config, sources);
  assert.deepEqual(changed, {
    PORT: 0,
    AUTH_ENABLED: true,
    ADMIN_TOKEN: "(set)",
    ALLOWED_ORIGINS: ["https://a.example", "https://b.example"],
    REDIS_URL: "(set)",
  });
  const text = JSON.stringify(changed);
  assert.ok(!text.includes("hunter2"));
  assert.ok(!text.includes("pa55word"));
});

Deno.test("changedSettings: a setting given with its default value is still reported", () => {
  const { config, sources } = load({ env: { PORT: "8080" } });
  assert.deepEqual(changedSettings(config, sources), { PORT: 8080 });
});

// The operator's copies of the table ------------------------------------------

const REPO = new URL("../..", import.meta.url);

Deno.test(".env.example lists every setting, commented out, with its default", async () => {
  const text = await Deno.readTextFile(new URL(".env.example", REPO));
  const lines = text.split("\n");
  assert.ok(
    lines.every((line) => line === "" || line.startsWith("#")),
    ".env.example must set nothing",
  );
  for (const row of ROWS) {
    const line = `# ${row.env}=${row.fallbackText ?? ""}`;
    assert.equal(
      lines.filter((l) => l === line).length,
      1,
      `.env.example lacks '${line}'`,
    );
  }
  // Uncommented, the lines with a default give exactly the defaults.
  const uncommented = ROWS.filter((row) => row.fallbackText !== undefined)
    .map((row) => `${row.env}=${row.fallbackText}`).join("\n");
  const { config } = load({ dotenv: uncommented });
  assert.deepEqual(config, load().config);
});

Deno.test("docs/configuration.md has the table of src/runtime/settings.ts", async () => {
  const text = await Deno.readTextFile(new URL("docs/configuration.md", REPO));
  const rows = text.split("\n").filter((line) => line.startsWith("| `"))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
  assert.deepEqual(
    rows.map((cells) => cells.slice(0, 3)),
    ROWS.map((row) => [
      `\`${row.env}\``,
      row.envOnly
        ? "environment or `.env` only"
        : row.negation
        ? `\`--${row.flag}\` / \`--${row.negation}\``
        : `\`--${row.flag}\``,
      row.fallbackText === undefined ? "none" : `\`${row.fallbackText}\``,
    ]),
  );
});

Deno.test("an invalid REDIS_URL with a password is refused without echoing it", () => {
  assert.throws(
    () =>
      loadConfig({
        ...NONE,
        env: { REDIS_URL: "http://user:hunter2@cache:6379" },
      }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(!error.message.includes("hunter2"), error.message);
      return true;
    },
  );
});

Deno.test("ALLOWED_ORIGINS with no origin at all is refused", () => {
  assert.throws(
    () => loadConfig({ ...NONE, env: { ALLOWED_ORIGINS: " , " } }),
    /ALLOWED_ORIGINS \(--allowed-origins\) takes at least one origin/,
  );
});
