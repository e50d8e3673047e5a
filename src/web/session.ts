/**
 * What the web page keeps of a signed-in session across a reload: the name,
 * the token, the rooms with the last `seq` shown in each, the open
 * direct-message conversations with their recent messages, and the open
 * conversation. Reads, checks and writes it in a `Storage` (the page uses
 * `sessionStorage`, see docs/client.md); a stored value that cannot be read
 * is dropped, never trusted.
 *
 * It does not talk to the server, nor touch the page: `app.ts` does both.
 *
 * @module
 */
import { isValidName } from "../client/chat_client.ts";

/** The storage key of the session. */
export const SESSION_KEY = "chat.session";

/** The version of the stored shape; another version is not read. */
export const SESSION_VERSION = 1;

/** The most direct messages kept per conversation (the newest). */
export const MAX_SAVED_MESSAGES = 100;

/** A direct message as kept. */
export interface SavedMessage {
  /** The server's message id (duplicates are dropped by it). */
  id: string;
  sender: string;
  content: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** A room as kept. */
export interface SavedRoom {
  name: string;
  /** The highest `seq` shown; the next `Enter` asks with `since` from it. */
  seq?: number;
}

/** A direct-message conversation as kept. */
export interface SavedConversation {
  /** The other person. */
  name: string;
  /** Oldest first; at most {@linkcode MAX_SAVED_MESSAGES}. */
  messages: SavedMessage[];
}

/** A signed-in session, as the page keeps it. */
export interface Session {
  /** The name the user signed in with (or the token's). */
  name: string;
  /** The access token, when the server wanted one. */
  token?: string;
  rooms: SavedRoom[];
  dms: SavedConversation[];
  /** The open conversation's key, `room:NAME` or `dm:NAME`. */
  active?: string;
  /**
   * Set when the session could not go on (token refused, name taken): the
   * page shows the sign-in with this text, and signing in again as the
   * same user brings the rooms and conversations back.
   */
  ended?: string;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isSeq(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function readMessage(value: unknown): SavedMessage | null {
  if (!isObject(value)) return null;
  const { id, sender, content, timestamp } = value;
  if (
    typeof id !== "string" || id === "" || typeof sender !== "string" ||
    typeof content !== "string" || !Number.isFinite(timestamp)
  ) return null;
  return { id, sender, content, timestamp: timestamp as number };
}

function readRoom(value: unknown): SavedRoom | null {
  if (!isObject(value) || typeof value.name !== "string") return null;
  if (!isValidName(value.name)) return null;
  if (value.seq === undefined) return { name: value.name };
  return isSeq(value.seq) ? { name: value.name, seq: value.seq } : null;
}

function readConversation(value: unknown): SavedConversation | null {
  if (!isObject(value) || typeof value.name !== "string") return null;
  if (!isValidName(value.name) || !Array.isArray(value.messages)) return null;
  const messages = value.messages.map(readMessage).filter((m) => m !== null)
    .slice(-MAX_SAVED_MESSAGES);
  return { name: value.name, messages };
}

function unique<T extends { name: string }>(items: (T | null)[]): T[] {
  const seen = new Set<string>();
  return items.filter((item): item is T => {
    if (item === null || seen.has(item.name)) return false;
    seen.add(item.name);
    return true;
  });
}

/**
 * Reads a stored session; `null` when there is none or it cannot be read
 * (not JSON, another version, no valid name). Entries that cannot be read
 * (a bad room name, a message without an id) are left out.
 */
export function parseSession(text: string | null): Session | null {
  if (text === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(value) || value.v !== SESSION_VERSION) return null;
  const { name, token, rooms, dms, active, ended } = value;
  if (typeof name !== "string" || !isValidName(name)) return null;
  if (token !== undefined && (typeof token !== "string" || token === "")) {
    return null;
  }
  const session: Session = {
    name,
    rooms: unique(Array.isArray(rooms) ? rooms.map(readRoom) : []),
    dms: unique(Array.isArray(dms) ? dms.map(readConversation) : []),
  };
  if (token !== undefined) session.token = token;
  if (typeof active === "string") session.active = active;
  if (typeof ended === "string" && ended !== "") session.ended = ended;
  return session;
}

/** The stored form of a session. */
export function serializeSession(session: Session): string {
  return JSON.stringify({ v: SESSION_VERSION, ...session });
}

/** The session in `storage`; an unreadable one is removed. */
export function loadSession(storage: Storage | undefined): Session | null {
  if (!storage) return null;
  try {
    const text = storage.getItem(SESSION_KEY);
    const session = parseSession(text);
    if (text !== null && session === null) storage.removeItem(SESSION_KEY);
    return session;
  } catch {
    return null; // Storage turned off: there is no session to resume.
  }
}

/**
 * Writes the session. When the storage is full, writes it again without the
 * direct messages (the rooms come back from the server anyway). Returns
 * whether something was written.
 */
export function saveSession(
  storage: Storage | undefined,
  session: Session,
): boolean {
  if (!storage) return false;
  try {
    storage.setItem(SESSION_KEY, serializeSession(session));
    return true;
  } catch {
    try {
      const dms = session.dms.map((dm) => ({ name: dm.name, messages: [] }));
      storage.setItem(SESSION_KEY, serializeSession({ ...session, dms }));
      return true;
    } catch {
      return false;
    }
  }
}

/** Forgets the session. */
export function clearSession(storage: Storage | undefined): void {
  try {
    storage?.removeItem(SESSION_KEY);
  } catch {
    // Storage turned off: nothing was kept.
  }
}
