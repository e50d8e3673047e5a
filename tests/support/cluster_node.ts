/**
 * The driver of one cluster node's reducer for `reducer_cluster_test.ts`:
 * every effect is kept, and the test answers the cluster's effects (`join`,
 * `persist`, `bus`...) itself, as the runner would with Redis. Shares the
 * settings and times of `reducer_harness.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredGroupChat } from "../../src/wire/server_frames.ts";
import {
  type BusMessage,
  type ChatSettings,
  type ChatState,
  type ConnId,
  createState,
  type Effect,
  type Event,
  type JoinResult,
  reduce,
} from "../../src/chat/reducer.ts";
import type { WriteResult } from "../../src/chat/storage.ts";
import { T0 } from "./reducer_frames.ts";
import { SETTINGS } from "./reducer_harness.ts";

/** The settings of a cluster node in these tables. */
export const CLUSTER_SETTINGS: ChatSettings = {
  ...SETTINGS,
  maxContentChars: 64,
  maxRoomsPerConnection: 4,
  rateLimitBurst: 8,
  maxConsecutiveErrors: 5,
  cluster: true,
};

/** A frame as a connection gets it. */
export interface ReceivedFrame {
  type: string;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** One node's reducer, with the effects it made, frames per connection. */
export class Node {
  state: ChatState;
  now = T0;
  #ids = 0;
  /** Every effect, oldest first; cluster effects are answered by hand. */
  effects: Effect[] = [];

  constructor(settings: Partial<ChatSettings> = {}) {
    this.state = createState({ ...CLUSTER_SETTINGS, ...settings });
  }

  dispatch(event: Event): Effect[] {
    const [state, effects] = reduce(this.state, event);
    this.state = state;
    this.effects.push(...effects);
    return effects;
  }

  open(conn: ConnId): void {
    this.dispatch({ type: "open", conn, now: this.now, publicId: `p${conn}` });
  }

  send(conn: ConnId, type: string, body: object, ref?: string): Effect[] {
    const text = JSON.stringify({
      message_type: type,
      message_body: body,
      ...(ref ? { id: ref } : {}),
    });
    return this.dispatch({
      type: "frame",
      conn,
      now: this.now,
      text,
      size: text.length,
      id: `m${++this.#ids}`,
    });
  }

  close(conn: ConnId): Effect[] {
    return this.dispatch({ type: "closed", conn, now: this.now, code: 1000 });
  }

  /** Takes the oldest effect of `type` not taken yet. */
  take<T extends Effect["type"]>(type: T): Extract<Effect, { type: T }> {
    const index = this.effects.findIndex((effect) => effect.type === type);
    assert.ok(index >= 0, `an effect ${type}`);
    return this.effects.splice(index, 1)[0] as Extract<Effect, { type: T }>;
  }

  /** Answers the oldest `join`. */
  joined(result: JoinResult | null): Effect[] {
    const { request } = this.take("join");
    return this.dispatch({ type: "joined", now: this.now, request, result });
  }

  /** Answers the oldest `persist`. */
  persisted(result: WriteResult): Effect[] {
    const { request } = this.take("persist");
    return this.dispatch({ type: "persisted", now: this.now, request, result });
  }

  bus(message: BusMessage): Effect[] {
    return this.dispatch({ type: "bus", now: this.now, message });
  }

  /** Enters `conn` as `user` into `room`, the cluster answering `result`. */
  enter(conn: ConnId, user: string, room: string, result: JoinResult): void {
    this.send(conn, "Enter", { sender_username: user, room });
    this.joined(result);
  }
}

/** The frames `conn` gets from `effects`, in order. */
export function framesTo(
  effects: readonly Effect[],
  conn: ConnId,
): ReceivedFrame[] {
  const frames: ReceivedFrame[] = [];
  for (const effect of effects) {
    const to = effect.type === "send"
      ? effect.conn === conn
      : effect.type === "broadcast"
      ? [...effect.conns].includes(conn) && effect.except !== conn
      : false;
    if (!to || !("data" in effect)) continue;
    const parsed = JSON.parse(effect.data);
    frames.push({ type: parsed.message_type, body: parsed.message_body });
  }
  return frames;
}

/** The types of `frames`, in order. */
export function types(frames: readonly ReceivedFrame[]): string[] {
  return frames.map((frame) => frame.type);
}

/** A `joined` answer: the room at `seq`, with `members`. */
export function joinedAt(
  seq: number,
  members: string[],
  isNew = true,
): JoinResult {
  return { kind: "joined", seq, isNew, members };
}

/** A stored `GroupChat` of another node, numbered `seq`. */
export function chat(seq: number, room = "r", sender = "bob"): StoredGroupChat {
  return {
    id: `g${seq}`,
    seq,
    room,
    sender_username: sender,
    content: `hello ${seq}`,
    timestamp: T0 + seq,
  };
}

// ---------------------------------------------------------------------------
// Enter: the cluster decides
