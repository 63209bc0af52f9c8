//! The built package is what users get: `import … from "roomd"` resolves to dist/ with its
//! types, and `roomd/browser` to a self-contained module (no bare imports left to resolve).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SDK_DIR, tempDir } from "../harness.js";

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

test("members tagged @internal are left out of the published .d.ts (stripInternal)", () => {
  let tagged = 0;
  for (const file of readdirSync(join(SDK_DIR, "src")).filter((f) => f.endsWith(".ts"))) {
    const src = readFileSync(join(SDK_DIR, "src", file), "utf8");
    const dts = readFileSync(join(SDK_DIR, "dist", file.replace(/\.ts$/, ".d.ts")), "utf8");
    assert.doesNotMatch(dts, /@internal/, `dist/${file}: an @internal comment was emitted`);
    const modifiers = "(?:(?:export|declare|readonly|get|async|static|class|interface|function)\\s+)*";
    for (const m of src.matchAll(new RegExp(`/\\*\\*\\s*@internal[\\s\\S]*?\\*/\\s*${modifiers}(\\w+)`, "g"))) {
      const name = m[1]!;
      tagged++;
      assert.doesNotMatch(dts, new RegExp(`^\\s*${modifiers}${name}\\b`, "m"), `dist/${file}: ${name} is @internal but declared`);
    }
  }
  assert.ok(tagged >= 10, `found ${tagged} @internal declarations`);
});

test("the published .d.ts type-check on their own, strict and without skipLibCheck", () => {
  const dir = tempDir("dts");
  try {
    const use = join(dir, "use.ts");
    writeFileSync(
      use,
      [
        `import { Client, type SubscriptionState } from ${JSON.stringify(join(SDK_DIR, "dist/index.js"))};`,
        `const room = new Client("ws://localhost/ws").room("r");`,
        `const state: SubscriptionState = room.subscriptionState;`,
        `room.on("subscriptionState", (to, from) => console.log(to, from, state));`,
        "",
      ].join("\n"),
    );
    const tsc = join(SDK_DIR, "node_modules/typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--skipLibCheck", "false", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--lib", "es2022,dom", use];
    try {
      execFileSync(process.execPath, [tsc, ...args], { stdio: "pipe" });
    } catch (e) {
      assert.fail(`tsc: ${String((e as { stdout?: unknown }).stdout ?? e)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
