/**
 * Prometheus metrics, kept by the effects runner and served at `/metrics`.
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import type { Metric } from "../chat/reducer.ts";

/** Live figures the gauges read when scraped. */
export interface Gauges {
  connections(): number;
  rooms(): number;
  users(): number;
}

/**
 * A labelled counter kept as plain numbers on the hot path (a map update, no
 * label hashing) and handed to Prometheus only when scraped.
 */
export class Tally {
  #counts = new Map<string, number>();

  /** Registers `name` with one label, `label`, in `registry`. */
  constructor(registry: Registry, name: string, help: string, label: string) {
    const counts = this.#counts;
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      collect() {
        this.reset();
        for (const [value, count] of counts) {
          this.inc({ [label]: value }, count);
        }
      },
    });
  }

  /** Adds `by` (default 1) to the count of `value`. */
  add(value: string, by = 1): void {
    this.#counts.set(value, (this.#counts.get(value) ?? 0) + by);
  }

  /** The count of `value`, for tests and health. */
  get(value: string): number {
    return this.#counts.get(value) ?? 0;
  }
}

/** The server's counters and gauges in one registry. */
export class Metrics {
  /** The registry `/metrics` renders. */
  readonly registry: Registry = new Registry();
  /** Frames received, by `message_type` (`invalid`, `binary` for the rest). */
  readonly framesIn: Tally = new Tally(
    this.registry,
    "chat_frames_in_total",
    "Frames received, by message type.",
    "type",
  );
  /** Frames sent, by `message_type`; a broadcast counts once per recipient. */
  readonly framesOut: Tally = new Tally(
    this.registry,
    "chat_frames_out_total",
    "Frames sent, by message type.",
    "type",
  );
  /** `Error` frames sent, by code. */
  readonly errors: Tally = new Tally(
    this.registry,
    "chat_errors_total",
    "Error frames sent, by code.",
    "code",
  );
  /** Connections closed, by close code. */
  readonly closes: Tally = new Tally(
    this.registry,
    "chat_closes_total",
    "Connections closed, by close code.",
    "code",
  );
  /**
   * `Typing` frames handled, by result: `relayed`, `throttled` (a renewal
   * within `TYPING_INTERVAL_MS`, dropped), `shed` (overloaded, dropped),
   * `stopped` (a stop relayed), `idle` (a stop with nothing shown).
   */
  readonly typing: Tally = new Tally(
    this.registry,
    "chat_typing_total",
    "Typing frames handled, by result.",
    "result",
  );
  /** Upgrades refused before the WebSocket opened, by HTTP status. */
  readonly refused: Counter<"status">;
  /** Storage transactions and the writes in them, by `result`. */
  readonly batches: Counter<"result">;
  readonly writes: Counter<"result">;

  #gauges: Gauges = { connections: () => 0, rooms: () => 0, users: () => 0 };

  /** Registers every metric. */
  constructor() {
    const gauges = (): Gauges => this.#gauges;
    const registers = [this.registry];
    this.refused = new Counter({
      name: "chat_upgrades_refused_total",
      help: "WebSocket upgrades refused, by HTTP status.",
      labelNames: ["status"],
      registers,
    });
    this.batches = new Counter({
      name: "chat_storage_batches_total",
      help:
        "Storage batches (SQLite: transactions), by result: committed or failed (any write in it failed).",
      labelNames: ["result"],
      registers,
    });
    this.writes = new Counter({
      name: "chat_storage_writes_total",
      help: "Writes in storage batches, by result: committed or failed.",
      labelNames: ["result"],
      registers,
    });
    // Both results show from the start, at 0.
    for (const result of ["committed", "failed"]) {
      this.batches.inc({ result }, 0);
      this.writes.inc({ result }, 0);
    }
    new Gauge({
      name: "chat_connections",
      help: "Open WebSocket connections.",
      registers,
      collect() {
        this.set(gauges().connections());
      },
    });
    new Gauge({
      name: "chat_rooms",
      help: "Rooms with at least one member.",
      registers,
      collect() {
        this.set(gauges().rooms());
      },
    });
    new Gauge({
      name: "chat_users",
      help: "Usernames bound to a live connection.",
      registers,
      collect() {
        this.set(gauges().users());
      },
    });
  }

  /** Counts one storage batch and its writes. */
  countBatch(
    committed: boolean,
    writesCommitted: number,
    failed: number,
  ): void {
    this.batches.inc({ result: committed ? "committed" : "failed" });
    if (writesCommitted > 0) {
      this.writes.inc({ result: "committed" }, writesCommitted);
    }
    if (failed > 0) this.writes.inc({ result: "failed" }, failed);
  }

  /** Adds `chat_storage_up`: 0 while storage writes fail. */
  observeStorage(up: () => boolean): void {
    new Gauge({
      name: "chat_storage_up",
      help: "1 while storage writes work, 0 while they fail.",
      registers: [this.registry],
      collect() {
        this.set(up() ? 1 : 0);
      },
    });
  }

  /** Adds `chat_cluster_up`: whether this node reaches Redis and is in sync. */
  observeCluster(up: () => boolean): void {
    new Gauge({
      name: "chat_cluster_up",
      help:
        "1 while this cluster node reaches Redis and is in sync, 0 while it is degraded.",
      registers: [this.registry],
      collect() {
        this.set(up() ? 1 : 0);
      },
    });
  }

  /** Sets what the gauges read at scrape time. */
  observe(gauges: Gauges): void {
    this.#gauges = gauges;
  }

  /** Counts one reducer `count` effect. */
  count(metric: Metric, label: string): void {
    if (metric === "frames_in") this.framesIn.add(label);
    else if (metric === "errors") this.errors.add(label);
    else if (metric === "typing") this.typing.add(label);
    else this.closes.add(label);
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
