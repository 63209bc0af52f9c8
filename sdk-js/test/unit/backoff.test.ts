//! Reconnect delays use full jitter under an exponential ceiling, capped, and the attempt
//! count resets only after a connection stayed up for the minimum uptime.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../../src/index.js";

test("ceilings grow by the factor up to the cap", () => {
  const b = new Backoff({ baseDelay: 100, maxDelay: 1000, factor: 2 }, () => 0.999999);
  const delays = Array.from({ length: 6 }, () => b.next());
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
});

test("full jitter: delays are drawn from [0, ceiling)", () => {
  const b = new Backoff({ baseDelay: 100, maxDelay: 100 });
  const seen = Array.from({ length: 500 }, () => b.next());
  assert.ok(seen.every((d) => d >= 0 && d < 100));
  assert.ok(Math.min(...seen) < 20 && Math.max(...seen) > 80, "spread over the range");
});

test("attempts reset only after the minimum uptime", () => {
  const b = new Backoff({ baseDelay: 100, minUptime: 5000 }, () => 0.5);
  b.next();
  b.next();
  b.opened(1000);
  b.closed(2000); // up 1 s: a flapping server does not reset the count
  assert.equal(b.attempts, 2);
  b.opened(3000);
  b.closed(9000); // up 6 s
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 50);
});
