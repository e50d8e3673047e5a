/**
 * The client's bookkeeping of requests in flight: what waits for an answer
 * (matched by `id`/`ref`), the chat messages kept to be sent again with the
 * same `id`, and the ids themselves.
 *
 * Data shapes and small helpers only: sending, timers and answers are
 * handled by the `ChatClient` class in `chat_client.ts`.
 *
 * @module
 */
import type {
  GroupChatAck,
  PrivateChatAck,
  SendState,
} from "./client_types.ts";
import type { AckBody, HistoryReplyBody, MembersPage } from "./frames.ts";

/** One side of a promise: how to settle it. */
export interface Deferred<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** `Promise.withResolvers`, for runtimes that lack it (Node 20, older Safari). */
export function deferred<T>(): Deferred<T> & { promise: Promise<T> } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

/** A timer handle, in every runtime. */
export type Timer = ReturnType<typeof setTimeout>;

/** A request waiting for its answer, by kind. */
export type Pending =
  | { kind: "enter"; room: string; rejoin: boolean; timer: Timer }
  | { kind: "leave"; deferred: Deferred<AckBody>; timer: Timer }
  | {
    kind: "group_chat";
    deferred: Deferred<GroupChatAck>;
    timer: Timer;
    resend: Resend;
  }
  | {
    kind: "private_chat";
    deferred: Deferred<PrivateChatAck>;
    timer: Timer;
    resend: Resend;
  }
  | {
    kind: "members";
    room: string;
    deferred: Deferred<MembersPage>;
    timer: Timer;
  }
  | {
    kind: "history";
    room: string;
    deferred: Deferred<HistoryReplyBody>;
    timer: Timer;
    result?: HistoryReplyBody;
  };

/** A chat message kept for sending again with the same `id`. */
export interface Resend {
  type: string;
  body: Record<string, unknown>;
  /** Sends so far without an answer that settles it. */
  attempts: number;
  /** Whether its outcome was reported `unknown`. */
  unknown: boolean;
  /** Told each change of the message's state. */
  onState?: ((state: SendState) => void) | undefined;
}

/** The longest wait before sending a message whose outcome is unknown again. */
export const MAX_RESEND_DELAY_MS = 5_000;

/** 12 random base-36 characters. */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  let n = 0n;
  for (const byte of bytes) n = (n << 8n) | BigInt(byte);
  return n.toString(36).padStart(12, "0").slice(-12);
}
