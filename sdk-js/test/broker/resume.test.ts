//! Cutting the socket loses nothing: a subscriber resumes from its last seq and sees every
//! message exactly once in order; publishes made offline are queued and sent once; a publish
//! whose ack was lost is resent with its mid and stored once; a slow consumer closed with 4000
//! resumes without loss; resuming past trimmed history reports exactly the missing range.
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { decode, DisconnectedError, type Client } from "../../src/index.js";
import { Broker, BrokerSuite, client, roomName, sleep, TrackedWebSocket, until } from "../harness.js";

const suite = new BrokerSuite();
function mk(o: Parameters<typeof client>[1] = {}): Client {
  return suite.client(o);
}

test("subscriber's socket cut twice mid-stream: every message once, in order", async () => {
  const room = roomName();
  const sub = mk({ WebSocket: TrackedWebSocket });
  const pub = mk();
  const got: string[] = [];
  const seqs: number[] = [];
  sub.room(room).on("message", (m) => {
    got.push(m.text());
    seqs.push(m.seq);
  });
  await sub.room(room).subscribe();
  const opens: string[] = [];
  sub.on("open", (h) => opens.push(h.conn));
  const total = 150;
  const sending = (async () => {
    for (let i = 0; i < total; i++) {
      await pub.room(room).publish(`p${i}`);
      if (i % 10 === 0) await sleep(2);
    }
  })();
  await until(() => got.length >= 30, "30 messages");
  TrackedWebSocket.latest().terminate(); // abrupt: no close frame, code 1006
  await until(() => opens.length === 1 && got.length >= 80, "reconnected and 80 messages");
  TrackedWebSocket.latest().terminate();
  await sending;
  await until(() => got.length >= total, `${total} messages`);
  await sleep(100);
  assert.equal(opens.length, 2, "reconnected twice");
  assert.deepEqual(got, Array.from({ length: total }, (_, i) => `p${i}`), "each message once, in publish order");
  assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1));
});

test("publishes made while disconnected wait in the queue and are stored once", async () => {
  const room = roomName();
  const c = mk({ WebSocket: TrackedWebSocket, reconnect: { baseDelay: 400, maxDelay: 400 } });
  await c.ready();
  await c.room(room).publish("before");
  // Publish from the state event itself: the reconnect delay is drawn from [0, 400) ms (full
  // jitter), so polling for "reconnecting" can miss a short one.
  let stateAtPublish = "";
  const offline = new Promise<Promise<number>[]>((resolve) => {
    const off = c.on("state", (s) => {
      if (s !== "reconnecting") return;
      off();
      stateAtPublish = c.state;
      resolve(["o1", "o2", "o3", "o4", "o5"].map((t) => c.room(room).publish(t)));
    });
  });
  TrackedWebSocket.latest().terminate();
  const seqs = await Promise.all(await offline);
  assert.equal(stateAtPublish, "reconnecting", "published while offline");
  assert.deepEqual(seqs, [2, 3, 4, 5, 6]);
  const page = await c.room(room).history();
  assert.deepEqual(
    page.items.map((e) => (e.kind === "message" ? e.text() : e.kind === "state" ? e.key : `deleted ${e.target}`)),
    ["before", "o1", "o2", "o3", "o4", "o5"],
  );
});

/** A socket that swallows the first reply of kind `t` and then cuts the connection. */
function dropFirst(t: string): typeof WebSocket {
  let dropped = false;
  return class extends WebSocket {
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      const data = args[0];
      if (event === "message" && !dropped && (data instanceof ArrayBuffer || data instanceof Uint8Array)) {
        const f = decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data) as Record<string, unknown>;
        if (f["t"] === t) {
          dropped = true;
          this.terminate();
          return true;
        }
      }
      return super.emit(event, ...args);
    }
  };
}

test("a publish whose ack was lost is resent with its mid and stored once", async () => {
  const room = roomName();
  const c = mk({ WebSocket: dropFirst("ack") });
  const opened: string[] = [];
  c.on("open", (h) => opened.push(h.conn));
  const seq = await c.room(room).publish("only once");
  assert.equal(opened.length, 2, "the ack was lost and the client reconnected");
  assert.equal(seq, 1);
  const page = await c.room(room).history();
  assert.equal(page.items.length, 1, "stored once");
  assert.equal(await c.room(room).publish("next"), 2);
});

test("a mutation whose reply was lost fails with DisconnectedError (it may have been applied)", async () => {
  const room = roomName();
  const c = mk({ WebSocket: dropFirst("done") });
  await assert.rejects(c.room(room).incr("n"), (e: unknown) => e instanceof DisconnectedError && e.retryable);
  await c.ready();
  const v = await c.room(room).get("n");
  assert.deepEqual(v, { value: 1, ver: 1 }, "it was applied once and not resent");
});

test("slow consumer closed with 4000 resumes without loss", async (t) => {
  const small = await Broker.start({
    config: "[websocket]\nmax_frame_bytes = 32768\n[limits]\npage = 8\npayload_bytes = 16384\n[outbox]\nmax_frames = 16\nmax_bytes = 65536\n",
  });
  t.after(async () => {
    await small.stop();
    small.cleanup();
  });
  const room = roomName();
  const slow = client(small, { WebSocket: TrackedWebSocket });
  const fast = client(small);
  t.after(() => {
    slow.close();
    fast.close();
  });
  const got: number[] = [];
  const closes: number[] = [];
  slow.on("close", (i) => closes.push(i.code));
  slow.room(room).on("message", (m) => got.push(m.seq));
  await slow.room(room).subscribe();
  const socket = (TrackedWebSocket.latest() as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  socket.pause(); // stop reading: the broker's outbox for this connection fills up
  // More than the kernel's socket buffers hold, so the broker's outbox must fill.
  const n = 600;
  const payload = new Uint8Array(8000);
  for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: 50 }, () => fast.room(room).publish(payload)));
  socket.resume();
  await until(() => got.length >= n, `${n} messages after resuming`, 30_000);
  assert.ok(closes.includes(4000), `closed with 4000 (got ${closes.join(",")})`);
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => i + 1));
});

test("resuming past trimmed history reports the gap, then delivers what is retained", async (t) => {
  const trimmed = await Broker.start({ config: "[retention]\nmax_messages = 10\nsweep_interval_secs = 1\n" });
  t.after(async () => {
    await trimmed.stop();
    trimmed.cleanup();
  });
  const room = roomName("trim");
  const pub = client(trimmed);
  const sub = client(trimmed);
  t.after(() => {
    pub.close();
    sub.close();
  });
  for (let i = 1; i <= 30; i += 10) await Promise.all(Array.from({ length: 10 }, (_, j) => pub.room(room).publish(`t${i + j}`)));
  // Wait for a sweep to trim the room to its last 10 entries.
  const deadline = Date.now() + 10_000;
  while ((await pub.room(room).history({ after: 0, limit: 1 })).items[0]?.seq !== 21) {
    if (Date.now() > deadline) throw new Error("history was not trimmed");
    await sleep(200);
  }
  const gaps: { from: number; to: number }[] = [];
  const got: number[] = [];
  sub.room(room).on("gap", (g) => gaps.push(g));
  sub.room(room).on("message", (m) => got.push(m.seq));
  const s = await sub.room(room).subscribe({ since: 5 });
  assert.equal(s.complete, false);
  assert.equal(s.earliest, 21);
  await until(() => got.length === 10, "the retained 10");
  assert.deepEqual(gaps, [{ from: 6, to: 20 }]);
  assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => 21 + i));
});
