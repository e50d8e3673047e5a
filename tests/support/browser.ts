/// <reference lib="dom" />
/**
 * Helpers for the web client's tests: Debian's Chromium through
 * playwright-core (never skipped when missing: the tests fail), pages with
 * their own storage and their failures recorded, and the few steps every
 * test takes (sign in, send, read the messages shown). No server here: see
 * `helpers.ts`.
 *
 * @module
 */
import { type Browser, chromium, type Page } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";

/** Launches Debian's Chromium; fails (never skips) when it is missing. */
export async function launch(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `Chromium is missing at ${CHROMIUM}: the web tests need it. ` +
        "Install it with `apt-get install -y chromium` (.ci/run does).",
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A browser that `await using` closes. */
export async function browser(): Promise<Browser & AsyncDisposable> {
  const opened = await launch();
  return Object.assign(opened, {
    [Symbol.asyncDispose]: () => opened.close(),
  });
}

/** A page in its own context (its own storage), with its failures recorded. */
export async function openPage(
  from: Browser,
  viewport = { width: 1280, height: 800 },
): Promise<Page & { problems: string[]; dialogs: string[] }> {
  const context = await from.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems: string[] = [];
  const dialogs: string[] = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  return Object.assign(page, { problems, dialogs });
}

/** Opens the page at `url` and signs in as `name` into `room`. */
export async function signIn(
  page: Page,
  url: string,
  name: string,
  room = "general",
): Promise<void> {
  await page.goto(url);
  await page.fill("#signin-name", name);
  await page.fill("#signin-room", room);
  await page.click("#signin-submit");
  await page.waitForSelector("#chat:not([hidden])");
  await page.waitForSelector(`#conv-title:has-text("# ${room}")`);
}

/** Types `text` in the composer and sends it with Enter. */
export async function send(page: Page, text: string): Promise<void> {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

/** The contents of the open conversation's messages, in order. */
export async function contents(page: Page): Promise<string[]> {
  return await page.locator("#message-list .message:not(.pending) .content")
    .allTextContents();
}

/** Waits until a message with `text` is shown as delivered (not pending). */
export async function waitForMessage(page: Page, text: string): Promise<void> {
  await page.locator("#message-list .message:not(.pending) .content", {
    hasText: text,
  }).first().waitFor();
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Chromium logs failed WebSocket attempts to the console; they are expected here. */
export function isSocketNoise(problem: string): boolean {
  return problem.includes("WebSocket connection to");
}
