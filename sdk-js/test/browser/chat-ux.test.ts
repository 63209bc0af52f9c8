//! The chat as a new user meets it, in real headless Chromium against the real broker: the
//! phone drawer neither widens the page nor stays open after a tap outside; notices and the
//! "New messages" button sit on the message column and a notice stays with its room; a refused
//! message keeps its whole text with Retry and Edit; pending messages are grouped under one
//! status with "Retry now", and the page reconnects at once when asked or shown; two people of
//! one name stay two; times follow the browser's languages, grouped messages show theirs on
//! hover, links are safe links, and a hidden tab counts unread messages in its title.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Page } from "playwright-core";
import type { Client } from "../../src/index.js";
import { Broker, roomName, sleep } from "../harness.js";
import { BrowserSuite, context, PHONE, screenshot } from "./browser.js";
import { join, send } from "./chat-page.js";

const suite = new BrowserSuite();

function newPage(options: Parameters<BrowserSuite["page"]>[0] = {}): Promise<Page> {
  return suite.page(options);
}

function row(page: Page, text: string) {
  return page.locator("#messages li.msg", { has: page.locator(".text", { hasText: text }) });
}

function sdk(b: Broker = suite.broker): Client {
  const c = suite.client({}, b);
  return c;
}

test("phone: the closed drawer does not widen the page, and a tap outside closes it", async () => {
  const room = roomName("drawer");
  const phone = await newPage(PHONE);
  await join(phone, suite.broker.url, room, "Pat");
  const other = await newPage();
  await join(other, suite.broker.url, room, "Sam");
  await phone.locator("#people-list li", { hasText: "Sam" }).waitFor({ state: "attached" });
  const closed = await phone.evaluate(() => {
    const r = document.getElementById("people")!.getBoundingClientRect();
    return {
      layoutWidth: window.innerWidth,
      scrollWidth: document.documentElement.scrollWidth,
      visualWidth: window.visualViewport!.width,
      drawerLeft: r.left,
      drawerVisibility: getComputedStyle(document.getElementById("people")!).visibility,
    };
  });
  assert.equal(closed.layoutWidth, 390, "the layout viewport is the phone's width (zooming out reveals nothing)");
  assert.equal(closed.scrollWidth, 390, "nothing reaches past the screen's right edge");
  assert.equal(closed.visualWidth, 390);
  assert.ok(closed.drawerLeft >= 390, `the closed drawer is off screen (left ${closed.drawerLeft})`);
  assert.equal(closed.drawerVisibility, "hidden", "and hidden, so it cannot be tabbed to or revealed");

  await phone.tap("#people-toggle");
  await phone.locator("#people.open #people-list li", { hasText: "Sam" }).waitFor();
  await sleep(300); // the drawer slides in
  const open = await phone.evaluate(() => document.getElementById("people")!.getBoundingClientRect().toJSON() as DOMRect);
  assert.ok(open.left >= 0 && open.right <= 390, `the open drawer is on screen (${open.left}–${open.right})`);
  await screenshot(phone, "phone-people-open");
  await phone.touchscreen.tap(40, 400); // the messages, beside the drawer
  await phone.locator("#people:not(.open)").waitFor({ timeout: 2000 });
  assert.equal(await phone.getAttribute("#people-toggle", "aria-expanded"), "false");
  assert.deepEqual(suite.errors, []);
});

test("the notice and the New messages button are centred on the message column; a notice stays with its room", async () => {
  const room = roomName("column");
  const node = sdk();
  for (let i = 0; i < 60; i += 20) {
    await Promise.all(Array.from({ length: 20 }, (_, j) => node.room(room).publishJSON({ text: `filler ${i + j}`, name: "Bot" })));
  }
  const page = await newPage();
  await join(page, suite.broker.url, room, "Ada");
  await row(page, "filler 59").waitFor();
  await page.$eval("#log", (el) => el.scrollTo(0, 0));
  await sleep(200);
  await node.room(room).publishJSON({ text: "a new one below", name: "Bot" });
  await page.locator("#jump").waitFor();
  const centre = (id: string) =>
    page.evaluate((el) => {
      const r = document.getElementById(el)!.getBoundingClientRect();
      return { centre: r.left + r.width / 2, left: r.left, right: r.right };
    }, id);
  const log = (await centre("log")).centre;
  const jump = (await centre("jump")).centre;
  assert.ok(Math.abs(jump - log) < 2, `New messages centred on the column (${jump} vs ${log})`);
  await screenshot(page, "desktop-new-messages");
  await send(page, "x".repeat(70_000));
  await page.locator("#notice", { hasText: "too large" }).waitFor();
  const notice = await centre("notice");
  assert.ok(Math.abs(notice.centre - log) < 2, `notice centred on the column (${notice.centre} vs ${log})`);
  assert.ok(notice.right <= (await centre("people")).left, "the notice does not cover the people list");
  await screenshot(page, "desktop-notice");

  // Another room: the notice was about the last one.
  await page.evaluate((r) => (location.hash = r), roomName("next"));
  await page.locator('#conn[data-state="open"]').waitFor();
  await page.locator("#notice").waitFor({ state: "hidden", timeout: 1000 });
  assert.equal(await page.locator("#jump").isVisible(), false);
  assert.deepEqual(suite.errors, []);
});

test("a refused message keeps its whole text: Edit puts it back, Retry sends it", async (t) => {
  const page = await newPage();
  await join(page, suite.broker.url, roomName("refused"), "Ada");
  const big = `start ${"x".repeat(70_000)} end`;
  await send(page, big);
  const failed = page.locator("#pending li.failed");
  await failed.waitFor();
  assert.equal((await failed.locator(".text").textContent())?.length, big.length, "the row keeps every character");
  assert.equal(await failed.locator("button", { hasText: "Retry" }).count(), 0, "no Retry for what would be refused again");
  await failed.locator("button", { hasText: "Edit" }).click();
  assert.equal(await page.inputValue("#text"), big, "Edit puts the whole text back in the composer");
  assert.equal(await failed.count(), 0, "and the refused row goes away");
  await page.fill("#text", "");

  // Retry: a message refused for going too fast, while the composer holds a new draft.
  const limited = await Broker.start({ config: "[rate]\npublishes_per_sec = 1\npublishes_burst = 1\n" });
  t.after(async () => {
    await limited.stop();
    limited.cleanup();
  });
  const fast = await newPage();
  await join(fast, limited.url, roomName("retry"), "Ada");
  await send(fast, "first");
  await fast.evaluate(() => {
    const text = document.getElementById("text") as HTMLTextAreaElement;
    text.value = "second";
    (document.getElementById("composer") as HTMLFormElement).requestSubmit();
    text.value = "a draft";
  });
  const refused = fast.locator("#pending li.failed", { hasText: "second" });
  await refused.waitFor();
  assert.match((await refused.locator(".status").textContent()) ?? "", /too fast/);
  await screenshot(fast, "desktop-refused-actions");
  await sleep(1100);
  await refused.locator("button", { hasText: "Retry" }).click();
  await row(fast, "second").waitFor();
  assert.equal(await fast.locator("#pending li").count(), 0);
  assert.equal(await row(fast, "second").count(), 1, "sent once");
  assert.equal(await fast.inputValue("#text"), "a draft", "the draft is untouched");
  assert.deepEqual(suite.errors, []);
});

test("offline: pending messages are grouped under one status; Retry now and showing the tab reconnect at once", async () => {
  const room = roomName("offline");
  const page = await newPage();
  await join(page, suite.broker.url, room, "Ada");
  await suite.broker.stop("SIGKILL");
  await page.locator('#conn[data-state="reconnecting"]').waitFor();
  for (const text of ["one", "two", "three"]) await send(page, `offline ${text}`);
  assert.equal(await page.locator("#pending li.pending").count(), 3);
  assert.equal(await page.locator("#pending .avatar:visible").count(), 1, "one avatar for the group, not one per message");
  assert.equal(await page.locator("#pending .msg .status").count(), 0, "no status line per message");
  assert.match((await page.textContent("#pending-status")) ?? "", /3 messages waiting for the connection/);
  await page.locator("#retry").waitFor();
  await screenshot(page, "desktop-offline-grouped");
  await sleep(6000); // the SDK's backoff grows to several seconds
  suite.broker = await suite.broker.restart();
  let t0 = Date.now();
  await page.evaluate(() => document.getElementById("retry")!.click()); // a no-op if a backoff attempt won the race
  await page.locator('#conn[data-state="open"]').waitFor();
  assert.ok(Date.now() - t0 < 2000, `Retry now reconnected at once (${Date.now() - t0} ms)`);
  for (const text of ["one", "two", "three"]) await row(page, `offline ${text}`).waitFor();
  await page.locator("#pending-status").waitFor({ state: "hidden" });

  // The tab shown again (or focused) after an outage: no waiting for the next attempt.
  await suite.broker.stop("SIGKILL");
  await page.locator('#conn[data-state="reconnecting"]').waitFor();
  await sleep(6000);
  suite.broker = await suite.broker.restart();
  t0 = Date.now();
  await page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
  await page.locator('#conn[data-state="open"]').waitFor();
  assert.ok(Date.now() - t0 < 2000, `showing the tab reconnected at once (${Date.now() - t0} ms)`);
  assert.deepEqual(suite.errors, []);
});

test("two people who chose one name stay two; one person's two tabs stay one", async () => {
  const room = roomName("names");
  const mine = await context(suite.browser);
  const a = await suite.pageIn(mine);
  await join(a, suite.broker.url, room, "Ada");
  const b = await newPage();
  await join(b, suite.broker.url, room, "Ada");
  await a.waitForFunction(() => document.getElementById("people-count")?.textContent === "2");
  assert.equal(await a.locator("#people-list li").count(), 2);
  assert.equal(await a.locator("#people-list li .you").count(), 1, "only one of them is you");
  await send(a, "one from the first Ada");
  await row(b, "one from the first Ada").waitFor();
  await send(b, "one from the second Ada");
  await row(a, "one from the second Ada").waitFor();
  const theirs = row(a, "one from the second Ada");
  assert.equal(await theirs.evaluate((li) => li.classList.contains("mine")), false, "the other Ada's message is not mine");
  assert.equal(await theirs.evaluate((li) => li.classList.contains("cont")), false, "nor grouped under mine");
  assert.ok(await theirs.locator(".avatar").isVisible());
  // A second tab of the first browser is the same person.
  const a2 = await suite.pageIn(mine);
  await join(a2, suite.broker.url, room, "Ada");
  await a.locator("#people-list li", { hasText: "×2" }).waitFor();
  assert.equal(await a.locator("#people-list li").count(), 2);
  assert.deepEqual(suite.errors, []);
});

test("times follow the browser's languages, grouped messages show theirs on hover, links are safe, a hidden tab counts unread", async () => {
  const room = roomName("details");
  // An English system (the default Intl locale) whose user asked the browser for German.
  const ctx = await context(suite.browser, { locale: "en-US" });
  await ctx.addInitScript(() => {
    Object.defineProperty(navigator, "languages", { get: () => ["de-DE", "de"] });
    Object.defineProperty(navigator, "language", { get: () => "de-DE" });
  });
  const page = await suite.pageIn(ctx);
  await join(page, suite.broker.url, room, "Ada");
  await send(page, "first of a group");
  await send(page, "second of a group");
  const second = row(page, "second of a group");
  await second.waitFor();
  const time = (await row(page, "first of a group").locator(".time").textContent()) ?? "";
  assert.match(time, /^\d{1,2}:\d{2}$/, `a German time, 24 hours, no AM/PM (${time}; "0:48" before 10 o'clock)`);
  assert.equal(await second.evaluate((li) => li.classList.contains("cont")), true);
  const stamp = second.locator(".stamp");
  assert.equal(await stamp.evaluate((el) => getComputedStyle(el).visibility), "hidden");
  await second.hover();
  assert.equal(await stamp.evaluate((el) => getComputedStyle(el).visibility), "visible", "its time shows on hover");
  await screenshot(page, "desktop-hover-time");
  assert.match((await stamp.textContent()) ?? "", /^\d{1,2}:\d{2}$/);

  const text = "docs at https://example.com/a?b=1, not javascript:alert(1) nor <b>bold</b> nor ftp://x.org";
  await send(page, text);
  const linked = row(page, "docs at");
  await linked.waitFor();
  const links = await linked.locator(".text a").evaluateAll((as) => as.map((a) => [a.getAttribute("href"), a.getAttribute("target"), a.getAttribute("rel"), a.textContent]));
  assert.deepEqual(links, [["https://example.com/a?b=1", "_blank", "noopener noreferrer", "https://example.com/a?b=1"]]);
  assert.equal(await linked.locator(".text b").count(), 0, "user text is never HTML");
  assert.equal(await linked.locator(".text").textContent(), text, "the text reads as sent");

  // Hidden: messages from others count in the title; shown again, the count goes.
  await page.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  const node = sdk();
  await node.room(room).publishJSON({ text: "are you there?", name: "Ben" });
  await node.room(room).publishJSON({ text: "hello?", name: "Ben" });
  await row(page, "hello?").waitFor();
  assert.equal(await page.title(), `(2) #${room} · roomd chat`);
  await page.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "visible" });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  assert.equal(await page.title(), `#${room} · roomd chat`);
  assert.deepEqual(suite.errors, []);
});
