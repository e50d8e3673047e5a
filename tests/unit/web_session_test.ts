/**
 * The web page's kept session (`src/web/session.ts`): what is read back,
 * what is left out, and writing into a full storage. Uses Deno's own
 * `sessionStorage`, the same Web Storage API the browser has.
 */
import assert from "node:assert/strict";
import {
  clearSession,
  loadSession,
  MAX_SAVED_MESSAGES,
  parseSession,
  saveSession,
  serializeSession,
  type Session,
  SESSION_KEY,
} from "../../src/web/session.ts";

const FULL: Session = {
  name: "alice",
  token: "4f0d1c52-7c8a-4b8e-9a55-7a8ab3c2f9e1",
  rooms: [{ name: "general", seq: 41 }, { name: "random", seq: 0 }, {
    name: "new",
  }],
  dms: [{
    name: "bob",
    messages: [{ id: "m1", sender: "bob", content: "hi", timestamp: 5 }],
  }],
  active: "dm:bob",
};

interface Case {
  name: string;
  stored: string | null;
  expected: Session | null;
}

const msg = { id: "m1", sender: "bob", content: "hi", timestamp: 5 };

const CASES: Case[] = [
  { name: "nothing kept", stored: null, expected: null },
  { name: "a whole session", stored: serializeSession(FULL), expected: FULL },
  { name: "not JSON", stored: "{oops", expected: null },
  { name: "not an object", stored: "[1,2]", expected: null },
  {
    name: "another version",
    stored: JSON.stringify({ v: 2, name: "alice", rooms: [], dms: [] }),
    expected: null,
  },
  {
    name: "a name the server would refuse",
    stored: JSON.stringify({ v: 1, name: "a b", rooms: [], dms: [] }),
    expected: null,
  },
  {
    name: "an empty token",
    stored: JSON.stringify({ v: 1, name: "alice", token: "" }),
    expected: null,
  },
  {
    name: "bad rooms and messages are left out, duplicates once",
    stored: JSON.stringify({
      v: 1,
      name: "alice",
      rooms: [
        { name: "ok", seq: 3 },
        { name: "ok", seq: 9 },
        { name: "bad room" },
        { name: "neg", seq: -1 },
        { name: "frac", seq: 1.5 },
        "general",
      ],
      dms: [
        { name: "bob", messages: [msg, { id: "", sender: "x" }, 7] },
        { name: "no messages" },
      ],
      ended: "",
    }),
    expected: {
      name: "alice",
      rooms: [{ name: "ok", seq: 3 }],
      dms: [{ name: "bob", messages: [msg] }],
    },
  },
  {
    name: "an ended session keeps its text",
    stored: JSON.stringify({
      v: 1,
      name: "alice",
      rooms: [],
      dms: [],
      ended: "name taken",
    }),
    expected: { name: "alice", rooms: [], dms: [], ended: "name taken" },
  },
];

for (const { name, stored, expected } of CASES) {
  Deno.test(`web session: parse: ${name}`, () => {
    assert.deepEqual(parseSession(stored), expected);
  });
}

Deno.test("web session: only the newest messages of a conversation are read", () => {
  const messages = Array.from(
    { length: MAX_SAVED_MESSAGES + 5 },
    (_, i) => ({ ...msg, id: `m${i}` }),
  );
  const session = parseSession(
    serializeSession({
      name: "alice",
      rooms: [],
      dms: [{ name: "bob", messages }],
    }),
  );
  assert.equal(session?.dms[0]?.messages.length, MAX_SAVED_MESSAGES);
  assert.equal(session?.dms[0]?.messages[0]?.id, "m5");
});

Deno.test("web session: load, save and clear in sessionStorage; an unreadable one is removed", () => {
  sessionStorage.clear();
  assert.equal(loadSession(sessionStorage), null);
  assert.equal(saveSession(sessionStorage, FULL), true);
  assert.deepEqual(loadSession(sessionStorage), FULL);
  clearSession(sessionStorage);
  assert.equal(sessionStorage.getItem(SESSION_KEY), null);
  sessionStorage.setItem(SESSION_KEY, "{oops");
  assert.equal(loadSession(sessionStorage), null);
  assert.equal(sessionStorage.getItem(SESSION_KEY), null);
  assert.equal(loadSession(undefined), null);
  assert.equal(saveSession(undefined, FULL), false);
});
