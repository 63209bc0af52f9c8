//! The built package is what users get: `import … from "roomd"` resolves to dist/ with its
//! types, and `roomd/browser` to a self-contained module (no bare imports left to resolve).
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK_DIR } from "../harness.js";

test("the package resolves by name to dist/ with .d.ts types (run npm run build first)", async () => {
  const name = "roomd";
  const mod = (await import(name)) as Record<string, unknown>;
  for (const k of ["Client", "Room", "RoomdError", "ConflictError", "TooLargeError", "encode", "decode", "connect"]) {
    assert.equal(typeof mod[k], "function", `exports ${k}`);
  }
  const dts = readFileSync(join(SDK_DIR, "dist/index.d.ts"), "utf8");
  assert.match(dts, /export \{ Client/);
  assert.ok(existsSync(join(SDK_DIR, "dist/room.d.ts")));
});

test("roomd/browser is one module without bare imports", async () => {
  const js = readFileSync(join(SDK_DIR, "dist/roomd.browser.js"), "utf8");
  assert.doesNotMatch(js, /from\s*["']@msgpack/);
  assert.doesNotMatch(js, /import\s*\(?\s*["'][^./]/);
  const name = "roomd/browser";
  const mod = (await import(name)) as Record<string, unknown>;
  assert.equal(typeof mod["Client"], "function");
});
