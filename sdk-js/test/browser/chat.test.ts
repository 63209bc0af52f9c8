//! The chat UI in real headless Chromium against the real broker: two pages chat, a reload
//! shows the history, a broker restart and a network drop lose nothing, older messages load on
//! scroll-up, a refused message says so, and a phone-sized screen works. Screenshots go to
//! test-output/.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join as joinPath } from "node:path";
import { test } from "node:test";
import type { Page } from "playwright-core";
import { Broker, REPO_DIR, roomName, sleep } from "../harness.js";
import { CuttableProxy } from "../proxy.js";
import { BrowserSuite, screenshot } from "./browser.js";
import { join, send, shown } from "./chat-page.js";

const suite = new BrowserSuite();

function newPage(options: Parameters<BrowserSuite["page"]>[0] = {}): Promise<Page> {
  return suite.page(options);
}

async function waitForText(page: Page, text: string, timeout = 10_000): Promise<void> {
  await page.locator("#messages li.msg .text", { hasText: text }).first().waitFor({ timeout });
}

function assertExactlyOnceInOrder(rows: [number, string, string][], texts: string[]): void {
  const seqs = rows.map((r) => r[0]);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `seqs ascend: ${seqs.join(",")}`);
  for (const t of texts) assert.equal(rows.filter((r) => r[2] === t).length, 1, `"${t}" shown exactly once`);
}

const fromDisk = process.env["ROOMD_UI_FROM_DISK"] === "1";

test("the broker serves the committed UI bundle", { skip: fromDisk && "ROOMD_UI_FROM_DISK=1: pages load src/ui from disk" }, async () => {
  for (const file of ["app.js", "app.css"]) {
    const served = Buffer.from(await (await fetch(`${suite.broker.url}/${file}`)).arrayBuffer());
    const committed = readFileSync(joinPath(REPO_DIR, "src/ui", file));
    assert.ok(served.equals(committed), `roomd serves a stale ${file}: run cargo build --release`);
  }
  const html = await (await fetch(`${suite.broker.url}/`)).text();
  assert.match(html, /<script type="module" src="\/app.js">/);
});

test("two pages chat with each other; a reload shows the history; a restart loses nothing", async () => {
  const room = roomName("chat");
  const ada = await newPage();
  await join(ada, suite.broker.url, room, "Ada");
  const ben = await newPage();
  await join(ben, suite.broker.url, room, "Ben");

  // Presence: both see both, and Ada is told Ben joined.
  await ada.locator("#people-list li", { hasText: "Ben" }).waitFor();
  await ben.locator("#people-list li", { hasText: "Ada" }).waitFor();
  await ada.locator("#messages li.sys", { hasText: "Ben joined" }).waitFor();
  assert.equal(await ada.textContent("#people-count"), "2");

  await send(ada, "Hello Ben!");
  await waitForText(ben, "Hello Ben!");
  await send(ben, "Hi Ada, the chat works.");
  await waitForText(ada, "Hi Ada, the chat works.");
  await send(ada, "Line one\nstill Ada");
  await waitForText(ben, "still Ada");
  const benRows = await shown(ben);
  assert.deepEqual(
    benRows.map((r) => [r[1], r[2]]),
    [
      ["Ada", "Hello Ben!"],
      ["Ben", "Hi Ada, the chat works."],
      ["Ada", "Line one\nstill Ada"],
    ],
  );
  assert.match((await ben.textContent("#messages li.msg .time")) ?? "", /\d{1,2}:\d{2}/, "messages show their time");
  assert.equal(await ada.inputValue("#text"), "", "Enter sent and cleared the box");
  await screenshot(ada, "desktop-chat");

  // A reload shows the history.
  await ben.reload();
  await ben.locator('#conn[data-state="open"]').waitFor();
  await waitForText(ben, "Line one");
  assert.deepEqual(
    (await shown(ben)).map((r) => r[2]),
    ["Hello Ben!", "Hi Ada, the chat works.", "Line one\nstill Ada"],
  );

  // The broker goes away: both pages show it; Ada writes while it is down.
  await suite.broker.stop("SIGKILL");
  await ada.locator('#conn[data-state="reconnecting"]').waitFor();
  await ben.locator('#conn[data-state="reconnecting"]').waitFor();
  await send(ada, "sent while the broker was down");
  await ada.locator("#pending li.pending", { hasText: "sent while the broker was down" }).waitFor();
  await screenshot(ada, "desktop-offline");
  await sleep(300);
  suite.broker = await suite.broker.restart();
  // Someone else talks before the pages are back: they must catch up on it.
  const node = suite.client();
  await node.room(room).publishJSON({ text: "from node during the outage", name: "Node" });
  await ada.locator('#conn[data-state="open"]').waitFor({ timeout: 15_000 });
  await ben.locator('#conn[data-state="open"]').waitFor({ timeout: 15_000 });
  await waitForText(ben, "sent while the broker was down");
  await waitForText(ben, "from node during the outage");
  await waitForText(ada, "from node during the outage");
  await send(ben, "after the restart");
  await waitForText(ada, "after the restart");
  const all = ["Hello Ben!", "Hi Ada, the chat works.", "Line one\nstill Ada", "sent while the broker was down", "from node during the outage", "after the restart"];
  for (const page of [ada, ben]) {
    const rows = await shown(page);
    assertExactlyOnceInOrder(rows, all);
    assert.equal(rows.length, all.length, "nothing else, nothing twice");
  }
  assert.equal(await ada.locator("#pending li").count(), 0, "the offline message was confirmed");
  await screenshot(ben, "desktop-after-restart");

  // Ben leaves: Ada is told (after a grace period that hides quick reconnects).
  await ben.context().close();
  await ada.locator("#messages li.sys", { hasText: "Ben left" }).waitFor();
  await ada.locator("#people-list li", { hasText: "Ben" }).waitFor({ state: "detached" });
  assert.deepEqual(suite.errors, []);
});

test("a network drop: the page shows it, and catches up on everything said meanwhile", async () => {
  const proxy = await CuttableProxy.start(suite.broker.port);
  try {
    const room = roomName("net");
    const page = await newPage();
    await page.goto(`${proxy.url}/#${room}`);
    await page.fill("#name", "Wanderer");
    await page.click("#join");
    await page.locator('#conn[data-state="open"]').waitFor();
    const node = suite.client();
    await node.room(room).publishJSON({ text: "before the drop", name: "Node" });
    await waitForText(page, "before the drop");
    proxy.cut();
    await page.locator('#conn[data-state="reconnecting"]').waitFor();
    for (let i = 1; i <= 5; i++) await node.room(room).publishJSON({ text: `while offline ${i}`, name: "Node" });
    await send(page, "typed while offline");
    await screenshot(page, "desktop-network-drop");
    proxy.restore();
    await page.locator('#conn[data-state="open"]').waitFor();
    await waitForText(page, "while offline 5");
    await waitForText(page, "typed while offline");
    const expected = ["before the drop", "while offline 1", "while offline 2", "while offline 3", "while offline 4", "while offline 5", "typed while offline"];
    const rows = await shown(page);
    assertExactlyOnceInOrder(rows, expected);
    assert.deepEqual(
      rows.map((r) => r[2]),
      expected,
    );
    const stored = await node.room(room).history();
    assert.equal(stored.items.length, expected.length, "the offline message was stored once");
    assert.deepEqual(suite.errors, []);
  } finally {
    await proxy.close();
  }
});

test("older messages load on scroll-up", async () => {
  const room = roomName("long");
  const node = suite.client();
  for (let i = 1; i <= 130; i += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, j) => node.room(room).publishJSON({ text: `message ${i + j}`, name: "Bot" })));
  }
  const page = await newPage();
  await join(page, suite.broker.url, room, "Reader");
  await waitForText(page, "message 130");
  const first = await shown(page);
  assert.ok(first.length >= 50 && first.length < 130, `a first page, not everything (${first.length})`);
  assert.equal(first[first.length - 1]?.[2], "message 130");
  for (let i = 0; i < 10 && (await shown(page)).length < 130; i++) {
    await page.$eval("#log", (el) => el.scrollTo(0, 0));
    await sleep(300);
  }
  const rows = await shown(page);
  assert.equal(rows.length, 130, "scrolling up reached the first message");
  assert.deepEqual(
    rows.map((r) => r[2]),
    Array.from({ length: 130 }, (_, i) => `message ${i + 1}`),
  );
  await page.locator(".log-top", { hasText: "beginning" }).waitFor();
  await screenshot(page, "desktop-history");
  assert.deepEqual(suite.errors, []);
});

test("a refused message shows a clear notice", async () => {
  const page = await newPage();
  await join(page, suite.broker.url, roomName("big"), "Ada");
  await send(page, "x".repeat(70_000));
  await page.locator("#notice", { hasText: "too large" }).waitFor();
  assert.match((await page.textContent("#notice")) ?? "", /Message refused: it is too large \(the limit is 64 KB\)/);
  await page.locator("#pending li.failed").waitFor();
  await send(page, "a small one still works");
  await waitForText(page, "a small one still works");
  await screenshot(page, "desktop-refused");
  assert.deepEqual(suite.errors, []);
});

test("a message sent too fast says when to try again and stays in the composer", async (t) => {
  const limited = await Broker.start({ config: "[rate]\npublishes_per_sec = 1\npublishes_burst = 1\n" });
  t.after(async () => {
    await limited.stop();
    limited.cleanup();
  });
  const page = await newPage();
  const room = roomName("fast");
  await page.goto(`${limited.url}/#${room}`);
  await page.locator("#welcome").waitFor();
  await page.fill("#name", "Ada");
  await page.click("#join");
  await page.locator('#conn[data-state="open"]').waitFor();
  await send(page, "first");
  await send(page, "second");
  await page.locator("#notice", { hasText: "sending too fast" }).waitFor();
  assert.match((await page.textContent("#notice")) ?? "", /You're sending too fast — try again in 1 s\./);
  assert.equal(await page.inputValue("#text"), "second", "the refused text is back in the composer");
  await waitForText(page, "first");
  assert.equal(await page.locator("#messages li.msg .text", { hasText: "second" }).count(), 0, "the refused one is not shown as sent");
  await screenshot(page, "desktop-too-fast");
  // Sent again after the wait, it goes through.
  await sleep(1100);
  await page.press("#text", "Enter");
  await waitForText(page, "second");
  assert.equal(await page.inputValue("#text"), "");
  assert.deepEqual(suite.errors, []);
});

test("a private room gets an unguessable shareable name", async () => {
  const page = await newPage();
  await page.goto(`${suite.broker.url}/`);
  await page.fill("#name", "Ada");
  await page.click("#private");
  await page.locator('#conn[data-state="open"]').waitFor();
  const hash = await page.evaluate(() => location.hash);
  assert.match(hash, /^#p\/[a-z2-9]{16}$/);
  assert.equal(await page.textContent("#room-title"), `#${hash.slice(1)}`);
  const friend = await newPage();
  await join(friend, suite.broker.url, hash.slice(1), "Ben");
  await page.locator("#people-list li", { hasText: "Ben" }).waitFor();
});

test("a phone-sized screen works", async () => {
  const room = roomName("phone");
  const phone = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await join(phone, suite.broker.url, room, "Pat");
  const other = await newPage();
  await join(other, suite.broker.url, room, "Sam");
  await send(other, "Can you read this on a phone?");
  await waitForText(phone, "Can you read this on a phone?");
  await send(phone, "Yes, and Enter sends from here too.");
  await waitForText(other, "Yes, and Enter sends from here too.");
  const layout = await phone.evaluate(() => {
    const composer = document.getElementById("composer")!.getBoundingClientRect();
    const conn = document.getElementById("conn")!.getBoundingClientRect();
    return {
      overflow: document.documentElement.scrollWidth - window.innerWidth,
      composerVisible: composer.bottom <= window.innerHeight && composer.top > 0,
      connVisible: conn.width > 0 && conn.right <= window.innerWidth,
      fontSize: parseFloat(getComputedStyle(document.querySelector("#messages .text")!).fontSize),
    };
  });
  assert.equal(layout.overflow, 0, "no horizontal scrolling");
  assert.ok(layout.composerVisible, "the composer is on screen");
  assert.ok(layout.connVisible, "the connection indicator is on screen");
  assert.ok(layout.fontSize >= 15, "readable text");
  await screenshot(phone, "phone-chat");
  await phone.click("#people-toggle");
  await phone.locator("#people.open #people-list li", { hasText: "Sam" }).waitFor();
  await sleep(300); // the drawer slides in
  await screenshot(phone, "phone-people");
  await phone.goto(`${suite.broker.url}/`);
  await phone.locator("#welcome").waitFor();
  await screenshot(phone, "phone-welcome");
  assert.deepEqual(suite.errors, []);
});
