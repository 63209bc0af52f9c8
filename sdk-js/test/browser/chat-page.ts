//! Driving the chat page: shared by the chat's browser tests.
import assert from "node:assert/strict";
import type { Page } from "playwright-core";

/**
 * Opens the chat of `base` (a broker's http URL) at a room's link and enters a name on the
 * welcome form (a page that remembers its name goes straight in); waits until it is connected
 * and shows the start of the history.
 */
export async function join(page: Page, base: string, room: string, name: string): Promise<void> {
  await page.goto(`${base}/#${room}`);
  await page.locator("#welcome:visible, #chat:visible").first().waitFor();
  if (await page.locator("#welcome").isVisible()) {
    assert.equal(await page.inputValue("#room"), room, "the link's room is filled in");
    await page.fill("#name", name);
    await page.click("#join");
  }
  await page.locator("#chat").waitFor();
  await page.locator('#conn[data-state="open"]').waitFor();
  await page.locator(".log-top", { hasText: /beginning|older/ }).waitFor();
}

export async function send(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** The messages shown, in order: [seq, author, text]. */
export async function shown(page: Page): Promise<[number, string, string][]> {
  return page.$$eval("#messages li.msg", (lis) =>
    lis.map((li) => [Number((li as HTMLElement).dataset["seq"]), (li as HTMLElement).dataset["author"] ?? "", li.querySelector(".text")?.textContent ?? ""]),
  );
}
