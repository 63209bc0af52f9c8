/**
 * The roomd board: sticky notes shared by everyone on `/board#ROOM`, built on the public SDK.
 *
 * - Each note is one key of the room's state (`note:ID` → `{text, x, y}`, positions as
 *   fractions of the board so phones and desktops agree). Creating uses `cas` with version 0,
 *   moving and editing `cas` with the version the change started from: when two people change
 *   a note at once, one wins and the other sees the conflict and the current text, never a
 *   silent overwrite.
 * - Everyone's pointer is shown live through ephemeral signals (`room.signal`): never stored,
 *   sent at most every `CURSOR_EVERY` ms, gone after `CURSOR_TTL` ms without news.
 * - Who is here comes from presence, as avatars.
 */
import { Client, ConflictError, type Member, type Signal, type StateEntry, type Value } from "../../src/index.js";

const CURSOR_EVERY = 50;
const CURSOR_TTL = 3_000;
const NOTE_KEY = /^note:[a-z0-9]{1,32}$/;

interface Note {
  text: string;
  x: number;
  y: number;
}

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing`);
  return el;
}

const ui = { board: $("board"), people: $("people"), conn: $("conn"), add: $("add"), room: $("room"), notice: $("notice") };

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls !== undefined) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function colorFor(name: string): string {
  let x = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) x = Math.imul(x ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return `hsl(${x % 360} 60% 45%)`;
}

function randomId(n: number): string {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

function clamp(v: number): number {
  return Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0));
}

/** A state value read as a note; anything else is ignored (another client's data). */
function asNote(v: Value | undefined): Note | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) return undefined;
  const { text, x, y } = v as Record<string, Value>;
  if (typeof text !== "string" || typeof x !== "number" || typeof y !== "number") return undefined;
  return { text, x: clamp(x), y: clamp(y) };
}

function notice(text: string): void {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  setTimeout(() => (ui.notice.hidden = true), 6_000);
}

// -- who am I, which room ------------------------------------------------------------------

const NAME_KEY = "roomd.board.name";
let me = localStorage.getItem(NAME_KEY) ?? "";
if (me === "") {
  me = `Guest ${randomId(3).toUpperCase()}`;
  localStorage.setItem(NAME_KEY, me);
}
const roomName = `board:${decodeURIComponent(location.hash.slice(1)) || "lobby"}`.slice(0, 128);
ui.room.textContent = roomName.slice("board:".length);
const client = new Client(location.origin, { user: `board-${randomId(10)}` });
const room = client.room(roomName);

client.on("state", (s) => {
  ui.conn.dataset["state"] = s;
  ui.conn.textContent = s === "open" ? "Live" : s === "closed" ? "Offline" : "Reconnecting";
});

// -- notes ---------------------------------------------------------------------------------

/** A note element per key, and the version each shows. */
const shown = new Map<string, { card: HTMLElement; ver: number; note: Note }>();

function render(key: string, entry: StateEntry | undefined): void {
  const note = entry === undefined ? undefined : asNote(entry.value);
  const old = shown.get(key);
  if (note === undefined || entry === undefined) {
    old?.card.remove();
    shown.delete(key);
    return;
  }
  const card = old?.card ?? makeCard(key);
  shown.set(key, { card, ver: entry.ver, note });
  place(card, note.x, note.y);
  card.dataset["ver"] = String(entry.ver);
  const text = card.querySelector<HTMLTextAreaElement>("textarea");
  // Someone else's change shows at once, unless this user is typing in that note.
  if (text !== null && (document.activeElement !== text || card.dataset["editing"] !== "1")) text.value = note.text;
}

function makeCard(key: string): HTMLElement {
  const card = el("div", "note");
  card.dataset["key"] = key;
  const grip = el("div", "grip", "⠿");
  grip.title = "Drag to move";
  const text = el("textarea");
  text.placeholder = "Write something…";
  text.setAttribute("aria-label", "Note text");
  const conflict = el("div", "conflict");
  conflict.hidden = true;
  card.append(grip, text, conflict);
  ui.board.append(card);
  let base: number | undefined;
  text.addEventListener("focus", () => {
    card.dataset["editing"] = "1";
    base = shown.get(key)?.ver;
  });
  text.addEventListener("blur", () => {
    card.dataset["editing"] = "0";
    const cur = shown.get(key);
    if (cur === undefined || base === undefined || text.value === cur.note.text) return;
    void save(key, base, { ...cur.note, text: text.value }, card);
  });
  drag(card, grip, key);
  return card;
}

/** Writes a note if it is still at version `ver`; a conflict shows the current text. */
async function save(key: string, ver: number, note: Note, card: HTMLElement): Promise<void> {
  const conflict = card.querySelector<HTMLElement>(".conflict");
  try {
    await room.cas(key, ver, note as unknown as Value);
    if (conflict !== null) conflict.hidden = true;
  } catch (e) {
    if (!(e instanceof ConflictError)) return notice(`Not saved: ${e instanceof Error ? e.message : String(e)}`);
    const current = await room.get(key);
    const now = asNote(current.value);
    if (conflict === null) return;
    conflict.replaceChildren(
      el("strong", undefined, "Someone changed this note first. "),
      el("span", undefined, "Their text: "),
      el("q", "theirs", now?.text ?? "(deleted)"),
    );
    const mine = el("button", "keep", "Use mine");
    mine.type = "button";
    mine.addEventListener("click", () => {
      conflict.hidden = true;
      if (now !== undefined) void save(key, current.ver, { ...now, text: note.text }, card);
    });
    const theirs = el("button", "drop", "Keep theirs");
    theirs.type = "button";
    theirs.addEventListener("click", () => {
      conflict.hidden = true;
      const t = card.querySelector("textarea");
      if (t !== null && now !== undefined) t.value = now.text;
    });
    conflict.append(mine, theirs);
    conflict.hidden = false;
  }
}

/** A note's place: `x`, `y` as fractions of the room left on the board beside the note, so a
 * note never hangs over the edge, whatever the screen. */
function place(card: HTMLElement, x: number, y: number): void {
  card.style.setProperty("--x", String(x));
  card.style.setProperty("--y", String(y));
  card.dataset["x"] = x.toFixed(3);
  card.dataset["y"] = y.toFixed(3);
}

function drag(card: HTMLElement, grip: HTMLElement, key: string): void {
  grip.addEventListener("pointerdown", (down) => {
    const start = shown.get(key);
    if (start === undefined) return;
    grip.setPointerCapture(down.pointerId);
    const rect = ui.board.getBoundingClientRect();
    const move = (e: PointerEvent): void => {
      place(card, clamp((e.clientX - rect.left) / rect.width), clamp((e.clientY - rect.top) / rect.height));
    };
    const up = (e: PointerEvent): void => {
      grip.removeEventListener("pointermove", move);
      grip.removeEventListener("pointerup", up);
      const x = clamp((e.clientX - rect.left) / rect.width);
      const y = clamp((e.clientY - rect.top) / rect.height);
      void save(key, start.ver, { ...start.note, x, y }, card).then(() => render(key, room.state.get(key)));
    };
    grip.addEventListener("pointermove", move);
    grip.addEventListener("pointerup", up);
  });
}

ui.add.addEventListener("click", () => {
  const key = `note:${randomId(10)}`;
  const note: Note = { text: "", x: 0.05 + Math.random() * 0.5, y: 0.05 + Math.random() * 0.5 };
  room.cas(key, 0, note as unknown as Value).then(
    () => shown.get(key)?.card.querySelector("textarea")?.focus(),
    (e: unknown) => notice(`Could not add a note: ${e instanceof Error ? e.message : String(e)}`),
  );
});

room.on("state", (c) => {
  if (NOTE_KEY.test(c.key)) render(c.key, room.state.get(c.key));
});
room.on("subscribed", () => {
  for (const [key, entry] of room.state) if (NOTE_KEY.test(key)) render(key, entry);
  for (const key of [...shown.keys()]) if (!room.state.has(key)) render(key, undefined);
});

// -- presence and cursors ------------------------------------------------------------------

function nameOf(m: Member): string {
  const info = m.info;
  if (typeof info === "object" && info !== null && !Array.isArray(info) && !(info instanceof Uint8Array)) {
    const n = (info as Record<string, Value>)["name"];
    if (typeof n === "string" && n !== "") return n.slice(0, 32);
  }
  return "Guest";
}

room.on("presence", (members) => {
  ui.people.replaceChildren(
    ...members.map((m) => {
      const li = el("li", "avatar", nameOf(m).slice(0, 1).toUpperCase());
      li.title = m.conn === client.conn ? `${nameOf(m)} (you)` : nameOf(m);
      li.style.background = colorFor(nameOf(m));
      li.dataset["name"] = nameOf(m);
      return li;
    }),
  );
});

const cursors = new Map<string, { dot: HTMLElement; timer: ReturnType<typeof setTimeout> }>();

function dropCursor(conn: string): void {
  const c = cursors.get(conn);
  if (c === undefined) return;
  clearTimeout(c.timer);
  c.dot.remove();
  cursors.delete(conn);
}

room.on("signal", (s: Signal) => {
  let v: unknown;
  try {
    v = s.json<unknown>();
  } catch {
    return;
  }
  if (typeof v !== "object" || v === null) return;
  const { x, y, name } = v as { x?: unknown; y?: unknown; name?: unknown };
  if (typeof x !== "number" || typeof y !== "number" || typeof name !== "string") return;
  let c = cursors.get(s.from);
  if (c === undefined) {
    const dot = el("div", "cursor", name.slice(0, 32));
    dot.style.setProperty("--c", colorFor(name));
    ui.board.append(dot);
    c = { dot, timer: setTimeout(() => undefined, 0) };
    cursors.set(s.from, c);
  }
  clearTimeout(c.timer);
  c.timer = setTimeout(() => dropCursor(s.from), CURSOR_TTL);
  c.dot.style.left = `${clamp(x) * 100}%`;
  c.dot.style.top = `${clamp(y) * 100}%`;
});
room.on("leave", (m) => dropCursor(m.conn));

let lastCursor = 0;
ui.board.addEventListener("pointermove", (e) => {
  const now = Date.now();
  if (now - lastCursor < CURSOR_EVERY || !client.isOpen) return;
  lastCursor = now;
  const r = ui.board.getBoundingClientRect();
  room.signalJSON({ x: clamp((e.clientX - r.left) / r.width), y: clamp((e.clientY - r.top) / r.height), name: me }).catch(() => undefined);
});

await room.subscribe({ state: true, presence: true, info: { name: me } });
