//! Room state on the real broker: get/put/delete/list/cas/incr with versions, conflicts and
//! their typed errors, state events in the log, and the subscriber's mirror of the state.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ConflictError, ServerError, StateChange, type Client } from "../../src/index.js";
import { Broker, client, roomName, until } from "../harness.js";

let broker: Broker;
let c: Client;

before(async () => {
  broker = await Broker.start();
  c = client(broker);
});
after(async () => {
  c.close();
  await broker.stop();
  broker.cleanup();
});

test("put, get, delete with versions", async () => {
  const r = c.room(roomName());
  assert.deepEqual(await r.get("topic"), { value: undefined, ver: 0 }, "absent: ver 0, no value");
  const p1 = await r.put("topic", { text: "hi", n: [1, 2] });
  assert.equal(p1.ver, 1);
  assert.equal(p1.seq, 1);
  assert.deepEqual(await r.get("topic"), { value: { text: "hi", n: [1, 2] }, ver: 1 });
  const p2 = await r.put("topic", "news");
  assert.deepEqual(p2, { seq: 2, ver: 2 });
  const d = await r.delete("topic");
  assert.deepEqual(d, { seq: 3, ver: 0 });
  assert.deepEqual(await r.get("topic"), { value: undefined, ver: 0 });
  const noop = await r.delete("topic");
  assert.deepEqual(noop, { seq: undefined, ver: 0 }, "deleting an absent key stores nothing");
  await r.publish("after");
  const h = await r.history();
  assert.deepEqual(
    h.items.map((e) => e.seq),
    [1, 2, 3, 4],
    "mutations and messages share one sequence",
  );
});

test("values of every MessagePack kind round-trip", async () => {
  const r = c.room(roomName());
  const values = [null, true, 42, -7, 2 ** 40, 1.5, "text", new Uint8Array([1, 2, 3]), [1, "a", [null]], { a: { b: [true] } }];
  for (const [i, v] of values.entries()) await r.put(`k${i}`, v);
  for (const [i, v] of values.entries()) assert.deepEqual((await r.get(`k${i}`)).value, v, `value ${i}`);
});

test("list in key order, with prefix and paging", async () => {
  const r = c.room(roomName());
  for (const k of ["user:carl", "user:ada", "user:bob", "topic", "user:dan"]) await r.put(k, k.length);
  const all = await r.list({ prefix: "user:" });
  assert.deepEqual(
    all.items.map((i) => i.key),
    ["user:ada", "user:bob", "user:carl", "user:dan"],
  );
  assert.equal(all.more, false);
  const p1 = await r.list({ prefix: "user:", limit: 2 });
  assert.deepEqual(
    p1.items.map((i) => i.key),
    ["user:ada", "user:bob"],
  );
  assert.equal(p1.more, true);
  const p2 = await r.list({ prefix: "user:", after: "user:bob", limit: 2 });
  assert.deepEqual(
    p2.items.map((i) => [i.key, i.value, i.ver]),
    [
      ["user:carl", 9, 1],
      ["user:dan", 8, 1],
    ],
  );
});

test("cas creates when absent, updates at the right version, conflicts otherwise", async () => {
  const r = c.room(roomName());
  assert.equal((await r.cas("owner", 0, "ada")).ver, 1);
  await assert.rejects(r.cas("owner", 0, "bob"), (e: unknown) => {
    assert.ok(e instanceof ConflictError, "ConflictError");
    assert.equal(e.code, 409);
    assert.equal(e.ver, 1, "carries the current version");
    assert.equal(e.retryable, true);
    return true;
  });
  assert.equal((await r.cas("owner", 1, "bob")).ver, 2);
  await assert.rejects(r.cas("owner", 1, "carl"), (e: unknown) => e instanceof ConflictError && e.ver === 2);
  assert.deepEqual(await r.get("owner"), { value: "bob", ver: 2 });
});

test("incr counts from absent, by any step; refuses non-integers and overflow", async () => {
  const r = c.room(roomName());
  assert.deepEqual(await r.incr("n"), { seq: 1, ver: 1, value: 1 });
  assert.equal((await r.incr("n", 10)).value, 11);
  assert.equal((await r.incr("n", -3)).value, 8);
  await r.put("s", "text");
  await assert.rejects(r.incr("s"), (e: unknown) => e instanceof ServerError && e.code === 422 && e.codeName === "not_integer");
  // 2^63 is about 1024 steps of 2^53: pipelined in batches, one of them must overflow.
  const step = 2 ** 53 - 1; // the largest safe integer, still written as an integer
  await assert.rejects(
    (async () => {
      for (let i = 0; i < 11; i++) await Promise.all(Array.from({ length: 100 }, () => r.incr("big", step)));
    })(),
    (e: unknown) => e instanceof ServerError && e.code === 422,
    "overflow of a signed 64-bit integer",
  );
});

test("concurrent incr from two clients: no lost update", async () => {
  const name = roomName();
  const d = client(broker);
  try {
    await Promise.all([
      ...Array.from({ length: 25 }, () => c.room(name).incr("hits")),
      ...Array.from({ length: 25 }, () => d.room(name).incr("hits")),
    ]);
    assert.deepEqual(await c.room(name).get("hits"), { value: 50, ver: 50 });
  } finally {
    d.close();
  }
});

test("state events reach subscribers; the mirror starts from a snapshot", async () => {
  const name = roomName();
  const r = c.room(name);
  await r.put("a", 1);
  await r.put("b", 2);
  const w = client(broker);
  try {
    const changes: StateChange[] = [];
    w.room(name).on("state", (s) => changes.push(s));
    await w.room(name).subscribe({ state: true });
    assert.deepEqual(Object.fromEntries(w.room(name).state), { a: { value: 1, ver: 1 }, b: { value: 2, ver: 1 } });
    await r.put("a", 10);
    await r.delete("b");
    await r.incr("c");
    await until(() => changes.length === 3, "3 state events");
    assert.deepEqual(
      changes.map((s) => [s.key, s.ver, s.value, s.deleted]),
      [
        ["a", 2, 10, false],
        ["b", 0, undefined, true],
        ["c", 1, 1, false],
      ],
    );
    assert.equal(changes[0]?.from, c.conn);
    assert.deepEqual(Object.fromEntries(w.room(name).state), { a: { value: 10, ver: 2 }, c: { value: 1, ver: 1 } });
  } finally {
    w.close();
  }
});

test("an ephemeral lock goes with its client; the next holder's seq is the larger fencing token", async () => {
  const name = roomName();
  const holder = client(broker);
  const first = await holder.room(name).cas("leader", 0, "first", { ephemeral: true });
  const r = c.room(name);
  await assert.rejects(r.cas("leader", 0, "second", { ephemeral: true }), (e: unknown) => e instanceof ConflictError);
  holder.close();
  const deadline = Date.now() + 5000;
  while ((await r.get("leader")).ver !== 0) {
    if (Date.now() > deadline) throw new Error("the lock did not go with its client");
    await new Promise((ok) => setTimeout(ok, 20));
  }
  const release = (await r.history()).items.at(-1);
  assert.ok(release instanceof StateChange && release.from === "ephemeral" && release.ver === 0, "a logged deletion");
  const second = await r.cas("leader", 0, "second", { ephemeral: true });
  assert.equal(second.ver, 1, "ver starts again: no fencing token");
  assert.ok(second.seq > first.seq, `${second.seq} > ${first.seq}`);
});
