// Fill one room with N messages published without mid (pipelined, window 2000), then exit.
import WebSocket from "../../../sdk-js/node_modules/ws/index.js";
import { encode, decode } from "../../../sdk-js/node_modules/@msgpack/msgpack/dist.esm/index.mjs";
const [url, n] = [process.argv[2], Number(process.argv[3])];
const ws = new WebSocket(url, "roomd.v1");
ws.binaryType = "arraybuffer";
let sent = 0, acked = 0;
const data = new Uint8Array(64);
function pump() {
  while (sent < n && sent - acked < 2000) {
    sent++;
    ws.send(encode({ t: "pub", id: sent, room: "big", data }));
  }
}
ws.on("message", (m) => {
  const f = decode(new Uint8Array(m));
  if (f.t === "ack") { acked++; if (acked === n) { console.log(`filled ${n}`); ws.close(); process.exit(0); } pump(); }
  else if (f.t === "err") { console.error(f); process.exit(1); }
  else if (f.t === "hello") pump();
});
