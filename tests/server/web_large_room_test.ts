/// <reference lib="dom" />
/**
 * Large rooms in the typed client and in the web page (real Chromium):
 * the count, the member list loaded a page at a time, and joins shown as
 * one quiet summary line instead of one line per person.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ChatClient } from "../../src/client/chat_client.ts";
import { browser, openPage, signIn } from "../support/browser.ts";
import { serve, waitFor } from "../support/helpers.ts";

const SETTINGS = {
  presenceFullLimit: 5,
  maxConnectionsPerIp: 1000,
  maxUnauthenticatedPerIp: 1000,
  maxUnauthenticated: 1000,
} as const;

/** `n` typed clients entered in `room` as `prefix0`, `prefix1`, … */
async function crowd(
  url: string,
  prefix: string,
  n: number,
  room = "general",
): Promise<ChatClient[]> {
  const clients = Array.from(
    { length: n },
    (_, i) => new ChatClient({ url, username: `${prefix}${i}` }),
  );
  await Promise.all(clients.map(async (client) => {
    await client.connect();
    await client.enter(room);
  }));
  return clients;
}

Deno.test("client: a large room's count, diffs and member pages", async () => {
  await using server = await serve(SETTINGS);
  const clients = await crowd(server.wsUrl, "u", 120);
  const viewer = new ChatClient({ url: server.wsUrl, username: "viewer" });
  try {
    await viewer.connect();
    await viewer.enter("general");
    assert.equal(viewer.isLarge("general"), true);
    assert.equal(viewer.memberCount("general"), 121);
    assert.equal(viewer.members("general").length, 100, "the first page");
    assert.equal(viewer.hasMoreMembers("general"), true);
    const page = await viewer.loadMembers("general");
    assert.equal(page.members.length, 21);
    assert.equal(page.more, false);
    assert.equal(viewer.hasMoreMembers("general"), false);
    assert.equal(viewer.members("general").length, 121);
    const diffs: number[] = [];
    viewer.on("presence_diff", ({ body }) => diffs.push(body.joined_count));
    // The tick that tells of the crowd (and of the viewer itself) first.
    await waitFor(() => diffs.length > 0, "the first PresenceDiff", 3000);
    diffs.length = 0;
    clients.push(...await crowd(server.wsUrl, "late", 10));
    await waitFor(
      () => viewer.memberCount("general") === 131,
      "the count after 10 more",
      5000,
    );
    assert.ok(diffs.length <= 3, `${diffs.length} diffs for 10 joins`);
    assert.ok(viewer.members("general").includes("late3"));
  } finally {
    await viewer.close();
    await Promise.all(clients.map((client) => client.close()));
  }
});

Deno.test("web: a large room shows the count, a paged member list and joins as a summary", async () => {
  await using server = await serve(SETTINGS);
  const clients = await crowd(server.wsUrl, "u", 150);
  await using chrome = await browser();
  try {
    const page = await openPage(chrome);
    await signIn(page, server.httpUrl, "viewer");
    await page.locator("#conv-subtitle", { hasText: "151 members" })
      .waitFor();
    assert.equal(await page.textContent("#members-count"), "151");
    // The first page (and the names a PresenceDiff may have told since),
    // then the rest on demand.
    const listed = await page.locator("#member-list .member").count();
    assert.ok(listed >= 100 && listed < 151, `${listed} listed`);
    const more = page.locator(".more-members");
    assert.match(
      await more.textContent() ?? "",
      /^Show more \(\d+ not listed\)$/,
    );
    await page.locator("#members").evaluate((el) => {
      el.scrollTop = el.scrollHeight;
    });
    await page.locator(".more-members").waitFor({ state: "detached" });
    assert.equal(await page.locator("#member-list .member").count(), 151);
    // Thirty more join: one quiet line, not thirty.
    clients.push(...await crowd(server.wsUrl, "late", 30));
    await page.locator("#conv-subtitle", { hasText: "181 members" })
      .waitFor();
    const notices = await page.locator("#message-list .notice")
      .allTextContents();
    const joined = notices.filter((text) => /joined/.test(text));
    assert.ok(joined.length <= 3, JSON.stringify(notices));
    assert.ok(joined.every((text) => /\+\d+ joined/.test(text)));
    assert.ok(joined.some((text) => text.includes("+")));
    assert.deepEqual(page.problems, []);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
  }
});
