/**
 * An in-memory WebSocket for state-machine tests that need a server to misbehave on cue
 * (send 503, never answer, close with a given code). Tests against the real broker live in
 * test/broker/.
 */
import { afterEach, beforeEach } from "node:test";
import { Client, decode, encode, type ClientOptions, type WebSocketLike } from "../src/index.js";
import type { SocketCloseEvent, SocketMessageEvent } from "../src/transport.js";

export const HELLO = {
  t: "hello",
  v: 1,
  server: "roomd/test",
  conn: "c1",
  ping: 20,
  limits: { frame: 4096, payload: 1000, room: 128, key: 256, value: 1000, info: 100, subs: 10, page: 100, keys: 100, mid: 64 },
};

export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  binaryType = "blob";
  readyState = 0;
  protocol = "roomd.v1";
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: SocketMessageEvent) => void) | null = null;
  onclose: ((ev: SocketCloseEvent) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Decoded frames the client sent. */
  sent: Record<string, unknown>[] = [];

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
  }

  static latest(): FakeSocket {
    const s = FakeSocket.all[FakeSocket.all.length - 1];
    if (s === undefined) throw new Error("no socket");
    return s;
  }

  static reset(): void {
    FakeSocket.all = [];
  }

  /** The server accepts and says hello. */
  accept(hello: Record<string, unknown> = HELLO): void {
    this.readyState = 1;
    this.onopen?.({});
    this.serverSend(hello);
  }

  serverSend(frame: Record<string, unknown>): void {
    const bytes = encode(frame);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(decode(data) as Record<string, unknown>);
  }

  close(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code: 1005, reason: "" }));
  }

  /** The last sent frame of kind `t`. */
  last(t: string): Record<string, unknown> {
    const f = [...this.sent].reverse().find((x) => x["t"] === t);
    if (f === undefined) throw new Error(`no ${t} frame sent`);
    return f;
  }
}

const fakeClients: Client[] = [];

/**
 * A client on fake sockets with fast reconnects and no heartbeat, closed after the test. A test
 * file using it calls `resetFakes` before and `closeFakes` after each test.
 */
export function make(o: ClientOptions = {}): Client {
  const c = new Client("ws://fake/ws", { WebSocket: FakeSocket, reconnect: { baseDelay: 1, maxDelay: 2 }, heartbeat: false, ...o });
  fakeClients.push(c);
  return c;
}

/** Lets pending promise callbacks and timers of `ms` run. */
export const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Registers the per-test reset of the fake sockets and the closing of `make`'s clients. */
export function useFakes(): void {
  beforeEach(() => FakeSocket.reset());
  afterEach(() => {
    for (const c of fakeClients.splice(0)) c.close();
  });
}
