//! The apps committed in src/ui/ (the chat, the counter in src/ui/counter/ and the board in
//! src/ui/board/, embedded into the broker) are exactly what scripts/bundle-ui.mjs builds from
//! sdk-js now: a stale bundle fails here.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_DIR, SDK_DIR, tempDir } from "../harness.js";

test("src/ui bundle is up to date (run `npm run bundle` in sdk-js/ and commit src/ui)", () => {
  const out = tempDir("bundle");
  try {
    execFileSync(process.execPath, [join(SDK_DIR, "scripts/bundle-ui.mjs"), "--out", out], { stdio: "pipe" });
    for (const file of ["index.html", "app.js", "app.css"].flatMap((f) => [f, `counter/${f}`, `board/${f}`])) {
      const fresh = readFileSync(join(out, file));
      const committed = readFileSync(join(REPO_DIR, "src/ui", file));
      assert.ok(fresh.equals(committed), `src/ui/${file} is stale: rebuild with npm run bundle`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
