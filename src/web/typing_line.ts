/// <reference lib="dom" />
/**
 * The page's typing indicator: sends typing while the user types in the
 * composer (the client module throttles it to one `Typing` every 3 seconds,
 * and a stop when the text is cleared or the user switches away), and shows
 * "alice is typing…" under the open conversation, from the client's
 * `typers` state: it goes when the indicator expires, is stopped, or the
 * message arrives.
 *
 * It decides nothing about conversations or sending messages (`app.ts`).
 *
 * @module
 */
import type { ChatClient, TypingPlace } from "../client/chat_client.ts";
import type { Conversation } from "./conversation.ts";

/** The typing place of a conversation. */
export function placeOf(conv: Conversation): TypingPlace {
  return conv.kind === "room" ? { room: conv.name } : { user: conv.name };
}

/**
 * The line for who is typing: "alice is typing…", "alice and bob are
 * typing…", "alice, bob and 2 others are typing…"; "" for nobody.
 */
export function typingText(usernames: readonly string[]): string {
  const [first, second] = usernames;
  if (first === undefined) return "";
  if (second === undefined) return `${first} is typing\u2026`;
  if (usernames.length === 2) return `${first} and ${second} are typing\u2026`;
  if (usernames.length === 3) {
    return `${first}, ${second} and ${usernames[2]} are typing\u2026`;
  }
  return `${first}, ${second} and ${
    usernames.length - 2
  } others are typing\u2026`;
}

/** The indicator under the conversation, and the typing the composer sends. */
export class TypingLine {
  #client: ChatClient;
  #line: HTMLElement;
  #active: () => Conversation | undefined;

  /** Listens to the client's `typers` and to `input`'s keystrokes. */
  constructor(
    client: ChatClient,
    line: HTMLElement,
    input: HTMLTextAreaElement,
    active: () => Conversation | undefined,
  ) {
    this.#client = client;
    this.#line = line;
    this.#active = active;
    client.on("typers", ({ place }) => {
      const conv = active();
      if (!conv) return;
      const shown = placeOf(conv);
      if (shown.room === place.room && shown.user === place.user) {
        this.render();
      }
    });
    input.addEventListener("input", () => {
      const conv = active();
      if (conv) this.#say(conv, input.value.trim() !== "");
    });
  }

  /** The user left `conv` for another one (or closed it): typing stops there. */
  leave(conv: Conversation): void {
    this.#say(conv, false);
  }

  /** Shows who is typing in the open conversation. */
  render(): void {
    const conv = this.#active();
    const names = conv ? this.#client.typers(placeOf(conv)) : [];
    this.#line.textContent = typingText(names);
    this.#line.hidden = conv === undefined;
  }

  #say(conv: Conversation, active: boolean): void {
    if (conv.kind === "room") this.#client.typing(conv.name, active);
    else this.#client.typingTo(conv.name, active);
  }
}
