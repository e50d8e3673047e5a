/// <reference lib="dom" />
/**
 * Typing indicators on the web page (issue 17), in a real browser (Debian's
 * Chromium through playwright-core) against a real server: typing in the
 * composer shows "alice is typing…" to the others under the conversation,
 * the message (or clearing the text) hides it, an indicator nobody renews
 * expires by itself, and a direct conversation's indicator shows in that
 * conversation only.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ChatClient } from "../../src/client/chat_client.ts";
import { TYPING_EXPIRES_MS } from "../../src/wire/server_frames.ts";
import {
  browser,
  openPage,
  send,
  signIn,
  waitForMessage,
} from "../support/browser.ts";
import { serve } from "../support/helpers.ts";
import type { Page } from "playwright-core";

/** Waits until the page's typing line reads `text` ("" for nobody). */
async function typingLine(page: Page, text: string): Promise<void> {
  await page.waitForFunction(
    (wanted) => document.getElementById("typing")?.textContent === wanted,
    text,
    { timeout: TYPING_EXPIRES_MS + 4000 },
  );
}

Deno.test("web: typing shows 'alice is typing…' to the others until the message, the cleared text or the expiry", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const alice = await openPage(chrome);
  const bob = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice");
  await signIn(bob, server.httpUrl, "bob");
  await alice.locator("#member-list", { hasText: "bob" }).waitFor();
  assert.equal(await bob.isVisible("#typing"), true);
  await typingLine(bob, "");

  // Keystrokes in the composer: bob sees it; alice does not see herself.
  await alice.locator("#composer-input").pressSequentially("hel");
  await typingLine(bob, "alice is typing\u2026");
  assert.equal(await alice.textContent("#typing"), "");
  // The message arrives and the line goes.
  await alice.locator("#composer-input").pressSequentially("lo");
  await alice.press("#composer-input", "Enter");
  await waitForMessage(bob, "hello");
  await typingLine(bob, "");

  // Typing again at once shows again; clearing the text stops it.
  await alice.locator("#composer-input").pressSequentially("wait");
  await typingLine(bob, "alice is typing\u2026");
  await alice.fill("#composer-input", "");
  await typingLine(bob, "");

  // Two typing; one who never renews expires by itself.
  await using carol = new ChatClient({ url: server.wsUrl, username: "carol" });
  await carol.connect();
  await carol.enter("general");
  await alice.locator("#composer-input").pressSequentially("x");
  carol.typing("general");
  await typingLine(bob, "alice and carol are typing\u2026");
  await send(alice, "x");
  await typingLine(bob, "carol is typing\u2026");
  const shownAt = Date.now();
  await typingLine(bob, "");
  const lasted = Date.now() - shownAt;
  assert.ok(
    lasted > TYPING_EXPIRES_MS - 3000,
    `carol's indicator expired after ${lasted} ms, not at once`,
  );
  assert.deepEqual([...alice.problems, ...bob.problems], []);
});

Deno.test("web: a direct conversation's typing shows in that conversation only", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const alice = await openPage(chrome);
  const bob = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice");
  await signIn(bob, server.httpUrl, "bob");
  await bob.locator("#member-list", { hasText: "alice" }).waitFor();
  await bob.click('#member-list button:has-text("alice")');
  await bob.waitForSelector('#conv-title:has-text("@ alice")');

  await bob.locator("#composer-input").pressSequentially("are you");
  // Alice is in #general: the line there stays empty.
  await alice.waitForTimeout(500);
  assert.equal(await alice.textContent("#typing"), "");
  await alice.fill("#dm-user", "bob");
  await alice.press("#dm-user", "Enter");
  await alice.waitForSelector('#conv-title:has-text("@ bob")');
  await typingLine(alice, "bob is typing\u2026");
  await bob.press("#composer-input", "Enter");
  await waitForMessage(alice, "are you");
  await typingLine(alice, "");
  assert.deepEqual([...alice.problems, ...bob.problems], []);
});
