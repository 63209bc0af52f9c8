//! The built package is what users get: `import … from "roomd"` resolves to dist/esm/ and
//! `require("roomd")` to dist/cjs/, each with its types, and `roomd/browser` to a
//! self-contained module (no bare imports left to resolve). test/broker/package-install.test.ts
//! packs it and installs the tarball into fresh projects.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { SDK_DIR, tempDir } from "../harness.js";

const EXPORTS = ["Client", "Room", "RoomdError", "ConflictError", "TooLargeError", "encode", "decode", "connect"];

test("the package resolves by name to dist/esm/ with .d.ts types (run npm run build first)", async () => {
  const name = "roomd";
  const mod = (await import(name)) as Record<string, unknown>;
  for (const k of EXPORTS) assert.equal(typeof mod[k], "function", `exports ${k}`);
  assert.equal(import.meta.resolve(name), pathToFileURL(join(SDK_DIR, "dist/esm/index.js")).href);
  const dts = readFileSync(join(SDK_DIR, "dist/esm/index.d.ts"), "utf8");
  assert.match(dts, /export \{ Client/);
  assert.ok(existsSync(join(SDK_DIR, "dist/esm/room.d.ts")));
});

test("require(\"roomd\") loads the CommonJS build in dist/cjs/, with its own .d.ts", () => {
  const require = createRequire(import.meta.url);
  assert.equal(require.resolve("roomd"), join(SDK_DIR, "dist/cjs/index.js"));
  const mod = require("roomd") as Record<string, unknown>;
  for (const k of EXPORTS) assert.equal(typeof mod[k], "function", `exports ${k}`);
  assert.deepEqual(JSON.parse(readFileSync(join(SDK_DIR, "dist/cjs/package.json"), "utf8")), { type: "commonjs" });
  assert.match(readFileSync(join(SDK_DIR, "dist/cjs/index.js"), "utf8"), /^"use strict";\s+Object\.defineProperty\(exports, "__esModule"/);
  assert.match(readFileSync(join(SDK_DIR, "dist/cjs/index.d.ts"), "utf8"), /export \{ Client/);
});

test("roomd/browser is one module without bare imports", async () => {
  const js = readFileSync(join(SDK_DIR, "dist/roomd.browser.js"), "utf8");
  assert.doesNotMatch(js, /from\s*["']@msgpack/);
  assert.doesNotMatch(js, /import\s*\(?\s*["'][^./]/);
  const name = "roomd/browser";
  const mod = (await import(name)) as Record<string, unknown>;
  assert.equal(typeof mod["Client"], "function");
});

test("members tagged @internal are left out of the published .d.ts (stripInternal)", () => {
  let tagged = 0;
  const modifiers = "(?:(?:export|declare|readonly|get|async|static|class|interface|function)\\s+)*";
  for (const file of readdirSync(join(SDK_DIR, "src")).filter((f) => f.endsWith(".ts"))) {
    const src = readFileSync(join(SDK_DIR, "src", file), "utf8");
    const internal = [...src.matchAll(new RegExp(`/\\*\\*\\s*@internal[\\s\\S]*?\\*/\\s*${modifiers}(\\w+)`, "g"))].map((m) => m[1]!);
    tagged += internal.length;
    for (const build of ["esm", "cjs"]) {
      const path = `dist/${build}/${file.replace(/\.ts$/, ".d.ts")}`;
      const dts = readFileSync(join(SDK_DIR, path), "utf8");
      assert.doesNotMatch(dts, /@internal/, `${path}: an @internal comment was emitted`);
      for (const name of internal) {
        assert.doesNotMatch(dts, new RegExp(`^\\s*${modifiers}${name}\\b`, "m"), `${path}: ${name} is @internal but declared`);
      }
    }
  }
  assert.ok(tagged >= 10, `found ${tagged} @internal declarations`);
});

test("the published .d.ts type-check on their own, strict and without skipLibCheck (ESM and CommonJS)", () => {
  const dir = tempDir("dts");
  try {
    const body = [
      `const room = new Client("ws://localhost/ws").room("r");`,
      `const state: SubscriptionState = room.subscriptionState;`,
      `room.on("subscriptionState", (to, from) => console.log(to, from, state));`,
      "",
    ];
    const files: string[] = [];
    for (const [file, build] of [["use.mts", "esm"], ["use.cts", "cjs"]] as const) {
      const path = join(dir, file);
      const from = JSON.stringify(join(SDK_DIR, `dist/${build}/index.js`));
      writeFileSync(path, [`import { Client, type SubscriptionState } from ${from};`, ...body].join("\n"));
      files.push(path);
    }
    const tsc = join(SDK_DIR, "node_modules/typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--skipLibCheck", "false", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--lib", "es2022,dom", ...files];
    try {
      execFileSync(process.execPath, [tsc, ...args], { stdio: "pipe" });
    } catch (e) {
      assert.fail(`tsc: ${String((e as { stdout?: unknown }).stdout ?? e)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
