/**
 * Headless Chromium for the chat UI tests: Debian's `chromium` driven by playwright-core (no
 * browser download). `CHROMIUM` overrides the executable. With `ROOMD_UI_FROM_DISK=1` the pages
 * load src/ui/* from disk instead of the binary (for working on the UI without rebuilding
 * roomd); by default the test checks the binary serves exactly the committed bundle.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before } from "node:test";
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from "playwright-core";
import { Broker, BrokerSuite, REPO_DIR, SDK_DIR } from "../harness.js";

export const OUTPUT_DIR = join(SDK_DIR, "test-output");

export function chromiumPath(): string {
  const candidates = [process.env["CHROMIUM"], "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter((p): p is string => !!p);
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error("Chromium not found: apt-get install chromium (or set CHROMIUM)");
  return found;
}

/** `env` is the browser's environment: a `HOME` with an NSS database trusts its CAs. */
export async function launch(env?: Record<string, string>): Promise<Browser> {
  const args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"];
  // A page fulfilled by the test (not by the loopback server) counts as public; let it reach
  // the broker on loopback.
  if (process.env["ROOMD_UI_FROM_DISK"] === "1") args.push("--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests");
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args, ...(env === undefined ? {} : { env: { ...process.env, ...env } }) });
}

const types: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
};

/** A browser context, optionally serving the UI files from disk. */
export async function context(browser: Browser, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  ctx.setDefaultTimeout(15_000);
  if (process.env["ROOMD_UI_FROM_DISK"] === "1") {
    // The chat at /, the counter at /counter and the board at /board, as src/ui.rs serves them.
    await ctx.route(/\/((counter|board)\/?)?(app\.js|app\.css)?(\?.*)?$/, async (route) => {
      const path = new URL(route.request().url()).pathname;
      const app = /^\/(counter|board)/.exec(path)?.[1];
      const dir = app === undefined ? "" : `${app}/`;
      const name = path.replace(/^\/((counter|board)\/?)?/, "");
      const file = name === "" ? "index.html" : name;
      await route.fulfill({ body: readFileSync(join(REPO_DIR, "src/ui", dir + file)), contentType: types[file] ?? "text/plain" });
    });
  }
  return ctx;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUTPUT_DIR, `${name}.png`) });
}

/** Collect console errors and page errors, to fail on them. */
export function watchErrors(page: Page, into: string[]): void {
  page.on("pageerror", (e) => into.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION_REFUSED|Failed to load resource/.test(m.text())) into.push(`console: ${m.text()}`);
  });
}

/** A phone's screen: the size of an iPhone 12-15, touch, a device pixel ratio of 2. */
export const PHONE: BrowserContextOptions = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

/**
 * What a browser test file shares: a broker (see `BrokerSuite`) and one Chromium, launched
 * before its tests and closed after them. `page()` opens a page in a new context whose console
 * and page errors go to `errors` (a test ends by checking it is empty).
 */
export class BrowserSuite extends BrokerSuite {
  browser!: Browser;
  readonly errors: string[] = [];

  constructor(start?: () => Promise<Broker>) {
    super(start);
    before(async () => {
      this.browser = await launch();
    });
    after(async () => {
      await this.browser?.close();
    });
  }

  /** A page in a new context of its own. */
  async page(options: BrowserContextOptions = {}): Promise<Page> {
    return this.pageIn(await context(this.browser, options));
  }

  /** A page in `ctx` (a context made with `context`, e.g. to share its storage). */
  async pageIn(ctx: BrowserContext): Promise<Page> {
    const page = await ctx.newPage();
    watchErrors(page, this.errors);
    return page;
  }
}
