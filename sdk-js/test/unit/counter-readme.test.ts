//! The SDK README quotes the counter app's core verbatim: the quote is a contiguous excerpt of
//! apps/counter/app.ts, so a change to the app that is not carried into the README fails here.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK_DIR } from "../harness.js";

test("README's counter quote is an excerpt of apps/counter/app.ts", () => {
  const readme = readFileSync(join(SDK_DIR, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## A first app: the counter"));
  const quote = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(quote !== undefined && quote.includes("room.incr("), "the README quotes the counter's incr");
  const source = readFileSync(join(SDK_DIR, "apps/counter/app.ts"), "utf8");
  assert.ok(source.includes(quote), "the quote is verbatim and contiguous in apps/counter/app.ts");
});
