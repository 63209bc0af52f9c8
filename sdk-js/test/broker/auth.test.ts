//! Tokens from the SDK against the real broker: a `token` function refreshes the connection in
//! place when the server says `expiring` (no reconnect, the subscription goes on); a connection
//! whose refresh fails is closed with 4003, redials with a fresh token and resumes without
//! loss; `authenticate` with a string token; a forbidden request is a typed ForbiddenError.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CloseCode, ForbiddenError, type Client, type ConnectionState } from "../../src/index.js";
import { Broker, client, jwt, roomName, until } from "../harness.js";

const SECRET = "an-sdk-test-secret-of-32-bytes-or-more";
let broker: Broker;
const clients: Client[] = [];

before(async () => {
  broker = await Broker.start({ config: `[auth]\njwt_secret = "${SECRET}"\nrefresh_window_secs = 2\n` });
});
after(async () => {
  for (const c of clients) c.close();
  await broker.stop();
  broker.cleanup();
});

const now = (): number => Math.floor(Date.now() / 1000);
function token(sub: string, ttl: number, rooms?: unknown): Promise<string> {
  return jwt(SECRET, rooms === undefined ? { sub, exp: now() + ttl } : { sub, exp: now() + ttl, rooms });
}
function mk(o: Parameters<typeof client>[1]): Client {
  const c = client(broker, o);
  clients.push(c);
  return c;
}

test("a token function refreshes the connection before expiry: no reconnect, nothing missed", async () => {
  let calls = 0;
  const sub = mk({ token: () => { calls++; return token("ada", 3); } });
  const pub = mk({ token: () => token("bob", 3600) });
  const states: ConnectionState[] = [];
  sub.on("state", (s) => states.push(s));
  const expiring: number[] = [];
  sub.on("expiring", (exp) => expiring.push(exp));
  const room = roomName();
  const got: number[] = [];
  sub.room(room).on("message", (m) => got.push(m.seq));
  await sub.room(room).subscribe();
  const firstExp = now() + 3;
  await until(() => expiring.length === 1, "the expiring event", 5000);
  await until(() => calls === 2, "the refresh", 5000);
  // Past the first token's exp (plus a margin): still the same connection.
  while (now() <= firstExp + 1) await new Promise((r) => setTimeout(r, 200));
  for (let i = 0; i < 3; i++) await pub.room(room).publish(`m${i}`);
  await until(() => got.length === 3, "3 messages");
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(states, ["open"], "never reconnected");
});

test("a failed refresh: closed with 4003, redialed with a fresh token, resumed without loss", async () => {
  let calls = 0;
  // The second call (the in-place refresh) hands back an expired token; the third (the redial) a good one.
  const sub = mk({ token: () => { calls++; return token("ada", calls === 2 ? -10 : calls === 1 ? 3 : 3600); } });
  const pub = mk({ token: () => token("bob", 3600) });
  const closes: number[] = [];
  sub.on("close", (c) => closes.push(c.code));
  const errors: string[] = [];
  sub.on("error", (e) => errors.push(String(e.code)));
  const room = roomName();
  const got: number[] = [];
  sub.room(room).on("message", (m) => got.push(m.seq));
  await sub.room(room).subscribe();
  await pub.room(room).publish("before");
  await until(() => closes.length === 1, "the 4003 close", 8000);
  assert.equal(closes[0], CloseCode.TokenExpired);
  assert.ok(errors.includes("401"), `the refused refresh was reported: ${errors.join(",")}`);
  for (let i = 0; i < 4; i++) await pub.room(room).publish(`while away ${i}`);
  await until(() => got.length === 5, "5 messages", 8000);
  assert.deepEqual(got, [1, 2, 3, 4, 5], "every message once, in order");
  assert.equal(calls, 3);
});

test("authenticate() gives a string-token connection a fresh token", async () => {
  const c = mk({ token: await token("ada", 3) });
  const exp = await new Promise<number>((res) => c.on("expiring", res));
  assert.ok(exp >= now() - 1);
  await c.authenticate(await token("ada", 3600));
  while (now() <= exp + 1) await new Promise((r) => setTimeout(r, 200));
  assert.equal(c.state, "open");
  await assert.rejects(c.authenticate(await token("eve", 3600)), (e: unknown) => (e as { code?: number }).code === 401);
});

test("a request the token does not allow rejects with ForbiddenError", async () => {
  const c = mk({ token: () => token("ada", 3600, [{ match: "ro:*", allow: ["sub", "hist"] }]) });
  const room = `ro:${roomName()}`;
  await c.room(room).subscribe();
  await assert.rejects(c.room(room).publish("no"), (e: unknown) => e instanceof ForbiddenError && !e.retryable && e.code === 403);
  await assert.rejects(c.room("elsewhere").subscribe(), ForbiddenError);
});
