//! The chat beside a backend using the server API, in real headless Chromium against the real
//! broker: a backend's message (`data`, stored as MessagePack) shows like a chat message, a
//! message the backend deletes turns into a "message deleted" row on every open page (and
//! stays so after a reload), and a user the backend removes from the room is told so and
//! cannot write there.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { API_CONFIG, api, Broker, jwt, roomName } from "../harness.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";

let broker: Broker;
let browser: Browser;
const errors: string[] = [];

const SECRET = "a-chat-test-secret-of-32-bytes-or-more";

before(async () => {
  // Tokens on, so each page is a user the API can name.
  broker = await Broker.start({ config: `${API_CONFIG}\n[auth]\njwt_secret = "${SECRET}"\n[ui]\ntoken_url = "/token"\n` });
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
  broker?.cleanup();
});

/** A page signed in as `sub` (its `/token` answers like an app's backend), joined to `room`. */
async function join(room: string, sub: string): Promise<Page> {
  const ctx = await context(browser);
  await ctx.route(/\/token$/, async (route) => {
    const token = await jwt(SECRET, { sub, exp: Math.floor(Date.now() / 1000) + 3600 });
    await route.fulfill({ contentType: "application/json", body: JSON.stringify({ token }) });
  });
  const page = await ctx.newPage();
  watchErrors(page, errors);
  await page.goto(`${broker.url}/#${room}`);
  const name = sub;
  await page.locator("#welcome").waitFor();
  await page.fill("#name", name);
  await page.click("#join");
  await page.locator('#conn[data-state="open"]').waitFor();
  return page;
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await page.locator("#messages li.msg .text", { hasText: text }).waitFor();
}

/** The seq of the first message in `room` whose text is `text`, as the API reads history. */
async function seqOf(room: string, text: string): Promise<number> {
  const h = await api(broker, "GET", `/rooms/${encodeURIComponent(room)}/messages`);
  const items = h["items"] as { seq: number; text?: string }[];
  const hit = items.find((i) => i.text !== undefined && i.text.includes(`"${text}"`));
  assert.ok(hit, `no message ${text} in ${JSON.stringify(items)}`);
  return hit.seq;
}

test("a backend's message shows, and a message it deletes turns into a deleted row everywhere", async () => {
  const room = roomName("api");
  const ada = await join(room, "ada");
  const bob = await join(room, "bob");
  await say(ada, "hello everyone");
  await say(ada, "something regrettable");
  await api(broker, "POST", `/rooms/${encodeURIComponent(room)}/messages`, {
    data: { text: "Maintenance at 02:00", name: "system" },
  });
  for (const page of [ada, bob]) {
    const row = page.locator("#messages li.msg", { hasText: "Maintenance at 02:00" });
    await row.waitFor();
    assert.equal(await row.locator(".author").textContent(), "system");
  }

  const seq = await seqOf(room, "something regrettable");
  await api(broker, "DELETE", `/rooms/${encodeURIComponent(room)}/messages/${seq}`);
  for (const page of [ada, bob]) {
    await page.locator(`#messages li.msg.deleted[data-seq="${seq}"]`).waitFor();
    assert.equal(await page.locator("#messages li.msg", { hasText: "something regrettable" }).count(), 0);
  }
  await screenshot(bob, "api-deleted");
  // After a reload the history shows the stub, not the text.
  await bob.reload();
  await bob.locator("#messages li.msg", { hasText: "hello everyone" }).waitFor();
  await bob.locator(`#messages li.msg.deleted[data-seq="${seq}"]`).waitFor();
  assert.equal(await bob.locator("#messages li.msg", { hasText: "something regrettable" }).count(), 0);
  assert.deepEqual(errors, []);
});

test("a user the backend removes from the room is told and cannot write there", async () => {
  const room = roomName("api");
  const mallory = await join(room, "mallory");
  await say(mallory, "spam");
  await api(broker, "POST", `/rooms/${encodeURIComponent(room)}/users/mallory/unsubscribe`);
  await mallory.locator("#messages li", { hasText: "You were removed from" }).waitFor();
  assert.equal(await mallory.locator("#text").isDisabled(), true);
  await screenshot(mallory, "api-removed");
  assert.deepEqual(errors, []);
});
