//! The README's pictures of the three bundled apps (docs/pictures/{chat,counter,board}.png),
//! taken in headless Chromium from a real broker the way the browser tests drive it. Not a
//! test: run it after a UI change and look at the result before committing it.
//!
//!     npm run build:test && node build/test/browser/pictures.js
import { mkdirSync } from "node:fs";
import { join as joinPath } from "node:path";
import type { Browser, Page } from "playwright-core";
import { Broker, REPO_DIR, sleep } from "../harness.js";
import { context, launch } from "./browser.js";
import { join, send } from "./chat-page.js";

const OUT = joinPath(REPO_DIR, "docs/pictures");
const VIEWPORT = { width: 1100, height: 640 };

async function page(browser: Browser, init?: (name: string) => void, name = ""): Promise<Page> {
  const ctx = await context(browser, { viewport: VIEWPORT });
  if (init !== undefined) await ctx.addInitScript(init, name);
  return ctx.newPage();
}

async function chat(browser: Browser, base: string): Promise<void> {
  const [ada, bob] = [await page(browser), await page(browser)];
  await join(ada, base, "launch", "Ada");
  await join(bob, base, "launch", "Bob");
  const lines: [Page, string][] = [
    [ada, "Morning! The new build is on staging."],
    [bob, "Nice. Does resume still hold after a kill -9?"],
    [ada, "Yes: no gap, no duplicate. Try it: https://example.com/runbook"],
    [bob, "Shipping it after lunch, then."],
  ];
  for (const [p, text] of lines) {
    await send(p, text);
    await sleep(150);
  }
  await ada.locator("#messages li.msg .text", { hasText: "lunch" }).waitFor();
  // Bob starts typing: Ada sees the indicator.
  await bob.fill("#text", "One more th");
  await bob.press("#text", "g");
  await ada.locator(".typing", { hasText: "Bob" }).waitFor({ timeout: 5_000 }).catch(() => undefined);
  await ada.screenshot({ path: joinPath(OUT, "chat.png") });
}

async function counter(browser: Browser, base: string): Promise<void> {
  const p = await page(browser);
  await p.goto(`${base}/counter#tea`);
  await p.locator('body[data-conn="open"]').waitFor();
  for (let i = 0; i < 12; i++) await p.click("#plus");
  await p.waitForFunction(() => document.querySelector("#value")?.textContent === "12");
  await p.screenshot({ path: joinPath(OUT, "counter.png") });
}

async function board(browser: Browser, base: string): Promise<void> {
  const named = (n: string) => localStorage.setItem("roomd.board.name", n);
  const [ada, bob] = [await page(browser, named, "Ada"), await page(browser, named, "Bob")];
  for (const p of [ada, bob]) {
    await p.goto(`${base}/board#retro`);
    await p.locator('#conn[data-state="open"]').waitFor();
  }
  const notes: [number, number, string][] = [
    [0.18, 0.3, "Went well: resume after deploys"],
    [0.45, 0.25, "Try: presence counts for big rooms"],
    [0.72, 0.35, "Fix: flaky phone layout"],
    [0.3, 0.68, "Idea: alarms per room"],
  ];
  const box = await ada.locator("#board").boundingBox();
  if (box === null) throw new Error("no board");
  for (const [i, [x, y, text]] of notes.entries()) {
    await ada.click("#add");
    const note = ada.locator(".note").nth(i);
    await note.locator("textarea").fill(text);
    await note.locator("textarea").blur();
    await note.locator(".grip").hover();
    await ada.mouse.down();
    await ada.mouse.move(box.x + box.width * x, box.y + box.height * y, { steps: 6 });
    await ada.mouse.up();
  }
  await bob.waitForFunction((n) => document.querySelectorAll(".note").length === n, notes.length);
  await ada.mouse.move(box.x + box.width * 0.62, box.y + box.height * 0.62, { steps: 4 });
  await bob.locator(".cursor", { hasText: "Ada" }).waitFor();
  await sleep(300);
  await bob.screenshot({ path: joinPath(OUT, "board.png") });
}

const broker = await Broker.start();
const browser = await launch();
try {
  mkdirSync(OUT, { recursive: true });
  await chat(browser, broker.url);
  await counter(browser, broker.url);
  await board(browser, broker.url);
  console.log(`pictures written to ${OUT}`);
} finally {
  await browser.close();
  await broker.stop();
  broker.cleanup();
}
