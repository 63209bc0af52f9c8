//! Presence v2 in the SDK (SPEC.md 4.12), driven by a scripted socket: a per-user room keeps
//! one member per user whichever connection its `leave` names, and a counts-only room's `count`
//! events reach `room.count`. The server's side is tested against the real binary in
//! tests/presence.rs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeSocket, make, tick, useFakes } from "../fake-socket.js";

useFakes();

async function subscribed(room: string, presence: unknown[] | undefined) {
  const c = make();
  await tick();
  const s = FakeSocket.latest();
  s.accept();
  const r = c.room(room);
  const sub = r.subscribe({ presence: true });
  await tick();
  const subbed: Record<string, unknown> = { t: "subbed", id: s.last("sub")["id"] as number, room, epoch: 1, last: 0, first: 1, earliest: 1, complete: true };
  if (presence !== undefined) subbed["presence"] = presence;
  s.serverSend(subbed);
  await sub;
  return { s, r };
}

test("a per-user room keeps one member per user, left by any of its connections", async () => {
  const { s, r } = await subscribed("chat:a", [{ conn: "c1", user: "ann", info: { name: "Ann" }, conns: 2 }]);
  assert.deepEqual(r.members, [{ conn: "c1", user: "ann", info: { name: "Ann" }, conns: 2 }]);
  s.serverSend({ t: "join", room: "chat:a", conn: "c3", user: "bob", conns: 1 });
  assert.deepEqual(r.members.map((m) => m.user), ["ann", "bob"]);
  const left: string[] = [];
  r.on("leave", (m) => left.push(m.user ?? m.conn));
  // Ann's last connection is not the one her entry was listed with.
  s.serverSend({ t: "leave", room: "chat:a", conn: "c2", user: "ann" });
  assert.deepEqual(left, ["ann"]);
  assert.deepEqual(r.members.map((m) => m.user), ["bob"]);
});

test("a per-connection room still keys members by connection", async () => {
  const { s, r } = await subscribed("lobby", []);
  s.serverSend({ t: "join", room: "lobby", conn: "c1", user: "ann" });
  s.serverSend({ t: "join", room: "lobby", conn: "c2", user: "ann" });
  assert.equal(r.members.length, 2);
  s.serverSend({ t: "leave", room: "lobby", conn: "c1", user: "ann" });
  assert.deepEqual(r.members.map((m) => m.conn), ["c2"]);
});

test("a counts-only room's counts reach room.count and the count event", async () => {
  const { s, r } = await subscribed("big:a", undefined);
  const seen: number[] = [];
  r.on("count", (n) => seen.push(n.members));
  assert.equal(r.count, undefined);
  s.serverSend({ t: "count", room: "big:a", members: 3, conns: 4 });
  s.serverSend({ t: "count", room: "big:a", members: 5, conns: 7 });
  assert.deepEqual(seen, [3, 5]);
  assert.deepEqual(r.count, { members: 5, conns: 7 });
  assert.deepEqual(r.members, []);
});
