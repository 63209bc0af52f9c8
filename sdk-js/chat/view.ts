/** DOM helpers of the chat: elements by id, message rows, avatars, times. No framework. */

export function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing from index.html`);
  return el as T;
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (className !== undefined) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A stable colour per name. */
export function colorFor(name: string): string {
  let x = 0x811c9dc5; // FNV-1a: similar names get different hues
  for (let i = 0; i < name.length; i++) x = Math.imul(x ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return `hsl(${x % 360} 55% 42%)`;
}

export function avatar(name: string): HTMLElement {
  const el = h("span", "avatar", (Array.from(name.trim())[0] ?? "?").toUpperCase());
  el.style.background = colorFor(name);
  el.setAttribute("aria-hidden", "true");
  return el;
}

/** "14:03" today, "Nov 28, 14:03" on other days. */
export function formatTime(ts: number, now = new Date()): string {
  const d = new Date(ts);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
}

export interface ChatLine {
  seq?: number;
  ts: number;
  name: string;
  /** The display name the sender chose, when it is not `name` (their verified id). */
  label?: string;
  text: string;
  mine: boolean;
  /** Deleted: shown muted as "message deleted", with its author and time. */
  deleted?: boolean;
}

/** What a deleted message shows instead of its text. */
export const DELETED_TEXT = "message deleted";

/** A display name shown beside a verified id, marked as the sender's own choice. */
export function labelSpan(label: string): HTMLElement {
  const s = h("span", "label", `“${label}”`);
  s.title = "The name this person chose: not verified";
  return s;
}

/** One message row: avatar, author, time, text. */
export function messageRow(m: ChatLine): HTMLLIElement {
  const li = h("li", "msg");
  if (m.mine) li.classList.add("mine");
  if (m.seq !== undefined) li.dataset["seq"] = String(m.seq);
  li.dataset["author"] = m.name;
  li.dataset["ts"] = String(m.ts);
  const meta = h("div", "meta");
  meta.append(h("span", "author", m.name));
  if (m.label !== undefined) meta.append(labelSpan(m.label));
  const time = h("time", "time", formatTime(m.ts));
  time.dateTime = new Date(m.ts).toISOString();
  time.title = new Date(m.ts).toLocaleString();
  meta.append(time);
  li.append(avatar(m.name), meta, h("p", "text", m.text));
  if (m.deleted === true) markDeleted(li);
  return li;
}

/** A shown message was deleted: it keeps its place, author and time, and loses its text. */
export function markDeleted(li: HTMLElement): void {
  li.classList.add("deleted");
  const text = li.querySelector(".text");
  if (text !== null) text.textContent = DELETED_TEXT;
}

/** Consecutive messages by one author within five minutes are shown as one group. */
export function regroup(li: Element | null): void {
  if (!(li instanceof HTMLElement) || !li.classList.contains("msg")) return;
  const prev = li.previousElementSibling;
  const cont =
    prev instanceof HTMLElement &&
    prev.classList.contains("msg") &&
    prev.dataset["author"] === li.dataset["author"] &&
    Number(li.dataset["ts"]) - Number(prev.dataset["ts"]) < 5 * 60_000;
  li.classList.toggle("cont", cont);
}

export function systemRow(text: string, warn = false): HTMLLIElement {
  const li = h("li", warn ? "sys warn" : "sys", text);
  return li;
}

export function seqOf(el: Element): number | undefined {
  const s = el instanceof HTMLElement ? el.dataset["seq"] : undefined;
  return s === undefined ? undefined : Number(s);
}
