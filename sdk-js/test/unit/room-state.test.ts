//! A room's subscription state machine (`room.subscriptionState` and its `subscriptionState`
//! event), driven by a scripted socket: every transition, and that the frames on the wire are
//! the ones the room sent before it had a state (a `sub` only while open, an `unsub` only for a
//! `sub` that went out).
import assert from "node:assert/strict";
import { test } from "node:test";
import { LimitError, type Room, type SubscriptionState } from "../../src/index.js";
import { FakeSocket, make, tick, useFakes } from "../fake-socket.js";

useFakes();

/** Every transition of `room` as "from>to", starting from its current state. */
function record(room: Room): string[] {
  const seen: string[] = [room.subscriptionState];
  room.on("subscriptionState", (to: SubscriptionState, from: SubscriptionState) => seen.push(`${from}>${to}`));
  return seen;
}

function subbed(s: FakeSocket, last = 0, epoch = 1): void {
  s.serverSend({ t: "subbed", id: s.last("sub")["id"] as number, room: "r", epoch, last, first: last + 1, earliest: 1, complete: true });
}

const count = (s: FakeSocket, t: string): number => s.sent.filter((f) => f["t"] === t).length;

test("subscribe while open: unsubscribed → subscribing → subscribed", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const seen = record(room);
  assert.equal(room.subscribed, false);
  const p = room.subscribe();
  assert.equal(room.subscriptionState, "subscribing");
  assert.equal(room.subscribed, true);
  assert.equal(count(s, "sub"), 1);
  subbed(s, 4);
  assert.equal(room.subscriptionState, "subscribed");
  assert.equal((await p).last, 4);
  assert.deepEqual(seen, ["unsubscribed", "unsubscribed>subscribing", "subscribing>subscribed"]);
  // Subscribing again while subscribed changes nothing and sends nothing.
  assert.equal((await room.subscribe()).last, 4);
  assert.equal(count(s, "sub"), 1);
  assert.equal(seen.length, 3);
});

test("subscribe before the connection opens: waiting, then subscribing once it opens", async () => {
  const c = make();
  const room = c.room("r");
  const seen = record(room);
  const p = room.subscribe();
  assert.equal(room.subscriptionState, "waiting");
  await tick();
  const s = FakeSocket.latest();
  assert.equal(count(s, "sub"), 0);
  s.accept();
  assert.equal(room.subscriptionState, "subscribing");
  assert.equal(count(s, "sub"), 1);
  subbed(s);
  await p;
  assert.deepEqual(seen, ["unsubscribed", "unsubscribed>waiting", "waiting>subscribing", "subscribing>subscribed"]);
});

test("a lost connection: subscribed → waiting → resubscribing → subscribed, resuming from lastSeq", async () => {
  const c = make();
  await tick();
  const s1 = FakeSocket.latest();
  s1.accept();
  const room = c.room("r");
  const p = room.subscribe();
  subbed(s1, 4);
  await p;
  s1.serverSend({ t: "msg", room: "r", seq: 5, ts: 1, from: "x", data: new Uint8Array([5]) });
  const seen = record(room);
  const resubscribed: number[] = [];
  room.on("subscribed", (sub) => resubscribed.push(sub.last));
  s1.serverClose(1006);
  assert.equal(room.subscriptionState, "waiting");
  assert.equal(room.subscribed, true, "still wanted while disconnected");
  await tick(20);
  const s2 = FakeSocket.latest();
  s2.accept();
  assert.equal(room.subscriptionState, "resubscribing");
  assert.equal(s2.last("sub")["since"], 5);
  subbed(s2, 7);
  assert.equal(room.subscriptionState, "subscribed");
  assert.deepEqual(resubscribed, [7]);
  assert.deepEqual(seen, ["subscribed", "subscribed>waiting", "waiting>resubscribing", "resubscribing>subscribed"]);
});

test("entries arrive only while subscribed", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const seen: number[] = [];
  room.on("message", (m) => seen.push(m.seq));
  const msg = (seq: number) => ({ t: "msg", room: "r", seq, ts: 1, from: "x", data: new Uint8Array([seq]) });
  s.serverSend(msg(1)); // unsubscribed
  const p = room.subscribe();
  s.serverSend(msg(2)); // subscribing
  subbed(s, 2);
  s.serverSend(msg(3)); // subscribed
  await p;
  const done = room.unsubscribe();
  s.serverSend(msg(4)); // unsubscribed again
  s.serverSend({ t: "ok", id: s.last("unsub")["id"] as number });
  await done;
  assert.deepEqual(seen, [3]);
});

test("unsubscribe: an unsub goes out only for a sub that did; a later subscribe starts afresh", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const p = room.subscribe();
  subbed(s, 4);
  await p;
  const seen = record(room);
  const done = room.unsubscribe();
  assert.equal(room.subscriptionState, "unsubscribed");
  assert.equal(room.subscribed, false);
  assert.equal(count(s, "unsub"), 1);
  s.serverSend({ t: "ok", id: s.last("unsub")["id"] as number });
  await done;
  // Subscribed again, this is a first subscription (not a resumption).
  const p2 = room.subscribe();
  assert.equal(room.subscriptionState, "subscribing");
  assert.equal(s.last("sub")["since"], undefined);
  subbed(s, 6);
  await p2;
  assert.deepEqual(seen, ["subscribed", "subscribed>unsubscribed", "unsubscribed>subscribing", "subscribing>subscribed"]);

  // While waiting for the connection nothing was sent, so unsubscribing sends nothing.
  s.serverClose(1006);
  assert.equal(room.subscriptionState, "waiting");
  await room.unsubscribe();
  assert.equal(room.subscriptionState, "unsubscribed");
  await tick(20);
  FakeSocket.latest().accept();
  assert.equal(count(FakeSocket.latest(), "sub"), 0);
  assert.equal(count(FakeSocket.latest(), "unsub"), 0);
});

test("subscribe while an unsub is being answered: waiting until the ok, then subscribing", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const p = room.subscribe();
  subbed(s);
  await p;
  const seen = record(room);
  const done = room.unsubscribe();
  const p2 = room.subscribe();
  assert.equal(room.subscriptionState, "waiting");
  assert.equal(count(s, "sub"), 1, "the new sub waits behind the unsub");
  s.serverSend({ t: "ok", id: s.last("unsub")["id"] as number });
  await done;
  assert.equal(room.subscriptionState, "subscribing");
  assert.equal(count(s, "sub"), 2);
  subbed(s);
  await p2;
  assert.deepEqual(seen, ["subscribed", "subscribed>unsubscribed", "unsubscribed>waiting", "waiting>subscribing", "subscribing>subscribed"]);
});

test("503 on sub: waiting, retried after a second", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const seen = record(room);
  const p = room.subscribe();
  s.serverSend({ t: "err", id: s.last("sub")["id"] as number, code: 503, msg: "shutting down" });
  assert.equal(room.subscriptionState, "waiting");
  await tick(1100);
  assert.equal(room.subscriptionState, "subscribing");
  assert.equal(count(s, "sub"), 2);
  subbed(s);
  await p;
  assert.deepEqual(seen, ["unsubscribed", "unsubscribed>subscribing", "subscribing>waiting", "waiting>subscribing", "subscribing>subscribed"]);
});

test("refused for good (429): unsubscribed, with an error event and the promise rejected", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const seen = record(room);
  const errors: unknown[] = [];
  room.on("error", (e) => errors.push(e));
  const p = room.subscribe();
  s.serverSend({ t: "err", id: s.last("sub")["id"] as number, code: 429, msg: "too many subscriptions", max: 10 });
  await assert.rejects(p, (e: unknown) => e instanceof LimitError);
  assert.equal(room.subscriptionState, "unsubscribed");
  assert.equal(room.subscribed, false);
  assert.equal(errors.length, 1);
  assert.deepEqual(seen, ["unsubscribed", "unsubscribed>subscribing", "subscribing>unsubscribed"]);
  // A new subscribe after a refusal is a first subscription again.
  void room.subscribe().catch(() => undefined);
  assert.equal(room.subscriptionState, "subscribing");
});

test("the client closing: a subscribed room is left waiting (still wanted), a pending one is refused", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const done = c.room("r");
  const p = done.subscribe();
  subbed(s);
  await p;
  const pending = c.room("p");
  const q = pending.subscribe();
  assert.equal(pending.subscriptionState, "subscribing");
  c.close();
  assert.equal(done.subscriptionState, "waiting");
  assert.equal(done.subscribed, true);
  await assert.rejects(q);
  assert.equal(pending.subscriptionState, "unsubscribed");
});

test("a handler that unsubscribes on subscribed: nothing of the room is delivered after", async () => {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const room = c.room("r");
  const events: string[] = [];
  room.on("subscribed", () => events.push("subscribed"));
  room.on("presence", () => events.push("presence"));
  room.on("subscriptionState", (to) => {
    events.push(to);
    if (to === "subscribed") void room.unsubscribe();
  });
  const p = room.subscribe({ presence: true });
  s.serverSend({ t: "subbed", id: s.last("sub")["id"] as number, room: "r", epoch: 1, last: 0, first: 1, earliest: 1, complete: true, presence: [] });
  await assert.rejects(p);
  assert.deepEqual(events, ["subscribing", "subscribed", "unsubscribed"]);
  assert.equal(count(s, "unsub"), 1);
});
