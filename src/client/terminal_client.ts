/**
 * A line-based chat client for the terminal, built on the client module:
 *
 * ```sh
 * deno task client --name alice --room general [--url ws://127.0.0.1:8080/ws] [--token TOKEN]
 * ```
 *
 * Plain lines go to the current room; `/join ROOM`, `/leave`, `/msg USER
 * TEXT`, `/who`, `/history [N]`, `/help` and `/quit` do the rest. Incoming
 * messages print as `HH:MM:SS [room] sender: text`, direct messages as
 * `HH:MM:SS [dm] sender -> target: text`. It reconnects by itself and
 * catches up on what it missed, like the web client. Someone starting to
 * type prints `HH:MM:SS [room] * alice is typing…` (`[dm]` for a direct
 * conversation) once per start; this client reads whole lines, so it does
 * not send typing itself (a terminal in line mode gives no keystrokes).
 * When it cannot connect
 * at the start, it says why (connection refused, host not found, or the
 * server's HTTP refusal with its reason) and exits 1 after
 * {@linkcode FIRST_CONNECT_TRIES} tries, at once for a refusal that trying
 * again cannot change (HTTP 401, 403, 404). Finding out why is
 * `connect_diagnosis.ts`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  ChatClient,
  type ChatEventOf,
  isValidName,
  type StoredGroupChat,
  usernameProblem,
} from "./chat_client.ts";
import { diagnoseConnect } from "./connect_diagnosis.ts";
import { describeError } from "./error_text.ts";

/** What the command line asks for. */
export interface TerminalOptions {
  /** The username; optional with a token, which names the user. */
  name: string | undefined;
  /** The room to enter first. */
  room: string;
  /** The server's WebSocket URL. */
  url: string;
  /** An access token, sent at upgrade and with every message. */
  token: string | undefined;
}

/** The outcome of {@linkcode parseTerminalArgs}. */
export type ParsedArgs =
  | { kind: "options"; options: TerminalOptions }
  | { kind: "help" }
  | { kind: "error"; message: string };

/** The text of `--help`. */
export const USAGE =
  `Usage: deno task client --name NAME [--room ROOM] [--url URL] [--token TOKEN]

  --name   your username (1 to 32 letters, digits, '_', '-' or '.')
  --room   the room to enter first (default: general)
  --url    the server's WebSocket URL (default: ws://127.0.0.1:8080/ws)
  --token  an access token, when the server requires one (it names you)

Commands: type a line to send it to the current room, or
  /join ROOM      enter ROOM and make it the current room
  /leave          leave the current room
  /msg USER TEXT  send USER a direct message
  /who            list the members of the current room
  /history [N]    show N older messages of the current room (default 20)
  /help           show this help
  /quit           leave the chat`;

/** Reads the command line. */
export function parseTerminalArgs(args: string[]): ParsedArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        name: { type: "string" },
        room: { type: "string", default: "general" },
        url: { type: "string", default: "ws://127.0.0.1:8080/ws" },
        token: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    return { kind: "error", message: (error as Error).message };
  }
  if (values.help) return { kind: "help" };
  const { name, room, url, token } = values;
  if (name === undefined && token === undefined) {
    return { kind: "error", message: "--name is required (or --token)" };
  }
  const problem = name === undefined ? null : usernameProblem(name);
  if (problem !== null) {
    return { kind: "error", message: `--name '${name}' ${problem}` };
  }
  if (!isValidName(room)) {
    return { kind: "error", message: `--room '${room}' is not a room name` };
  }
  if (!/^wss?:\/\//.test(url)) {
    return { kind: "error", message: `--url must start with ws:// or wss://` };
  }
  return { kind: "options", options: { name, room, url, token } };
}

/** A line typed by the user, understood. */
export type Command =
  | { kind: "say"; text: string }
  | { kind: "join"; room: string }
  | { kind: "leave" }
  | { kind: "msg"; user: string; text: string }
  | { kind: "who" }
  | { kind: "history"; count: number }
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "empty" }
  | { kind: "invalid"; message: string };

/** Parses one input line. */
export function parseCommand(line: string): Command {
  const text = line.replace(/\r$/, "");
  if (text.trim() === "") return { kind: "empty" };
  if (!text.startsWith("/")) return { kind: "say", text };
  const [word = "", ...rest] = text.trim().split(/\s+/);
  const args = rest.join(" ");
  switch (word) {
    case "/join":
      return rest.length === 1 && isValidName(rest[0] ?? "")
        ? { kind: "join", room: rest[0] ?? "" }
        : { kind: "invalid", message: "usage: /join ROOM" };
    case "/leave":
      return { kind: "leave" };
    case "/msg": {
      const match = /^\/msg\s+(\S+)\s+([\s\S]+)$/.exec(text.trim());
      return match && isValidName(match[1] ?? "")
        ? { kind: "msg", user: match[1] ?? "", text: match[2] ?? "" }
        : { kind: "invalid", message: "usage: /msg USER TEXT" };
    }
    case "/who":
      return { kind: "who" };
    case "/history": {
      const count = args === "" ? 20 : Number(args);
      return Number.isInteger(count) && count >= 1 && count <= 100
        ? { kind: "history", count }
        : { kind: "invalid", message: "usage: /history [N], N from 1 to 100" };
    }
    case "/help":
      return { kind: "help" };
    case "/quit":
    case "/exit":
      return { kind: "quit" };
    default:
      return {
        kind: "invalid",
        message: `unknown command ${word}; /help lists them`,
      };
  }
}

/** `HH:MM:SS` in local time. */
export function formatTime(ms: number): string {
  const date = new Date(ms);
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((part) => String(part).padStart(2, "0"))
    .join(":");
}

/** A room message as printed: `HH:MM:SS [room] sender: text`. */
export function formatRoomMessage(message: StoredGroupChat): string {
  return `${
    formatTime(message.timestamp)
  } [${message.room}] ${message.sender_username}: ${message.content}`;
}

/** Someone started typing: `HH:MM:SS [room] * alice is typing…` (`[dm]`: to you). */
export function formatTyping(ms: number, where: string, name: string): string {
  return `${formatTime(ms)} [${where}] * ${name} is typing\u2026`;
}

/** Tries before a client that never connected gives up. */
export const FIRST_CONNECT_TRIES = 3;

/** Runs the client until `/quit` or the end of input; returns the exit code. */
export async function runTerminal(
  options: TerminalOptions,
  input: ReadableStream<Uint8Array<ArrayBuffer>>,
  print: (line: string) => void,
): Promise<number> {
  const client = new ChatClient({
    url: options.url,
    username: options.name,
    token: options.token,
  });
  let current: string | undefined;
  /** The oldest seq shown per room, for `/history`. */
  const oldest = new Map<string, number>();
  let everOpen = false;

  const note = (text: string) => print(`* ${text}`);
  const fail = (error: unknown) => {
    // After giving up, what the closing client rejects is no news.
    if (!stopped) {
      print(`! ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const shown = (messages: StoredGroupChat[]) => {
    for (const message of messages) {
      const seen = oldest.get(message.room);
      if (seen === undefined || message.seq < seen) {
        oldest.set(message.room, message.seq);
      }
      print(formatRoomMessage(message));
    }
  };

  // A client that never connected says why, and gives up after a few tries
  // (at once when trying again cannot help); once connected, it reconnects
  // for as long as it runs.
  let failures = 0;
  let stopped = false;
  const gaveUp = Promise.withResolvers<null>();
  client.on("state", (event) => {
    if (stopped) return;
    if (event.state === "open") {
      note(everOpen ? "reconnected" : `connected to ${options.url}`);
      everOpen = true;
    } else if (event.state === "reconnecting" && everOpen) {
      const wait = ((event.delayMs ?? 0) / 1000).toFixed(1);
      note(`connection lost; reconnecting in ${wait} s`);
    } else if (event.state === "reconnecting") {
      const tries = ++failures;
      const wait = ((event.delayMs ?? 0) / 1000).toFixed(1);
      diagnoseConnect(connectUrl(options)).then((problem) => {
        if (stopped || everOpen) return;
        if (problem.final || tries >= FIRST_CONNECT_TRIES) {
          print(
            `! cannot connect to ${options.url}: ${problem.text}; giving up${
              problem.final
                ? ""
                : ` after ${tries} tr${tries === 1 ? "y" : "ies"}`
            }`,
          );
          stopped = true;
          gaveUp.resolve(null);
        } else {
          print(
            `! cannot connect to ${options.url}: ${problem.text}; trying again in ${wait} s (${tries} of ${FIRST_CONNECT_TRIES} tries failed)`,
          );
        }
      });
    }
  });
  client.on("group_chat", ({ body }) => shown([body]));
  client.on("history", (event: ChatEventOf<"history">) => {
    if (event.reason === "request" && event.body.messages.length === 0) {
      note(`no older messages in #${event.body.room}`);
    }
    shown(event.body.messages);
  });
  client.on("private_chat", ({ body }) => {
    print(
      `${
        formatTime(body.timestamp)
      } [dm] ${body.sender_username} -> ${body.target_username}: ${body.content}`,
    );
  });
  client.on("enter", ({ body }) => {
    print(
      `${
        formatTime(body.timestamp)
      } [${body.room}] * ${body.sender_username} joined`,
    );
  });
  client.on("deleted", ({ body }) => {
    print(
      `[${body.room}] * message #${body.seq} was deleted by an administrator`,
    );
  });
  client.on("leave", ({ body }) => {
    const verb = body.reason === "left"
      ? "left"
      : body.reason === "kicked" || body.reason === "banned"
      ? `was ${body.reason} by an administrator`
      : "went offline";
    print(
      `${
        formatTime(body.timestamp)
      } [${body.room}] * ${body.sender_username} ${verb}`,
    );
  });
  /** Who was shown typing, per place, to print each start once. */
  const typing = new Map<string, string[]>();
  client.on("typers", ({ place, usernames }) => {
    const where = place.room ?? "dm";
    const before = typing.get(`${where}:${place.user ?? ""}`) ?? [];
    typing.set(`${where}:${place.user ?? ""}`, usernames);
    for (const name of usernames) {
      if (!before.includes(name)) {
        print(formatTyping(Date.now(), where, name));
      }
    }
  });
  client.on("presence_diff", ({ body }) => {
    // A large room: one summary line a second at most.
    const parts = [
      body.joined_count > 0 ? `+${body.joined_count} joined` : "",
      body.left_count > 0 ? `${body.left_count} left` : "",
    ].filter((part) => part !== "");
    if (parts.length === 0) return;
    print(
      `${formatTime(body.timestamp)} [${body.room}] * ${
        parts.join(", ")
      } (${body.count} members)`,
    );
  });
  client.on("error", ({ body, handled }) => {
    if (!handled) print(`! ${describeError(body.code, body.message)}`);
  });

  const who = (room: string) => {
    const names = client.members(room);
    const count = client.memberCount(room);
    note(
      count > names.length
        ? `in #${room}: ${count} members, among them ${names.join(", ")}`
        : `in #${room}: ${names.join(", ")}`,
    );
  };

  const enter = async (room: string) => {
    try {
      await client.enter(room, { history: 20 });
      current = room;
      note(`joined #${room}; this is now your current room`);
      who(room);
    } catch (error) {
      fail(error);
    }
  };

  client.connect().catch(fail);
  // Input that needs the server (piped in, or typed at once) waits for the
  // first room; /quit and /help do not.
  const joined = enter(options.room);

  const decoder = new TextDecoderStream();
  const lines = input.pipeThrough(decoder);
  let buffer = "";
  let quit = false;
  const handle = async (line: string) => {
    const command = parseCommand(line);
    if (command.kind !== "quit" && command.kind !== "help") await joined;
    switch (command.kind) {
      case "empty":
        return;
      case "say":
        if (current === undefined) {
          print("! You are not in a room: /join ROOM first.");
          return;
        }
        await client.groupChat(current, command.text).catch(fail);
        return;
      case "join":
        await enter(command.room);
        return;
      case "leave": {
        if (current === undefined) {
          print("! You are not in a room.");
          return;
        }
        const room = current;
        try {
          await client.leave(room);
          current = client.rooms.at(-1);
          note(
            `left #${room}${
              current ? `; current room: #${current}` : "; /join ROOM to chat"
            }`,
          );
        } catch (error) {
          fail(error);
        }
        return;
      }
      case "msg":
        await client.privateChat(command.user, command.text).catch(fail);
        return;
      case "who":
        if (current === undefined) print("! You are not in a room.");
        else who(current);
        return;
      case "history": {
        if (current === undefined) {
          print("! You are not in a room.");
          return;
        }
        const before = oldest.get(current);
        if (before === 1) {
          note(`that is the beginning of #${current}`);
          return;
        }
        await client.history(current, {
          limit: command.count,
          ...(before === undefined ? {} : { before }),
        }).catch(fail);
        return;
      }
      case "help":
        print(USAGE);
        return;
      case "quit":
        quit = true;
        return;
      case "invalid":
        print(`! ${command.message}`);
        return;
    }
  };

  const reader = lines.getReader();
  let code = 0;
  try {
    while (!quit) {
      const next = await Promise.race([reader.read(), gaveUp.promise]);
      if (next === null) {
        code = 1;
        break;
      }
      const { value, done } = next;
      if (done) break;
      buffer += value;
      let newline;
      while (!quit && (newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        await handle(line);
      }
    }
    if (!quit && code === 0 && buffer !== "") await handle(buffer);
  } finally {
    stopped ||= code !== 0;
    await reader.cancel().catch(() => {});
    await client.close();
  }
  if (code === 0) note("bye");
  return code;
}

/** The URL the client connects to: `--url`, with `?token=` when it has one. */
function connectUrl(options: TerminalOptions): string {
  const url = new URL(options.url);
  if (options.token) url.searchParams.set("token", options.token);
  return url.href;
}

if (import.meta.main) {
  const parsed = parseTerminalArgs(Deno.args);
  if (parsed.kind === "help") {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (parsed.kind === "error") {
    console.error(`error: ${parsed.message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  const code = await runTerminal(
    parsed.options,
    Deno.stdin.readable,
    (line) => console.log(line),
  );
  Deno.exit(code);
}
