//! The chat in real headless Chromium with two users on two roomd nodes of one cluster (one
//! Redis): each sees the other's messages in one order, and the other's presence.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { nodes, Redis } from "../cluster.js";
import { roomName, type Broker } from "../harness.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";
import { join, send, shown } from "./chat-page.js";

let redis: Redis;
let n: Broker[] = [];
let browser: Browser;
const errors: string[] = [];

before(async () => {
  redis = await Redis.start();
  n = await nodes(redis, 2);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  for (const b of n) {
    await b.stop("SIGKILL");
    b.cleanup();
  }
  redis?.stop();
});

async function newPage(): Promise<Page> {
  const page = await (await context(browser)).newPage();
  watchErrors(page, errors);
  return page;
}

test("two users on two nodes chat in one order and see each other", async () => {
  const room = roomName("cluster");
  const [ada, ben] = [await newPage(), await newPage()];
  await join(ada, n[0]!.url, room, "Ada");
  await join(ben, n[1]!.url, room, "Ben");
  await send(ada, "Hello from node 0");
  await send(ben, "Hello from node 1");
  await send(ada, "Both in one order");
  for (const page of [ada, ben]) {
    await page.locator("#messages li.msg .text", { hasText: "Both in one order" }).waitFor();
    await page.locator("#messages li.msg .text", { hasText: "Hello from node 1" }).waitFor();
  }
  const [a, b] = [await shown(ada), await shown(ben)];
  assert.deepEqual(
    a.map((r) => [r[0], r[2]]),
    b.map((r) => [r[0], r[2]]),
    "the same seqs and texts on both nodes",
  );
  assert.deepEqual(
    a.map((r) => r[2]),
    ["Hello from node 0", "Hello from node 1", "Both in one order"],
  );
  // Presence crosses nodes: each lists the other.
  await ada.locator("#people", { hasText: "Ben" }).waitFor();
  await ben.locator("#people", { hasText: "Ada" }).waitFor();
  await screenshot(ada, "cluster-node0");
  await screenshot(ben, "cluster-node1");
  assert.deepEqual(errors, []);
});
