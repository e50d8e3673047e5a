/**
 * The reducer harness: the settings, times and ids the reducer tables
 * share, the runner's part ({@linkcode Chat}: feeds events, resolves each
 * effect to its recipients right after `reduce`, answers I/O or keeps it
 * pending), the state's invariants, and scenario tables (given, when,
 * then). No socket, clock or storage. The cluster node's driver is in
 * `cluster_node.ts`; frames in `reducer_frames.ts`.
 *
 * Why this file is long: {@linkcode Chat} and the effect
 * observers are one piece, and every reducer table depends on all of it.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { StoredPrivateChat } from "../../src/wire/server_frames.ts";
import {
  type ChatSettings,
  type ChatState,
  type ConnId,
  createState,
  type Effect,
  type Event,
  type HistoryRequest,
  reduce,
} from "../../src/chat/reducer.ts";
import type {
  HistoryPage,
  TokenGrant,
  WriteOp,
  WriteResult,
} from "../../src/chat/storage.ts";
import {
  assertFrames,
  type Body,
  type Frame,
  T0,
  WHEN_AT,
  WHEN_ID,
} from "./reducer_frames.ts";

// ---------------------------------------------------------------------------
// Settings, times and ids

/** Small limits, so that every limit is quick to reach. */
export const SETTINGS: ChatSettings = {
  serverName: "chat-test/1.0",
  authEnabled: false,
  defaultRoom: "general",
  maxMessageBytes: 512,
  maxContentChars: 8,
  maxRoomsPerConnection: 2,
  rateLimitPerSecond: 0,
  rateLimitBurst: 3,
  maxConsecutiveErrors: 3,
};

/** Alice's token (authentication on). */
export const TOKEN_ALICE = "8f14e45f-ceea-4e7a-9f5e-2b7d4c1a0001";
/** Bob's token. */
export const TOKEN_BOB = "8f14e45f-ceea-4e7a-9f5e-2b7d4c1a0002";
/** What {@linkcode TOKEN_ALICE} grants. */
export const GRANT_ALICE: TokenGrant = {
  username: "alice",
  expiresAt: T0 + 3_600_000,
};
/** What {@linkcode TOKEN_BOB} grants. */
export const GRANT_BOB: TokenGrant = {
  username: "bob",
  expiresAt: T0 + 3_600_000,
};
/** Settings with authentication on. */
export const AUTH = { authEnabled: true } as const;
/** The grants of alice's and bob's tokens, for `check_token`. */
export const AUTH_GRANTS = {
  [TOKEN_ALICE]: GRANT_ALICE,
  [TOKEN_BOB]: GRANT_BOB,
};

// ---------------------------------------------------------------------------
// Observing effects

/** An effect as a test sees it: a frame resolved to its recipients, or the effect. */
export type Observed =
  | { type: "deliver"; to: ConnId[]; frame: Frame }
  | Exclude<Effect, { type: "send" | "broadcast" }>;

/** An effect that waits for an answer from I/O. */
export type Pending = Extract<
  Observed,
  { type: "persist" | "load_history" | "check_token" | "load_offline" }
>;

/** Whether an effect waits for an answer from I/O. */
export function isPending(effect: Observed): effect is Pending {
  return effect.type === "persist" || effect.type === "load_history" ||
    effect.type === "check_token" || effect.type === "load_offline";
}

/**
 * Resolves frames to their recipients. Must run right after `reduce`, as the
 * runner does: a broadcast may read a live set.
 */
export function observe(effects: readonly Effect[]): Observed[] {
  return effects.map((effect): Observed => {
    if (effect.type !== "send" && effect.type !== "broadcast") return effect;
    const decoded = JSON.parse(effect.data) as {
      message_type: string;
      message_body: Body;
    };
    assert.equal(decoded.message_type, effect.kind, "kind names the frame");
    let to: ConnId[];
    if (effect.type === "send") to = [effect.conn];
    else {
      to = [...effect.conns].filter((id) => id !== effect.except)
        .sort((a, b) => a - b);
      assert.equal(
        effect.count,
        to.length,
        "a broadcast counts its recipients",
      );
      assert.ok(to.length > 0, "a broadcast has recipients");
    }
    return {
      type: "deliver",
      to,
      frame: [decoded.message_type, decoded.message_body],
    };
  });
}

/** The frames `conn` receives, in order. */
export function inbox(seen: readonly Observed[], conn: ConnId): Frame[] {
  const frames: Frame[] = [];
  for (const effect of seen) {
    if (effect.type === "deliver" && effect.to.includes(conn)) {
      frames.push(effect.frame);
    }
  }
  return frames;
}

/** The closes, as `[conn, code]`. */
export function closes(seen: readonly Observed[]): [ConnId, number][] {
  const found: [ConnId, number][] = [];
  for (const effect of seen) {
    if (effect.type === "close") found.push([effect.conn, effect.code]);
  }
  return found;
}

/** The effects of `type` among `seen` (observed or raw), in order. */
export function effectsOf<E extends { type: string }, T extends E["type"]>(
  seen: readonly E[],
  type: T,
): Extract<E, { type: T }>[] {
  return seen.filter((effect): effect is Extract<E, { type: T }> =>
    effect.type === type
  );
}

// ---------------------------------------------------------------------------
// The state

/** Checks that the maps of the state agree with each other. */
export function checkInvariants(state: ChatState): void {
  for (const [name, room] of state.rooms) {
    assert.equal(room.name, name);
    assert.ok(room.members.size > 0, `room ${name} is empty but kept`);
    const users = new Map<string, number>();
    for (const id of room.members) {
      const conn = state.connections.get(id);
      assert.ok(conn, `room ${name} holds closed connection ${id}`);
      assert.ok(conn.rooms.has(name), `connection ${id} forgot room ${name}`);
      assert.ok(conn.username !== null, `connection ${id} in a room unbound`);
      users.set(conn.username, (users.get(conn.username) ?? 0) + 1);
    }
    assert.deepEqual(room.users, users, `room ${name} counts its users`);
    assert.deepEqual(
      new Set(room.roster.index.keys()),
      new Set(users.keys()),
      `room ${name}'s roster lists its users`,
    );
    for (const id of room.held.keys()) {
      assert.ok(room.members.has(id), `room ${name} holds frames for ${id}`);
    }
  }
  if (!state.settings.cluster) {
    for (const name of state.seqs.keys()) {
      assert.ok(
        state.rooms.has(name) || state.writing.has(name) ||
          state.seqWaiters.has(name),
        `the seq of idle room ${name} is kept`,
      );
    }
  }
  for (const [id, conn] of state.connections) {
    for (const name of conn.rooms) {
      assert.ok(state.rooms.get(name)?.members.has(id), `${id} in ${name}`);
    }
    if (conn.closing) {
      // Kept only for the I/O answer it waits for, and out of everything.
      assert.ok(conn.busy, `closing ${id} kept though it waits for nothing`);
      assert.equal(conn.rooms.size, 0, `closing ${id} still in a room`);
      assert.equal(conn.tokens.size, 0, `closing ${id} still holds a token`);
      assert.ok(!state.users.get(conn.username ?? "")?.has(id), `${id} user`);
    } else if (conn.username !== null) {
      assert.ok(state.users.get(conn.username)?.has(id), `${id} is a user`);
    }
  }
  for (const [username, conns] of state.users) {
    assert.ok(conns.size > 0, `user ${username} kept without connections`);
    for (const id of conns) {
      assert.equal(state.connections.get(id)?.username, username);
    }
  }
}

/** The username a connection is bound to; `undefined` when it is gone. */
export function username(
  state: ChatState,
  conn: ConnId,
): string | null | undefined {
  return state.connections.get(conn)?.username;
}

/** The rooms a connection is in, sorted. */
export function roomsOf(state: ChatState, conn: ConnId): string[] {
  return [...state.connections.get(conn)?.rooms ?? []].sort();
}

/** The members of a room, sorted; none when it is gone. */
export function membersOf(state: ChatState, room: string): ConnId[] {
  return [...state.rooms.get(room)?.members ?? []].sort((a, b) => a - b);
}

/** Asserts the state holds nothing of any connection. */
export function assertEmpty(state: ChatState): void {
  assert.deepEqual([...state.connections.keys()], [], "no connections left");
  assert.deepEqual([...state.users.keys()], [], "no users left");
  assert.deepEqual([...state.rooms.keys()], [], "no rooms left");
}

// ---------------------------------------------------------------------------
// The runner's part

/** How a {@linkcode Chat} answers I/O and what it starts from. */
export interface ChatOptions {
  settings?: Partial<ChatSettings>;
  /** Each room's last `seq` from storage. */
  seqs?: Record<string, number>;
  /** Answer I/O effects at once, as the runner would (default `true`). */
  auto?: boolean;
  /** What `check_token` finds; a token not named is unknown (`null`). */
  grants?: Record<string, TokenGrant | null | undefined>;
  /** What `load_history` reads; default: nothing kept. */
  page?: (request: HistoryRequest) => HistoryPage | null;
  /** Undelivered `PrivateChat`s per username. */
  offline?: Record<string, StoredPrivateChat[]>;
}

/** A step of a scenario: a frame from a connection, a close, or any event. */
export type Step =
  | readonly [conn: ConnId, frame: unknown]
  | { readonly close: ConnId }
  | { readonly event: Event };

/**
 * A state and the runner's part: feeds events, observes effects right after
 * each `reduce`, and answers I/O (with `auto`) or keeps it pending.
 */
export class Chat {
  readonly state: ChatState;
  now = T0;
  auto: boolean;
  /** I/O effects not answered yet, oldest first. */
  readonly pending: Pending[] = [];
  readonly #options: ChatOptions;
  #fresh = 0;
  /** Each room's last `seq` "in storage": from `seqs`, then every group write asked for. */
  readonly stored: Map<string, number>;
  /** Whether a `load_seq` read succeeds (`false`: `seq_loaded` with `null`). */
  seqRead = true;
  /** When set, `load_seq` reads wait here (rooms) for {@linkcode Chat.seqLoaded}. */
  seqHeld: string[] | null = null;

  /** Answers the oldest held `load_seq`. */
  seqLoaded(): Observed[] {
    const room = this.seqHeld?.shift();
    assert.ok(room !== undefined, "a held load_seq");
    return this.dispatch({
      type: "seq_loaded",
      now: this.now,
      room,
      seq: this.seqRead ? this.stored.get(room) ?? 0 : null,
    });
  }

  #store(op: WriteOp): void {
    if (op.kind !== "group" || op.message.seq === 0) return;
    const { room, seq } = op.message;
    this.stored.set(room, Math.max(this.stored.get(room) ?? 0, seq));
  }

  constructor(options: ChatOptions = {}) {
    this.#options = options;
    this.auto = options.auto ?? true;
    this.stored = new Map(Object.entries(options.seqs ?? {}));
    // Like the server: `seqs` are storage's, read as each room opens.
    this.state = createState({ ...SETTINGS, ...options.settings });
  }

  /** Reduces `event`, then the answers to its I/O with `auto`; returns all that was seen. */
  dispatch(event: Event): Observed[] {
    const seen: Observed[] = [];
    const events: Event[] = [event];
    for (let next = events.shift(); next; next = events.shift()) {
      const [state, effects] = reduce(this.state, next);
      assert.equal(state, this.state, "reduce hands back its state");
      checkInvariants(state);
      for (const effect of observe(effects)) {
        seen.push(effect);
        if (effect.type === "load_seq" && this.seqHeld) {
          this.seqHeld.push(effect.room);
        } else if (effect.type === "load_seq") {
          // Storage's seq of a room opening again, answered at once.
          events.push({
            type: "seq_loaded",
            now: this.now,
            room: effect.room,
            seq: this.seqRead ? this.stored.get(effect.room) ?? 0 : null,
          });
        }
        if (effect.type === "persist") this.#store(effect.request.op);
        if (!isPending(effect)) continue;
        if (this.auto) events.push(this.#answer(effect));
        else this.pending.push(effect);
      }
    }
    return seen;
  }

  #answer(effect: Pending): Event {
    const now = this.now;
    switch (effect.type) {
      case "persist":
        return {
          type: "persisted",
          now,
          request: effect.request,
          result: { ok: true },
        };
      case "load_history":
        return {
          type: "history_loaded",
          now,
          request: effect.request,
          page: this.#options.page?.(effect.request) ??
            { messages: [], complete: true },
        };
      case "check_token": {
        const grants = this.#options.grants ?? {};
        return {
          type: "token_checked",
          now,
          token: effect.token,
          grant: effect.token in grants ? grants[effect.token] : null,
        };
      }
      case "load_offline":
        return {
          type: "offline_loaded",
          now,
          username: effect.username,
          messages: this.#options.offline?.[effect.username] ?? [],
        };
    }
  }

  open(conn: ConnId, token?: string): Observed[] {
    const event: Event = {
      type: "open",
      conn,
      now: this.now,
      publicId: `public-${conn}`,
    };
    const grant = token === undefined
      ? undefined
      : this.#options.grants?.[token];
    if (token !== undefined && grant) {
      event.token = token;
      event.grant = grant;
    }
    return this.dispatch(event);
  }

  /** A text frame: an object is sent as JSON, a string as it is. */
  send(
    conn: ConnId,
    frame: unknown,
    options: { id?: string; size?: number } = {},
  ): Observed[] {
    const text = typeof frame === "string" ? frame : JSON.stringify(frame);
    return this.dispatch({
      type: "frame",
      conn,
      now: this.now,
      text,
      size: options.size ?? new TextEncoder().encode(text).length,
      id: options.id ?? `srv-${++this.#fresh}`,
    });
  }

  binary(conn: ConnId, size = 16): Observed[] {
    return this.dispatch({ type: "binary", conn, now: this.now, size });
  }

  close(conn: ConnId, code = 1000): Observed[] {
    return this.dispatch({ type: "closed", conn, now: this.now, code });
  }

  step(step: Step, id?: string): Observed[] {
    if ("close" in step) return this.close(step.close);
    if ("event" in step) return this.dispatch(step.event);
    const [conn, frame] = step;
    return this.send(conn, frame, id === undefined ? {} : { id });
  }

  /** Takes the oldest pending effect of `type`. */
  take<T extends Pending["type"]>(type: T): Extract<Pending, { type: T }> {
    const index = this.pending.findIndex((effect) => effect.type === type);
    assert.ok(index >= 0, `a pending ${type}`);
    const [effect] = this.pending.splice(index, 1);
    return effect as Extract<Pending, { type: T }>;
  }

  /** Answers the oldest pending `persist`. */
  persisted(result: WriteResult = { ok: true }): Observed[] {
    const { request } = this.take("persist");
    return this.dispatch({ type: "persisted", now: this.now, request, result });
  }

  /** Answers the oldest pending `load_history`. */
  historyLoaded(page: HistoryPage | null): Observed[] {
    const { request } = this.take("load_history");
    return this.dispatch({
      type: "history_loaded",
      now: this.now,
      request,
      page,
    });
  }

  /** Answers the oldest pending `check_token`. */
  tokenChecked(grant: TokenGrant | null | undefined): Observed[] {
    const { token } = this.take("check_token");
    return this.dispatch({
      type: "token_checked",
      now: this.now,
      token,
      grant,
    });
  }
}

// ---------------------------------------------------------------------------
// Scenarios: given some steps, when one more, then what each connection gets

/** Connections 1, 2 and 3 (alice, bob and carol by convention). */
export const CONNS: readonly ConnId[] = [1, 2, 3];

/** A table row: given some steps, when one more, then what each connection gets. */
export interface Scenario {
  name: string;
  options?: ChatOptions;
  /** Tokens presented at upgrade, per connection. */
  upgrade?: Partial<Record<ConnId, string>>;
  /** Steps before the one under test, answered like the runner would. */
  given?: readonly Step[];
  /** The step under test, at {@linkcode WHEN_AT} with id {@linkcode WHEN_ID}. */
  when: Step;
  /** The frames each connection gets from `when`, in order; none for a connection not named. */
  then: Partial<Record<ConnId, readonly Frame[]>>;
  /** The closes `when` causes, as `[conn, code]`; default none. */
  closes?: [ConnId, number][];
  /** Further checks of the state and of the effects of `when`. */
  also?: (state: ChatState, seen: readonly Observed[]) => void;
}

/** Plays a {@linkcode Scenario} and checks what it says. */
export function play(scenario: Scenario): void {
  const chat = new Chat(scenario.options);
  for (const conn of CONNS) chat.open(conn, scenario.upgrade?.[conn]);
  for (const step of scenario.given ?? []) chat.step(step);
  chat.now = WHEN_AT;
  const seen = chat.step(scenario.when, WHEN_ID);
  for (const conn of CONNS) {
    assertFrames(
      inbox(seen, conn),
      scenario.then[conn] ?? [],
      `frames to connection ${conn}`,
    );
  }
  assert.deepEqual(closes(seen), scenario.closes ?? [], "closes");
  scenario.also?.(chat.state, seen);
}

/** Registers one `Deno.test` per scenario of a table, named after `group`. */
export function scenarios(group: string, table: readonly Scenario[]): void {
  for (const scenario of table) {
    Deno.test(`${group}: ${scenario.name}`, () => play(scenario));
  }
}
