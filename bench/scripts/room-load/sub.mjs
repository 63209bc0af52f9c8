// Connect and time `sub` → `subbed` for the room (the first request after a restart loads it).
import WebSocket from "../../../sdk-js/node_modules/ws/index.js";
import { encode, decode } from "../../../sdk-js/node_modules/@msgpack/msgpack/dist.esm/index.mjs";
const ws = new WebSocket(process.argv[2], "roomd.v1");
ws.binaryType = "arraybuffer";
let t0;
ws.on("message", (m) => {
  const f = decode(new Uint8Array(m));
  if (f.t === "hello") { t0 = process.hrtime.bigint(); ws.send(encode({ t: "sub", id: 1, room: "big" })); }
  else if (f.t === "subbed") { console.log(`subbed after ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms (last ${f.last})`); process.exit(0); }
});
