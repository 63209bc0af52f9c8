//! The chat's own-message actions and typing indicator in real headless Chromium against the
//! real broker, with two pages: the author edits a message (both pages show the new text,
//! marked "(edited)", also after a reload) and deletes one; the other page has no actions on
//! it; while one page types, the other shows "Ada is typing…", which goes away by itself.
//! Screenshots go to test-output/.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { Broker, roomName } from "../harness.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";

/** chat/typing.ts's EXPIRE: someone stops being shown typing this long after their last signal. */
const EXPIRE = 5_000;

let broker: Broker;
let browser: Browser;
const errors: string[] = [];

before(async () => {
  broker = await Broker.start();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
  broker?.cleanup();
});

async function newPage(): Promise<Page> {
  const ctx = await context(browser);
  const page = await ctx.newPage();
  watchErrors(page, errors);
  // "Delete this message for everyone?": yes.
  page.on("dialog", (d) => void d.accept());
  return page;
}

async function join(page: Page, room: string, name: string): Promise<void> {
  await page.goto(`${broker.url}/#${room}`);
  await page.locator("#welcome").waitFor();
  await page.fill("#name", name);
  await page.click("#join");
  await page.locator('#conn[data-state="open"]').waitFor();
  await page.locator(".log-top", { hasText: /beginning|older/ }).waitFor();
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** The row showing `text`. */
function row(page: Page, text: string) {
  return page.locator("#messages li.msg", { has: page.locator(".text", { hasText: text }) });
}

test("the author edits and deletes their message; the other page sees both and cannot", async () => {
  const room = roomName("edit");
  const ada = await newPage();
  const bob = await newPage();
  await join(ada, room, "Ada");
  await join(bob, room, "Bob");
  await send(ada, "helo wrold");
  await send(ada, "a second thought");
  await send(bob, "bob was here");
  await row(bob, "a second thought").waitFor();
  await row(ada, "bob was here").waitFor();

  // Bob's page offers no actions on Ada's messages, Ada's none on Bob's.
  assert.equal(await row(bob, "helo wrold").locator(".actions").count(), 0);
  assert.equal(await row(ada, "bob was here").locator(".actions").count(), 0);

  // Ada edits: hover, Edit, type, Enter.
  const mine = row(ada, "helo wrold");
  await mine.hover();
  await mine.locator("button.edit").click();
  const box = mine.locator(".editor textarea");
  assert.equal(await box.inputValue(), "helo wrold");
  await box.fill("hello world");
  await box.press("Enter");
  for (const page of [ada, bob]) {
    const edited = row(page, "hello world");
    await edited.waitFor();
    await edited.locator(".edited", { hasText: "(edited)" }).waitFor();
    assert.equal(await row(page, "helo wrold").count(), 0, "the old text is gone");
  }
  await screenshot(ada, "chat-edited");

  // Ada deletes her second message; both pages show it deleted, without actions.
  const second = row(ada, "a second thought");
  await second.hover();
  await second.locator("button.delete").click();
  for (const page of [ada, bob]) {
    await page.locator("#messages li.msg.deleted .text", { hasText: "message deleted" }).waitFor();
    assert.equal(await row(page, "a second thought").count(), 0);
  }
  assert.equal(await ada.locator("#messages li.msg.deleted .actions").count(), 0);

  // A reload reads the history: the edit and the deletion are kept.
  await bob.reload();
  await bob.locator('#conn[data-state="open"]').waitFor();
  await row(bob, "hello world").locator(".edited").waitFor();
  await bob.locator("#messages li.msg.deleted").waitFor();
  const texts = await bob.$$eval("#messages li.msg .text", (ps) => ps.map((p) => p.textContent));
  assert.deepEqual(texts, ["hello world", "message deleted", "bob was here"]);
  // Ada's page after a reload still has her actions (her browser keeps its user id).
  await ada.reload();
  await ada.locator('#conn[data-state="open"]').waitFor();
  await row(ada, "hello world").hover();
  await row(ada, "hello world").locator("button.edit").waitFor();
  assert.deepEqual(errors, []);
});

test("two pages: one types, the other shows who is typing, and it expires by itself", async () => {
  const room = roomName("typing");
  const ada = await newPage();
  const bob = await newPage();
  await join(ada, room, "Ada");
  await join(bob, room, "Bob");
  assert.equal(await bob.locator("#typing").isVisible(), false);

  await ada.locator("#text").pressSequentially("Hel", { delay: 30 });
  await bob.locator("#typing", { hasText: "Ada is typing…" }).waitFor();
  assert.equal(await ada.locator("#typing").isVisible(), false, "not shown to the typist");
  await screenshot(bob, "chat-typing");
  // Sending clears it at once (well before the expiry).
  const sent = Date.now();
  await ada.locator("#text").pressSequentially("lo", { delay: 30 });
  await ada.press("#text", "Enter");
  await bob.locator("#typing").waitFor({ state: "hidden", timeout: EXPIRE - 1000 });
  assert.ok(Date.now() - sent < EXPIRE, "cleared by the message, not by the expiry");
  await bob.locator("#messages li.msg .text", { hasText: "Hello" }).waitFor();

  // Typing and then stopping without sending: it goes away by itself.
  await ada.locator("#text").pressSequentially("and then", { delay: 30 });
  await bob.locator("#typing", { hasText: "Ada is typing…" }).waitFor();
  const shownAt = Date.now();
  await bob.locator("#typing").waitFor({ state: "hidden", timeout: EXPIRE + 3000 });
  assert.ok(Date.now() - shownAt >= EXPIRE - 2500, "expired, not cleared early");

  // Sends are throttled: a burst of keystrokes is a handful of signals, not one per key.
  const frames = await ada.evaluate(async () => {
    const box = document.getElementById("text") as HTMLTextAreaElement;
    let n = 0;
    const ws = WebSocket.prototype.send;
    WebSocket.prototype.send = function (this: WebSocket, d: Parameters<WebSocket["send"]>[0]) {
      n++;
      return ws.call(this, d);
    };
    for (let i = 0; i < 40; i++) {
      box.value += "x";
      box.dispatchEvent(new Event("input"));
      await new Promise((r) => setTimeout(r, 25));
    }
    WebSocket.prototype.send = ws;
    return n;
  });
  assert.ok(frames >= 1 && frames <= 2, `40 keystrokes in 1 s sent ${frames} frames`);
  assert.deepEqual(errors, []);
});
