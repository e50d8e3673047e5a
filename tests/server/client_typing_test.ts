/**
 * The typed client's typing indicators (issue 17): `typing()` on every
 * keystroke sends one start per 3 seconds, the `typers` event and
 * `typers()` follow the others' indicators (ended by a stop, a message, a
 * `Leave`, a close, or their expiry), against a real server; and the
 * client's `TypingTrack` expiry with real (short) timers.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ChatClient, type ChatEvent } from "../../src/client/chat_client.ts";
import { TypingTrack } from "../../src/client/typing_track.ts";
import { serve } from "../support/helpers.ts";

/** Polls `check` until it holds, or fails after `ms`. */
async function waitFor(
  what: string,
  check: () => boolean,
  ms = 3000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The `typers` events of a client, as `place: users`. */
function typersOf(client: ChatClient): string[] {
  const seen: string[] = [];
  client.on("typers", ({ place, usernames }) => {
    seen.push(`${place.room ?? `@${place.user}`}: ${usernames.join(",")}`);
  });
  return seen;
}

Deno.test("client typing: keystrokes send one start, the others see typers until the message; a stop and a close end it", async () => {
  await using server = await serve();
  const url = server.wsUrl;
  await using alice = new ChatClient({ url, username: "alice" });
  await using bob = new ChatClient({ url, username: "bob" });
  await alice.connect();
  await bob.connect();
  await alice.enter("r");
  await bob.enter("r");
  const seen = typersOf(bob);
  const errors: ChatEvent[] = [];
  alice.on("error", (event) => errors.push(event));

  for (let i = 0; i < 10; i++) alice.typing("r");
  await waitFor(
    "bob sees alice typing",
    () => bob.typers({ room: "r" }).length > 0,
  );
  assert.deepEqual(bob.typers({ room: "r" }), ["alice"]);
  await alice.groupChat("r", "hi");
  await waitFor(
    "the message ends it",
    () => bob.typers({ room: "r" }).length === 0,
  );
  assert.deepEqual(seen, ["r: alice", "r: "]);

  // Right after the message, a keystroke shows again at once.
  alice.typing("r");
  await waitFor("typing again", () => bob.typers({ room: "r" }).length === 1);
  alice.typing("r", false);
  await waitFor("the stop", () => bob.typers({ room: "r" }).length === 0);

  // Direct: bob types to alice; alice sees it under bob's name.
  const aliceSeen = typersOf(alice);
  bob.typingTo("alice");
  await waitFor(
    "alice sees bob",
    () => alice.typers({ user: "bob" }).length === 1,
  );
  await bob.close();
  await waitFor(
    "bob's close ends it",
    () => alice.typers({ user: "bob" }).length === 0,
  );
  assert.deepEqual(aliceSeen.slice(0, 2), ["@bob: bob", "@bob: "]);

  // A refused hint (bob is gone) is not shown as an error of its own.
  alice.typingTo("bob");
  await waitFor("the refusal", () => errors.length === 1);
  assert.equal((errors[0] as { handled: boolean }).handled, true);

  const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
  assert.match(metrics, /chat_typing_total\{result="relayed"\} 3/);
  assert.doesNotMatch(
    metrics,
    /result="throttled"/,
    "the client throttles itself",
  );
});

Deno.test("client typing: an indicator expires after expires_in_ms unless renewed", async () => {
  const changes: string[] = [];
  const track = new TypingTrack((place, users) =>
    changes.push(`${place.room}: ${users.join(",")}`)
  );
  const notice = (user: string, ms: number) => ({
    room: "r",
    sender_username: user,
    active: true,
    expires_in_ms: ms,
  });
  track.heard(notice("alice", 60));
  track.heard(notice("carol", 200));
  await new Promise((resolve) => setTimeout(resolve, 40));
  track.heard(notice("alice", 60)); // renewed: no change event
  assert.deepEqual(track.usernames({ room: "r" }), ["alice", "carol"]);
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.deepEqual(track.usernames({ room: "r" }), ["carol"], "alice expired");
  track.ended({ room: "r" }, "carol");
  assert.deepEqual(changes, ["r: alice", "r: alice,carol", "r: carol", "r: "]);
  track.heard(notice("dave", 10_000));
  track.clear(); // clears its timer: the sanitizer would catch a leak
  assert.deepEqual(track.usernames({ room: "r" }), []);
});

Deno.test("client typing: starts go out once per renew interval, stops only while shown", () => {
  let now = 0;
  const track = new TypingTrack(() => {}, () => now);
  const room = { room: "r" };
  assert.equal(track.start(room), true);
  now = 2999;
  assert.equal(track.start(room), false);
  now = 3000;
  assert.equal(track.start(room), true);
  assert.equal(track.stop(room), true);
  assert.equal(track.stop(room), false, "nothing shown any more");
  assert.equal(track.start(room), true, "a start after a stop goes at once");
  track.sent(room);
  assert.equal(track.start(room), true, "after a message too");
  now = 3000 + 6000;
  assert.equal(track.stop(room), false, "expired on the others' side");
});
