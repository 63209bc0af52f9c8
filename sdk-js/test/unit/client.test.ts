//! The client state machine, driven by a scripted socket: typed errors for every code, the
//! bounded offline queue, timeouts, resend of in-flight publishes with the same mid, and
//! the close-code families. The same behaviours are tested against the real broker in
//! test/broker/ where the broker can be made to produce them.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ClosedError,
  ConflictError,
  DisconnectedError,
  LimitError,
  QueueFullError,
  RateLimitError,
  ServerError,
  TimeoutError,
  TooLargeError,
  type ConnectionState,
} from "../../src/index.js";
import { FakeSocket, HELLO, make, tick, useFakes } from "../fake-socket.js";

useFakes();

test("dials with the subprotocol and the client id, opens on hello", async () => {
  const c = make({ user: "ada", token: "tok" });
  const states: ConnectionState[] = [c.state];
  c.on("state", (s) => states.push(s));
  await tick();
  const s = FakeSocket.latest();
  assert.deepEqual(s.protocols, ["roomd.v1"]);
  const u = new URL(s.url);
  assert.equal(u.searchParams.get("client"), c.clientId);
  assert.equal(u.searchParams.get("user"), "ada");
  assert.equal(u.searchParams.get("token"), "tok");
  s.accept();
  await c.ready();
  assert.deepEqual(states, ["connecting", "open"]);
  assert.equal(c.conn, "c1");
  assert.equal(c.limits?.payload, 1000);
});

test("err frames become typed errors with their fields", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const cases: [Promise<unknown>, number, (e: unknown) => void][] = [
    [room.cas("k", 0, 1), 409, (e) => assert.ok(e instanceof ConflictError && e.ver === 3 && e.retryable)],
    [room.put("k", "v"), 413, (e) => assert.ok(e instanceof TooLargeError && e.max === 1000 && !e.retryable)],
    [room.put("k2", "v"), 429, (e) => assert.ok(e instanceof LimitError && !(e instanceof RateLimitError) && e.max === 100)],
    [
      room.publish("fast"),
      429,
      (e) => assert.ok(e instanceof RateLimitError && e instanceof LimitError && e.retryAfterMs === 250 && e.max === 100 && !e.retryable),
    ],
    [room.incr("n"), 503, (e) => assert.ok(e instanceof ServerError && e.codeName === "unavailable" && e.retryable)],
    [room.publish("y"), 507, (e) => assert.ok(e instanceof ServerError && e.codeName === "storage" && e.retryable)],
    [room.get("k"), 599, (e) => assert.ok(e instanceof ServerError && e.codeName === "unknown" && !e.retryable)],
  ];
  await tick();
  assert.equal(s.sent.length, cases.length);
  s.sent.forEach((f, i) => {
    const [, code] = cases[i]!;
    const rate = f["t"] === "pub" && code === 429 ? { retry_after_ms: 250 } : {};
    s.serverSend({ t: "err", id: f["id"] as number, code, msg: `failed with ${code}`, ver: 3, max: code === 413 ? 1000 : 100, ...rate });
  });
  for (const [p, code, check] of cases) {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof ServerError && e.code === code, `code ${code}`);
      check(e);
      return true;
    });
  }
});

test("503 (shutting down) on a publish: it waits and goes out again on the next connection", async () => {
  const c = make();
  await tick();
  const s1 = FakeSocket.latest();
  s1.accept();
  const pub = c.room("r").publish("keep me");
  await tick();
  const first = s1.last("pub");
  s1.serverSend({ t: "err", id: first["id"] as number, code: 503, msg: "shutting down" });
  s1.serverClose(1001);
  await tick(20);
  const s2 = FakeSocket.latest();
  s2.accept();
  const again = s2.last("pub");
  assert.equal(again["mid"], first["mid"]);
  s2.serverSend({ t: "ack", id: again["id"] as number, seq: 3 });
  assert.equal(await pub, 3);
});

test("an err without id is reported as an error event", async () => {
  const c = make();
  await tick();
  FakeSocket.latest().accept();
  const errors: unknown[] = [];
  c.on("error", (e) => errors.push(e));
  FakeSocket.latest().serverSend({ t: "err", code: 400, msg: "frame is not one MessagePack map" });
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof ServerError && errors[0].code === 400 && errors[0].codeName === "malformed");
});

test("requests made while connecting wait in a bounded queue", async () => {
  const c = make({ maxQueue: 2 });
  const room = c.room("r");
  const a = room.publish("a");
  const b = room.publish("b");
  await assert.rejects(room.publish("c"), (e: unknown) => e instanceof QueueFullError && e.max === 2);
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  assert.deepEqual(
    s.sent.map((f) => f["t"]),
    ["pub", "pub"],
  );
  for (const f of s.sent) s.serverSend({ t: "ack", id: f["id"] as number, seq: f === s.sent[0] ? 1 : 2 });
  assert.deepEqual(await Promise.all([a, b]), [1, 2]);
});

test("an oversized payload is refused locally with the server's limit", async () => {
  const c = make();
  await tick();
  FakeSocket.latest().accept();
  await assert.rejects(c.room("r").publish(new Uint8Array(1001)), (e: unknown) => e instanceof TooLargeError && e.max === 1000);
  assert.equal(FakeSocket.latest().sent.length, 0, "nothing sent");
});

test("no reply within the timeout: TimeoutError", async () => {
  const c = make({ requestTimeout: 30 });
  await tick();
  FakeSocket.latest().accept();
  await assert.rejects(c.ping(), (e: unknown) => e instanceof TimeoutError && e.code === "timeout" && e.retryable);
});

test("in-flight publishes are resent with the same mid after a drop; mutations fail", async () => {
  const c = make();
  await tick();
  const s1 = FakeSocket.latest();
  s1.accept();
  const room = c.room("r");
  const pub = room.publish("hello");
  const incr = room.incr("n");
  await tick();
  const first = s1.last("pub");
  s1.serverClose(1006);
  await assert.rejects(incr, (e: unknown) => e instanceof DisconnectedError && e.code === "disconnected");
  assert.equal(c.state, "reconnecting");
  await tick(20);
  const s2 = FakeSocket.latest();
  assert.notEqual(s2, s1);
  s2.accept({ ...HELLO, conn: "c2" });
  const again = s2.last("pub");
  assert.equal(again["mid"], first["mid"], "same mid, so the server de-duplicates");
  assert.deepEqual(again["data"], first["data"]);
  s2.serverSend({ t: "ack", id: again["id"] as number, seq: 7, dup: true });
  assert.equal(await pub, 7);
});

test("4401 after err 401: closed for good with the typed error, no reconnect", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  const ready = c.ready();
  s.serverSend({ t: "err", code: 401, msg: "bad token" });
  s.serverClose(4401, "unauthorized");
  await assert.rejects(ready, (e: unknown) => e instanceof ServerError && e.code === 401);
  assert.equal(c.state, "closed");
  await tick(20);
  assert.equal(FakeSocket.all.length, 1, "did not reconnect");
  await assert.rejects(c.room("r").publish("x"), (e: unknown) => e instanceof ServerError && e.code === 401);
});

test("1001 reconnects; 1002 closes; close() rejects what waits", async () => {
  const c = make();
  await tick();
  FakeSocket.latest().accept();
  FakeSocket.latest().serverClose(1001, "shutting down");
  assert.equal(c.state, "reconnecting");
  await tick(20);
  FakeSocket.latest().accept();
  assert.equal(c.state, "open");
  FakeSocket.latest().serverClose(1002);
  assert.equal(c.state, "closed");
  const c2 = make();
  const queued = c2.room("r").publish("x");
  c2.close();
  await assert.rejects(queued, (e: unknown) => e instanceof ClosedError && e.code === "closed" && !e.retryable);
});

test("resubscribes from the last seen seq and drops what it already delivered", async () => {
  const c = make();
  await tick();
  const s1 = FakeSocket.latest();
  s1.accept();
  const room = c.room("r");
  const seen: number[] = [];
  room.on("message", (m) => seen.push(m.seq));
  const sub = room.subscribe();
  await tick();
  s1.serverSend({ t: "subbed", id: s1.last("sub")["id"] as number, room: "r", epoch: 9, last: 4, first: 5, earliest: 1, complete: true });
  assert.equal((await sub).last, 4);
  const msg = (seq: number) => ({ t: "msg", room: "r", seq, ts: 1, from: "x", data: new Uint8Array([seq]) });
  s1.serverSend(msg(5));
  s1.serverSend(msg(6));
  s1.serverClose(1006);
  await tick(20);
  const s2 = FakeSocket.latest();
  s2.accept();
  const resub = s2.last("sub");
  assert.equal(resub["since"], 6);
  s2.serverSend({ t: "subbed", id: resub["id"] as number, room: "r", epoch: 9, last: 8, first: 7, earliest: 1, complete: true });
  for (const seq of [6, 7, 8, 8, 9]) s2.serverSend(msg(seq)); // 6 and the second 8 are repeats
  assert.deepEqual(seen, [5, 6, 7, 8, 9]);
  assert.equal(room.duplicatesDropped, 2);
});

test("a changed epoch is reported as reset and the old replay skipped", async () => {
  const c = make();
  await tick();
  const s1 = FakeSocket.latest();
  s1.accept();
  const room = c.room("r");
  const resets: number[] = [];
  const seen: number[] = [];
  room.on("reset", (r) => resets.push(r.epoch));
  room.on("message", (m) => seen.push(m.seq));
  void room.subscribe();
  await tick();
  s1.serverSend({ t: "subbed", id: s1.last("sub")["id"] as number, room: "r", epoch: 1, last: 50, first: 51, earliest: 1, complete: true });
  s1.serverClose(1006);
  await tick(20);
  const s2 = FakeSocket.latest();
  s2.accept();
  s2.serverSend({ t: "subbed", id: s2.last("sub")["id"] as number, room: "r", epoch: 2, last: 3, first: 4, earliest: 1, complete: true });
  s2.serverSend({ t: "msg", room: "r", seq: 4, ts: 1, from: "x", data: new Uint8Array() });
  assert.deepEqual(resets, [2]);
  assert.deepEqual(seen, [4]);
});

test("heartbeat: a silent connection is pinged, and dropped when the pong does not come", async () => {
  const c = make({ heartbeat: true, requestTimeout: 100 });
  await tick();
  const s = FakeSocket.latest();
  s.accept({ ...HELLO, ping: 1 }); // ping interval 1 s
  await tick(1100);
  assert.equal(s.last("ping")["t"], "ping", "pinged after a silent second");
  await tick(150);
  assert.equal(c.state, "reconnecting", "no pong: the connection was given up");
  assert.ok(FakeSocket.all.length >= 1);
});

test("heartbeat: a pong keeps the connection", async () => {
  const c = make({ heartbeat: true, requestTimeout: 300 });
  await tick();
  const s = FakeSocket.latest();
  s.accept({ ...HELLO, ping: 1 });
  await tick(1100);
  s.serverSend({ t: "pong", id: s.last("ping")["id"] as number });
  await tick(400);
  assert.equal(c.state, "open");
});

test("reconnectNow while waiting out a long backoff dials at once; an incr queued meanwhile goes out once", async () => {
  const c = make({ reconnect: { baseDelay: 60_000, maxDelay: 60_000 } });
  await tick();
  FakeSocket.latest().accept();
  // Several failed attempts would make the delay long; one drop with a 60 s base does it too.
  FakeSocket.latest().serverClose(1006);
  assert.equal(c.state, "reconnecting");
  const queued = c.room("r").incr("n");
  const dialed = FakeSocket.all.length;
  await tick(20);
  assert.equal(FakeSocket.all.length, dialed, "nothing dialed while the backoff runs");
  c.reconnectNow();
  await tick();
  assert.equal(FakeSocket.all.length, dialed + 1, "dialed at once");
  const s = FakeSocket.latest();
  s.accept();
  assert.equal(c.state, "open");
  assert.equal(s.sent.filter((f) => f["t"] === "incr").length, 1, "the queued incr is sent once");
  s.serverSend({ t: "done", id: s.last("incr")["id"], seq: 1, ver: 1, value: 1 });
  assert.equal((await queued).value, 1);
});
