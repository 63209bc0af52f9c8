//! The chat with tokens on, in real headless Chromium against the real broker: the page gets
//! its token from the configured same-origin endpoint (here answered by the test, as an app's
//! backend would), shows verified user ids with the chosen names as marked labels (two "Sam"s
//! are two people), says clearly when a room is forbidden (and disables the composer), shows a
//! sign-in notice when it can get no token, and takes a token from its link.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { Broker, jwt, roomName } from "../harness.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";

const SECRET = "a-chat-test-secret-of-32-bytes-or-more";
let broker: Broker;
let browser: Browser;
const errors: string[] = [];

before(async () => {
  broker = await Broker.start({ config: `[auth]\njwt_secret = "${SECRET}"\n[ui]\ntoken_url = "/token"\n` });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
  broker?.cleanup();
});

const exp = (): number => Math.floor(Date.now() / 1000) + 3600;

/** A browser context whose `/token` answers like a backend for `sub` (or 401 without one). */
async function signedIn(sub: string | undefined, rooms?: unknown): Promise<BrowserContext> {
  const ctx = await context(browser);
  await ctx.route(/\/token$/, async (route) => {
    if (sub === undefined) return route.fulfill({ status: 401, body: "not signed in" });
    const claims = rooms === undefined ? { sub, exp: exp() } : { sub, exp: exp(), rooms };
    await route.fulfill({ contentType: "application/json", body: JSON.stringify({ token: await jwt(SECRET, claims) }) });
  });
  return ctx;
}

async function open(ctx: BrowserContext, path: string): Promise<Page> {
  const page = await ctx.newPage();
  watchErrors(page, errors);
  await page.goto(`${broker.url}${path}`);
  return page;
}

async function join(page: Page, name: string): Promise<void> {
  await page.locator("#welcome").waitFor();
  await page.fill("#name", name);
  await page.click("#join");
  await page.locator('#conn[data-state="open"]').waitFor();
}

test("the token comes from the endpoint; verified ids are shown, chosen names are labels", async () => {
  const room = roomName("auth");
  const ada = await open(await signedIn("ada"), `/#${room}`);
  await join(ada, "Sam");
  const bob = await open(await signedIn("bob"), `/#${room}`);
  await join(bob, "Sam");
  assert.match((await ada.textContent("#me")) ?? "", /You are ada \(shown as “Sam”\)/);

  await ada.fill("#text", "hi from ada");
  await ada.press("#text", "Enter");
  await bob.locator("#messages li.msg .text", { hasText: "hi from ada" }).waitFor();
  const row = bob.locator("#messages li.msg", { hasText: "hi from ada" });
  assert.equal(await row.locator(".author").textContent(), "ada");
  assert.equal(await row.locator(".label").textContent(), "“Sam”");
  // Two people who both call themselves Sam are two people.
  await bob.locator("#people-list li", { hasText: "ada" }).waitFor();
  const people = await bob.$$eval("#people-list li .who", (els) => els.map((e) => e.textContent));
  assert.deepEqual([...people].sort(), ["ada", "bob"]);
  await screenshot(bob, "auth-chat");
  assert.deepEqual(errors, []);
});

test("a forbidden room says so and the composer cannot be used", async () => {
  const page = await open(
    await signedIn("ada", [
      { match: "chat:*", allow: ["sub", "pub", "hist", "presence"] },
      { match: "news:*", allow: ["sub", "hist", "presence"] },
    ]),
    "/#secret",
  );
  await page.locator("#welcome").waitFor();
  await page.fill("#name", "Ada");
  await page.click("#join");
  await page.locator("#notice", { hasText: "You don't have access to #secret" }).waitFor();
  assert.equal(await page.isDisabled("#text"), true);
  assert.equal(await page.isDisabled("#send"), true);
  await screenshot(page, "auth-forbidden");
  // A room it may read but not write: readable, and the composer says why it is off.
  await page.evaluate(() => (location.hash = "news:today"));
  await page.locator(".log-top", { hasText: /beginning|older/ }).waitFor();
  assert.equal(await page.isDisabled("#text"), true);
  assert.match((await page.getAttribute("#text", "placeholder")) ?? "", /read this room but not write/);
  // A room the token allows works, with the composer back.
  await page.evaluate(() => (location.hash = "chat:lobby"));
  await page.locator(".log-top", { hasText: /beginning|older/ }).waitFor();
  assert.equal(await page.isDisabled("#text"), false);
});

test("without a token the page asks to sign in, with no chat and no composer", async () => {
  const page = await open(await signedIn(undefined), "/#lobby");
  await page.locator("#signin").waitFor();
  assert.match((await page.textContent("#signin")) ?? "", /Sign-in needed/);
  assert.equal(await page.isVisible("#chat"), false);
  assert.equal(await page.isVisible("#welcome"), false);
  await screenshot(page, "auth-signin");
});

test("a token in the link is used, and removed from the address bar", async () => {
  const token = await jwt(SECRET, { sub: "carol", exp: exp() });
  const room = roomName("link");
  const page = await open(await signedIn(undefined), `/#${room}&token=${token}`);
  await join(page, "Carol");
  assert.equal(new URL(page.url()).hash, `#${room}`);
  assert.match((await page.textContent("#me")) ?? "", /You are carol/);
});
