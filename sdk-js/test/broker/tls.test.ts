//! wss:// from Node: the SDK over TLS with the test CA trusted (the ws package's `ca`), a
//! client that does not trust the CA refused, HTTPS routes, and a certificate renewed with
//! SIGHUP while a subscriber reconnects and resumes without a gap.
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import { get } from "node:https";
import { connect } from "node:tls";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import type { Client, Message } from "../../src/index.js";
import { Broker, client, roomName, until } from "../harness.js";
import { issue, makeCa, tlsConfig, type TestCa } from "../certs.js";

let broker: Broker;
let ca: TestCa;
const clients: Client[] = [];
const sockets: WebSocket[] = [];

/** The ws package, trusting the test CA; every socket kept so a test can cut one. */
class TrustingWebSocket extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { ca: ca.caPem });
    sockets.push(this);
  }
}

function mk(): Client {
  const c = client(broker, { WebSocket: TrustingWebSocket });
  clients.push(c);
  return c;
}

/** The subject CN of the certificate the broker presents to a new connection. */
function servedCn(): Promise<string> {
  return new Promise((res, rej) => {
    const s = connect({ host: "127.0.0.1", port: broker.port, ca: ca.caPem, servername: "localhost" }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.end();
      res(Array.isArray(cn) ? cn.join(",") : (cn ?? ""));
    });
    s.on("error", rej);
  });
}

function httpsGet(path: string): Promise<[number, string]> {
  return new Promise((res, rej) => {
    get(`${broker.url}${path}`, { ca: ca.caPem }, (r) => {
      let body = "";
      r.on("data", (d: Buffer) => (body += d.toString()));
      r.on("end", () => res([r.statusCode ?? 0, body]));
    }).on("error", rej);
  });
}

before(async () => {
  ca = makeCa();
  broker = await Broker.start({ config: tlsConfig(issue(ca, "first")) });
  assert.ok(broker.tls && broker.wsUrl.startsWith("wss://"), broker.wsUrl);
});
after(async () => {
  for (const c of clients) c.close();
  await broker.stop();
  broker.cleanup();
});

test("the SDK publishes and subscribes over wss:// with the CA trusted", async () => {
  const room = roomName();
  const a = mk();
  const b = mk();
  const got: Message[] = [];
  a.room(room).on("message", (m) => got.push(m));
  await a.room(room).subscribe();
  assert.equal(await b.room(room).publish("over tls"), 1);
  await until(() => got.length === 1, "the message");
  assert.equal(new TextDecoder().decode(got[0]!.data), "over tls");
  assert.deepEqual(await httpsGet("/readyz"), [200, "ready\n"]);
});

test("a client that does not trust the CA cannot connect", async () => {
  const ws = new WebSocket(broker.wsUrl, ["roomd.v1"]);
  const err = await new Promise<Error>((res) => ws.on("error", res));
  assert.match(err.message, /certificate/i);
});

test("SIGHUP renews the certificate; a cut subscriber reconnects over TLS and resumes with no gap", async () => {
  const room = roomName();
  const first = sockets.length;
  const sub = mk();
  await sub.ready();
  const subSocket = sockets[first];
  const pub = mk();
  const got: number[] = [];
  sub.room(room).on("message", (m) => got.push(m.seq));
  await sub.room(room).subscribe();
  for (let i = 0; i < 5; i++) await pub.room(room).publish(`before ${i}`);
  await until(() => got.length === 5, "5 messages");

  assert.equal(await servedCn(), "first");
  issue(ca, "second");
  // Overwrite the files the config names with the new pair, then ask for a reload.
  copyFileSync(`${ca.dir}/second.pem`, `${ca.dir}/first.pem`);
  copyFileSync(`${ca.dir}/second.key`, `${ca.dir}/first.key`);
  broker.proc.kill("SIGHUP");
  const deadline = Date.now() + 10_000;
  while ((await servedCn()) !== "second") {
    assert.ok(Date.now() < deadline, "the renewed certificate was not served");
    await new Promise((r) => setTimeout(r, 50));
  }

  // Cut the subscriber's socket; it reconnects (new handshake, new certificate) and resumes.
  const reconnected = new Promise<void>((res) => sub.on("state", (s) => s === "open" && res()));
  assert.ok(subSocket !== undefined);
  subSocket.terminate();
  for (let i = 0; i < 5; i++) await pub.room(room).publish(`after ${i}`);
  await reconnected;
  await until(() => got.length >= 10, "10 messages");
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "every message once, in order");
});
