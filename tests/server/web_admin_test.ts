/// <reference lib="dom" />
/**
 * What an administrator does, seen in the web page (real Chromium through
 * playwright-core, a real server): a message deleted through the admin API
 * leaves every open page, and stays gone after a reload (the session's
 * recovery with `since` does not bring it back); a system message shows as
 * from `system`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  browser,
  contents,
  openPage,
  send,
  signIn,
  waitForMessage,
} from "../support/browser.ts";
import { serve } from "../support/helpers.ts";
import { ADMIN, api } from "../support/db_helpers.ts";

Deno.test("web: a message deleted by an administrator leaves the page, also after a reload", async () => {
  await using server = await serve({ adminToken: ADMIN });
  await using chrome = await browser();
  const alice = await openPage(chrome);
  const bob = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice");
  await signIn(bob, server.httpUrl, "bob");
  for (const text of ["first", "to be deleted", "last"]) {
    await send(alice, text);
    await waitForMessage(alice, text);
    await waitForMessage(bob, text);
  }
  assert.deepEqual(await contents(bob), ["first", "to be deleted", "last"]);

  const deleted = await api(
    server.httpUrl,
    "DELETE",
    "/api/rooms/general/messages/2",
  );
  assert.equal(deleted.status, 200);
  for (const page of [alice, bob]) {
    await page.locator("#message-list .content", { hasText: "to be deleted" })
      .waitFor({ state: "detached" });
    assert.deepEqual(await contents(page), ["first", "last"]);
  }

  const posted = await api(
    server.httpUrl,
    "POST",
    "/api/rooms/general/messages",
    { content: "server restarts at noon" },
  );
  assert.equal(posted.status, 201);
  await waitForMessage(bob, "server restarts at noon");
  const sender = await bob.locator("#message-list .message", {
    hasText: "server restarts at noon",
  }).textContent();
  assert.match(sender ?? "", /system/);

  // A reload recovers the room from storage: the deleted message stays gone.
  await bob.reload();
  await bob.waitForSelector("#chat:not([hidden])");
  await waitForMessage(bob, "server restarts at noon");
  const after = await contents(bob);
  assert.ok(!after.includes("to be deleted"), JSON.stringify(after));
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});
