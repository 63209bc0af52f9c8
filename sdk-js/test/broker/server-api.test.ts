//! The SDK beside the server API on the real broker: a backend's message reads back with
//! `value()`, a deletion reaches subscribers as a `deleted` event and history as a stub, a
//! user removed from a room gets `unsubscribed` (and is not resubscribed), and a disconnected
//! user's client closes for good (4403) or reconnects (4004).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CloseCode, type Deletion, type Message } from "../../src/index.js";
import { API_CONFIG, api, Broker, client, roomName, until } from "../harness.js";

let broker: Broker;

before(async () => {
  broker = await Broker.start({ config: API_CONFIG });
});
after(async () => {
  await broker.stop();
  broker.cleanup();
});

test("a backend's data reads back with value(), in order with the SDK's publishes", async () => {
  const c = client(broker);
  const name = roomName();
  const r = c.room(name);
  const got: Message[] = [];
  r.on("message", (m) => got.push(m));
  await r.subscribe();
  await r.publishValue({ text: "from the sdk", n: 1 });
  const posted = await api(broker, "POST", `/rooms/${name}/messages`, { data: { text: "from the backend", n: 2 } });
  assert.equal(posted["seq"], 2);
  await until(() => got.length === 2, "both messages");
  assert.deepEqual(got.map((m) => m.value()), [{ text: "from the sdk", n: 1 }, { text: "from the backend", n: 2 }]);
  assert.equal(got[1]?.from, "api:backend");
  // The API reads the SDK's MessagePack publish back as the same value.
  const h = await api(broker, "GET", `/rooms/${name}/messages`);
  assert.deepEqual((h["items"] as { data: unknown }[])[0]?.data, { text: "from the sdk", n: 1 });
  c.close();
});

test("a deletion through the API reaches subscribers, history and a late subscriber", async () => {
  const c = client(broker);
  const name = roomName();
  const r = c.room(name);
  const deletions: Deletion[] = [];
  r.on("deleted", (d) => deletions.push(d));
  await r.subscribe();
  await r.publish("keep");
  const secret = await r.publish("secret");
  const del = await api(broker, "DELETE", `/rooms/${name}/messages/${secret}`);
  assert.deepEqual(del, { seq: 3, dup: false });
  await until(() => deletions.length === 1, "the deleted event");
  assert.equal(deletions[0]?.target, secret);
  assert.equal(deletions[0]?.seq, 3);
  const h = await r.history();
  const stub = h.items.find((e) => e.seq === secret) as Message;
  assert.equal(stub.deleted, 3);
  assert.equal(stub.data.length, 0);

  const lateClient = client(broker);
  const late = lateClient.room(name);
  const replayed: (Message | Deletion)[] = [];
  late.on("message", (m) => replayed.push(m));
  late.on("deleted", (d) => replayed.push(d));
  await late.subscribe({ since: 0 });
  await until(() => replayed.length === 3, "the replay");
  assert.deepEqual(replayed.map((e) => [e.kind, e.seq]), [["message", 1], ["message", 2], ["deletion", 3]]);
  assert.equal((replayed[1] as Message).deleted, 3);
  c.close();
  lateClient.close();
});

test("a user removed from a room gets unsubscribed and stays out after a reconnect", async () => {
  const c = client(broker, { user: "mallory" });
  const name = roomName();
  const r = c.room(name);
  const other = c.room(roomName());
  let removed = 0;
  r.on("unsubscribed", () => removed++);
  await r.subscribe();
  await other.subscribe();
  const out = await api(broker, "POST", `/rooms/${name}/users/mallory/unsubscribe`);
  assert.deepEqual(out, { subscriptions: 1 });
  await until(() => removed === 1, "unsubscribed");
  assert.equal(r.subscribed, false);
  assert.equal(other.subscribed, true);
  // A reconnect resubscribes the other room only.
  await api(broker, "POST", "/users/mallory/disconnect", { reconnect: true });
  await until(() => c.state === "open" && other.subscriptionState === "subscribed", "reconnected");
  const info = await api(broker, "GET", `/rooms/${name}`);
  assert.equal(info["subscribers"], 0);
  c.close();
});

test("a disconnected user's client closes for good with 4403", async () => {
  const c = client(broker, { user: "eve" });
  const closes: { code: number; reconnect: boolean }[] = [];
  c.on("close", (e) => closes.push(e));
  await c.room(roomName()).subscribe();
  const out = await api(broker, "POST", "/users/eve/disconnect");
  assert.deepEqual(out, { connections: 1 });
  await until(() => c.state === "closed", "closed");
  assert.deepEqual(closes.map((e) => [e.code, e.reconnect]), [[CloseCode.Removed, false]]);
});
