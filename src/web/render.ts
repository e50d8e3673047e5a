/// <reference lib="dom" />
/**
 * The web app's view: how the sidebar's conversation buttons, the member
 * list, messages and notices, the top of a history, the composer's height
 * and toasts are drawn, and the text of times, errors and delays.
 *
 * Drawing only, from the values it is given: it never talks to the client
 * or the server and keeps no state of its own (a message's node is cached
 * on its item). Message content only reaches the page as text (`h`).
 *
 * @module
 */
import { ChatError } from "../client/chat_client.ts";
import type { Elements } from "./elements.ts";
import { h } from "./dom.ts";
import type { Conversation, Item, MessageItem } from "./conversation.ts";

/** Consecutive messages of one sender within this time share a header. */
export const GROUP_MS = 5 * 60_000;

/** Times shown beside messages. */
export const SHORT_TIME = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
});
/** Times in a message's tooltip. */
export const LONG_TIME = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "medium",
});

/** A colour for a name, the same on every page. */
export function hue(name: string): number {
  let value = 7;
  for (const char of name) {
    value = (value * 31 + (char.codePointAt(0) ?? 0)) % 360;
  }
  return value;
}

/** A round badge with the name's first letter. */
export function avatar(name: string): HTMLDivElement {
  const element = h(
    "div",
    { class: "avatar", attrs: { "aria-hidden": "true" } },
    ([...name][0] ?? "?").toUpperCase(),
  );
  element.style.setProperty("--hue", String(hue(name)));
  return element;
}

/** The sentence for people of an error. */
export function errorText(error: unknown): string {
  if (error instanceof ChatError) return error.message;
  return error instanceof Error ? error.message : String(error);
}

/** "1 second", "5 seconds": a delay for people. */
export function seconds(ms: number): string {
  const s = Math.max(1, Math.ceil(ms / 1000));
  return s === 1 ? "1 second" : `${s} seconds`;
}

/** Puts the conversations' buttons in the sidebar lists, in order. */
export function renderLists(
  el: Elements,
  conversations: Iterable<Conversation>,
): void {
  const rooms: HTMLLIElement[] = [];
  const dms: HTMLLIElement[] = [];
  for (const conv of conversations) {
    const item = conv.button.parentElement instanceof HTMLLIElement
      ? conv.button.parentElement
      : h("li", {}, conv.button);
    (conv.kind === "room" ? rooms : dms).push(item);
  }
  const same = (list: HTMLUListElement, items: HTMLLIElement[]) =>
    list.children.length === items.length &&
    items.every((item, i) => list.children[i] === item);
  if (!same(el.roomList, rooms)) el.roomList.replaceChildren(...rooms);
  if (!same(el.dmList, dms)) el.dmList.replaceChildren(...dms);
}

/** Draws a conversation's sidebar button: name, unread badge. */
export function renderButton(conv: Conversation): void {
  const button = conv.button;
  button.classList.toggle("unread", conv.unread > 0);
  const parts: Node[] = [
    h(
      "span",
      { class: "sigil", attrs: { "aria-hidden": "true" } },
      conv.kind === "room" ? "#" : "@",
    ),
    h("span", { class: "label" }, conv.name),
  ];
  if (conv.unread > 0) {
    parts.push(
      h(
        "span",
        { class: "badge", attrs: { "aria-hidden": "true" } },
        conv.unread > 99 ? "99+" : String(conv.unread),
      ),
      h("span", { class: "visually-hidden" }, `, ${conv.unread} unread`),
    );
  }
  if (conv.kind === "dm") {
    parts.splice(
      2,
      0,
      h("span", { class: "visually-hidden" }, " (direct message)"),
    );
  }
  button.replaceChildren(...parts);
}

/** What the member list of a room shows. */
export interface MemberView {
  /** The members known, in the order to show. */
  names: string[];
  /** How many members the room has (a large room knows more than it lists). */
  count: number;
  /** A large room with members not loaded yet: `onMore` loads the next page. */
  more: boolean;
}

/**
 * Draws the open room's member list and count; `view` gives a room's
 * members, `onPick` opens a direct conversation with one of them, and
 * `onMore` loads a large room's next page (a button at the end of the
 * list; scrolling to it does the same).
 */
export function renderMembers(
  el: Elements,
  conv: Conversation | undefined,
  view: (room: string) => MemberView,
  me: string,
  onPick: (name: string) => void,
  onMore: () => void,
): void {
  if (!conv || conv.kind !== "room") return;
  const { names: members, count, more } = view(conv.name);
  el.membersCount.textContent = count.toLocaleString("en");
  el.subtitle.textContent = count === 1
    ? "1 member"
    : `${count.toLocaleString("en")} members`;
  const rest: HTMLLIElement[] = [];
  if (more) {
    const button = h(
      "button",
      { class: "more-members", attrs: { type: "button" } },
      `Show more (${(count - members.length).toLocaleString("en")} not listed)`,
    );
    button.addEventListener("click", () => onMore());
    rest.push(h("li", {}, button));
  }
  el.memberList.replaceChildren(
    ...members.map((name) => {
      if (name === me) {
        return h(
          "li",
          {},
          h(
            "div",
            { class: "member" },
            avatar(name),
            name,
            h("small", {}, "you"),
          ),
        );
      }
      const button = h(
        "button",
        {
          class: "member",
          attrs: { type: "button", title: `Send ${name} a direct message` },
        },
        avatar(name),
        name,
      );
      button.addEventListener("click", () => {
        onPick(name);
      });
      return h("li", {}, button);
    }),
    ...rest,
  );
}

/** Draws the top of the message list: "load older" or where it begins. */
export function renderHistoryTop(
  el: Elements,
  conv: Conversation | undefined,
): void {
  el.loadOlder.hidden = !conv || conv.kind !== "room" || conv.reachedStart;
  el.loadOlder.disabled = conv?.loadingOlder ?? false;
  el.loadOlder.textContent = conv?.loadingOlder
    ? "Loading older messages…"
    : "Load older messages";
  let text = "";
  if (conv?.kind === "room" && conv.reachedStart) {
    text = conv.truncated
      ? "Older messages are no longer kept."
      : `This is the beginning of #${conv.name}.`;
  } else if (conv?.kind === "dm") {
    text =
      `Your direct messages with ${conv.name}. Only the two of you see them.`;
  }
  el.historyStart.textContent = text;
}

/** An item's list node, made once; `me` marks the user's own messages. */
export function messageNode(item: Item, me: string): HTMLLIElement {
  if (item.node) return item.node;
  if (item.kind === "notice") {
    item.node = h(
      "li",
      { class: "notice" },
      `${item.text} · ${SHORT_TIME.format(item.timestamp)}`,
    );
    return item.node;
  }
  const time = h("time", {
    attrs: {
      datetime: new Date(item.timestamp).toISOString(),
      title: LONG_TIME.format(item.timestamp),
    },
  }, SHORT_TIME.format(item.timestamp));
  const classes = ["message"];
  if (item.sender === me) classes.push("mine");
  if (item.pending) classes.push("pending");
  if (item.unknown) classes.push("unknown");
  const attrs: Record<string, string> = { "data-sender": item.sender };
  if (item.seq !== undefined) attrs["data-seq"] = String(item.seq);
  item.node = h(
    "li",
    { class: classes.join(" "), attrs },
    avatar(item.sender),
    h(
      "div",
      { class: "meta" },
      h("span", { class: "sender" }, item.sender),
      time,
      ...(item.pending
        ? [h("span", { class: "visually-hidden" }, "sending")]
        : []),
    ),
    // The content: as text, never as HTML.
    h("div", { class: "content" }, item.content),
    ...(item.unknown
      ? [h(
        "div",
        { class: "outcome", attrs: { role: "status" } },
        "Not confirmed yet: sending again…",
      )]
      : []),
  );
  return item.node;
}

/**
 * Draws the active conversation's items; `mode` says where to scroll:
 * `stick` to the bottom if it was there, `keep` the view, or to the `bottom`.
 */
export function renderMessages(
  el: Elements,
  conv: Conversation | undefined,
  mode: "stick" | "keep" | "bottom",
  me: string,
): void {
  if (!conv) {
    el.messageList.replaceChildren();
    return;
  }
  const box = el.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  const fromBottom = box.scrollHeight - box.scrollTop;
  let previous: MessageItem | undefined;
  const nodes = conv.items.map((item) => {
    const node = messageNode(item, me);
    if (item.kind === "message") {
      const continued = previous !== undefined &&
        previous.sender === item.sender &&
        item.timestamp - previous.timestamp < GROUP_MS;
      node.classList.toggle("continued", continued);
      previous = item;
    } else {
      previous = undefined;
    }
    return node;
  });
  el.messageList.replaceChildren(...nodes);
  if (mode === "bottom" || (mode === "stick" && atBottom)) {
    box.scrollTop = box.scrollHeight;
  } else if (mode === "keep") {
    box.scrollTop = box.scrollHeight - fromBottom;
  }
}

/** Grows the composer with its text, up to a limit. */
export function autosize(input: HTMLTextAreaElement): void {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, 240)}px`;
}

/** Shows a dismissable toast; at most four at a time. */
export function toast(
  el: Elements,
  text: string,
  tone: "error" | "info" = "error",
): void {
  const close = h("button", {
    attrs: { type: "button", "aria-label": "Dismiss" },
  }, "×");
  const toast = h(
    "div",
    { class: `toast ${tone}`, attrs: { role: "alert" } },
    h("p", {}, text),
    close,
  );
  const remove = () => toast.remove();
  close.addEventListener("click", remove);
  setTimeout(remove, 8000);
  el.toasts.append(toast);
  while (el.toasts.children.length > 4) el.toasts.firstElementChild?.remove();
}
