/// <reference lib="dom" />
/**
 * The web page keeps its session across a reload (issue 17): name, token,
 * rooms and direct-message conversations come back, each room catches up
 * from its last `seq` exactly once, "Sign out" forgets it all, and a token
 * refused after a reload (or a name someone else took) sends the user back
 * to the sign-in instead of retrying forever. Real Chromium, real servers.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { ChatClient } from "../../src/client/chat_client.ts";
import { SERVER_ERROR_TEXT } from "../../src/client/error_text.ts";
import { SESSION_KEY } from "../../src/web/session.ts";
import {
  browser,
  contents,
  isSocketNoise,
  openPage,
  send,
  signIn,
  waitForMessage,
} from "../support/browser.ts";
import { serve, TestClient } from "../support/helpers.ts";

const ADMIN = "admin-secret";

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function issueToken(httpUrl: string, username: string) {
  const response = await fetch(`${httpUrl}/api/tokens`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${ADMIN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ username, ttl_seconds: 600 }),
  });
  assert.equal(response.status, 201);
  return (await response.json()).token as string;
}

async function revokeToken(httpUrl: string, token: string): Promise<void> {
  const response = await fetch(`${httpUrl}/api/tokens/${token}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  await response.body?.cancel();
  assert.equal(response.status, 204);
}

async function signInWithToken(page: Page, token: string): Promise<void> {
  await page.waitForSelector("#signin-token-field:not([hidden])");
  await page.fill("#signin-token", token);
  await page.click("#signin-submit");
  await page.waitForSelector("#chat:not([hidden])");
}

async function open(page: Page, key: string): Promise<void> {
  await page.click(`.conv[data-key="${key}"]`);
  const [kind, name] = key.split(":");
  await page.waitForSelector(
    `#conv-title:has-text("${kind === "room" ? "#" : "@"} ${name}")`,
  );
}

async function keys(page: Page, list: "room-list" | "dm-list") {
  return await page.locator(`#${list} .conv`).evaluateAll((buttons) =>
    buttons.map((button) => (button as HTMLElement).dataset.key)
  );
}

/** The `seq`s shown in the open room, in order. */
async function seqs(page: Page): Promise<number[]> {
  return await page.locator("#message-list .message").evaluateAll((items) =>
    items.map((item) => Number((item as HTMLElement).dataset.seq))
  );
}

async function refusedUpgrades(httpUrl: string, status: number) {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const match = new RegExp(
    `chat_upgrades_refused_total\\{status="${status}"\\} (\\d+)`,
  ).exec(text);
  return Number(match?.[1] ?? 0);
}

Deno.test("web session: a reload keeps name, rooms and conversations, and each room catches up exactly once", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  const bob = new ChatClient({ url: server.wsUrl, username: "bob" });
  try {
    await bob.connect();
    await bob.enter("general");
    await bob.enter("random");
    await using chrome = await browser();
    const alice = await openPage(chrome);
    await signIn(alice, server.httpUrl, "alice");
    await alice.fill("#join-room", "random");
    await alice.press("#join-room", "Enter");
    await alice.waitForSelector('#conv-title:has-text("# random")');
    await bob.groupChat("random", "r1");
    await waitForMessage(alice, "r1");
    await alice.fill("#dm-user", "bob");
    await alice.press("#dm-user", "Enter");
    await send(alice, "hi bob (dm)");
    await waitForMessage(alice, "hi bob (dm)");
    await bob.privateChat("alice", "hi alice (dm)");
    await waitForMessage(alice, "hi alice (dm)");
    await open(alice, "room:general");
    await bob.groupChat("general", "g1");
    await bob.groupChat("general", "g2");
    await waitForMessage(alice, "g2");

    // Bob keeps writing while the page reloads.
    const expected = ["g1", "g2"];
    const writing = (async () => {
      for (let i = 1; i <= 20; i++) {
        await bob.groupChat("general", `during ${i}`);
        if (i === 10) await bob.groupChat("random", "r2 during");
        await delay(10);
      }
    })();
    await alice.reload();
    await writing;
    for (let i = 1; i <= 20; i++) expected.push(`during ${i}`);

    await alice.waitForSelector("#chat:not([hidden])");
    assert.equal(await alice.textContent("#me"), "alice");
    assert.deepEqual(await keys(alice, "room-list"), [
      "room:general",
      "room:random",
    ]);
    assert.deepEqual(await keys(alice, "dm-list"), ["dm:bob"]);
    await alice.waitForSelector('#conv-title:has-text("# general")');
    await waitForMessage(alice, "during 20");
    await alice.waitForSelector('#connection[data-state="open"]');
    assert.deepEqual(await contents(alice), expected);
    // The other room caught up too, and says it has something new.
    await alice.locator('#room-list .conv[data-key="room:random"] .badge')
      .waitFor();

    // Away for longer: what came meanwhile shows once, after what was shown.
    await alice.goto("about:blank");
    await bob.groupChat("general", "while away 1");
    await bob.groupChat("general", "while away 2");
    await alice.goto(server.httpUrl);
    await waitForMessage(alice, "while away 2");
    expected.push("while away 1", "while away 2");
    await bob.groupChat("general", "live again");
    await waitForMessage(alice, "live again");
    expected.push("live again");
    assert.deepEqual(await contents(alice), expected);
    assert.deepEqual(
      await seqs(alice),
      Array.from({ length: expected.length }, (_, i) => i + 1),
    );

    // The other room caught up too.
    await open(alice, "room:random");
    await waitForMessage(alice, "r2 during");
    assert.deepEqual(await contents(alice), ["r1", "r2 during"]);
    // The direct messages are back, and the thread goes on.
    await open(alice, "dm:bob");
    assert.deepEqual(await contents(alice), ["hi bob (dm)", "hi alice (dm)"]);
    await send(alice, "still here");
    await waitForMessage(alice, "still here");
    assert.deepEqual(alice.problems.filter((p) => !isSocketNoise(p)), []);
  } finally {
    await bob.close();
  }
});

Deno.test("web session: Sign out forgets everything, and a reload shows the sign-in", async () => {
  await using server = await serve();
  const bob = new ChatClient({ url: server.wsUrl, username: "bob" });
  const left: string[] = [];
  bob.on(
    "leave",
    ({ body }) => left.push(`${body.sender_username} ${body.reason}`),
  );
  try {
    await bob.connect();
    await bob.enter("general");
    await using chrome = await browser();
    const alice = await openPage(chrome);
    await signIn(alice, server.httpUrl, "alice");
    await alice.fill("#dm-user", "bob");
    await alice.press("#dm-user", "Enter");
    await alice.reload();
    await alice.waitForSelector("#chat:not([hidden])");
    assert.ok(
      await alice.evaluate((key) => sessionStorage.getItem(key), SESSION_KEY),
    );

    while (!bob.members("general").includes("alice")) await delay(20);
    left.length = 0; // the reload's "disconnected"
    await alice.click("#signout-button");
    await alice.waitForSelector("#signin:not([hidden])");
    await alice.locator("#signin-status", { hasText: "Connected" }).waitFor();
    assert.deepEqual(left, ["alice left"]); // left, not "went offline"
    await alice.reload();
    await alice.locator("#signin-status", { hasText: "Connected" }).waitFor();
    assert.equal(await alice.isVisible("#signin"), true);
    assert.equal(await alice.isVisible("#chat"), false);
    assert.equal(await alice.inputValue("#signin-name"), "");
    assert.deepEqual(
      await alice.evaluate((key) => [
        sessionStorage.getItem(key),
        localStorage.getItem("chat.name"),
      ], SESSION_KEY),
      [null, null],
    );
    // The name is free: someone else can take it.
    assert.deepEqual(bob.members("general"), ["bob"]);
    assert.deepEqual(alice.problems, []);
  } finally {
    await bob.close();
  }
});

Deno.test("web session: a token revoked before a reload asks for a token instead of retrying, and a new one brings the rooms back", async () => {
  await using server = await serve({ authEnabled: true, adminToken: ADMIN });
  const token = await issueToken(server.httpUrl, "erin");
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await signInWithToken(page, token);
  await page.fill("#join-room", "ops");
  await page.press("#join-room", "Enter");
  await page.waitForSelector('#conv-title:has-text("# ops")');
  await send(page, "before the reload");
  await waitForMessage(page, "before the reload");

  await page.goto("about:blank");
  await revokeToken(server.httpUrl, token);
  await page.goto(server.httpUrl);
  await page.locator("#signin-error", { hasText: "revoked or has expired" })
    .waitFor({ timeout: 15_000 });
  // The token field shows once the next Welcome says a token is needed.
  await page.waitForSelector("#signin-token-field:not([hidden])", {
    timeout: 15_000,
  });
  assert.equal(await page.isVisible("#chat"), false);
  // No loop: the refused token is not presented again.
  const refused = await refusedUpgrades(server.httpUrl, 401);
  assert.ok(refused >= 1 && refused <= 3, `refused ${refused} times`);
  await delay(2500);
  assert.equal(await refusedUpgrades(server.httpUrl, 401), refused);
  // A reload now does not try the token again either.
  await page.reload();
  await page.waitForSelector("#signin-token-field:not([hidden])");
  assert.equal(await refusedUpgrades(server.httpUrl, 401), refused);

  // A new token for the same user: the rooms come back.
  await signInWithToken(page, await issueToken(server.httpUrl, "erin"));
  assert.equal(await page.textContent("#me"), "erin");
  await page.waitForSelector('.conv[data-key="room:ops"]');
  await open(page, "room:ops");
  await waitForMessage(page, "before the reload");
  assert.deepEqual(await contents(page), ["before the reload"]);
  assert.deepEqual(page.problems.filter((p) => !isSocketNoise(p)), []);
});

Deno.test("web session: a token revoked while the page is open asks for a new one", async () => {
  await using server = await serve({ authEnabled: true, adminToken: ADMIN });
  const token = await issueToken(server.httpUrl, "fay");
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await signInWithToken(page, token);
  await revokeToken(server.httpUrl, token);
  await page.locator("#signin-error", { hasText: "revoked or has expired" })
    .waitFor({ timeout: 15_000 });
  // The token field shows once the next Welcome says a token is needed.
  await page.waitForSelector("#signin-token-field:not([hidden])", {
    timeout: 15_000,
  });
});

Deno.test("web session: a kept name someone else took meanwhile shows the error, and the session comes back once it is free", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const alice = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice", "design");
  await send(alice, "mine");
  await waitForMessage(alice, "mine");
  await alice.goto("about:blank");
  {
    await using holder = await TestClient.connect(server.wsUrl);
    await holder.enter("alice", "general");
    await alice.goto(server.httpUrl);
    await alice.locator("#signin-error", {
      hasText: SERVER_ERROR_TEXT.username_taken,
    }).waitFor({ timeout: 15_000 });
    assert.equal(await alice.inputValue("#signin-name"), "alice");
    assert.equal(await alice.inputValue("#signin-room"), "design");
  } // the other connection goes: the name is free
  await alice.click("#signin-submit");
  await alice.waitForSelector('#conv-title:has-text("# design")');
  await waitForMessage(alice, "mine");
  assert.deepEqual(await contents(alice), ["mine"]);
});
