//! Deleted messages (`del` entries, `msg.deleted`), subscriptions the server ends (`unsubbed`),
//! and the application's close codes (4004 reconnects, 4403 does not), driven by a scripted
//! socket. Against the real broker these come with the server API that makes them happen.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Client,
  ClosedError,
  CloseCode,
  Deletion,
  Message,
  type Room,
  type UnsubscribedInfo,
} from "../../src/index.js";
import { FakeSocket, make, tick, useFakes } from "../fake-socket.js";

useFakes();

const msg = (seq: number, deleted?: number) => ({
  t: "msg",
  room: "r",
  seq,
  ts: 100 + seq,
  from: "c9",
  uid: "ann",
  data: deleted === undefined ? new Uint8Array([seq]) : new Uint8Array(),
  ...(deleted === undefined ? {} : { deleted }),
});
const del = (seq: number, target: number) => ({ t: "del", room: "r", seq, ts: 200 + seq, from: "c7", uid: "mod", target });

async function subscribed(c: Client, last = 0): Promise<{ room: Room; s: FakeSocket }> {
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const p = room.subscribe();
  s.serverSend({ t: "subbed", id: s.last("sub")["id"] as number, room: "r", epoch: 1, last, first: last + 1, earliest: 1, complete: true });
  await p;
  return { room, s };
}

test("a del entry is a `deleted` event in seq order; a replayed stub is a message with `deleted`", async () => {
  const c = make();
  const { room, s } = await subscribed(c);
  const seen: string[] = [];
  const messages: Message[] = [];
  room.on("message", (m) => {
    messages.push(m);
    seen.push(`msg ${m.seq}`);
  });
  room.on("deleted", (d) => {
    assert.ok(d instanceof Deletion);
    assert.equal(d.kind, "deletion");
    assert.deepEqual([d.seq, d.ts, d.from, d.uid], [d.seq, 200 + d.seq, "c7", "mod"]);
    seen.push(`del ${d.seq} of ${d.target}`);
  });
  s.serverSend(msg(1));
  s.serverSend(msg(2, 3)); // a replay that starts after the deletion: the stub
  s.serverSend(del(3, 2));
  s.serverSend(del(3, 2)); // a repeat: dropped like any entry already seen
  s.serverSend(del(4, 1));
  assert.deepEqual(seen, ["msg 1", "msg 2", "del 3 of 2", "del 4 of 1"]);
  assert.equal(room.lastSeq, 4);
  assert.equal(room.duplicatesDropped, 1);
  assert.equal(messages[0]?.deleted, undefined);
  assert.equal(messages[1]?.deleted, 3);
  assert.equal(messages[1]?.data.length, 0);
  assert.deepEqual([messages[1]?.ts, messages[1]?.uid], [102, "ann"], "the stub keeps its time and author");
});

test("history pages hold deletions and deleted messages", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const page = c.room("r").history({ after: 0 });
  await tick();
  s.serverSend({ t: "hist", id: s.last("hist")["id"] as number, room: "r", items: [msg(1, 2), del(2, 1)], more: false });
  const { items } = await page;
  assert.equal(items.length, 2);
  const [m, d] = items;
  assert.ok(m instanceof Message && m.deleted === 2);
  assert.ok(d instanceof Deletion && d.target === 1 && d.seq === 2);
});

test("unsubbed ends the subscription with a reason, and it is not resubscribed after a reconnect", async () => {
  const c = make();
  const { room, s } = await subscribed(c, 5);
  const ended: UnsubscribedInfo[] = [];
  const states: string[] = [];
  room.on("unsubscribed", (i) => ended.push(i));
  room.on("subscriptionState", (to) => states.push(to));
  s.serverSend({ t: "unsubbed", room: "r" });
  assert.deepEqual(ended, [{ reason: "removed" }]);
  assert.deepEqual(states, ["unsubscribed"]);
  assert.equal(room.subscribed, false);
  // Nothing more of the room is delivered.
  let messages = 0;
  room.on("message", () => messages++);
  s.serverSend(msg(6));
  assert.equal(messages, 0);

  s.serverClose(1006);
  await tick(20);
  const s2 = FakeSocket.latest();
  assert.notEqual(s2, s);
  s2.accept();
  await tick();
  assert.equal(s2.sent.filter((f) => f["t"] === "sub").length, 0, "no sub after the reconnect");

  // The app may subscribe again on purpose.
  const again = room.subscribe();
  s2.serverSend({ t: "subbed", id: s2.last("sub")["id"] as number, room: "r", epoch: 1, last: 6, first: 7, earliest: 1, complete: true });
  assert.equal((await again).last, 6);
  assert.equal(s2.last("sub")["since"], undefined, "starts live, as after unsubscribe()");
});

test("unsubbed for a subscription the client is replacing (waiting) is ignored", async () => {
  const c = make();
  const { room, s } = await subscribed(c);
  const ended: UnsubscribedInfo[] = [];
  room.on("unsubscribed", (i) => ended.push(i));
  const unsub = room.unsubscribe();
  const resub = room.subscribe(); // waits for the unsub's reply
  assert.equal(room.subscriptionState, "waiting");
  s.serverSend({ t: "unsubbed", room: "r" });
  s.serverSend({ t: "err", id: s.last("unsub")["id"] as number, code: 404, msg: "not subscribed" });
  await unsub;
  await tick();
  s.serverSend({ t: "subbed", id: s.last("sub")["id"] as number, room: "r", epoch: 1, last: 0, first: 1, earliest: 1, complete: true });
  await resub;
  assert.equal(room.subscriptionState, "subscribed");
  assert.deepEqual(ended, []);
});

test("close 4403 (removed) closes for good; 4004 (disconnected) reconnects", async () => {
  assert.equal(CloseCode.Removed, 4403);
  assert.equal(CloseCode.Disconnected, 4004);
  const c = make();
  await tick();
  FakeSocket.latest().accept();
  FakeSocket.latest().serverClose(4004, "disconnected by the application");
  assert.equal(c.state, "reconnecting");
  await tick(20);
  assert.equal(FakeSocket.all.length, 2, "reconnected");
  FakeSocket.latest().accept();
  assert.equal(c.state, "open");
  const closes: { code: number; reconnect: boolean }[] = [];
  c.on("close", (i) => closes.push({ code: i.code, reconnect: i.reconnect }));
  FakeSocket.latest().serverClose(4403, "removed by the application: do not reconnect");
  assert.equal(c.state, "closed");
  assert.deepEqual(closes, [{ code: 4403, reconnect: false }]);
  await tick(20);
  assert.equal(FakeSocket.all.length, 2, "did not reconnect");
  await assert.rejects(c.room("r").publish("x"), (e: unknown) => e instanceof ClosedError && e.code === "closed");
});
