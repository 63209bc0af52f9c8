//! The chat over https:// and wss:// in real headless Chromium, with the test CA trusted the
//! way a system trusts one (an NSS database in the browser's HOME, made with certutil from
//! Debian's libnss3-tools): two pages chat. A browser without the CA refuses the page.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import { Broker, roomName, tempDir } from "../harness.js";
import { issue, makeCa, tlsConfig } from "../certs.js";
import { context, launch, screenshot, watchErrors } from "./browser.js";

let broker: Broker;
let trusting: Browser;
const errors: string[] = [];

/** A HOME whose NSS database trusts the CA at `caPath` for servers. */
function homeTrusting(caPath: string): string {
  const home = tempDir("home");
  const db = join(home, ".pki/nssdb");
  mkdirSync(db, { recursive: true });
  execFileSync("certutil", ["-d", `sql:${db}`, "-N", "--empty-password"]);
  execFileSync("certutil", ["-d", `sql:${db}`, "-A", "-t", "C,,", "-n", "roomd test CA", "-i", caPath]);
  return home;
}

before(async () => {
  const ca = makeCa();
  broker = await Broker.start({ config: tlsConfig(issue(ca, "localhost")) });
  trusting = await launch({ HOME: homeTrusting(ca.caPath) });
});
after(async () => {
  await trusting?.close();
  await broker?.stop();
  broker?.cleanup();
});

async function enter(page: Page, room: string, name: string): Promise<void> {
  await page.goto(`${broker.url}/#${room}`);
  await page.locator("#welcome").waitFor();
  await page.fill("#name", name);
  await page.click("#join");
  await page.locator('#conn[data-state="open"]').waitFor();
}

test("two pages chat over https:// and wss:// with the CA trusted", async () => {
  assert.match(broker.url, /^https:/);
  const room = roomName("tls");
  const pages: Page[] = [];
  for (const name of ["Ada", "Ben"]) {
    const page = await (await context(trusting)).newPage();
    watchErrors(page, errors);
    await enter(page, room, name);
    pages.push(page);
  }
  const [ada, ben] = pages as [Page, Page];
  assert.equal(await ada.evaluate(() => location.protocol), "https:");
  await ada.fill("#text", "hello over TLS");
  await ada.press("#text", "Enter");
  await ben.locator("#messages li.msg .text", { hasText: "hello over TLS" }).waitFor();
  await screenshot(ben, "tls-chat");
  assert.deepEqual(errors, []);
});

test("a browser that does not trust the CA refuses the page", async () => {
  const plain = await launch();
  try {
    const page = await (await context(plain)).newPage();
    await assert.rejects(page.goto(`${broker.url}/`), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    await plain.close();
  }
});
