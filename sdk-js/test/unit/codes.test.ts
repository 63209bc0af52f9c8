//! The SDK's codes agree with SPEC.md: every error code's name and retry column, and the
//! close-code rule (reconnect or give up).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { CloseCode, codeName, ErrorCode, isRetryable, shouldReconnect } from "../../src/index.js";

const spec = readFileSync(fileURLToPath(new URL("../../../../protocol/SPEC.md", import.meta.url)), "utf8");

test("every error code row of SPEC.md matches name and retryability", () => {
  const rows = [...spec.matchAll(/^\| (\d{3}) \| (\w+) \| [^|]+ \| ([^|]+) \|$/gm)];
  assert.equal(rows.length, Object.keys(ErrorCode).length, "one row per ErrorCode");
  for (const [, code, name, retry] of rows) {
    const n = Number(code);
    assert.ok((Object.values(ErrorCode) as number[]).includes(n), `ErrorCode has ${n}`);
    assert.equal(codeName(n), name);
    assert.equal(isRetryable(n), /^(yes|maybe)/.test(String(retry).trim()), `retryable(${n})`);
  }
});

test("close codes: reconnect vs give up, as SPEC.md section 7 says", () => {
  for (const c of [1001, 1006, 1009, 1011, 4000, 4001, 4002, 4003, 4004, 4005, 1005, 3000, 4999]) assert.ok(shouldReconnect(c), `${c} reconnects`);
  for (const c of [1000, 1002, 1003, 1007, 1008, 1010, 4400, 4401, 4403, 4499]) assert.ok(!shouldReconnect(c), `${c} gives up`);
  assert.equal(CloseCode.Unauthorized, 4401);
});

test("every close code the SDK names for the server is a row of SPEC.md section 7", () => {
  const local = new Set<number>([CloseCode.Normal, CloseCode.Abnormal]); // not sent by the server
  for (const [name, code] of Object.entries(CloseCode)) {
    if (local.has(code)) continue;
    assert.ok(spec.includes(`| ${code} |`), `SPEC.md has close code ${code} (${name})`);
  }
});
