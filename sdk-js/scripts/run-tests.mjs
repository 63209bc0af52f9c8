// Runs every compiled test file with node's test runner, one file at a time (each broker test
// file starts its own roomd; the machine is small). Usage: node scripts/run-tests.mjs [group…]
// where a group is unit, broker or browser (default: all).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const groups = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["unit", "broker", "browser"];
const bin = process.env.ROOMD_BIN ?? resolve(root, "../target/release/roomd");
if (groups.some((g) => g !== "unit") && !existsSync(bin)) {
  console.error(`roomd binary not found at ${bin}: run \`cargo build --release\` at the repo root or set ROOMD_BIN`);
  process.exit(1);
}
const files = groups.flatMap((g) => {
  const dir = join(root, "build/test", g);
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".test.js")).sort().map((f) => join(dir, f)) : [];
});
if (files.length === 0) {
  console.error("no compiled tests: run `npm run build:test` first");
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...files], { stdio: "inherit", env: { ...process.env, ROOMD_BIN: bin } });
process.exit(r.status ?? 1);
