/**
 * Prometheus metrics, kept by the effects runner and served at `/metrics`.
 *
 * @module
 */
import { Counter, Gauge, Registry } from "prom-client";
import type { Metric } from "./reducer.ts";

/** Live figures the gauges read when scraped. */
export interface Gauges {
  connections(): number;
  rooms(): number;
  users(): number;
}

/** The server's counters and gauges in one registry. */
export class Metrics {
  /** The registry `/metrics` renders. */
  readonly registry: Registry = new Registry();
  /** Frames received, by `message_type` (`invalid`, `binary` for the rest). */
  readonly framesIn: Counter<"type">;
  /** Frames sent, by `message_type`; a broadcast counts once per recipient. */
  readonly framesOut: Counter<"type">;
  /** `Error` frames sent, by code. */
  readonly errors: Counter<"code">;
  /** Connections closed, by close code. */
  readonly closes: Counter<"code">;
  /** Upgrades refused before the WebSocket opened, by HTTP status. */
  readonly refused: Counter<"status">;
  /** Storage transactions and the writes in them. */
  readonly batches: Counter;
  readonly writes: Counter;

  #gauges: Gauges = { connections: () => 0, rooms: () => 0, users: () => 0 };

  /** Registers every metric. */
  constructor() {
    const gauges = (): Gauges => this.#gauges;
    const registers = [this.registry];
    this.framesIn = new Counter({
      name: "chat_frames_in_total",
      help: "Frames received, by message type.",
      labelNames: ["type"],
      registers,
    });
    this.framesOut = new Counter({
      name: "chat_frames_out_total",
      help: "Frames sent, by message type.",
      labelNames: ["type"],
      registers,
    });
    this.errors = new Counter({
      name: "chat_errors_total",
      help: "Error frames sent, by code.",
      labelNames: ["code"],
      registers,
    });
    this.closes = new Counter({
      name: "chat_closes_total",
      help: "Connections closed, by close code.",
      labelNames: ["code"],
      registers,
    });
    this.refused = new Counter({
      name: "chat_upgrades_refused_total",
      help: "WebSocket upgrades refused, by HTTP status.",
      labelNames: ["status"],
      registers,
    });
    this.batches = new Counter({
      name: "chat_storage_batches_total",
      help: "Storage transactions committed.",
      registers,
    });
    this.writes = new Counter({
      name: "chat_storage_writes_total",
      help: "Writes committed in storage transactions.",
      registers,
    });
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

  /** Sets what the gauges read at scrape time. */
  observe(gauges: Gauges): void {
    this.#gauges = gauges;
  }

  /** Counts one reducer `count` effect. */
  count(metric: Metric, label: string): void {
    if (metric === "frames_in") this.framesIn.inc({ type: label });
    else if (metric === "errors") this.errors.inc({ code: label });
    else this.closes.inc({ code: label });
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
