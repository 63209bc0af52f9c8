//! Several endpoints (the nodes of a cluster): after a lost connection the client dials the
//! next one, round robin, and resumes its rooms there.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, CloseCode } from "../../src/index.js";
import { FakeSocket, tick, useFakes } from "../fake-socket.js";

useFakes();

test("a lost connection moves to the next endpoint, round robin", async () => {
  const urls = ["ws://a/ws", "ws://b/ws", "ws://c/ws"];
  const c = new Client(urls, { WebSocket: FakeSocket, reconnect: { baseDelay: 1, maxDelay: 2 }, heartbeat: false });
  try {
    assert.deepEqual(
      c.urls.map((u) => u.host),
      ["a", "b", "c"],
    );
    await tick();
    const host = (): string => new URL(FakeSocket.latest().url).host;
    assert.equal(host(), "a");
    FakeSocket.latest().accept();
    // The node lost its engine: any other node will do.
    FakeSocket.latest().serverClose(CloseCode.EngineUnavailable, "cluster engine unavailable");
    await tick(20);
    assert.equal(host(), "b");
    assert.equal(c.url.host, "b");
    // A node that does not answer at all.
    FakeSocket.latest().serverClose(CloseCode.Abnormal, "");
    await tick(20);
    assert.equal(host(), "c");
    FakeSocket.latest().serverClose(CloseCode.Abnormal, "");
    await tick(20);
    assert.equal(host(), "a", "round robin");
    FakeSocket.latest().accept();
    assert.equal(c.state, "open");
  } finally {
    c.close();
  }
});

test("no endpoint is refused at once", () => {
  assert.throws(() => new Client([], { WebSocket: FakeSocket }), TypeError);
});
