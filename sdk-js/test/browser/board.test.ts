//! The board at /board in real headless Chromium against the real broker, with two pages and a
//! phone: a note made on one page shows on the others with its text and position; a move
//! shows everywhere; two people editing one note at once do not overwrite each other (the
//! second sees the conflict and the first one's text); everyone's pointer shows live on the
//! other pages; presence avatars. Screenshots go to test-output/.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { Broker, roomName } from "../harness.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";

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

async function open(room: string, name: string, phone = false): Promise<Page> {
  const ctx = await context(browser, phone ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true } : {});
  await ctx.addInitScript((n) => localStorage.setItem("roomd.board.name", n), name);
  const page = await ctx.newPage();
  watchErrors(page, errors);
  await page.goto(`${broker.url}/board#${room}`);
  await page.locator('#conn[data-state="open"]').waitFor();
  return page;
}

/** Each note's text and position (percent of the board), by key. */
async function notes(page: Page): Promise<Record<string, { text: string; left: string; top: string }>> {
  return page.$$eval(".note", (cards) =>
    Object.fromEntries(
      cards.map((c) => {
        const e = c as HTMLElement;
        return [e.dataset["key"] ?? "", { text: e.querySelector("textarea")?.value ?? "", left: e.dataset["x"] ?? "", top: e.dataset["y"] ?? "" }];
      }),
    ),
  );
}

test("two pages and a phone share notes, moves, conflicts, cursors and presence", async () => {
  const room = roomName("board");
  const ada = await open(room, "Ada");
  const bob = await open(room, "Bob");
  await ada.locator('.avatar[data-name="Bob"]').waitFor();
  await bob.locator('.avatar[data-name="Ada"]').waitFor();

  // Ada adds a note and writes in it; Bob sees it.
  await ada.click("#add");
  const note = ada.locator(".note textarea").first();
  await note.waitFor();
  await note.fill("Ship the board");
  await note.blur();
  await bob.locator(".note textarea").first().waitFor();
  await bob.waitForFunction(() => document.querySelector<HTMLTextAreaElement>(".note textarea")?.value === "Ship the board");

  // Ada drags it; Bob sees the same position.
  const grip = ada.locator(".note .grip").first();
  const box = await ada.locator("#board").boundingBox();
  assert.ok(box !== null);
  await grip.hover();
  await ada.mouse.down();
  await ada.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 8 });
  await ada.mouse.up();
  await bob.waitForFunction(() => {
    const c = document.querySelector<HTMLElement>(".note");
    return c !== null && Math.abs(Number(c.dataset["x"]) - 0.7) < 0.02 && Math.abs(Number(c.dataset["y"]) - 0.6) < 0.02;
  });
  const [a, b] = [await notes(ada), await notes(bob)];
  assert.deepEqual(a, b, "both pages show the same notes");

  // A live cursor: Ada's pointer over the board shows on Bob's page with her name.
  await ada.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3, { steps: 4 });
  await bob.locator(".cursor", { hasText: "Ada" }).waitFor();
  await screenshot(bob, "board-desktop");

  // Both edit the note at once: Ada saves first; Bob's save is a conflict that shows Ada's
  // text, and nothing of Ada's is overwritten.
  const adaText = ada.locator(".note textarea").first();
  const bobText = bob.locator(".note textarea").first();
  await adaText.focus();
  await bobText.focus();
  await adaText.fill("Ada's version");
  await bobText.fill("Bob's version");
  const ver = (page: Page): Promise<string | undefined> => page.$eval(".note", (c) => (c as HTMLElement).dataset["ver"]);
  const before = await ver(ada);
  await adaText.blur();
  await ada.waitForFunction((v) => document.querySelector<HTMLElement>(".note")?.dataset["ver"] !== v, before);
  const saved = await ver(ada);
  // Bob's page has Ada's version, but he started editing before it.
  await bob.waitForFunction((v) => document.querySelector<HTMLElement>(".note")?.dataset["ver"] === v, saved);
  assert.equal(await bobText.inputValue(), "Bob's version", "what Bob is typing stays");
  await bobText.blur();
  const conflict = bob.locator(".note .conflict");
  await conflict.waitFor();
  assert.match(await conflict.innerText(), /Someone changed this note first/);
  assert.equal(await conflict.locator(".theirs").innerText(), "Ada's version");
  await screenshot(bob, "board-conflict");
  await ada.waitForTimeout(300);
  assert.equal(await adaText.inputValue(), "Ada's version", "Ada's text was not overwritten");
  // Bob keeps his after all, knowingly: now it is saved, over the version he has seen.
  await conflict.locator("button.keep").click();
  await ada.waitForFunction(() => document.querySelector<HTMLTextAreaElement>(".note textarea")?.value === "Bob's version");

  // A phone joins: the same notes, avatars for all three.
  const phone = await open(room, "Cy", true);
  await phone.waitForFunction(() => document.querySelector<HTMLTextAreaElement>(".note textarea")?.value === "Bob's version");
  await phone.locator('.avatar[data-name="Ada"]').waitFor();
  await phone.locator('.avatar[data-name="Bob"]').waitFor();
  const width = await phone.evaluate(() => ({ doc: document.documentElement.scrollWidth, vw: window.visualViewport?.width ?? window.innerWidth }));
  assert.ok(width.doc <= width.vw + 1, `no sideways scrolling on a phone: ${JSON.stringify(width)}`);
  const card = await phone.locator(".note").first().boundingBox();
  assert.ok(card !== null && card.x >= 0 && card.x + card.width <= 390 + 1, `the note is on the phone's screen: ${JSON.stringify(card)}`);
  await screenshot(phone, "board-phone");
  assert.deepEqual(errors, []);
});
