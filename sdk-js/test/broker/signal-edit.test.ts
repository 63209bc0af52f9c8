//! Ephemeral signals and edits / deletions of one's own messages through the SDK, on the real
//! broker: `room.signal()` reaches the other subscribers as `signal` events without moving
//! `lastSeq`; `room.edit()` and `room.deleteMessage()` are the author's only, arrive as
//! `edited` / `deleted` in seq order, and history serves the edited message.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DisconnectedError, Edit, ServerError, type Client, type Deletion, type Message, type Signal } from "../../src/index.js";
import { Broker, client, roomName, sleep, until } from "../harness.js";

let broker: Broker;
const clients: Client[] = [];
function mk(user?: string): Client {
  const c = client(broker, user === undefined ? {} : { user });
  clients.push(c);
  return c;
}

before(async () => {
  broker = await Broker.start();
});
after(async () => {
  for (const c of clients) c.close();
  await broker.stop();
  broker.cleanup();
});

test("a signal reaches the other subscribers, live only, and never moves lastSeq", async () => {
  const room = roomName();
  const ada = mk("ada");
  const bob = mk("bob");
  const bobSignals: Signal[] = [];
  const adaSignals: Signal[] = [];
  bob.room(room).on("signal", (s) => bobSignals.push(s));
  ada.room(room).on("signal", (s) => adaSignals.push(s));
  await ada.room(room).subscribe();
  await bob.room(room).subscribe();
  assert.equal(await ada.room(room).publish("hello"), 1);
  await until(() => bob.room(room).lastSeq === 1, "bob saw seq 1");

  await ada.room(room).signalJSON({ typing: true });
  await until(() => bobSignals.length === 1, "bob got the signal");
  const s = bobSignals[0]!;
  assert.deepEqual(s.json(), { typing: true });
  assert.equal(s.uid, "ada");
  assert.equal(s.from, ada.hello?.conn);
  assert.equal(s.room, room);
  assert.equal(bob.room(room).lastSeq, 1, "a signal is no resume position");
  await sleep(200);
  assert.equal(adaSignals.length, 0, "not echoed to its sender");

  // Not stored: the next publish is seq 2 and history holds two entries.
  assert.equal(await bob.room(room).publish("world"), 2);
  const page = await bob.room(room).history({ after: 0 });
  assert.deepEqual(
    page.items.map((m) => m.seq),
    [1, 2],
  );
  // A late subscriber replays the log only.
  const late = mk();
  const lateSignals: Signal[] = [];
  const lateMsgs: Message[] = [];
  late.room(room).on("signal", (x) => lateSignals.push(x));
  late.room(room).on("message", (m) => lateMsgs.push(m));
  await late.room(room).subscribe({ since: 0 });
  await until(() => lateMsgs.length === 2, "replayed two");
  assert.equal(lateSignals.length, 0);

  // Size checked before sending; offline it is refused, not queued.
  const limit = ada.limits?.payload ?? 0;
  await assert.rejects(ada.room(room).signal(new Uint8Array(limit + 1)), { name: "TooLargeError" });
  const off = mk();
  off.close();
  await assert.rejects(off.room(room).signal("x"), (e: unknown) => e instanceof Error);
  const never = client("ws://127.0.0.1:1/ws", { reconnect: false });
  clients.push(never);
  await assert.rejects(never.room(room).signal("x"), (e: unknown) => e instanceof DisconnectedError);
});

test("the author edits and deletes; everyone gets edited and deleted in order; history serves the edit", async () => {
  const room = roomName();
  const ada = mk("ada");
  const bob = mk("bob");
  const events: string[] = [];
  const edits: Edit[] = [];
  const deletions: Deletion[] = [];
  bob.room(room).on("message", (m) => events.push(`message ${m.seq} ${m.text()}`));
  bob.room(room).on("edited", (e) => {
    edits.push(e);
    events.push(`edited ${e.target} ${e.text()} @${e.seq}`);
  });
  bob.room(room).on("deleted", (d) => {
    deletions.push(d);
    events.push(`deleted ${d.target} @${d.seq}`);
  });
  await bob.room(room).subscribe();
  const seq = await ada.room(room).publish("helo");
  assert.equal(await ada.room(room).edit(seq, "hello"), 2);

  // Only the author: bob gets 423 not_author for both.
  for (const attempt of [bob.room(room).edit(seq, "mine"), bob.room(room).deleteMessage(seq)]) {
    await assert.rejects(attempt, (e: unknown) => e instanceof ServerError && e.code === 423 && e.codeName === "not_author");
  }
  await until(() => edits.length === 1, "bob saw the edit");
  assert.equal(edits[0]!.uid, "ada");
  assert.equal(bob.room(room).lastSeq, 2, "an edit is a log entry");

  // History: the message reads edited, the edit entry is an Edit.
  const page = await bob.room(room).history({ after: 0 });
  const [msg, edit] = page.items;
  assert.ok(msg?.kind === "message");
  assert.equal(msg.text(), "hello");
  assert.equal(msg.edited, 2);
  assert.ok(edit instanceof Edit);
  assert.equal(edit.target, seq);
  assert.equal(edit.superseded, undefined);

  // Deleting: `deleted`, a repeat is a duplicate; the edit entry is superseded in history.
  assert.deepEqual(await ada.room(room).deleteMessage(seq), { seq: 3, dup: false });
  assert.deepEqual(await ada.room(room).deleteMessage(seq), { seq: 3, dup: true });
  await until(() => deletions.length === 1, "bob saw the deletion");
  assert.deepEqual(events, [`message 1 helo`, `edited 1 hello @2`, `deleted 1 @3`]);
  await assert.rejects(ada.room(room).edit(seq, "again"), (e: unknown) => e instanceof ServerError && e.code === 406);
  const after = await bob.room(room).history({ after: 0 });
  const [gone, superseded] = after.items;
  assert.ok(gone?.kind === "message" && gone.deleted === 3 && gone.data.length === 0);
  assert.ok(superseded instanceof Edit && superseded.superseded === 3 && superseded.data.length === 0);

  // A subscriber replaying from the start sees the message deleted and no edit event (the
  // superseded edit is skipped), then the deletion.
  const late = mk();
  const lateEvents: string[] = [];
  late.room(room).on("message", (m) => lateEvents.push(`message ${m.seq} deleted=${String(m.deleted)}`));
  late.room(room).on("edited", (e) => lateEvents.push(`edited ${e.seq}`));
  late.room(room).on("deleted", (d) => lateEvents.push(`deleted ${d.seq}`));
  await late.room(room).subscribe({ since: 0 });
  await until(() => late.room(room).lastSeq === 3, "replayed to 3");
  assert.deepEqual(lateEvents, ["message 1 deleted=3", "deleted 3"]);
});
