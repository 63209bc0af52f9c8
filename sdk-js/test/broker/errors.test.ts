//! Every error path against the real broker ends in a typed error with the protocol's code:
//! 400, 401/4401, 404, 405, 406, 409 (state tests), 410, 413, 414, 422 (state tests), 429,
//! 1009, timeouts and a closed client. 500/503/507 cannot be provoked from outside; their
//! mapping is tested with a scripted socket in test/unit/client.test.ts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import WebSocket from "ws";
import {
  ClosedError,
  decode,
  encode,
  LimitError,
  Message,
  RateLimitError,
  req,
  ServerError,
  TimeoutError,
  TooLargeError,
  type Client,
  type RoomdError,
} from "../../src/index.js";
import { Broker, BrokerSuite, client, jwt, roomName, sleep, until } from "../harness.js";

const suite = new BrokerSuite();
function mk(b: Broker = suite.broker, o: Parameters<typeof client>[1] = {}): Client {
  return suite.client(o, b);
}

function isServerError(code: number, name: string) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof ServerError, `a ServerError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.codeName, name);
    assert.equal(typeof e.message, "string");
    return true;
  };
}

test("400: a text frame or a non-map is answered with err 400 and the connection stays open", async () => {
  const ws = new WebSocket(suite.broker.wsUrl, ["roomd.v1"]);
  const frames: Record<string, unknown>[] = [];
  ws.on("message", (d: Buffer) => frames.push(decode(new Uint8Array(d)) as Record<string, unknown>));
  await new Promise((r) => ws.once("open", r));
  assert.equal(ws.protocol, "roomd.v1", "the server selects the subprotocol");
  ws.send("not msgpack");
  ws.send(encode([1, 2, 3]));
  ws.send(encode({ t: "ping", id: 9 }));
  await until(() => frames.length >= 4, "hello, two errors and a pong");
  ws.close();
  assert.equal(frames[0]?.["t"], "hello");
  const errs = frames.filter((f) => f["t"] === "err");
  assert.equal(errs.length, 2);
  for (const e of errs) {
    assert.equal(e["code"], 400);
    assert.equal(e["id"], undefined, "no id: the frame could not be read");
  }
  assert.deepEqual(frames[frames.length - 1], { t: "pong", id: 9 });
});

test("version negotiation: no subprotocol gets v1; an unknown one is refused with HTTP 400", async () => {
  const plain = new WebSocket(suite.broker.wsUrl);
  const hello = await new Promise<Record<string, unknown>>((res, rej) => {
    plain.once("message", (d: Buffer) => res(decode(new Uint8Array(d)) as Record<string, unknown>));
    plain.once("error", rej);
  });
  plain.close();
  assert.equal(hello["t"], "hello");
  assert.equal(hello["v"], 1);
  const status = await new Promise<number>((res) => {
    const ws = new WebSocket(suite.broker.wsUrl, ["roomd.v9"]);
    ws.once("unexpected-response", (_req, resp) => {
      res(resp.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("open", () => res(101));
    ws.once("error", () => undefined);
  });
  assert.equal(status, 400);
});

test("unknown keys are ignored and nil reads as absent", async () => {
  const c = mk();
  const room = roomName();
  await c.room(room).publish("x");
  const pong = await c.request({ t: "ping", future: { a: 1 } }, "pong");
  assert.equal(pong.t, "pong");
  const hist = await c.request({ t: "hist", room, after: null, before: null, limit: null, shiny: true }, "hist");
  assert.ok(hist.t === "hist" && hist.items.length === 1);
});

test("404: unsub of a room not subscribed", async () => {
  await assert.rejects(mk().request(req.unsub(roomName()), "ok"), isServerError(404, "not_subscribed"));
});

test("405: an unknown request kind", async () => {
  await assert.rejects(mk().request({ t: "frobnicate", room: "x" }, "ok"), isServerError(405, "unknown_request"));
});

test("406: a missing or mistyped field", async () => {
  const c = mk();
  await assert.rejects(c.request({ t: "pub", room: roomName() }, "ack"), isServerError(406, "bad_request"));
  await assert.rejects(c.request({ t: "get", room: roomName(), key: 7 }, "val"), isServerError(406, "bad_request"));
});

test("410: subscribing twice on one connection", async () => {
  const c = mk();
  const room = roomName();
  await c.request(req.sub(room), "subbed");
  await assert.rejects(c.request(req.sub(room), "subbed"), isServerError(410, "already_subscribed"));
});

test("413: payload over the limit, refused by the server or before sending", async () => {
  const room = roomName();
  const c = mk(suite.broker, { checkLimits: false });
  await c.ready();
  const limit = c.limits?.payload ?? 0;
  await assert.rejects(c.room(room).publish(new Uint8Array(limit + 1)), (e: unknown) => {
    assert.ok(e instanceof TooLargeError);
    assert.equal(e.code, 413);
    assert.equal(e.max, limit, "the server says the limit");
    assert.equal(e.retryable, false);
    return true;
  });
  assert.equal(await c.room(room).publish(new Uint8Array(limit)), 1, "exactly the limit is fine");
  const local = mk();
  await local.ready();
  await assert.rejects(local.room(room).publish(new Uint8Array(limit + 1)), (e: unknown) => e instanceof TooLargeError && e.max === limit);
  assert.equal((await local.room(room).history()).items.length, 1, "the refused publish was not stored");
});

test("413: presence info and state value over their limits", async () => {
  const c = mk();
  await c.ready();
  const info = "x".repeat((c.limits?.info ?? 0) + 1);
  await assert.rejects(c.room(roomName()).subscribe({ info: { name: info } }), isServerError(413, "too_large"));
  const value = "v".repeat((c.limits?.value ?? 0) + 1);
  await assert.rejects(c.room(roomName()).put("k", value), isServerError(413, "too_large"));
});

test("414: a room name outside the grammar", async () => {
  const c = mk();
  await assert.rejects(c.room("has space").publish("x"), isServerError(414, "bad_room"));
  await assert.rejects(c.room("ünïcode").subscribe(), isServerError(414, "bad_room"));
  await assert.rejects(c.room("").get("k"), isServerError(414, "bad_room"));
  await assert.rejects(c.room("r".repeat(129)).who(), isServerError(414, "bad_room"));
});

test("429: too many subscriptions, too many keys", async (t) => {
  const small = await Broker.start({ config: "[limits]\nsubscriptions_per_connection = 2\nkeys_per_room = 2\n" });
  t.after(async () => {
    await small.stop();
    small.cleanup();
  });
  const c = mk(small);
  await c.room(roomName()).subscribe();
  await c.room(roomName()).subscribe();
  await assert.rejects(c.room(roomName()).subscribe(), (e: unknown) => e instanceof LimitError && e.code === 429 && e.max === 2);
  const r = c.room(roomName());
  await r.put("a", 1);
  await r.put("b", 2);
  await assert.rejects(r.put("c", 3), (e: unknown) => e instanceof LimitError && e.max === 2);
  await r.put("a", 10); // changing an existing key is fine
  c.close();
});

test("429 from a rate limit: a RateLimitError with retryAfterMs, and the publish is not stored", async (t) => {
  const limited = await Broker.start({ config: "[rate]\npublishes_per_sec = 1\npublishes_burst = 2\nstate_writes_per_sec = 1\n" });
  t.after(async () => {
    await limited.stop();
    limited.cleanup();
  });
  const c = mk(limited);
  const r = c.room(roomName());
  const results = await Promise.allSettled(["a", "b", "c"].map((s) => r.publish(s)));
  assert.deepEqual(
    results.map((x) => x.status),
    ["fulfilled", "fulfilled", "rejected"],
  );
  const e = (results[2] as PromiseRejectedResult).reason as unknown;
  assert.ok(e instanceof RateLimitError, `a RateLimitError, got ${String(e)}`);
  assert.ok(e instanceof LimitError, "still a LimitError");
  assert.equal(e.code, 429);
  assert.equal(e.codeName, "limit");
  assert.equal(e.max, 1);
  assert.equal(e.retryable, false, "the SDK does not resend it by itself");
  assert.ok(e.retryAfterMs >= 1 && e.retryAfterMs <= 1000, `retryAfterMs ${e.retryAfterMs}`);
  const page = await r.history();
  assert.deepEqual(
    page.items.map((m) => (m instanceof Message ? m.text() : "")),
    ["a", "b"],
  );
  await r.put("k", 1);
  await assert.rejects(r.put("k", 2), (x: unknown) => x instanceof RateLimitError && x.retryAfterMs > 0);
  assert.equal((await r.get("k")).value, 1);
  // After the wait named, the same publish passes.
  await sleep(e.retryAfterMs);
  assert.ok((await r.publish("c")) > 0);
});

test("1009: a frame over the frame limit closes the socket; the SDK fails that publish and reconnects", async (t) => {
  const small = await Broker.start({ config: "[websocket]\nmax_frame_bytes = 8192\n[limits]\npayload_bytes = 4096\n[outbox]\nmax_bytes = 65536\n" });
  t.after(async () => {
    await small.stop();
    small.cleanup();
  });
  const c = mk(small, { checkLimits: false });
  const closes: number[] = [];
  c.on("close", (i) => closes.push(i.code));
  const room = c.room(roomName());
  await c.ready();
  await assert.rejects(room.publish(new Uint8Array(20_000)), (e: unknown) => e instanceof TooLargeError && e.max === 8192);
  assert.deepEqual(closes, [1009]);
  assert.equal(await room.publish("still works"), 1, "reconnected, nothing else lost");
  const local = mk(small);
  await local.ready();
  await assert.rejects(local.room(roomName()).publish(new Uint8Array(5000)), (e: unknown) => e instanceof TooLargeError && e.max === 4096);
});

test("401: a server with auth refuses a missing, bad or expired token (err 401, then close 4401, no reconnect)", async (t) => {
  const secret = "test-secret-0123456789";
  const auth = await Broker.start({ config: `[auth]\njwt_secret = "${secret}"\n` });
  t.after(async () => {
    await auth.stop();
    auth.cleanup();
  });
  for (const token of [undefined, "not.a.jwt", await jwt("wrong-secret", { sub: "ada", exp: Math.floor(Date.now() / 1000) + 60 })]) {
    const c = mk(auth, token === undefined ? {} : { token });
    const errors: RoomdError[] = [];
    const closes: number[] = [];
    c.on("error", (e) => errors.push(e));
    c.on("close", (i) => closes.push(i.code));
    await assert.rejects(c.ready(), isServerError(401, "unauthorized"));
    assert.equal(c.state, "closed");
    assert.deepEqual(closes, [4401]);
    assert.equal(errors[0]?.code, 401);
    await assert.rejects(c.room("r").publish("x"), isServerError(401, "unauthorized"));
  }
  // An hour ago: beyond any clock-skew leeway the broker allows.
  const expired = mk(auth, { token: await jwt(secret, { sub: "ada", exp: Math.floor(Date.now() / 1000) - 3600 }) });
  await assert.rejects(expired.ready(), isServerError(401, "unauthorized"));
});

test("auth: a valid token is taken (user = its sub) and the token function is called on every connect", async (t) => {
  const secret = "test-secret-0123456789";
  const auth = await Broker.start({ config: `[auth]\njwt_secret = "${secret}"\n` });
  t.after(async () => {
    await auth.stop();
    auth.cleanup();
  });
  let calls = 0;
  const good = mk(auth, {
    token: async () => {
      calls++;
      return jwt(secret, { sub: "ada", exp: Math.floor(Date.now() / 1000) + 60 });
    },
    user: "mallory", // ignored with auth: the token's sub wins
  });
  await good.ready();
  assert.equal(good.hello?.user, "ada");
  const r = good.room(roomName());
  const got: (string | undefined)[] = [];
  r.on("message", (m) => got.push(m.uid));
  await r.subscribe();
  await r.publish("hi");
  await until(() => got.length === 1, "message");
  assert.deepEqual(got, ["ada"]);
  good.reconnectNow();
  await until(() => good.state === "open" && calls === 2, "token function called again on reconnect");
});

test("timeout: a broker that stops answering gives TimeoutError, then the client recovers", async (t) => {
  const b = await Broker.start();
  t.after(async () => {
    b.proc.kill("SIGCONT");
    await b.stop();
    b.cleanup();
  });
  const c = mk(b, { requestTimeout: 300 });
  await c.ready();
  b.proc.kill("SIGSTOP");
  // Signal delivery is asynchronous: wait until the kernel reports the process stopped.
  const stat = `/proc/${b.proc.pid}/stat`;
  await until(() => /^\d+ \(.*\) T/.test(readFileSync(stat, "utf8")), "the broker stopped");
  try {
    await assert.rejects(c.ping(), (e: unknown) => e instanceof TimeoutError && e.code === "timeout");
  } finally {
    b.proc.kill("SIGCONT");
  }
  await sleep(50);
  assert.ok((await c.ping()) >= 0);
});

test("closed client: every call fails with ClosedError", async () => {
  const c = mk();
  await c.ready();
  c.close();
  await assert.rejects(c.room("r").publish("x"), (e: unknown) => e instanceof ClosedError && e.code === "closed");
  await assert.rejects(c.ready(), ClosedError);
});
