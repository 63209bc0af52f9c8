//! Two SDK clients on the real broker: publish returns the seq, subscribers get every message
//! once and in order, history pages both ways, presence reports join/leave/who.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Client, Member, Message } from "../../src/index.js";
import { BrokerSuite, client, roomName, until } from "../harness.js";

const suite = new BrokerSuite();
function mk(o: Parameters<typeof client>[1] = {}): Client {
  return suite.client(o);
}

test("hello: connection opens with the server's limits", async () => {
  const c = mk();
  const states: string[] = [c.state];
  c.on("state", (s) => states.push(s));
  await c.ready();
  assert.deepEqual(states, ["connecting", "open"]);
  assert.equal(c.hello?.v, 1);
  assert.match(c.hello?.server ?? "", /^roomd\//);
  assert.ok((c.limits?.payload ?? 0) > 0 && (c.limits?.page ?? 0) > 0);
  assert.ok((await c.ping()) >= 0);
  c.close();
  assert.equal(c.state, "closed");
});

test("publish resolves with the seq; a subscriber receives every message in order", async () => {
  const room = roomName();
  const a = mk();
  const b = mk();
  const got: Message[] = [];
  a.room(room).on("message", (m) => got.push(m));
  const sub = await a.room(room).subscribe();
  assert.equal(sub.last, 0, "a new room has an empty log");
  const seqs = await Promise.all(Array.from({ length: 40 }, (_, i) => b.room(room).publish(`m${i}`)));
  assert.deepEqual(
    [...seqs].sort((x, y) => x - y),
    Array.from({ length: 40 }, (_, i) => i + 1),
    "seqs are 1..40 without holes",
  );
  await until(() => got.length === 40, "40 messages");
  assert.deepEqual(
    got.map((m) => m.seq),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  // Per-publisher order is kept: the i-th publish got the i-th seq.
  assert.deepEqual(seqs, Array.from({ length: 40 }, (_, i) => i + 1));
  assert.deepEqual(
    got.map((m) => m.text()),
    Array.from({ length: 40 }, (_, i) => `m${i}`),
  );
  assert.equal(got[0]?.from, b.conn);
  assert.ok(Math.abs((got[0]?.ts ?? 0) - Date.now()) < 60_000, "ts is a unix time in ms");
});

test("payload helpers: bytes, text and JSON round-trip", async () => {
  const room = roomName();
  const a = mk();
  const got: Message[] = [];
  a.room(room).on("message", (m) => got.push(m));
  await a.room(room).subscribe();
  await a.room(room).publish(new Uint8Array([0, 255, 7]));
  await a.room(room).publish("héllo ✓");
  await a.room(room).publishJSON({ text: "hi", n: [1, 2] });
  await a.room(room).publish(new Uint8Array());
  await until(() => got.length === 4, "4 messages");
  assert.deepEqual([...got[0]!.data], [0, 255, 7]);
  assert.equal(got[1]!.text(), "héllo ✓");
  assert.deepEqual(got[2]!.json(), { text: "hi", n: [1, 2] });
  assert.equal(got[3]!.data.length, 0);
});

test("subscribe with since replays, then goes live with no gap or duplicate", async () => {
  const room = roomName();
  const p = mk();
  for (let i = 1; i <= 5; i++) await p.room(room).publish(`x${i}`);
  const s = mk();
  const got: number[] = [];
  s.room(room).on("message", (m) => got.push(m.seq));
  const sub = await s.room(room).subscribe({ since: 2 });
  assert.equal(sub.last, 5);
  assert.ok(sub.complete);
  await p.room(room).publish("x6");
  await until(() => got.length === 4, "replay and live");
  assert.deepEqual(got, [3, 4, 5, 6]);
});

test("history pages backward and forward", async () => {
  const room = roomName();
  const c = mk();
  for (let i = 1; i <= 25; i++) await c.room(room).publish(`h${i}`);
  const newest = await c.room(room).history({ limit: 10 });
  assert.deepEqual(
    newest.items.map((e) => e.seq),
    [16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
  );
  assert.equal(newest.more, true);
  const older = await c.room(room).history({ before: 16, limit: 10 });
  assert.deepEqual(older.items[0]?.seq, 6);
  assert.equal(older.more, true);
  const oldest = await c.room(room).history({ before: 6, limit: 10 });
  assert.deepEqual(
    oldest.items.map((e) => e.seq),
    [1, 2, 3, 4, 5],
  );
  assert.equal(oldest.more, false);
  const fwd = await c.room(room).history({ after: 20 });
  assert.deepEqual(
    fwd.items.map((e) => e.seq),
    [21, 22, 23, 24, 25],
  );
  assert.equal(fwd.more, false);
  const first = fwd.items[0];
  assert.ok(first?.kind === "message" && first.text() === "h21");
});

test("presence: join with info, who, leave on unsubscribe and on disconnect", async () => {
  const room = roomName();
  const watcher = mk();
  const joins: Member[] = [];
  const leaves: Member[] = [];
  const r = watcher.room(room);
  r.on("join", (m) => joins.push(m));
  r.on("leave", (m) => leaves.push(m));
  const sub = await r.subscribe({ presence: true });
  assert.ok(sub.epoch > 0);
  const bob = mk({ user: "bob" });
  await bob.room(room).subscribe({ info: { name: "Bob" } });
  await until(() => joins.length === 1, "join");
  assert.equal(joins[0]?.conn, bob.conn);
  assert.equal(joins[0]?.user, "bob");
  assert.deepEqual(joins[0]?.info, { name: "Bob" });
  assert.deepEqual(
    r.members.map((m) => m.conn),
    [bob.conn],
  );
  const who = await watcher.room(room).who();
  assert.deepEqual(
    who.map((m) => m.conn),
    [bob.conn],
  );
  await bob.room(room).unsubscribe();
  await until(() => leaves.length === 1, "leave on unsubscribe");
  assert.equal(leaves[0]?.conn, joins[0]?.conn);
  assert.deepEqual(r.members, []);
  const carl = mk();
  await carl.room(room).subscribe({ info: { name: "Carl" } });
  await until(() => joins.length === 2, "second join");
  const carlConn = carl.conn;
  carl.close();
  await until(() => leaves.length === 2, "leave on disconnect");
  assert.equal(leaves[1]?.conn, carlConn);
});

test("the presence list of a new subscriber includes who is already here", async () => {
  const room = roomName();
  const ada = mk();
  await ada.room(room).subscribe({ info: { name: "Ada" }, presence: true });
  const ben = mk();
  await ben.room(room).subscribe({ info: { name: "Ben" }, presence: true });
  const names = ben
    .room(room)
    .members.map((m) => (m.info as { name: string }).name)
    .sort();
  assert.deepEqual(names, ["Ada", "Ben"]);
});

test("unsubscribe stops events", async () => {
  const room = roomName();
  const a = mk();
  const b = mk();
  const got: number[] = [];
  a.room(room).on("message", (m) => got.push(m.seq));
  await a.room(room).subscribe();
  await b.room(room).publish("one");
  await until(() => got.length === 1, "first");
  await a.room(room).unsubscribe();
  await b.room(room).publish("two");
  await b.room(room).publish("three");
  // A subscribed third client proves the broker delivered; a must still have only one.
  const c = mk();
  const cGot: number[] = [];
  c.room(room).on("message", (m) => cGot.push(m.seq));
  await c.room(room).subscribe({ since: 0 });
  await until(() => cGot.length === 3, "third client sees all");
  assert.deepEqual(got, [1]);
});
