//! The counter app (`/counter`) in real headless Chromium against the real broker: two pages
//! (desktop and phone) click on one counter and always agree; a kill -9 of the broker in the
//! middle, with clicks made while it is down, loses no increment and doubles none; the value
//! survives the restart (read by a fresh page and by the SDK). Screenshots go to test-output/.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { Page } from "playwright-core";
import { REPO_DIR } from "../harness.js";
import { BrowserSuite, PHONE, screenshot } from "./browser.js";

const suite = new BrowserSuite();

async function open(name: string, options: Parameters<BrowserSuite["page"]>[0] = {}, before?: (page: Page) => void): Promise<Page> {
  const page = await suite.page(options);
  before?.(page);
  await page.goto(`${suite.broker.url}/counter#${name}`);
  await page.locator('body[data-conn="open"]').waitFor();
  return page;
}

/** Waits until the page shows `value` with no click left to answer. */
async function settled(page: Page, value: number): Promise<void> {
  await page.waitForFunction(
    (v) => document.getElementById("value")?.textContent === String(v) && document.getElementById("status")?.dataset["pending"] === "0",
    value,
    { timeout: 15_000 },
  );
}

async function click(page: Page, button: "plus" | "minus", times: number): Promise<void> {
  for (let i = 0; i < times; i++) await page.click(`#${button}`);
}

test("the broker serves the committed counter bundle at /counter", { skip: process.env["ROOMD_UI_FROM_DISK"] === "1" && "pages load src/ui from disk" }, async () => {
  for (const [path, file] of [["/counter", "index.html"], ["/counter/", "index.html"], ["/counter/app.js", "app.js"], ["/counter/app.css", "app.css"]] as const) {
    const res = await fetch(`${suite.broker.url}${path}`);
    assert.equal(res.status, 200, path);
    const served = Buffer.from(await res.arrayBuffer());
    assert.ok(served.equals(readFileSync(join(REPO_DIR, "src/ui/counter", file))), `roomd serves a stale ${path}: run cargo build --release`);
  }
});

test("two pages share one counter; a kill -9 in the middle loses and doubles nothing", async () => {
  const name = "tea"; // this file's broker starts with an empty data dir
  const desk = await open(name);
  const phone = await open(name, PHONE);
  await settled(desk, 0);
  await settled(phone, 0);

  // Clicks on both pages, interleaved: both show every one of them.
  let expected = 0;
  await click(desk, "plus", 5);
  expected += 5;
  await click(phone, "minus", 2);
  expected -= 2;
  await click(phone, "plus", 3);
  expected += 3;
  await Promise.all([settled(desk, expected), settled(phone, expected)]);
  assert.equal(await desk.textContent("#status"), "Shared live with every open tab");
  assert.equal(await desk.textContent("#conn-text"), "Live");
  await screenshot(desk, "counter-desktop");
  await screenshot(phone, "counter-phone");

  // The broker dies; clicks go on while it is down: they wait, counted as waiting.
  await suite.broker.stop("SIGKILL");
  await desk.locator('body[data-conn="reconnecting"]').waitFor();
  await phone.locator('body[data-conn="reconnecting"]').waitFor();
  await click(desk, "plus", 4);
  expected += 4;
  await click(phone, "minus", 1);
  expected -= 1;
  assert.match((await desk.textContent("#status")) ?? "", /Offline: 4 clicks will be sent when the connection is back/);
  assert.equal(await desk.textContent("#value"), "6", "the shown value is the server's, not a guess");
  assert.ok(await phone.locator("#retry").isVisible(), "a retry-now control while offline");
  assert.equal(await phone.textContent("#conn-text"), "Offline");
  await screenshot(phone, "counter-phone-offline");

  // Back: the waiting clicks go out once each, and both pages agree.
  suite.broker = await suite.broker.restart();
  // At once, not at the next backoff attempt; that attempt may already have reconnected the
  // page (and hidden the button), so the click goes through the DOM, a no-op then.
  await phone.evaluate(() => document.getElementById("retry")!.click());
  await Promise.all([settled(desk, expected), settled(phone, expected)]);
  await click(desk, "plus", 2);
  expected += 2;
  await Promise.all([settled(desk, expected), settled(phone, expected)]);
  assert.equal(expected, 11);
  assert.equal(await desk.textContent("#problem"), "", "no click was ever in doubt");

  // A fresh page and the SDK read the same value from the server.
  const fresh = await open(name);
  await settled(fresh, expected);
  const node = suite.client();
  const stored = await node.room(`counter:${name}`).get("count");
  assert.equal(stored.value, expected);
  assert.equal(stored.ver, 5 + 2 + 3 + 4 + 1 + 2, "one state write per click, none doubled");
  assert.deepEqual(suite.errors, []);
});

test("clicks in flight when the broker dies: the log says which counted, the others are sent again", async (t) => {
  const name = "burst";
  let incrFrames = 0; // MessagePack text "incr" in a sent frame: one incr request
  const page = await open(name, {}, (p) =>
    p.on("websocket", (ws) => ws.on("framesent", (f) => void (typeof f.payload !== "string" && f.payload.includes("incr") && incrFrames++))),
  );
  await settled(page, 0);
  // Ten clicks in one go, then kill -9 at once: some may be answered, some in flight (applied
  // or not: the page cannot know from the SDK), some not yet sent. Each must count once.
  await page.evaluate(() => {
    for (let i = 0; i < 10; i++) document.getElementById("plus")!.click();
  });
  await suite.broker.stop("SIGKILL");
  suite.broker = await suite.broker.restart();
  await page.evaluate(() => document.getElementById("retry")!.click()); // reconnect now (no-op if it did already)
  await page.locator('body[data-conn="open"]').waitFor();
  await page.waitForFunction(() => document.getElementById("status")?.dataset["pending"] === "0");
  const node = suite.client();
  const stored = await node.room(`counter:${name}`).get("count");
  assert.equal(stored.value, 10, "every click counted once");
  assert.equal(stored.ver, 10, "one state write per click");
  assert.equal(await page.textContent("#problem"), "");
  await settled(page, 10);
  assert.ok(incrFrames >= 10);
  t.diagnostic(`${incrFrames} incr requests sent for 10 clicks (more: some were in flight, not applied, and sent again)`);
  assert.deepEqual(suite.errors, []);
});

test("the counter fits a phone screen and links to the chat", async () => {
  const phone = await open("coffee", PHONE);
  const layout = await phone.evaluate(() => {
    const plus = document.getElementById("plus")!.getBoundingClientRect();
    return {
      layoutWidth: document.documentElement.scrollWidth,
      visualWidth: window.visualViewport?.width ?? 0,
      plusOnScreen: plus.right <= window.innerWidth && plus.bottom <= window.innerHeight && plus.width >= 44,
    };
  });
  assert.equal(layout.layoutWidth, 390, "the layout viewport is the phone's width");
  assert.equal(layout.visualWidth, 390);
  assert.ok(layout.plusOnScreen, "+ is on screen and big enough to tap");
  await phone.locator('a[href="/"]').waitFor();
  await phone.emulateMedia({ colorScheme: "dark" });
  await screenshot(phone, "counter-phone-dark");
  // The chat's start page links back.
  await phone.goto(`${suite.broker.url}/`);
  await phone.locator('#welcome a[href="/counter"]').waitFor();
  assert.deepEqual(suite.errors, []);
});
