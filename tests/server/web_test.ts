/// <reference lib="dom" />
/**
 * The web client at `GET /`, driven in a real browser (Debian's Chromium
 * through playwright-core) against real servers.
 */
import assert from "node:assert/strict";
import { ChatClient } from "../../src/client/chat_client.ts";
import { SERVER_ERROR_TEXT } from "../../src/client/error_text.ts";
import {
  buildBundleModule,
  OUTPUT,
  sourceHash,
} from "../../src/web/build_bundle.ts";
import {
  WEB_BUNDLE,
  WEB_BUNDLE_DENO,
  WEB_BUNDLE_SHA256,
  WEB_BUNDLE_SOURCES,
} from "../../src/web/bundle_generated.ts";
import {
  browser,
  contents,
  freePort,
  isSocketNoise,
  openPage,
  send,
  signIn,
  waitForMessage,
} from "../support/browser.ts";
import { serve, TestClient } from "../support/helpers.ts";

Deno.test("web: the committed bundle is up to date", async () => {
  const stale =
    "src/web/bundle_generated.ts is stale: run `deno task web:build`";
  assert.equal(WEB_BUNDLE_SOURCES, await sourceHash(), stale);
  if (WEB_BUNDLE_DENO === Deno.version.deno) {
    // Same Deno, same esbuild: the output must match to the byte.
    const built = await buildBundleModule();
    assert.ok(built === await Deno.readTextFile(OUTPUT), stale);
  }
});

Deno.test("web: GET / serves the page with the bundle inline and nothing from outside", async () => {
  await using server = await serve();
  const response = await fetch(`${server.httpUrl}/`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/html/);
  const html = await response.text();
  assert.ok(html.includes(WEB_BUNDLE));
  assert.ok(html.includes(`'sha256-${WEB_BUNDLE_SHA256}'`));
  // No script, style or image is loaded from anywhere.
  assert.doesNotMatch(html, /<script[^>]+src=/i);
  assert.doesNotMatch(html, /<link[^>]+rel="stylesheet"/i);
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//i);
});

Deno.test("web: two pages chat in a room and see each other's presence", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const dir = await Deno.makeTempDir({ prefix: "chat_web_test_" });
  try {
    const alice = await openPage(chrome);
    const bob = await openPage(chrome);
    const requests: string[] = [];
    alice.on("request", (request) => requests.push(request.url()));

    await signIn(alice, server.httpUrl, "alice");
    assert.deepEqual(
      await alice.locator("#member-list li").allTextContents(),
      ["Aaliceyou"],
    );
    await signIn(bob, server.httpUrl, "bob");
    // Presence: each sees the other among the members.
    await alice.locator("#member-list", { hasText: "bob" }).waitFor();
    await alice.locator("#message-list .notice", { hasText: "bob joined" })
      .waitFor();
    assert.equal(await alice.textContent("#conv-subtitle"), "2 members");
    assert.equal(await bob.textContent("#conv-subtitle"), "2 members");
    assert.ok(
      (await bob.locator("#member-list").textContent())?.includes("alice"),
    );

    await send(alice, "Hi Bob, did the deploy go out?");
    await waitForMessage(bob, "did the deploy go out");
    await send(bob, "Yes, 10 minutes ago. All green 🎉");
    await waitForMessage(alice, "All green");
    await send(alice, "Great, thanks!");
    await waitForMessage(bob, "Great, thanks!");
    const expected = [
      "Hi Bob, did the deploy go out?",
      "Yes, 10 minutes ago. All green 🎉",
      "Great, thanks!",
    ];
    assert.deepEqual(await contents(alice), expected);
    assert.deepEqual(await contents(bob), expected);
    assert.deepEqual(
      await bob.locator("#message-list .message .sender").allTextContents(),
      ["alice", "bob", "alice"],
    );

    // Unread counts: alice looks at another room while bob writes in general.
    await alice.fill("#join-room", "random");
    await alice.press("#join-room", "Enter");
    await alice.waitForSelector('#conv-title:has-text("# random")');
    await send(bob, "One more thing");
    await send(bob, "and another");
    const general = alice.locator('#room-list button[data-key="room:general"]');
    await general.locator(".badge", { hasText: "2" }).waitFor();
    await general.click();
    await waitForMessage(alice, "and another");
    assert.equal(await general.locator(".badge").count(), 0);

    // Bob leaves: alice sees it.
    await bob.click("#leave-button");
    await alice.locator("#message-list .notice", { hasText: "bob left" })
      .waitFor();
    assert.equal(await alice.textContent("#conv-subtitle"), "1 member");

    const shot = `${dir}/conversation.png`;
    await alice.screenshot({ path: shot });
    const png = await Deno.readFile(shot);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    assert.ok(png.length > 10_000);

    const origin = server.httpUrl;
    const outside = requests.filter((url) =>
      !url.startsWith(origin) && !url.startsWith("data:")
    );
    assert.deepEqual(outside, []);
    assert.deepEqual([...alice.problems, ...bob.problems], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: a direct message reaches only its target", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const alice = await openPage(chrome);
  const bob = await openPage(chrome);
  const carol = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice");
  await signIn(bob, server.httpUrl, "bob");
  await signIn(carol, server.httpUrl, "carol");
  await alice.locator("#member-list", { hasText: "carol" }).waitFor();

  // Alice opens the conversation from the member list.
  await alice.click('#member-list button:has-text("bob")');
  await alice.waitForSelector('#conv-title:has-text("@ bob")');
  assert.equal(await alice.textContent("#conv-subtitle"), "Direct message");
  await send(alice, "psst, the surprise party is at 6");
  await waitForMessage(alice, "surprise party");

  const fromAlice = bob.locator('#dm-list button[data-key="dm:alice"]');
  await fromAlice.locator(".badge", { hasText: "1" }).waitFor();
  await fromAlice.click();
  await waitForMessage(bob, "surprise party");
  assert.deepEqual(await contents(bob), ["psst, the surprise party is at 6"]);
  await send(bob, "my lips are sealed");
  await waitForMessage(alice, "my lips are sealed");
  assert.deepEqual(await contents(alice), [
    "psst, the surprise party is at 6",
    "my lips are sealed",
  ]);

  // Carol got neither: no conversation, no text anywhere on her page.
  await send(carol, "anyone around?");
  await waitForMessage(carol, "anyone around?");
  assert.equal(await carol.locator("#dm-list li").count(), 0);
  const page = await carol.content();
  assert.ok(!page.includes("surprise party"));
  assert.ok(!page.includes("lips are sealed"));

  // A message to someone offline is refused in words.
  await alice.fill("#dm-user", "nobody");
  await alice.press("#dm-user", "Enter");
  await send(alice, "hello?");
  await alice.locator(".toast", { hasText: SERVER_ERROR_TEXT.user_not_found })
    .waitFor();
  assert.deepEqual(
    [...alice.problems, ...bob.problems, ...carol.problems],
    [],
  );
});

Deno.test("web: content is shown as text, never as HTML", async () => {
  await using server = await serve();
  await using chrome = await browser();
  const alice = await openPage(chrome);
  const bob = await openPage(chrome);
  await signIn(alice, server.httpUrl, "alice");
  await signIn(bob, server.httpUrl, "bob");
  const payloads = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '<a href="javascript:alert(3)">click</a> & <b>bold</b>',
  ];
  for (const payload of payloads) await send(alice, payload);
  await waitForMessage(bob, "click");
  for (const page of [alice, bob]) {
    assert.deepEqual(await contents(page), payloads);
    assert.equal(await page.locator("#message-list img").count(), 0);
    assert.equal(await page.locator("#message-list script").count(), 0);
    assert.equal(await page.locator("#message-list a").count(), 0);
    assert.equal(await page.locator("#message-list b").count(), 0);
    assert.ok(
      await page.getByText("<img src=x onerror=alert(1)>").isVisible(),
    );
  }
  // Give a handler that should never exist a moment to run.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual([...alice.dialogs, ...bob.dialogs], []);
});

Deno.test("web: after a server restart the page reconnects by itself and shows what it missed, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat_web_test_" });
  const port = freePort();
  const settings = { port, databasePath: `${dir}/chat.db` };
  const url = `http://127.0.0.1:${port}`;
  try {
    await using chrome = await browser();
    const alice = await openPage(chrome);
    {
      await using first = await serve(settings);
      await using bob = await TestClient.connect(first.wsUrl);
      await bob.enter("bob", "general");
      await signIn(alice, url, "alice");
      bob.send({
        message_type: "GroupChat",
        message_body: { sender_username: "bob", content: "before the restart" },
      });
      await waitForMessage(alice, "before the restart");
    } // the server stops: the page is dropped with 1001
    await alice.waitForSelector('#connection[data-state="reconnecting"]');
    await alice.locator("#banner", { hasText: "Connection lost" }).waitFor();
    // Let a few attempts fail, so the next one is seconds away.
    await alice.waitForFunction(
      () => Number(document.getElementById("connection")?.dataset.attempt) >= 4,
      undefined,
      { timeout: 15_000 },
    );
    assert.notEqual(
      await alice.getAttribute("#connection", "data-state"),
      "open",
    );

    await using second = await serve(settings);
    const bob = new ChatClient({
      url: second.wsUrl,
      username: "bob",
      reconnect: false,
    });
    try {
      await bob.connect();
      await bob.enter("general");
      await bob.groupChat("general", "sent while you were away");
      await bob.groupChat("general", "and this one too");
      // The page comes back by itself and recovers with since.
      await alice.waitForSelector('#connection[data-state="open"]', {
        timeout: 15_000,
      });
      await waitForMessage(alice, "and this one too");
      await alice.locator("#banner", { hasText: "back online" }).waitFor();
      await bob.groupChat("general", "live again");
      await waitForMessage(alice, "live again");
      assert.deepEqual(await contents(alice), [
        "before the restart",
        "sent while you were away",
        "and this one too",
        "live again",
      ]);
      assert.deepEqual(
        await alice.locator("#message-list .message").evaluateAll((items) =>
          items.map((item) => (item as HTMLElement).dataset.seq)
        ),
        ["1", "2", "3", "4"],
      );
      // Alice can write again on the new server.
      await send(alice, "I'm back");
      await waitForMessage(alice, "I'm back");
    } finally {
      await bob.close();
    }
    await alice.context().close(); // before the second server stops
    assert.deepEqual(alice.problems.filter((p) => !isSocketNoise(p)), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("web: scrolling up loads older history", async () => {
  await using server = await serve({ rateLimitPerSecond: 0 });
  await using bob = await TestClient.connect(server.wsUrl);
  await bob.enter("bob", "general");
  for (let i = 1; i <= 120; i++) {
    bob.send({
      message_type: "GroupChat",
      message_body: { sender_username: "bob", content: `message ${i}` },
    });
    await bob.expect("GroupChat");
  }
  await using chrome = await browser();
  const alice = await openPage(chrome, { width: 900, height: 700 });
  await signIn(alice, server.httpUrl, "alice");
  await waitForMessage(alice, "message 120");
  assert.equal((await contents(alice)).length, 50); // history: 50
  assert.equal((await contents(alice))[0], "message 71");

  await alice.locator("#messages").evaluate((box) => box.scrollTop = 0);
  await waitForMessage(alice, "message 21");
  assert.equal((await contents(alice)).length, 100);
  // The page keeps its place: the first loaded message is not at the top.
  await alice.locator("#messages").evaluate((box) => box.scrollTop = 0);
  await alice.locator("#history-start", { hasText: "beginning of #general" })
    .waitFor();
  const all = await contents(alice);
  assert.deepEqual(
    all,
    Array.from({ length: 120 }, (_, i) => `message ${i + 1}`),
  );
  assert.deepEqual(alice.problems, []);
});

Deno.test("web: with authentication on, the page asks for a token and the token names the user", async () => {
  await using server = await serve({
    authEnabled: true,
    adminToken: "admin-secret",
  });
  const issued = await fetch(`${server.httpUrl}/api/tokens`, {
    method: "POST",
    headers: {
      authorization: "Bearer admin-secret",
      "content-type": "application/json",
    },
    body: JSON.stringify({ username: "erin", ttl_seconds: 600 }),
  });
  assert.equal(issued.status, 201);
  const { token } = await issued.json();
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await page.waitForSelector("#signin-token-field:not([hidden])");
  assert.equal(await page.isVisible("#signin-name"), false);

  await page.fill("#signin-token", crypto.randomUUID()); // unknown token
  await page.click("#signin-submit");
  await page.locator("#signin-error", {
    hasText: SERVER_ERROR_TEXT.invalid_token,
  }).waitFor();

  await page.fill("#signin-token", token);
  await page.click("#signin-submit");
  await page.waitForSelector('#conv-title:has-text("# general")');
  assert.equal(await page.textContent("#me"), "erin");
  await send(page, "signed in with a token");
  await waitForMessage(page, "signed in with a token");
  assert.deepEqual(
    page.problems.filter((problem) => !isSocketNoise(problem)),
    [],
  );
});

Deno.test("web: a page whose origin the server refuses says so and stops retrying", async () => {
  // Only another origin is allowed: the server's own page is refused (403),
  // which a browser cannot read from a failed WebSocket.
  await using server = await serve({
    allowedOrigins: ["https://app.example"],
  });
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await page.locator("#signin-status", {
    hasText: `does not accept connections from pages of ${server.httpUrl}`,
  }).waitFor();
  assert.equal(await page.isDisabled("#signin-submit"), true);
  // No retry loop: the refusals stop.
  const refused = async () => {
    const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
    return Number(
      /chat_upgrades_refused_total\{status="403"\} (\d+)/.exec(text)?.[1] ?? 0,
    );
  };
  const first = await refused();
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.equal(await refused(), first);
  assert.ok(first >= 1 && first <= 2, `refused ${first} times`);
});

Deno.test("web: with TOKEN_AT_UPGRADE the page asks for a token without any socket first", async () => {
  await using server = await serve({
    authEnabled: true,
    tokenAtUpgrade: true,
    adminToken: "admin-secret",
  });
  const issued = await fetch(`${server.httpUrl}/api/tokens`, {
    method: "POST",
    headers: {
      authorization: "Bearer admin-secret",
      "content-type": "application/json",
    },
    body: JSON.stringify({ username: "fay" }),
  });
  const { token } = await issued.json();
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await page.waitForSelector("#signin-token-field:not([hidden])");
  await page.fill("#signin-token", token);
  await page.click("#signin-submit");
  await page.waitForSelector('#conv-title:has-text("# general")');
  assert.equal(await page.textContent("#me"), "fay");
});

Deno.test("web: the page is not left saying it cannot reach the server after the sign-in deadline", async () => {
  await using server = await serve({ authTimeoutSeconds: 1 });
  await using chrome = await browser();
  const page = await openPage(chrome);
  await page.goto(server.httpUrl);
  await page.locator("#signin-status", { hasText: "Connected" }).waitFor();
  // The idle socket is closed with 1008 after a second (then again after
  // each reconnect; a loaded machine may take a few rounds).
  await page.locator("#signin-status", { hasText: "Ready when you are" })
    .waitFor({ timeout: 30_000 });
  await page.fill("#signin-name", "gus");
  await page.click("#signin-submit");
  await page.waitForSelector('#conv-title:has-text("# general")');
});

Deno.test("web: usable on a phone-sized screen and by keyboard alone", async () => {
  await using server = await serve();
  await using holder = await TestClient.connect(server.wsUrl);
  await holder.enter("alice", "general");
  await using chrome = await browser();
  const page = await openPage(chrome, { width: 390, height: 800 });
  await page.goto(server.httpUrl);
  await page.waitForSelector('#signin-status:has-text("Connected")');

  // Sign in with the keyboard: the name field has focus on load.
  await page.keyboard.type("alice");
  await page.keyboard.press("Enter");
  await page.locator("#signin-error", {
    hasText: SERVER_ERROR_TEXT.username_taken,
  }).waitFor();
  await page.keyboard.press("Control+A");
  await page.keyboard.type("dana");
  await page.keyboard.press("Tab"); // to the room field
  await page.keyboard.press("Enter");
  await page.waitForSelector('#conv-title:has-text("# general")');

  // The composer has focus: type and send with Enter.
  await page.keyboard.type("typed without a mouse");
  await page.keyboard.press("Enter");
  await waitForMessage(page, "typed without a mouse");

  // On a narrow screen the sidebar is hidden until the menu opens it.
  assert.equal(await page.isVisible("#sidebar"), false);
  assert.equal(await page.isVisible("#menu-button"), true);
  await page.focus("#menu-button");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#sidebar", { state: "visible" });
  // Join a second room from the sidebar.
  await page.focus("#join-room");
  await page.keyboard.type("design");
  await page.keyboard.press("Enter");
  await page.waitForSelector('#conv-title:has-text("# design")');
  await page.waitForSelector("#sidebar", { state: "hidden" });
  // Alt+Up goes back to the previous conversation.
  await page.keyboard.press("Alt+ArrowUp");
  await page.waitForSelector('#conv-title:has-text("# general")');
  // Escape closes the opened sidebar again.
  await page.click("#menu-button");
  await page.waitForSelector("#sidebar", { state: "visible" });
  await page.keyboard.press("Escape");
  await page.waitForSelector("#sidebar", { state: "hidden" });
  // Nothing is wider than the screen.
  const overflow = await page.evaluate(() =>
    document.documentElement.scrollWidth - document.documentElement.clientWidth
  );
  assert.ok(overflow <= 0, `the page is ${overflow}px too wide`);
  assert.deepEqual(page.problems, []);
});
