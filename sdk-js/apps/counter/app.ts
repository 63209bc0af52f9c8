/**
 * The roomd counter: the smallest complete roomd app, served by the broker at `/counter`.
 *
 * One shared number per room. Every tab that opens `/counter#tea` sees the same value, live;
 * − and + change it with the room state's atomic `incr`, so two people clicking at once never
 * overwrite each other; the value lives in the broker's database, so it survives restarts.
 * It uses the public SDK only: read it top to bottom as a tutorial.
 */
import { Client, DisconnectedError, ErrorCode, RoomdError, TimeoutError } from "../../src/index.js";

// -- 1. Connect ------------------------------------------------------------------------------
// The page is served by roomd itself, so the broker is at the page's own origin. The client
// connects at once, and reconnects by itself (with backoff) whenever the connection drops.
const client = new Client(location.origin);

// -- 2. Pick the room ------------------------------------------------------------------------
// The link's fragment names the counter (`/counter#tea`). Rooms are created on first use; the
// `counter:` prefix puts every counter in one namespace an operator can set permissions for.
const name = decodeURIComponent(location.hash.slice(1)) || "lobby";
const room = client.room(`counter:${name}`);
/** The state key that holds the number. */
const KEY = "count";

// -- 3. Show the value, and keep showing it ---------------------------------------------------
// Subscribing with `state: true` makes the SDK keep `room.state`, a mirror of the room's keys:
// filled from a snapshot when the subscription starts (again after each reconnect) and updated
// by a `state` event for every change anyone makes. So the page never polls: it redraws.
room.on("subscribed", show);
room.on("state", (change) => {
  if (change.key === KEY) show();
});
void room.subscribe({ state: true });

// -- 4. Change it -----------------------------------------------------------------------------
// `incr` adds to the number on the server, atomically: no read-modify-write race between tabs.
// Made while offline it waits in the client's queue and is sent once on reconnect. It is never
// sent twice: if the connection drops while one is in flight, the SDK rejects it with
// `DisconnectedError` rather than guess, because it may already have been applied.
/** Clicks sent or queued, not yet answered. */
let pending = 0;
/** Clicks whose connection dropped before the answer: each may or may not have counted. */
let unsure = 0;

async function add(by: 1 | -1): Promise<void> {
  pending++;
  show();
  try {
    await room.incr(KEY, by);
  } catch (e) {
    if (e instanceof DisconnectedError || e instanceof TimeoutError) unsure++;
    else if (e instanceof RoomdError && e.code === ErrorCode.Unavailable) {
      // 503: the broker was shutting down and did nothing; safe to send again.
      return add(by);
    } else problem.textContent = `Not counted: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    pending--;
    show();
  }
}

// -- 5. The page ------------------------------------------------------------------------------
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
el("minus").addEventListener("click", () => void add(-1));
el("plus").addEventListener("click", () => void add(1));
retry.addEventListener("click", () => client.reconnectNow());
// A server that comes back is noticed at the next backoff attempt (up to 10 s); a tab the user
// returns to, or a network that comes back, tries at once.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && client.state === "reconnecting") client.reconnectNow();
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
  if (unsure > 0) problem.textContent = `The connection dropped while ${clicks(unsure)} were being sent: they may or may not have counted. The number shown is the server's.`;
}
show();
