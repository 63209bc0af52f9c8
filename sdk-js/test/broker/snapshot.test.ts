//! Snapshots larger than a frame: the SDK gathers `subbed` / `who` with `more` and their `snap`
//! continuations, reading with a socket that honours `limits.frame`; and a `sub` whose `subbed`
//! was lost (the request timed out here, took effect there) recovers from the 410 that the
//! retry gets, with no message lost or repeated.
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { decode, type Client, type WebSocketLike } from "../../src/index.js";
import { toBytes } from "../../src/transport.js";
import { Broker, BrokerSuite, client, roomName, sleep, until } from "../harness.js";

const FRAME = 16384;
const CONFIG = `[websocket]
max_frame_bytes = ${FRAME}
[limits]
payload_bytes = 8192
value_bytes = 4096
info_bytes = 1024
[outbox]
max_bytes = 32768
`;

const suite = new BrokerSuite(() => Broker.start({ config: CONFIG }));
function mk(o: Parameters<typeof client>[1] = {}): Client {
  return suite.client(o);
}

/** A socket that refuses messages larger than the broker's `limits.frame` (closes with 1009). */
class FrameBoundSocket extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { maxPayload: FRAME });
  }
}

/** A socket that loses the next `dropSubbed` `subbed` frames it receives. */
class LossySocket implements WebSocketLike {
  static dropSubbed = 0;
  private readonly ws: WebSocket;
  onopen: WebSocketLike["onopen"] = null;
  onmessage: WebSocketLike["onmessage"] = null;
  onclose: WebSocketLike["onclose"] = null;
  onerror: WebSocketLike["onerror"] = null;

  constructor(url: string, protocols?: string | string[]) {
    this.ws = new WebSocket(url, protocols);
    this.ws.onopen = (e) => this.onopen?.(e);
    this.ws.onclose = (e) => this.onclose?.(e);
    this.ws.onerror = (e) => this.onerror?.(e);
    this.ws.onmessage = (e) => {
      const bytes = toBytes(e.data);
      const f = bytes === undefined ? undefined : (decode(bytes) as { t?: unknown });
      if (f?.t === "subbed" && LossySocket.dropSubbed > 0) {
        LossySocket.dropSubbed--;
        return;
      }
      this.onmessage?.(e);
    };
  }
  get binaryType(): string {
    return this.ws.binaryType;
  }
  set binaryType(t: string) {
    this.ws.binaryType = t as WebSocket["binaryType"];
  }
  get readyState(): number {
    return this.ws.readyState;
  }
  get protocol(): string {
    return this.ws.protocol;
  }
  send(data: Uint8Array): void {
    this.ws.send(data);
  }
  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }
}

test("a state and presence snapshot many frames long is gathered: subscribe resolves with all of it, then live", async () => {
  const room = roomName();
  const w = mk();
  const value = (i: number): Uint8Array => Uint8Array.from({ length: 4000 }, (_, j) => (i + j) & 0xff);
  for (let i = 0; i < 100; i++) await w.room(room).put(`k${String(i).padStart(3, "0")}`, value(i));
  const present: Client[] = [];
  for (let i = 0; i < 20; i++) {
    const c = mk();
    await c.room(room).subscribe({ info: { pad: "x".repeat(1000), i } });
    present.push(c);
  }
  const s = mk({ WebSocket: FrameBoundSocket });
  const closes: number[] = [];
  s.on("close", (e: { code: number }) => closes.push(e.code));
  const got: string[] = [];
  s.room(room).on("message", (m) => got.push(m.text()));
  await s.room(room).subscribe({ state: true, presence: true });
  assert.equal(s.room(room).state.size, 100);
  assert.deepEqual(s.room(room).state.get("k007")?.value, value(7));
  assert.equal(s.room(room).members.length, 20);
  const who = await s.room(room).who();
  assert.equal(who.length, 20);
  await w.room(room).publish("live");
  await until(() => got.length === 1, "the live message");
  assert.deepEqual(closes, [], "never closed (1009 would mean a frame over limits.frame)");
});

test("a sub whose subbed was lost recovers from 410: no message lost or repeated", async () => {
  const room = roomName();
  const pub = mk();
  for (let i = 0; i < 5; i++) await pub.room(room).publish(`m${i}`);
  LossySocket.dropSubbed = 1;
  const s = mk({ WebSocket: LossySocket, requestTimeout: 300 });
  const got: string[] = [];
  const errors: unknown[] = [];
  s.room(room).on("message", (m) => got.push(m.text()));
  s.room(room).on("error", (e) => errors.push(e));
  const subscribed = s.room(room).subscribe({ since: 0 });
  for (let i = 5; i < 10; i++) await pub.room(room).publish(`m${i}`);
  await subscribed;
  assert.equal(LossySocket.dropSubbed, 0, "the first subbed was lost");
  for (let i = 10; i < 15; i++) await pub.room(room).publish(`m${i}`);
  await until(() => got.length >= 15, "15 messages");
  await sleep(200);
  assert.deepEqual(got, Array.from({ length: 15 }, (_, i) => `m${i}`));
  assert.deepEqual(errors, []);
  assert.equal(s.room(room).subscriptionState, "subscribed");
});
