/**
 * The roomd chat: the SDK's first real client. A page served by the broker at `/`.
 *
 * - the URL's fragment names the room (`/#lobby`), so a room is shared by its link;
 * - the last messages load on join, older ones when scrolling up (chat-room.ts);
 * - live messages arrive through the SDK, which resumes from the last seq after any drop,
 *   so the conversation goes on after a network drop or a broker restart with nothing missing;
 * - messages typed while offline wait in the SDK's queue and are sent (once) on reconnect.
 */
import { Client, type ConnectionState } from "../src/index.js";
import { access, takeFragmentToken } from "./access.js";
import { ChatRoom, showPending } from "./chat-room.js";
import { clearNotice, showNotice, toast, ui } from "./dom.js";
import { Unread } from "./unread.js";
import { identity } from "./presence.js";

const NAME_KEY = "roomd.chat.name";
const ROOM_RE = /^[A-Za-z0-9\-_.:@/~]{1,128}$/;

// With tokens on, the page needs one before it connects (access.ts); without, it shows why
// and stops here: no chat, no composer that cannot send.
takeFragmentToken();
const how = await access();
if (how.kind === "signin") {
  ui.signinWhy.textContent = how.why;
  ui.signin.hidden = false;
  document.title = "Sign-in needed · roomd chat";
  await new Promise<never>(() => undefined);
}
identity.verified = how.kind === "token";

/**
 * Without tokens, this browser's own random user id (kept in localStorage): presence and
 * messages are grouped by it, so two people who chose one name stay two, and one person's
 * tabs stay one. With tokens on, the token's user id does this.
 */
function browserId(): string {
  const key = "roomd.chat.id";
  let id = localStorage.getItem(key);
  if (id === null || !/^guest-[a-z0-9]{10}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(10));
    id = `guest-${Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("")}`;
    localStorage.setItem(key, id);
  }
  return id;
}
if (how.kind !== "token") identity.me = browserId();
const client = new Client(location.origin, how.kind === "token" ? { token: how.token } : { user: identity.me });
/** Every connection id this page has had: its messages are shown as "mine" after reconnects too. */
const myConns = new Set<string>();
client.on("open", (hello) => {
  myConns.add(hello.conn);
  identity.me = hello.user ?? identity.me;
  showMe();
});

/** "You are …": with tokens on, the verified user id first (known once connected). */
function showMe(): void {
  const name = localStorage.getItem(NAME_KEY) ?? "";
  const id = identity.verified ? client.hello?.user : undefined;
  ui.me.textContent = id !== undefined && id !== name ? `You are ${id} (shown as “${name}”)` : `You are ${name}`;
}

// -- connection indicator ------------------------------------------------------------------

const stateLabel: Record<ConnectionState, string> = {
  connecting: "Connecting",
  open: "Live",
  reconnecting: "Reconnecting",
  closed: "Offline",
};

function showConnection(s: ConnectionState): void {
  ui.conn.dataset["state"] = s;
  ui.connText.textContent = stateLabel[s];
  ui.conn.title = s === "open" ? "Connected: messages arrive live" : "Not connected: messages you send wait and go out on reconnect";
  ui.retry.hidden = s !== "reconnecting";
  showPending(client);
}
client.on("state", showConnection);

// The SDK retries with a growing delay (up to 10 s); a user who is looking, or a network that
// just came back (the SDK listens for `online` itself), should not wait for it.
function reconnectIfDown(): void {
  if (client.state === "reconnecting") client.reconnectNow();
}
ui.retry.addEventListener("click", reconnectIfDown);
ui.pendingRetry.addEventListener("click", reconnectIfDown);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectIfDown();
});
window.addEventListener("focus", reconnectIfDown);
client.on("error", (e) => {
  if (e.code === 401) showNotice("The server refused this page's sign-in token: sign in again, then reload.");
});
showConnection(client.state);

// -- routing: the fragment names the room --------------------------------------------------

let current: ChatRoom | undefined;
const unread = new Unread();

function roomFromHash(): string {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return "";
  }
}

function privateRoomName(): string {
  const alphabet = "abcdefghijkmnpqrstuvwxyz23456789";
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `p/${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
}

function route(): void {
  const room = roomFromHash();
  const name = localStorage.getItem(NAME_KEY) ?? "";
  if (current !== undefined && current.name === room) return;
  current?.stop();
  current = undefined;
  clearNotice();
  closePeople();
  ui.jump.hidden = true;
  ui.messages.replaceChildren();
  ui.pending.replaceChildren();
  ui.peopleList.replaceChildren();
  if (room === "" || name === "" || !ROOM_RE.test(room)) {
    ui.chat.hidden = true;
    ui.welcome.hidden = false;
    ui.nameInput.value = name;
    ui.roomInput.value = room !== "" ? room : ui.roomInput.value;
    (name === "" ? ui.nameInput : ui.roomInput).focus();
    unread.title = "roomd chat";
    return;
  }
  ui.welcome.hidden = true;
  ui.chat.hidden = false;
  ui.title.textContent = `#${room}`;
  showMe();
  unread.title = `#${room} · roomd chat`;
  current = new ChatRoom(room, name, client, myConns, () => unread.arrived());
  void current.start();
  ui.text.focus();
}

function enter(room: string): void {
  const name = ui.nameInput.value.trim();
  if (name === "") {
    ui.nameInput.focus();
    return;
  }
  localStorage.setItem(NAME_KEY, name);
  if (roomFromHash() === room) route();
  else location.hash = room;
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const room = ui.roomInput.value.trim() || "lobby";
  if (!ROOM_RE.test(room)) {
    ui.roomInput.setCustomValidity("Use letters, digits and - _ . : @ / ~ only");
    ui.roomInput.reportValidity();
    return;
  }
  enter(room);
});
ui.roomInput.addEventListener("input", () => ui.roomInput.setCustomValidity(""));
ui.privateBtn.addEventListener("click", () => {
  if (ui.form.reportValidity()) enter(privateRoomName());
});
ui.leave.addEventListener("click", () => {
  location.hash = "";
});
window.addEventListener("hashchange", route);

ui.share.addEventListener("click", () => {
  const link = `${location.origin}/#${roomFromHash()}`;
  const done = (): void => toast("Link copied: share it to invite people");
  if (navigator.clipboard !== undefined && window.isSecureContext) {
    navigator.clipboard.writeText(link).then(done, () => window.prompt("Copy this link", link));
  } else {
    window.prompt("Copy this link", link);
  }
});

// On a phone "Here now" is a drawer: the toggle opens and closes it, and so does a tap
// anywhere outside it, or Escape.
function closePeople(): void {
  ui.people.classList.remove("open");
  ui.peopleToggle.setAttribute("aria-expanded", "false");
}
ui.peopleToggle.addEventListener("click", () => {
  const open = ui.people.classList.toggle("open");
  ui.peopleToggle.setAttribute("aria-expanded", String(open));
});
document.addEventListener("pointerdown", (e) => {
  if (!ui.people.classList.contains("open") || !(e.target instanceof Node)) return;
  if (!ui.people.contains(e.target) && !ui.peopleToggle.contains(e.target)) closePeople();
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") closePeople();
});

// -- composing -----------------------------------------------------------------------------

function autosize(): void {
  // Empty: back to one row (an empty box's scrollHeight would count a wrapped placeholder).
  if (ui.text.value === "") {
    ui.text.style.height = "";
    return;
  }
  ui.text.style.height = "auto";
  ui.text.style.height = `${Math.min(ui.text.scrollHeight + 2, window.innerHeight * 0.4)}px`;
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (text === "" || current === undefined) return;
  ui.text.value = "";
  autosize();
  current.send(text);
});
ui.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.text.addEventListener("input", () => {
  autosize();
  current?.typed(ui.text.value.trim() === "");
});

ui.log.addEventListener("scroll", () => {
  if (current === undefined) return;
  if (ui.log.scrollTop < 120) void current.loadOlder();
  if (current.nearBottom()) ui.jump.hidden = true;
});
ui.jump.addEventListener("click", () => current?.scrollToBottom());
ui.notice.title = "Dismiss";
ui.notice.addEventListener("click", clearNotice);

route();
