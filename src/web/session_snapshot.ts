/**
 * Turns the web app's state (name, token, conversations in sidebar order,
 * the open one) into the {@linkcode Session} that `session.ts` keeps: each
 * room with the last `seq` shown, each direct-message conversation with
 * its newest confirmed messages.
 *
 * A pure function of what it is given: it reads no storage and writes
 * none (`session.ts` does), and never talks to the server.
 *
 * @module
 */
import type { Conversation } from "./conversation.ts";
import { MAX_SAVED_MESSAGES, type Session } from "./session.ts";

/**
 * What would be kept now. `ordered` is the sidebar's order (rooms, then
 * direct messages); `lastSeq` the client's last `seq` of a room.
 */
export function sessionSnapshot(
  me: string,
  token: string | undefined,
  ordered: Conversation[],
  lastSeq: (room: string) => number | undefined,
  active: Conversation | undefined,
): Session {
  const session: Session = { name: me, rooms: [], dms: [] };
  if (token !== undefined) session.token = token;
  for (const conv of ordered) {
    if (conv.kind === "room") {
      const seq = lastSeq(conv.name) ?? conv.since;
      session.rooms.push(
        seq === undefined ? { name: conv.name } : { name: conv.name, seq },
      );
      continue;
    }
    const messages = conv.items.flatMap((item) =>
      item.kind === "message" && !item.pending && item.key.startsWith("m:")
        ? [{
          id: item.key.slice(2),
          sender: item.sender,
          content: item.content,
          timestamp: item.timestamp,
        }]
        : []
    );
    session.dms.push({
      name: conv.name,
      messages: messages.slice(-MAX_SAVED_MESSAGES),
    });
  }
  if (active) session.active = active.key;
  return session;
}
