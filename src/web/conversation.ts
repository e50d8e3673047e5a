/**
 * The web app's model of a conversation (a room or a direct-message
 * thread) and of the items shown in it (messages and notices), sorted by
 * {@linkcode compare}.
 *
 * Data shapes and ordering only: the app in `app.ts` fills them, and
 * `render.ts` draws them.
 *
 * @module
 */

/** Where an item sorts: the room `seq` (or time), then a tie breaker. */
export type SortKey = readonly [number, number];

/** A chat message, sent or received. */
export interface MessageItem {
  kind: "message";
  key: string;
  sort: SortKey;
  sender: string;
  content: string;
  timestamp: number;
  seq: number | undefined;
  pending: boolean;
  /** Sent, but the server's answer is not known yet: being sent again. */
  unknown?: boolean;
  node?: HTMLLIElement;
}

/** A line about the conversation (joined, left, ...). */
export interface NoticeItem {
  kind: "notice";
  key: string;
  sort: SortKey;
  text: string;
  timestamp: number;
  node?: HTMLLIElement;
}

/** What a conversation shows. */
export type Item = MessageItem | NoticeItem;

/** A room or a direct-message thread, with its items and its button. */
export interface Conversation {
  key: string;
  kind: "room" | "dm";
  name: string;
  /** Sorted by `sort`. */
  items: Item[];
  keys: Set<string>;
  unread: number;
  maxSeq: number;
  counter: number;
  reachedStart: boolean;
  truncated: boolean;
  loadingOlder: boolean;
  draft: string;
  button: HTMLButtonElement;
  /** The `seq` a restored room was saved with, until the client knows one. */
  since?: number;
}

/** Orders two sort keys. */
export function compare(a: SortKey, b: SortKey): number {
  return a[0] - b[0] || a[1] - b[1];
}
