//! The SDK in a plain page, as the README shows it: dist/roomd.browser.js loaded as an ES
//! module (no bundler) talks to the broker with the browser's own WebSocket, publishes, receives
//! from a Node client, and reports typed errors.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser } from "playwright-core";
import { Broker, client, roomName, SDK_DIR } from "../harness.js";
import { launch, watchErrors } from "./browser.js";

let broker: Broker;
let browser: Browser;

before(async () => {
  broker = await Broker.start();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
  broker?.cleanup();
});

test("dist/roomd.browser.js works in a page with the browser's WebSocket", async () => {
  const ctx = await browser.newContext();
  const errors: string[] = [];
  // The page is the broker's own (a loopback origin); only the module comes from disk.
  await ctx.route(/\/roomd\.browser\.js$/, (route) =>
    route.fulfill({ body: readFileSync(join(SDK_DIR, "dist/roomd.browser.js")), contentType: "text/javascript" }),
  );
  const page = await ctx.newPage();
  watchErrors(page, errors);
  await page.goto(`${broker.url}/healthz`);
  const room = roomName("page");
  const node = client(broker);
  try {
    const inPage = page.evaluate(async (roomName) => {
      const sdk = (await import("/roomd.browser.js" as string)) as typeof import("../../src/index.js");
      const c = new sdk.Client(location.origin);
      const states: string[] = [c.state];
      c.on("state", (s) => states.push(s));
      const r = c.room(roomName);
      const got: string[] = [];
      const done = new Promise<void>((res) => r.on("message", (m) => got.push(m.text()) === 2 && res()));
      await r.subscribe({ presence: true, info: { name: "page" } });
      const seq = await r.publish("from the page");
      (window as unknown as { subscribed: boolean }).subscribed = true;
      await done;
      let refused = "";
      try {
        await r.publish(new Uint8Array((c.limits?.payload ?? 0) + 1));
      } catch (e) {
        refused = e instanceof sdk.TooLargeError ? `TooLargeError ${e.code} max=${String(e.max)}` : String(e);
      }
      c.close();
      return { states, got, seq, refused };
    }, room);
    await page.waitForFunction(() => (window as unknown as { subscribed?: boolean }).subscribed === true);
    await node.room(room).publish("from node");
    const r = await inPage;
    assert.deepEqual(r.got, ["from the page", "from node"]);
    assert.equal(r.seq, 1);
    assert.deepEqual(r.states, ["connecting", "open", "closed"]);
    assert.match(r.refused, /^TooLargeError 413 max=\d+$/);
    assert.deepEqual(errors, []);
  } finally {
    node.close();
    await ctx.close();
  }
});
