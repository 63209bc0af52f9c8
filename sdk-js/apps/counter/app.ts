/**
 * The roomd counter: the smallest complete roomd app, served by the broker at `/counter`.
 *
 * One shared number per room. Every tab that opens `/counter#tea` sees the same value, live;
 * − and + change it with the room state's atomic `incr`, so two people clicking at once never
 * overwrite each other; the value lives in the broker's database, so it survives restarts.
 * Every click counts exactly once, through restarts and dropped connections (step 5). It uses
 * the public SDK only: read it top to bottom as a tutorial.
 */
import { Client, DisconnectedError, ErrorCode, RoomdError, TimeoutError } from "../../src/index.js";

// -- 1. Connect ------------------------------------------------------------------------------
// The page is served by roomd itself, so the broker is at the page's own origin. The client
// connects at once, and reconnects by itself (with backoff) whenever the connection drops.
const client = new Client(location.origin);

// -- 2. Pick the room ------------------------------------------------------------------------
// The link's fragment names the counter (`/counter#tea`). Rooms are created on first use; the
// `counter:` prefix puts every counter in one namespace an operator can set permissions for.
function fragment(): string {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return ""; // a malformed %-escape: the default counter
  }
}
const name = fragment() || "lobby";
const room = client.room(`counter:${name}`);
/** The state key that holds the number. */
const KEY = "count";

// -- 3. Show the value, and keep showing it ---------------------------------------------------
// Subscribing with `state: true` makes the SDK keep `room.state`, a mirror of the room's keys:
// filled from a snapshot when the subscription starts (again after each reconnect) and updated
// by a `state` event for every change anyone makes. So the page never polls: it redraws.
room.on("subscribed", (sub) => {
  lastOfSub = sub.last; // for step 5
  settleDoubts();
  show();
});
room.on("state", (change) => {
  if (change.key !== KEY) return;
  const mine = tallies.get(change.from); // a change this page made (step 5)
  if (mine !== undefined) mine.applied++;
  settleDoubts();
  show();
});
void room.subscribe({ state: true });

// -- 4. Change it -----------------------------------------------------------------------------
// `incr` adds to the number on the server, atomically: no read-modify-write race between tabs.
// Made while offline it waits in the client's queue and is sent once on reconnect. The SDK
// never sends it twice: if the connection drops while one is in flight, it rejects it with
// `DisconnectedError` rather than guess, because it may already have been applied (step 5).
/** Clicks not yet known to have counted: queued, in flight, or in doubt. */
let pending = 0;

function click(by: 1 | -1): void {
  pending++;
  show();
  void send(by);
}

async function send(by: 1 | -1): Promise<void> {
  try {
    await room.incr(KEY, by);
    tallyOf(connection).acked++;
  } catch (e) {
    if (e instanceof DisconnectedError || e instanceof TimeoutError) {
      // Rejected before the next connection opens, so `connection` is the one it went out on.
      tallyOf(connection).doubts.push(by); // settled in step 5
      return;
    }
    if (e instanceof RoomdError && e.code === ErrorCode.Unavailable) return send(by); // 503: the broker did nothing
    problem.textContent = `Not counted: ${e instanceof Error ? e.message : String(e)}`;
  }
  pending--;
  show();
}

// -- 5. After a drop: which clicks counted? ---------------------------------------------------
// The room's log knows. Every applied `incr` is a state change stamped with the connection
// that made it (`change.from`), and the resumed subscription replays each change this page
// missed, exactly once. So per connection: changes seen beyond the clicks acknowledged are its
// first clicks in doubt (one connection's requests apply in order); the rest never happened,
// and are sent again. This waits until the replay has reached the resubscription's `last`.
interface Tally {
  acked: number;
  applied: number;
  doubts: (1 | -1)[];
}
/** This page's connections, each with its clicks acknowledged, applied and in doubt. */
const tallies = new Map<string, Tally>();
let connection = "";
let lastOfSub = 0;
client.on("open", (hello) => {
  connection = hello.conn;
  tallies.set(connection, { acked: 0, applied: 0, doubts: [] });
});

function tallyOf(conn: string): Tally {
  const t = tallies.get(conn);
  if (t === undefined) throw new Error(`no tally for connection ${conn}`); // made on "open"
  return t;
}

function settleDoubts(): void {
  if (room.subscriptionState !== "subscribed" || (room.lastSeq ?? 0) < lastOfSub) return;
  for (const [conn, t] of tallies) {
    if (conn === connection) continue; // still open: its changes may yet arrive
    tallies.delete(conn);
    const counted = Math.min(t.doubts.length, Math.max(0, t.applied - t.acked));
    pending -= counted;
    for (const by of t.doubts.slice(counted)) void send(by);
  }
}

// -- 6. The page ------------------------------------------------------------------------------
function el<T extends HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}
const value = el<HTMLOutputElement>("value");
const status = el<HTMLElement>("status");
const problem = el<HTMLElement>("problem");
const retry = el<HTMLButtonElement>("retry");
const connText = el<HTMLElement>("conn-text");

el("room").textContent = name;
document.title = `${name} · roomd counter`;
el("minus").addEventListener("click", () => click(-1));
el("plus").addEventListener("click", () => click(1));
// A server that comes back is noticed at the next backoff attempt (up to 10 s); "Retry now",
// a tab the user returns to, or a network that comes back (the SDK listens), try at once.
const reconnectIfDown = (): void => {
  if (client.state === "reconnecting") client.reconnectNow();
};
retry.addEventListener("click", reconnectIfDown);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectIfDown();
});
// Another counter is another room: the simplest way there is a fresh page.
el("open").addEventListener("submit", (e) => {
  e.preventDefault();
  location.hash = encodeURIComponent(el<HTMLInputElement>("other").value.trim() || "lobby");
});
window.addEventListener("hashchange", () => location.reload());
client.on("state", show);

/** Draws everything from the client, the room mirror and the click counts. */
function show(): void {
  const entry = room.state.get(KEY);
  // `room.state` holds what the server stored; until the first snapshot there is nothing yet.
  value.textContent = entry === undefined ? (room.subscriptionState === "subscribed" ? "0" : "…") : String(entry.value);
  const online = client.state === "open";
  document.body.dataset["conn"] = client.state;
  connText.textContent = { connecting: "Connecting", open: "Live", reconnecting: "Offline", closed: "Closed" }[client.state];
  retry.hidden = online;
  const clicks = (n: number): string => `${n} click${n === 1 ? "" : "s"}`;
  if (!online) status.textContent = pending > 0 ? `Offline: ${clicks(pending)} will be sent when the connection is back` : "Offline: clicks wait and are sent when the connection is back";
  else status.textContent = pending > 0 ? `Sending ${clicks(pending)}…` : "Shared live with every open tab";
  status.dataset["pending"] = String(pending);
}
show();
