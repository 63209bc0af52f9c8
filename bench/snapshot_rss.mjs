// Resident memory of a roomd binary under the two shapes of the snapshot / presence hardening:
//   presence: 10 connections × 1,024 subscriptions, each with 1 KiB of presence info (an array
//             of 1,000 small integers);
//   state:    a room of 1,000 keys × 16 KiB, then 60 connections that subscribe with state and
//             never read.
// Usage: node bench/snapshot_rss.mjs <path to roomd> [presence|state]
// Needs sdk-js/node_modules (cd sdk-js && npm ci). Prints VmRSS before and after, in MB.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(new URL("../sdk-js/package.json", import.meta.url));
const WebSocket = require("ws");
const { encode, decode } = require("@msgpack/msgpack");

const [bin, which = "presence"] = process.argv.slice(2);
if (!bin) throw new Error("usage: snapshot_rss.mjs <roomd> [presence|state]");

const rssMB = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Math.round(Number(m[1]) / 1024);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const dir = mkdtempSync(join(tmpdir(), "roomd-rss-"));
const proc = spawn(bin, ["--listen", "127.0.0.1:0", "--data-dir", dir], { stdio: ["ignore", "pipe", "ignore"] });
const port = await new Promise((res) => {
  createInterface({ input: proc.stdout }).on("line", (l) => {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(l);
    if (m) res(Number(m[1]));
  });
});

/** A connection with request/reply by id. */
async function connect() {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, "roomd.v1", { maxPayload: 1 << 30 });
  const waiting = new Map();
  let next = 1;
  let hello;
  const helloP = new Promise((r) => (hello = r));
  ws.on("message", (d) => {
    const f = decode(d);
    if (f.t === "hello") return hello(f);
    if (f.id !== undefined && waiting.has(f.id) && f.t !== "snap") {
      waiting.get(f.id)(f);
      waiting.delete(f.id);
    }
  });
  await helloP;
  return {
    ws,
    send(frame) {
      const id = next++;
      ws.send(encode({ ...frame, id }));
      return id;
    },
    request(frame) {
      const id = next++;
      const p = new Promise((r) => waiting.set(id, r));
      ws.send(encode({ ...frame, id }));
      return p;
    },
  };
}

const base = rssMB(proc.pid);
let after;
if (which === "presence") {
  // ~1 KiB encoded, of many small values: the shape where a decoded Value costs most.
  const info = { v: Array.from({ length: 1000 }, (_, i) => i % 100) };
  const conns = await Promise.all(Array.from({ length: 10 }, connect));
  for (const c of conns) {
    const replies = [];
    for (let r = 0; r < 1024; r++) replies.push(c.request({ t: "sub", room: `room-${r}`, info }));
    const got = await Promise.all(replies);
    const bad = got.filter((f) => f.t !== "subbed");
    if (bad.length) throw new Error(`sub failed: ${JSON.stringify(bad[0])}`);
  }
  await sleep(2000);
  after = rssMB(proc.pid);
  console.log(`presence 10 conns x 1024 subs x 1 KiB info: RSS ${base} MB -> ${after} MB (+${after - base} MB)`);
} else {
  const w = await connect();
  const value = new Uint8Array(16000).fill(7);
  const puts = [];
  for (let k = 0; k < 1000; k++) puts.push(w.request({ t: "put", room: "big", key: `k${k}`, value }));
  await Promise.all(puts);
  await sleep(500);
  const loaded = rssMB(proc.pid);
  const conns = await Promise.all(Array.from({ length: 60 }, connect));
  for (const c of conns) {
    c.ws._socket.pause(); // never read again
    c.send({ t: "sub", room: "big", state: true });
  }
  await sleep(5000);
  after = rssMB(proc.pid);
  console.log(`state 1000 keys x 16 KB, 60 subscribers with state that never read: RSS ${base} MB at start, ${loaded} MB loaded -> ${after} MB (+${after - loaded} MB)`);
}
proc.kill("SIGKILL");
rmSync(dir, { recursive: true, force: true });
process.exit(0);
