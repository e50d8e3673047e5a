/**
 * Typing indicators on the client side, both ways: who is shown typing in
 * each conversation (from `Typing` frames, each expiring after its
 * `expires_in_ms` unless renewed, and ended by a stop, a message from that
 * user, or their `Leave`), and when this client's own typing should go out
 * (a start at most every {@linkcode TYPING_RENEW_MS} per conversation, a
 * stop only when a start is still shown).
 *
 * It keeps timers and calls back; it sends nothing and reads no socket:
 * `ChatClient` (`chat_client.ts`) feeds it frames and sends what it says.
 *
 * @module
 */
import {
  TYPING_EXPIRES_MS,
  TYPING_RENEW_MS,
  type TypingNotice,
} from "../wire/server_frames.ts";

/** A conversation a typing indicator belongs to. */
export type TypingPlace =
  /** A room: everyone typing there. */
  | { room: string; user?: undefined }
  /** A direct conversation with `user`: whether they are typing to us. */
  | { user: string; room?: undefined };

/** The key of a place in the maps below. */
function keyOf(place: TypingPlace): string {
  return place.room !== undefined ? `r:${place.room}` : `u:${place.user}`;
}

/** The place of a key. */
function placeOf(key: string): TypingPlace {
  const name = key.slice(2);
  return key.startsWith("r:") ? { room: name } : { user: name };
}

/** Who is typing where, and when this client last said it was typing. */
export class TypingTrack {
  /** Shown indicators: place key, then username, then its expiry timer. */
  #shown = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();
  /** This client's starts still shown to others: place key, then when sent. */
  #sent = new Map<string, number>();
  #changed: (place: TypingPlace, usernames: string[]) => void;
  #now: () => number;

  /** `changed` is called whenever the users typing in a place change. */
  constructor(
    changed: (place: TypingPlace, usernames: string[]) => void,
    now: () => number = Date.now,
  ) {
    this.#changed = changed;
    this.#now = now;
  }

  /** The usernames shown typing in `place`, sorted. */
  usernames(place: TypingPlace): string[] {
    return [...this.#shown.get(keyOf(place))?.keys() ?? []].sort();
  }

  /** A `Typing` frame arrived. */
  heard(notice: TypingNotice): void {
    // To a user: the conversation is the sender's.
    const place: TypingPlace = notice.room !== undefined
      ? { room: notice.room }
      : { user: notice.sender_username };
    if (!notice.active || notice.expires_in_ms <= 0) {
      this.ended(place, notice.sender_username);
      return;
    }
    const key = keyOf(place);
    let users = this.#shown.get(key);
    if (!users) this.#shown.set(key, users = new Map());
    const fresh = !users.has(notice.sender_username);
    clearTimeout(users.get(notice.sender_username));
    users.set(
      notice.sender_username,
      setTimeout(
        () => this.ended(place, notice.sender_username),
        notice.expires_in_ms,
      ),
    );
    if (fresh) this.#changed(place, this.usernames(place));
  }

  /** `username` stopped typing in `place` (a stop, a message, a `Leave`, the expiry). */
  ended(place: TypingPlace, username: string): void {
    const key = keyOf(place);
    const users = this.#shown.get(key);
    const timer = users?.get(username);
    if (!users || timer === undefined) return;
    clearTimeout(timer);
    users.delete(username);
    if (users.size === 0) this.#shown.delete(key);
    this.#changed(place, this.usernames(place));
  }

  /** Whether this client's start to `place` should go out now; records it. */
  start(place: TypingPlace): boolean {
    const key = keyOf(place);
    const now = this.#now();
    const last = this.#sent.get(key);
    if (last !== undefined && now - last < TYPING_RENEW_MS) return false;
    this.#sent.set(key, now);
    return true;
  }

  /** Whether this client's stop to `place` should go out (a start is still shown). */
  stop(place: TypingPlace): boolean {
    const key = keyOf(place);
    const last = this.#sent.get(key);
    this.#sent.delete(key);
    return last !== undefined && this.#now() - last < TYPING_EXPIRES_MS;
  }

  /** This client sent a message to `place`: the server ended its indicator there. */
  sent(place: TypingPlace): void {
    this.#sent.delete(keyOf(place));
  }

  /** Forgets everything (the connection dropped, or the client closed); tells who stopped. */
  clear(): void {
    this.#sent.clear();
    const shown = [...this.#shown];
    this.#shown.clear();
    for (const [key, users] of shown) {
      for (const timer of users.values()) clearTimeout(timer);
      this.#changed(placeOf(key), []);
    }
  }
}
