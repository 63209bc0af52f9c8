//! The SDK against three roomd nodes sharing one Redis: a client given every node's URL moves
//! to another when its node is killed, and resumes with no gap and no duplicate.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Client, Message } from "../../src/index.js";
import { nodes, Redis } from "../cluster.js";
import { client, roomName, until, type Broker } from "../harness.js";

let redis: Redis;
let n: Broker[] = [];
const clients: Client[] = [];

before(async () => {
  redis = await Redis.start();
  n = await nodes(redis, 3);
});
after(async () => {
  for (const c of clients) c.close();
  for (const b of n) {
    await b.stop("SIGKILL");
    b.cleanup();
  }
  redis?.stop();
});

test("hello names the node", async () => {
  const c = client(n[1]!);
  clients.push(c);
  await c.ready();
  assert.equal(c.hello?.node, "node1");
});

test("a subscriber whose node is killed resumes on another with no gap and no duplicate", async () => {
  const room = roomName("failover");
  const urls = n.map((b) => b.wsUrl);
  // The subscriber starts on node 0 and knows every node; the publisher writes through node 2.
  const sub = client(urls, { reconnect: { baseDelay: 20, maxDelay: 200, minUptime: 1000 } });
  clients.push(sub);
  const pubr = client(n[2]!);
  clients.push(pubr);
  const seen: number[] = [];
  const r = sub.room(room);
  r.on("message", (m: Message) => seen.push(m.seq));
  await r.subscribe();
  const total = 300;
  const publishing = (async () => {
    for (let i = 0; i < total; i++) await pubr.room(room).publish(`m${i}`);
  })();
  await until(() => seen.length >= 50, "the first 50 messages");
  await n[0]!.stop("SIGKILL");
  await publishing;
  await until(() => seen.length >= total, `all ${total} messages (got ${seen.length})`, 20_000);
  assert.deepEqual(
    seen,
    Array.from({ length: total }, (_, i) => i + 1),
  );
  assert.notEqual(sub.url.port, String(n[0]!.port), "moved off the killed node");
});
