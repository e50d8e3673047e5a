/// <reference lib="dom" />
/**
 * The web client's behaviour, on top of the page in `src/web/page.ts` and
 * the client module. `deno task web:build` bundles this file into
 * `src/web/bundle_generated.ts`; the page inlines that bundle.
 *
 * Message content only ever reaches the page through `textContent` (see
 * `h` in `dom.ts`): nothing a user sends is parsed as HTML.
 *
 * The session (name, token, rooms with their last `seq`, direct-message
 * conversations) is kept in `sessionStorage` through `session.ts`, so a
 * reload signs the user back in and each room catches up with `since`;
 * "Sign out" forgets it. The page keeps no state anywhere else.
 *
 * Drawing lives in `render.ts`, the typing indicator in `typing_line.ts`,
 * the page's elements in `elements.ts`, the
 * conversation model in `conversation.ts`, what a session keeps in
 * `session_snapshot.ts` and the browser helpers in `browser.ts`.
 *
 * Why this file is long: `ChatApp` is one controller
 * whose handlers (sign-in, resume, connection state, sending, history,
 * rooms) all read and change the same private state (the signed-in user,
 * the conversations, the open one, the token, the ended session); splitting
 * its methods across files would mean exposing that state.
 *
 * @module
 */
import {
  ChatClient,
  ChatError,
  type ChatEventOf,
  type DeletedBody,
  isValidName,
  type SendState,
  type StoredGroupChat,
  type StoredPrivateChat,
  usernameProblem,
  type WelcomeBody,
} from "../client/chat_client.ts";
import { describeError } from "../client/error_text.ts";
import { h } from "./dom.ts";
import { sessionSnapshot } from "./session_snapshot.ts";
import { TypingLine } from "./typing_line.ts";
import {
  delay,
  forgetName,
  getJson,
  remember,
  remembered,
  socketUrl,
  tabStorage,
} from "./browser.ts";
import {
  compare,
  type Conversation,
  type Item,
  type MessageItem,
  type SortKey,
} from "./conversation.ts";
import { type Elements, elements } from "./elements.ts";
import {
  autosize,
  errorText,
  renderButton,
  renderHistoryTop,
  renderLists,
  renderMembers,
  renderMessages,
  seconds,
  toast,
} from "./render.ts";
import {
  clearSession,
  loadSession,
  type SavedRoom,
  saveSession,
  type Session,
} from "./session.ts";

/** Messages asked for on entering a room and per page of older ones. */
const HISTORY_PAGE = 50;
const NAME_RULE =
  "Names are 1 to 32 letters, digits, '_', '-' or '.', without spaces.";
/** Tries of the first room on resume while the name is still held. */
const TAKEN_RETRIES = 3;
/** Server codes that end a resumed session: the identity is not accepted. */
const IDENTITY_CODES = new Set([
  "auth_required",
  "invalid_token",
  "sender_mismatch",
  "username_taken",
  "not_entered",
]);
/** Client codes that say nothing about the room: it stays. */
const TRANSIENT_CODES = new Set([
  "closed",
  "disconnected",
  "timeout",
  "not_connected",
]);
const TOKEN_ENDED =
  "Your access token was revoked or has expired. Paste a new one to continue.";

/** The whole page: sign-in, conversations, connection state. */
class ChatApp {
  #client: ChatClient;
  #el: Elements;
  #me = "";
  #signedIn = false;
  #conversations = new Map<string, Conversation>();
  #active: Conversation | undefined;
  #dropped = false;
  /** A page of a large room's members is being loaded. */
  #loadingMembers = false;
  #retryAt = 0;
  #countdown: ReturnType<typeof setInterval> | undefined;
  /** Whether the page asked `/api/upgrade-check` why it cannot connect. */
  #checked = false;
  /** The server takes no socket from this page: its origin, or a token first. */
  #blocked: "origin" | "token" | null = null;
  /** A token is required at upgrade, so the page never gets `Welcome` first. */
  #needsToken = false;
  #bannerTimer: ReturnType<typeof setTimeout> | undefined;
  #pending = 0;
  /** Where the session is kept (see docs/client.md). */
  #storage = tabStorage();
  /** The token the session signed in with, if the server wanted one. */
  #token: string | undefined;
  /** False once signing out: nothing is written any more. */
  #persist = true;
  #saveQueued = false;
  /** An ended session, brought back when the same user signs in again. */
  #parked: Session | null = null;
  /** Whether the current socket got its `Welcome`. */
  #welcomed = false;
  /** Whether any socket of this page got its `Welcome`. */
  #everWelcomed = false;
  /** A socket was refused while the server answered: once more, then end. */
  #suspect = false;
  #diagnosing = false;
  #typing: TypingLine;

  constructor() {
    this.#el = elements();
    this.#client = new ChatClient({ url: socketUrl(), batch: true });
    this.#typing = new TypingLine(
      this.#client,
      this.#el.typing,
      this.#el.input,
      () => this.#active,
    );
    this.#wireClient();
    this.#wirePage();
    const saved = loadSession(this.#storage);
    if (saved?.ended !== undefined) {
      this.#showEnded(saved);
    } else if (saved) {
      this.#resume(saved);
    } else {
      this.#el.signinName.value = remembered();
    }
    this.#client.connect().catch(() => {});
  }

  // ---------------------------------------------------------------- session

  /** What would be kept now. */
  #snapshot(): Session {
    return sessionSnapshot(
      this.#me,
      this.#token,
      this.#ordered(),
      (room) => this.#client.lastSeq(room),
      this.#active,
    );
  }

  /** Saves once the current task is done (many changes, one write). */
  #saveSoon(): void {
    if (this.#saveQueued) return;
    this.#saveQueued = true;
    queueMicrotask(() => {
      this.#saveQueued = false;
      this.#saveNow();
    });
  }

  #saveNow(): void {
    if (!this.#persist || !this.#signedIn) return;
    saveSession(this.#storage, this.#snapshot());
  }

  /** Rebuilds the sidebar (and the direct messages) of a kept session. */
  #restoreConversations(saved: Session): void {
    for (const room of saved.rooms) {
      const conv = this.#conversation("room", room.name);
      conv.since ??= room.seq;
    }
    for (const dm of saved.dms) {
      const conv = this.#conversation("dm", dm.name);
      this.#insert(
        conv,
        dm.messages.map((m) =>
          this.#messageItem(
            `m:${m.id}`,
            [m.timestamp, conv.counter++],
            m.sender,
            m.content,
            m.timestamp,
          )
        ),
      );
    }
  }

  /** After a reload: back in with the kept name or token, rooms and all. */
  #resume(saved: Session): void {
    const client = this.#client;
    this.#me = saved.name;
    this.#token = saved.token;
    client.username = saved.name;
    if (saved.token !== undefined) client.setToken(saved.token);
    if (saved.token === undefined && saved.rooms.length === 0) {
      // Without a token only an Enter binds the name: ask for a room.
      this.#showEnded({ ...saved, ended: "Pick a room to go on chatting." });
      return;
    }
    this.#restoreConversations(saved);
    this.#showChat();
    this.#activate(
      this.#conversations.get(saved.active ?? "") ?? this.#ordered()[0],
    );
    void this.#resumeRooms(saved.rooms);
  }

  /**
   * Enters the kept rooms, the first alone: it binds the name, which the
   * connection of the page before the reload may still hold for a moment.
   */
  async #resumeRooms(rooms: SavedRoom[]): Promise<void> {
    const queue = [...rooms];
    let taken = 0;
    while (queue.length > 0) {
      const room = queue[0]!;
      try {
        await this.#enterSaved(room);
        queue.shift();
        break;
      } catch (error) {
        if (!this.#signedIn) return;
        const code = error instanceof ChatError ? error.code : "";
        if (TRANSIENT_CODES.has(code)) return;
        if (code === "username_taken" && taken < TAKEN_RETRIES) {
          await delay(500 * 2 ** taken++);
          if (!this.#signedIn) return;
          continue;
        }
        if (IDENTITY_CODES.has(code)) {
          this.#end(errorText(error));
          return;
        }
        this.#roomLost(room.name, error);
        queue.shift();
      }
    }
    for (const room of queue) {
      this.#enterSaved(room).catch((error) => {
        if (this.#signedIn) this.#roomLost(room.name, error);
      });
    }
  }

  /**
   * Enters a room: with `since` when it was shown before (what came after,
   * exactly once) and then one page of what came before, for context;
   * otherwise with the last messages.
   */
  async #enterSaved(room: SavedRoom): Promise<void> {
    const seq = room.seq;
    await this.#client.enter(
      room.name,
      seq === undefined ? { history: HISTORY_PAGE } : { since: seq },
    );
    if (seq === undefined) return;
    const conv = this.#conversations.get(`room:${room.name}`) ??
      this.#conversation("room", room.name);
    if (seq === 0) {
      conv.reachedStart = true;
      if (this.#active === conv) this.#renderHistoryTop();
      return;
    }
    await this.#loadBefore(conv, seq + 1);
  }

  /** A kept room that cannot be entered again: said, and dropped. */
  #roomLost(room: string, error: unknown): void {
    const code = error instanceof ChatError ? error.code : "";
    if (TRANSIENT_CODES.has(code)) return;
    this.#toast(`#${room}: ${errorText(error)}`);
    const conv = this.#conversations.get(`room:${room}`);
    if (!conv) return;
    this.#conversations.delete(conv.key);
    this.#renderLists();
    if (this.#active === conv) {
      this.#activate([...this.#conversations.values()][0]);
    }
    this.#saveSoon();
  }

  /**
   * The session cannot go on (token refused, name taken): back to the
   * sign-in with `text`. The rooms and conversations are kept (without the
   * token) and come back when the same user signs in again.
   */
  #end(text: string): void {
    const client = this.#client;
    const session: Session = { ...this.#snapshot(), ended: text };
    delete session.token;
    const hadToken = this.#token !== undefined;
    this.#token = undefined;
    this.#signedIn = false;
    this.#suspect = false;
    if (this.#persist) saveSession(this.#storage, session);
    for (const room of client.rooms) client.leave(room).catch(() => {});
    this.#showEnded(session);
    if (hadToken) {
      // Stop presenting the refused token: a plain socket shows the form.
      client.setToken(undefined);
      client.reconnectNow({ force: true });
    }
  }

  /** The sign-in form for an ended session, ready to sign in again. */
  #showEnded(session: Session): void {
    const el = this.#el;
    this.#parked = session;
    this.#signedIn = false;
    this.#conversations.clear();
    this.#active = undefined;
    this.#renderLists();
    el.chat.hidden = true;
    el.signin.hidden = false;
    el.signinName.value = session.name;
    const room = session.rooms[0]?.name;
    if (room !== undefined) el.signinRoom.value = room;
    el.signinError.textContent = session.ended ?? "";
    const welcome = this.#client.welcome;
    if (welcome) this.#configureSignin(welcome);
    (el.signinTokenField.hidden ? el.signinName : el.signinToken).focus();
    document.title = "Chat";
  }

  async #signOut(): Promise<void> {
    const el = this.#el;
    const client = this.#client;
    el.signout.disabled = true;
    this.#persist = false;
    clearSession(this.#storage);
    forgetName();
    this.#signedIn = false;
    if (client.state === "open") {
      // Others see "left", not "went offline"; briefly, at most.
      await Promise.race([
        Promise.allSettled(client.rooms.map((room) => client.leave(room))),
        delay(1500),
      ]);
    }
    await client.close();
    location.reload();
  }

  /** Signed in, and no socket open: what `#diagnose` looks into. */
  #stillRefused(): boolean {
    return this.#signedIn && this.#client.state !== "open";
  }

  /**
   * A socket of a signed-in page was refused. A browser hides why; when the
   * server answers HTTP and is healthy, one more refusal means the token is
   * refused (revoked or expired): the page asks for a new one instead of
   * retrying forever. No server at all: the retries go on.
   */
  async #diagnose(): Promise<void> {
    if (this.#diagnosing) return;
    this.#diagnosing = true;
    const client = this.#client;
    try {
      const check = await getJson(
        `/api/upgrade-check?origin=${encodeURIComponent(location.origin)}`,
      );
      if (!check || !this.#stillRefused()) return;
      if (check.origin_allowed === false) {
        this.#blocked = "origin";
        this.#end(
          `This server does not accept connections from pages of ${location.origin}.`,
        );
        void client.close();
        this.#el.signinSubmit.disabled = true;
        return;
      }
      if (this.#token === undefined) {
        if (check.token_at_upgrade === true) {
          this.#needsToken = true;
          this.#blocked = "token";
          this.#end("This server needs an access token. Paste yours.");
        }
        return;
      }
      const health = await getJson("/healthz");
      if (health?.status !== "ok") return;
      if (!this.#stillRefused()) return;
      if (!this.#suspect) {
        this.#suspect = true;
        client.reconnectNow();
        return;
      }
      this.#end(TOKEN_ENDED);
    } finally {
      this.#diagnosing = false;
    }
  }

  // ------------------------------------------------------------ client side

  #wireClient(): void {
    const client = this.#client;
    client.on("state", (event) => this.#onState(event));
    client.on("welcome", ({ body }) => {
      if (this.#signedIn) {
        if (body.username !== undefined && body.username !== this.#me) {
          this.#me = body.username;
          this.#el.me.textContent = body.username;
        }
        return;
      }
      this.#configureSignin(body);
    });
    client.on("presence", ({ body }) => {
      this.#conversation("room", body.room);
      if (this.#active?.key === `room:${body.room}`) this.#renderMembers();
    });
    client.on("enter", ({ body }) => {
      const conv = this.#conversation("room", body.room);
      this.#notice(conv, `${body.sender_username} joined`, body.timestamp);
      if (this.#active === conv) this.#renderMembers();
    });
    client.on("presence_diff", ({ body }) => {
      // A large room: one quiet line a second, not one per person.
      const conv = this.#conversation("room", body.room);
      const parts: string[] = [];
      if (body.joined_count > 0) {
        parts.push(`+${body.joined_count.toLocaleString("en")} joined`);
      }
      if (body.left_count > 0) {
        parts.push(`${body.left_count.toLocaleString("en")} left`);
      }
      if (parts.length > 0) {
        this.#notice(conv, parts.join(", "), body.timestamp);
      }
      if (this.#active === conv) this.#renderMembers();
    });
    client.on("leave", ({ body }) => {
      const conv = this.#conversation("room", body.room);
      const verb = body.reason === "left"
        ? "left"
        : body.reason === "kicked" || body.reason === "banned"
        ? `was ${body.reason} by an administrator`
        : "went offline";
      this.#notice(conv, `${body.sender_username} ${verb}`, body.timestamp);
      if (this.#active === conv) this.#renderMembers();
    });
    client.on("group_chat", ({ body }) => this.#roomMessages([body], true));
    client.on("deleted", ({ body }) => this.#deleted(body));
    client.on("private_chat", ({ body }) => this.#privateMessage(body));
    client.on("history", (event) => this.#history(event));
    client.on("error", ({ body, handled }) => {
      if (!handled) this.#toast(describeError(body.code, body.message));
    });
    // Any frame may change what is kept (a seq, a conversation): save.
    client.on("*", () => this.#saveSoon());
  }

  #configureSignin(body: WelcomeBody): void {
    const el = this.#el;
    const auth = body.auth_required || this.#needsToken;
    el.signinStatus.textContent = `Connected to ${body.server}.`;
    el.signinTokenField.hidden = !auth;
    el.signinNameField.hidden = auth;
    el.signinLead.textContent = auth
      ? "This server needs an access token. Paste yours and pick a room."
      : "Pick a name and a room to start talking.";
    if (!el.signinRoom.value) el.signinRoom.value = body.default_room;
  }

  #onState(event: ChatEventOf<"state">): void {
    const el = this.#el;
    clearInterval(this.#countdown);
    this.#countdown = undefined;
    el.connection.dataset.state = event.state;
    el.connection.dataset.attempt = String(event.attempt);
    const refused = event.state === "reconnecting" && !this.#welcomed;
    this.#welcomed = event.state === "open";
    if (event.state === "open") this.#suspect = false;
    // With a token, each refusal is looked into: it may be revoked. Without
    // one, only a resumed page's first (a refused origin, a token now
    // required); a page that was connected just waits for the server.
    if (
      refused && this.#signedIn &&
      (this.#token || (!this.#checked && !this.#everWelcomed))
    ) {
      this.#checked = true;
      void this.#diagnose();
    }
    if (event.state === "open") this.#everWelcomed = true;
    switch (event.state) {
      case "open":
        el.connectionText.textContent = "Online";
        if (this.#dropped && this.#signedIn) {
          this.#banner("You are back online.", "ok", 3000);
        } else {
          this.#banner(null);
        }
        this.#dropped = false;
        break;
      case "connecting":
      case "idle":
        el.connectionText.textContent = "Connecting…";
        if (this.#dropped) this.#banner("Reconnecting…", "warn");
        break;
      case "reconnecting": {
        if (!this.#signedIn && !this.#client.welcome && !this.#checked) {
          // A browser hides a refused upgrade's status: ask the server why.
          this.#checked = true;
          void this.#checkUpgrade();
        }
        if (this.#blocked === "origin") {
          void this.#client.close();
          return;
        }
        this.#dropped = true;
        this.#retryAt = Date.now() + (event.delayMs ?? 0);
        const update = () => {
          const wait = seconds(this.#retryAt - Date.now());
          el.connectionText.textContent = `Offline · retrying in ${wait}`;
          if (this.#signedIn) {
            this.#banner(
              `Connection lost. Reconnecting in ${wait}…`,
              "warn",
            );
          } else if (this.#blocked === "token") {
            el.signinStatus.textContent =
              "This server needs your access token to connect.";
          } else if (event.closeCode === 1008) {
            // Closed for not joining in time: it opens again on join.
            el.signinStatus.textContent = "Ready when you are.";
          } else {
            el.signinStatus.textContent =
              `Cannot reach the server. Retrying in ${wait}…`;
          }
        };
        update();
        this.#countdown = setInterval(update, 1000);
        break;
      }
      case "closed":
        el.connectionText.textContent = "Disconnected";
        this.#banner("Disconnected. Reload the page to chat again.", "warn");
        break;
    }
  }

  #conversation(kind: "room" | "dm", name: string): Conversation {
    const key = `${kind}:${name}`;
    let conv = this.#conversations.get(key);
    if (conv) return conv;
    const button = h("button", {
      class: "conv",
      attrs: { type: "button", "data-key": key },
    });
    conv = {
      key,
      kind,
      name,
      items: [],
      keys: new Set(),
      unread: 0,
      maxSeq: 0,
      counter: 0,
      reachedStart: false,
      truncated: false,
      loadingOlder: false,
      draft: "",
      button,
    };
    const created = conv;
    button.addEventListener("click", () => this.#activate(created));
    this.#conversations.set(key, conv);
    this.#renderButton(conv);
    this.#renderLists();
    this.#saveSoon();
    return conv;
  }

  /** Inserts items in order; returns whether any was new. */
  #insert(conv: Conversation, items: Item[]): boolean {
    let added = false;
    for (const item of items) {
      if (conv.keys.has(item.key)) continue;
      conv.keys.add(item.key);
      added = true;
      let at = conv.items.length;
      while (at > 0 && compare(conv.items[at - 1]!.sort, item.sort) > 0) at--;
      conv.items.splice(at, 0, item);
    }
    if (added) this.#saveSoon();
    return added;
  }

  #messageItem(
    key: string,
    sort: SortKey,
    sender: string,
    content: string,
    timestamp: number,
    seq?: number,
  ): MessageItem {
    return {
      kind: "message",
      key,
      sort,
      sender,
      content,
      timestamp,
      seq,
      pending: false,
    };
  }

  #roomMessages(
    messages: StoredGroupChat[],
    countUnread: boolean,
    older = false,
  ): void {
    const first = messages[0];
    if (!first) return;
    const conv = this.#conversation("room", first.room);
    const items = messages.map((m) =>
      this.#messageItem(
        `m:${m.id}`,
        [m.seq, 0],
        m.sender_username,
        m.content,
        m.timestamp,
        m.seq,
      )
    );
    for (const message of messages) {
      conv.maxSeq = Math.max(conv.maxSeq, message.seq);
    }
    if (!this.#insert(conv, items)) return;
    if (countUnread) {
      this.#countUnread(
        conv,
        messages.filter((m) => m.sender_username !== this.#me).length,
      );
    }
    if (this.#active === conv) this.#renderMessages(older ? "keep" : "stick");
  }

  /**
   * An administrator deleted a room's message: it leaves the view. Its key
   * stays known, so a later replay cannot bring it back.
   */
  #deleted(body: DeletedBody): void {
    const conv = this.#conversations.get(`room:${body.room}`);
    if (!conv) return;
    const key = `m:${body.id}`;
    conv.keys.add(key);
    const at = conv.items.findIndex((item) => item.key === key);
    if (at < 0) return;
    conv.items.splice(at, 1);
    this.#saveSoon();
    if (this.#active === conv) this.#renderMessages("keep");
  }

  #privateMessage(message: StoredPrivateChat): void {
    const other = message.sender_username === this.#me
      ? message.target_username
      : message.sender_username;
    const conv = this.#conversation("dm", other);
    const item = this.#messageItem(
      `m:${message.id}`,
      [message.timestamp, conv.counter++],
      message.sender_username,
      message.content,
      message.timestamp,
    );
    if (!this.#insert(conv, [item])) return;
    if (message.sender_username !== this.#me) this.#countUnread(conv, 1);
    if (this.#active === conv) this.#renderMessages("stick");
  }

  #notice(conv: Conversation, text: string, timestamp: number): void {
    const n = conv.counter++;
    this.#insert(conv, [{
      kind: "notice",
      key: `n:${n}`,
      sort: [conv.kind === "room" ? conv.maxSeq : timestamp, 1 + n],
      text,
      timestamp,
    }]);
    if (this.#active === conv) this.#renderMessages("stick");
  }

  #history(event: ChatEventOf<"history">): void {
    const { body, reason } = event;
    const conv = this.#conversation("room", body.room);
    if (reason === "enter") {
      const oldest = body.messages[0]?.seq;
      if (body.messages.length < HISTORY_PAGE || oldest === 1) {
        conv.reachedStart = true;
      }
    }
    if (!body.complete) {
      if (reason === "recovery") {
        this.#notice(
          conv,
          "Some messages from while you were offline are no longer kept.",
          Date.now(),
        );
      } else {
        conv.reachedStart = true;
        conv.truncated = true;
      }
    }
    this.#roomMessages(
      body.messages,
      reason === "recovery",
      reason === "request",
    );
    if (this.#active === conv) this.#renderHistoryTop();
  }

  #countUnread(conv: Conversation, count: number): void {
    if (count === 0) return;
    if (this.#active === conv && !document.hidden) return;
    conv.unread += count;
    this.#renderButton(conv);
    this.#renderTitle();
  }

  // -------------------------------------------------------------- page side

  #wirePage(): void {
    const el = this.#el;
    el.signinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.#signIn();
    });
    el.joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.#join();
    });
    el.dmForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#openDirect();
    });
    el.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.#send();
    });
    el.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.#send();
      }
    });
    el.input.addEventListener("input", () => this.#autosize());
    el.leaveButton.addEventListener("click", () => void this.#leave());
    el.signout.addEventListener("click", () => void this.#signOut());
    // The last word before a reload or a close: what is shown now.
    addEventListener("pagehide", () => this.#saveNow());
    el.bannerRetry.addEventListener(
      "click",
      () => this.#client.reconnectNow(),
    );
    el.menuButton.addEventListener("click", () => this.#toggleNav());
    el.scrim.addEventListener("click", () => this.#toggleNav(false));
    el.membersButton.addEventListener("click", () => this.#toggleMembers());
    el.loadOlder.addEventListener("click", () => void this.#loadOlder());
    el.members.addEventListener("scroll", () => {
      const { scrollTop, clientHeight, scrollHeight } = el.members;
      if (scrollTop + clientHeight > scrollHeight - 80) {
        void this.#loadMembers();
      }
    });
    el.messages.addEventListener("scroll", () => {
      if (el.messages.scrollTop < 80) void this.#loadOlder();
    });
    document.addEventListener("keydown", (event) => this.#shortcut(event));
    document.addEventListener("visibilitychange", () => {
      const conv = this.#active;
      if (!document.hidden && conv && conv.unread > 0) {
        conv.unread = 0;
        this.#renderButton(conv);
        this.#renderTitle();
      }
    });
    if (matchMedia("(min-width: 1001px)").matches) {
      el.chat.classList.add("members-open");
      el.membersButton.setAttribute("aria-expanded", "true");
    }
    el.signinName.focus();
  }

  /**
   * After a failed first open, asks `/api/upgrade-check` whether this page's
   * origin may connect at all (a browser does not show the 403), and whether
   * the server wants the token at upgrade. Shows the answer; a refused origin
   * stops the retries, since retrying cannot help.
   */
  async #checkUpgrade(): Promise<void> {
    let answer: { origin_allowed?: unknown; token_at_upgrade?: unknown };
    try {
      const url = new URL("/api/upgrade-check", location.href);
      url.searchParams.set("origin", location.origin);
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) return;
      answer = await response.json();
    } catch {
      return; // No server at all: the retries go on.
    }
    const el = this.#el;
    if (answer.origin_allowed === false) {
      this.#blocked = "origin";
      void this.#client.close();
      el.signinStatus.textContent =
        `This server does not accept connections from pages of ${location.origin}. ` +
        "Its operator can allow this origin in ALLOWED_ORIGINS.";
      el.signinSubmit.disabled = true;
      return;
    }
    if (answer.token_at_upgrade === true) {
      this.#blocked = "token";
      this.#needsToken = true;
      el.signinTokenField.hidden = false;
      el.signinNameField.hidden = true;
      el.signinLead.textContent =
        "This server needs an access token. Paste yours and pick a room.";
      el.signinStatus.textContent =
        "This server needs your access token to connect.";
    }
  }

  #signinError(text: string, field?: HTMLInputElement): void {
    this.#el.signinError.textContent = text;
    field?.focus();
  }

  async #signIn(): Promise<void> {
    const el = this.#el;
    const client = this.#client;
    const auth = (client.welcome?.auth_required ?? false) || this.#needsToken;
    const name = el.signinName.value.trim();
    const token = el.signinToken.value.trim();
    const room = el.signinRoom.value.trim() ||
      (client.welcome?.default_room ?? "general");
    el.signinError.textContent = "";
    if (auth && !token) {
      return this.#signinError(
        "Paste your access token to sign in.",
        el.signinToken,
      );
    }
    const problem = auth ? null : usernameProblem(name);
    if (problem !== null) {
      return this.#signinError(
        isValidName(name) ? `Your name ${problem}.` : NAME_RULE,
        el.signinName,
      );
    }
    if (!isValidName(room)) {
      return this.#signinError(
        "Room names are 1 to 32 letters, digits, '_', '-' or '.', without spaces.",
        el.signinRoom,
      );
    }
    el.signinSubmit.disabled = true;
    const parked = this.#parked;
    try {
      if (auth) {
        await this.#connectWithToken(token);
        this.#blocked = null;
      } else {
        client.username = name;
        // Closed for not joining in time: open again now, not after the wait.
        if (client.state === "reconnecting") client.reconnectNow();
      }
      const me = client.username ?? name;
      // The same user again after an ended session: everything comes back.
      const resumed = parked?.name === me ? parked : null;
      const kept = resumed?.rooms.find((r) => r.name === room);
      await this.#enterSaved(kept ?? { name: room });
      this.#me = me;
      this.#token = auth ? token : undefined;
      this.#parked = null;
      remember(this.#me);
      this.#showChat();
      if (resumed) {
        this.#restoreConversations(resumed);
        for (const other of resumed.rooms) {
          if (other.name === room) continue;
          this.#enterSaved(other).catch((error) => {
            if (this.#signedIn) this.#roomLost(other.name, error);
          });
        }
      }
      this.#activate(this.#conversation("room", room));
      this.#saveSoon();
    } catch (error) {
      const field = error instanceof ChatError &&
          error.code === "username_taken"
        ? el.signinName
        : undefined;
      this.#signinError(errorText(error), field);
    } finally {
      el.signinSubmit.disabled = false;
    }
  }

  /** Reconnects with `token` at upgrade; fails when it is refused. */
  #connectWithToken(token: string): Promise<void> {
    const client = this.#client;
    client.setToken(token);
    return new Promise<void>((resolve, reject) => {
      const stop = () => {
        offState();
        offWelcome();
      };
      const offState = client.on("state", (event) => {
        if (event.state !== "reconnecting") return;
        stop();
        // The upgrade was refused: an unknown token (or no server at all).
        client.setToken(undefined);
        client.reconnectNow();
        reject(new ChatError("invalid_token"));
      });
      const offWelcome = client.on("welcome", () => {
        stop();
        resolve();
      });
      client.reconnectNow({ force: true });
    });
  }

  #showChat(): void {
    const el = this.#el;
    this.#signedIn = true;
    el.signin.hidden = true;
    el.chat.hidden = false;
    el.signout.disabled = false;
    el.signinError.textContent = "";
    el.me.textContent = this.#me;
    if (this.#client.state !== "open") {
      this.#onState({
        type: "state",
        state: this.#client.state,
        attempt: 0,
      });
    }
  }

  async #join(): Promise<void> {
    const el = this.#el;
    const room = el.joinRoom.value.trim();
    if (!room) return;
    if (!isValidName(room)) {
      this.#toast(
        "Room names are 1 to 32 letters, digits, '_', '-' or '.', without spaces.",
      );
      return;
    }
    const existing = this.#conversations.get(`room:${room}`);
    if (existing) {
      el.joinRoom.value = "";
      this.#activate(existing);
      return;
    }
    try {
      await this.#client.enter(room, { history: HISTORY_PAGE });
      el.joinRoom.value = "";
      this.#activate(this.#conversation("room", room));
    } catch (error) {
      this.#toast(errorText(error));
    }
  }

  #openDirect(): void {
    const el = this.#el;
    const name = el.dmUser.value.trim();
    if (!name) return;
    if (!isValidName(name)) return this.#toast(NAME_RULE);
    if (name === this.#me) {
      return this.#toast("That is you. Pick someone else to message.");
    }
    el.dmUser.value = "";
    this.#activate(this.#conversation("dm", name));
  }

  async #leave(): Promise<void> {
    const conv = this.#active;
    if (!conv) return;
    if (conv.kind === "room") {
      try {
        await this.#client.leave(conv.name);
      } catch (error) {
        if (!(error instanceof ChatError && error.code === "not_in_room")) {
          this.#toast(errorText(error));
          return;
        }
      }
    }
    this.#conversations.delete(conv.key);
    this.#renderLists();
    this.#activate([...this.#conversations.values()][0]);
    this.#saveSoon();
  }

  async #send(): Promise<void> {
    const el = this.#el;
    const conv = this.#active;
    const text = el.input.value.replace(/\s+$/, "");
    if (!conv || text.trim() === "") return;
    el.input.value = "";
    this.#autosize();
    const n = ++this.#pending;
    const pending: MessageItem = {
      ...this.#messageItem(
        `p:${n}`,
        [Number.MAX_SAFE_INTEGER, n],
        this.#me,
        text,
        Date.now(),
      ),
      pending: true,
    };
    this.#insert(conv, [pending]);
    if (this.#active === conv) this.#renderMessages("bottom");
    // Outcome unknown (a drop, no answer, unavailable): the client sends it
    // again with the same id; the message says so until it is answered.
    const onState = (state: SendState) => {
      if (state !== "unknown") return;
      pending.unknown = true;
      pending.node = undefined;
      if (this.#active === conv) this.#renderMessages("keep");
    };
    try {
      if (conv.kind === "room") {
        await this.#client.groupChat(conv.name, text, { onState });
      } else {
        await this.#client.privateChat(conv.name, text, { onState });
      }
    } catch (error) {
      this.#toast(errorText(error));
      if (el.input.value === "" && this.#active === conv) {
        el.input.value = text;
        this.#autosize();
      }
    } finally {
      conv.items = conv.items.filter((item) => item !== pending);
      conv.keys.delete(pending.key);
      if (this.#active === conv) this.#renderMessages("stick");
    }
  }

  async #loadOlder(): Promise<void> {
    const conv = this.#active;
    if (
      !conv || conv.kind !== "room" || conv.reachedStart || conv.loadingOlder
    ) return;
    let oldest: number | undefined;
    for (const item of conv.items) {
      if (item.kind === "message" && item.seq !== undefined) {
        oldest = item.seq;
        break;
      }
    }
    if (oldest === undefined || oldest <= 1) {
      conv.reachedStart = true;
      this.#renderHistoryTop();
      return;
    }
    await this.#loadBefore(conv, oldest);
  }

  /** Asks for the page of messages before `before`; shows them in place. */
  async #loadBefore(conv: Conversation, before: number): Promise<void> {
    conv.loadingOlder = true;
    if (this.#active === conv) this.#renderHistoryTop();
    try {
      const page = await this.#client.history(conv.name, {
        before,
        limit: HISTORY_PAGE,
      });
      if (
        page.messages.length < HISTORY_PAGE || page.messages[0]?.seq === 1
      ) {
        conv.reachedStart = true;
      }
      if (!page.complete) {
        conv.reachedStart = true;
        conv.truncated = true;
      }
    } catch (error) {
      if (this.#conversations.get(conv.key) === conv) {
        this.#toast(errorText(error));
      }
    } finally {
      conv.loadingOlder = false;
      if (this.#active === conv) this.#renderHistoryTop();
    }
  }

  #toggleNav(open?: boolean): void {
    const el = this.#el;
    const next = open ?? !el.chat.classList.contains("nav-open");
    el.chat.classList.toggle("nav-open", next);
    el.menuButton.setAttribute("aria-expanded", String(next));
    if (next) {
      (this.#active?.button ?? el.joinRoom).focus();
    }
  }

  #toggleMembers(open?: boolean): void {
    const el = this.#el;
    const next = open ?? !el.chat.classList.contains("members-open");
    el.chat.classList.toggle("members-open", next);
    el.membersButton.setAttribute("aria-expanded", String(next));
  }

  #shortcut(event: KeyboardEvent): void {
    if (!this.#signedIn) return;
    const el = this.#el;
    if (event.key === "Escape") {
      if (el.chat.classList.contains("nav-open")) {
        this.#toggleNav(false);
        el.menuButton.focus();
      } else if (
        el.chat.classList.contains("members-open") &&
        !matchMedia("(min-width: 1001px)").matches
      ) {
        this.#toggleMembers(false);
        el.membersButton.focus();
      }
      return;
    }
    if (
      event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")
    ) {
      const order = this.#ordered();
      if (order.length === 0) return;
      event.preventDefault();
      const at = this.#active ? order.indexOf(this.#active) : -1;
      const step = event.key === "ArrowUp" ? -1 : 1;
      this.#activate(order[(at + step + order.length) % order.length]);
    }
  }

  #ordered(): Conversation[] {
    const all = [...this.#conversations.values()];
    return [
      ...all.filter((conv) => conv.kind === "room"),
      ...all.filter((conv) => conv.kind === "dm"),
    ];
  }

  #activate(conv: Conversation | undefined): void {
    const el = this.#el;
    const previous = this.#active;
    if (previous) previous.draft = el.input.value;
    if (previous && previous !== conv) this.#typing.leave(previous);
    this.#active = conv;
    this.#typing.render();
    for (const other of this.#conversations.values()) {
      other.button.setAttribute("aria-current", String(other === conv));
    }
    el.chat.classList.remove("nav-open");
    el.menuButton.setAttribute("aria-expanded", "false");
    el.composer.hidden = !conv;
    el.leaveButton.hidden = !conv;
    el.membersButton.hidden = conv?.kind !== "room";
    el.members.hidden = conv?.kind !== "room";
    el.empty.hidden = conv !== undefined;
    el.messageList.hidden = !conv;
    if (!conv) {
      el.title.textContent = "Chat";
      el.subtitle.textContent = "";
      el.input.value = "";
      this.#renderHistoryTop();
      this.#renderTitle();
      return;
    }
    conv.unread = 0;
    this.#renderButton(conv);
    this.#saveSoon();
    el.title.textContent = conv.kind === "room"
      ? `# ${conv.name}`
      : `@ ${conv.name}`;
    if (conv.kind === "dm") el.subtitle.textContent = "Direct message";
    el.leaveButton.textContent = conv.kind === "room" ? "Leave" : "Close";
    el.leaveButton.setAttribute(
      "aria-label",
      conv.kind === "room"
        ? `Leave room ${conv.name}`
        : `Close conversation with ${conv.name}`,
    );
    el.input.placeholder = conv.kind === "room"
      ? `Message #${conv.name}`
      : `Message ${conv.name}`;
    el.input.value = conv.draft;
    this.#autosize();
    this.#renderMembers();
    this.#renderHistoryTop();
    this.#renderMessages("bottom");
    this.#renderTitle();
    el.input.focus();
  }

  // -------------------------------------------------------------- rendering

  #renderLists(): void {
    renderLists(this.#el, this.#conversations.values());
  }

  #renderButton(conv: Conversation): void {
    renderButton(conv);
  }

  #renderTitle(): void {
    let unread = 0;
    for (const conv of this.#conversations.values()) unread += conv.unread;
    const where = this.#active
      ? `${this.#active.kind === "room" ? "#" : "@"}${this.#active.name} · `
      : "";
    document.title = `${unread > 0 ? `(${unread}) ` : ""}${where}Chat`;
  }

  #renderMembers(): void {
    const client = this.#client;
    renderMembers(
      this.#el,
      this.#active,
      (room) => {
        const large = client.isLarge(room);
        return {
          // A large room's pages in join order, so a new page goes below.
          names: client.members(room, { order: large ? "known" : "name" }),
          count: client.memberCount(room),
          more: client.hasMoreMembers(room),
        };
      },
      this.#me,
      (name) => this.#activate(this.#conversation("dm", name)),
      () => void this.#loadMembers(),
    );
  }

  /** Loads the next page of the open large room's members, once at a time. */
  async #loadMembers(): Promise<void> {
    const conv = this.#active;
    if (
      this.#loadingMembers || !conv || conv.kind !== "room" ||
      !this.#client.hasMoreMembers(conv.name)
    ) return;
    this.#loadingMembers = true;
    try {
      await this.#client.loadMembers(conv.name);
    } catch (error) {
      this.#toast(`#${conv.name}: ${errorText(error)}`);
    } finally {
      this.#loadingMembers = false;
    }
    if (this.#active === conv) this.#renderMembers();
  }

  #renderHistoryTop(): void {
    renderHistoryTop(this.#el, this.#active);
  }

  #renderMessages(mode: "stick" | "keep" | "bottom"): void {
    renderMessages(this.#el, this.#active, mode, this.#me);
  }

  #autosize(): void {
    autosize(this.#el.input);
  }

  #banner(
    text: string | null,
    tone: "ok" | "warn" = "warn",
    hideAfterMs?: number,
  ): void {
    const el = this.#el;
    clearTimeout(this.#bannerTimer);
    if (text === null || !this.#signedIn) {
      el.banner.hidden = true;
      return;
    }
    el.banner.hidden = false;
    el.banner.dataset.tone = tone;
    el.bannerText.textContent = text;
    el.bannerRetry.hidden = tone === "ok" ||
      this.#client.state !== "reconnecting";
    if (hideAfterMs !== undefined) {
      this.#bannerTimer = setTimeout(() => {
        el.banner.hidden = true;
      }, hideAfterMs);
    }
  }

  #toast(text: string, tone: "error" | "info" = "error"): void {
    toast(this.#el, text, tone);
  }
}

new ChatApp();
