//! Closing a client (or giving up a socket) while its `ws` WebSocket is still connecting
//! must not surface an unhandled error event, which would crash a Node process.
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { test } from "node:test";
import WebSocket from "ws";
import { Client } from "../../src/index.js";

test("close() during the handshake raises nothing", async () => {
  const sockets: Socket[] = [];
  const server = createServer((s) => sockets.push(s)); // accepts TCP, never answers HTTP
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown): void => {
    uncaught.push(e);
  };
  process.on("uncaughtException", onUncaught);
  try {
    const c = new Client(`ws://127.0.0.1:${address.port}/ws`, { WebSocket, connectTimeout: 100 });
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    const d = new Client(`ws://127.0.0.1:${address.port}/ws`, { WebSocket, connectTimeout: 50, reconnect: false });
    await new Promise((r) => setTimeout(r, 200)); // the connect timeout abandons the socket
    assert.equal(d.state, "closed");
    assert.deepEqual(uncaught, []);
  } finally {
    process.off("uncaughtException", onUncaught);
    for (const s of sockets) s.destroy();
    server.close();
  }
});
