// A backend talking to roomd's server API with Node's built-in fetch (Node 18+), no packages.
//
//   ROOMD_URL=http://127.0.0.1:7700 ROOMD_API_KEY=... node examples/backend.mjs
//
// It posts a system message to a room, bumps a counter, reads the room's last messages and
// shows who is online: the four things a backend most often does.

const base = process.env.ROOMD_URL ?? "http://127.0.0.1:7700";
const key = process.env.ROOMD_API_KEY;
const room = process.env.ROOMD_ROOM ?? "chat:lobby";

/** One API call: JSON in, JSON out; a non-2xx answer throws with roomd's error code. */
async function api(method, path, body) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const out = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${out.error} (${out.code}): ${out.message}`);
  return out;
}

const r = encodeURIComponent(room);
// `mid` makes the publish safe to retry: a second one with the same mid is not stored again.
const posted = await api("POST", `/rooms/${r}/messages`, {
  data: { text: "The server restarts at 02:00 UTC", name: "system" },
  mid: `notice-${new Date().toISOString().slice(0, 10)}`,
});
console.log(`posted seq ${posted.seq}${posted.dup ? " (already posted)" : ""}`);

const counter = await api("POST", `/rooms/${r}/state/visits/incr`, { by: 1 });
console.log(`visits: ${counter.value}`);

const history = await api("GET", `/rooms/${r}/messages?limit=5`);
for (const m of history.items.filter((i) => i.type === "msg")) {
  console.log(`#${m.seq} ${m.uid ?? m.from}: ${m.text ?? JSON.stringify(m.data ?? m.data_b64)}`);
}

const who = await api("GET", `/rooms/${r}/presence`);
console.log(`online: ${who.members.map((m) => m.user ?? m.conn).join(", ") || "nobody"}`);
