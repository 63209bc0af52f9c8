//! The WebSocket implementations users pass in (the browser's, the ws package's) fit the
//! SDK's transport type without casts; this file failing to compile is the test.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import type { WebSocketConstructor } from "../../src/index.js";

test("ws and DOM WebSocket constructors are WebSocketConstructor", () => {
  const fromWs: WebSocketConstructor = WebSocket;
  const fromDom: WebSocketConstructor | undefined = (globalThis as { WebSocket?: typeof globalThis.WebSocket }).WebSocket;
  assert.equal(typeof fromWs, "function");
  assert.ok(fromDom === undefined || typeof fromDom === "function");
});
