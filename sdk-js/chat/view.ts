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

/** A round initial; coloured by who the person is (`id`), so two people of one name differ. */
export function avatar(name: string, id = name): HTMLElement {
  const el = h("span", "avatar", (Array.from(name.trim())[0] ?? "?").toUpperCase());
  el.style.background = colorFor(id);
  el.setAttribute("aria-hidden", "true");
  return el;
}

/**
 * Times in the reader's own locale: `navigator.languages` is the browser's language list as
 * the user set it, while the default `Intl` locale may be the system's (a German reader on an
 * English system saw "03:17 PM"). "numeric" hours let the locale choose 12 or 24 hours.
 */
function locales(): readonly string[] {
  return navigator.languages.length > 0 ? navigator.languages : [navigator.language];
}
const timeFormat = new Intl.DateTimeFormat(locales(), { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(locales(), { month: "short", day: "numeric" });
const fullFormat = new Intl.DateTimeFormat(locales(), { dateStyle: "full", timeStyle: "medium" });

/** "14:03" today, "28 Nov, 14:03" on other days, in the reader's locale. */
export function formatTime(ts: number, now = new Date()): string {
  const d = new Date(ts);
  const time = timeFormat.format(d);
  if (d.toDateString() === now.toDateString()) return time;
  return `${dayFormat.format(d)}, ${time}`;
}

/** A `<time>` element for a message, with the full date as its tooltip. */
function timeEl(ts: number, className: string, text: string): HTMLTimeElement {
  const t = h("time", className, text);
  t.dateTime = new Date(ts).toISOString();
  t.title = fullFormat.format(new Date(ts));
  return t;
}

/** http(s) links in text; trailing punctuation is left out of the link. */
const LINK_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/g;

/**
 * A message's text as DOM nodes: text nodes, and `<a>` for each http(s) link. Built with DOM
 * APIs only (never HTML from user text); a link opens in a new tab without access to this one.
 */
export function textWithLinks(text: string): Node[] {
  const out: Node[] = [];
  let last = 0;
  for (const m of text.matchAll(LINK_RE)) {
    let url: URL;
    try {
      url = new URL(m[0]);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    const a = h("a", "link", m[0]);
    a.href = url.href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    out.push(a);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

export interface ChatLine {
  seq?: number;
  ts: number;
  /** Who wrote it: a user id or connection id, so two people of one name stay two. */
  who: string;
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

/**
 * One message row: avatar, author, time, text. A row grouped under the one before it hides
 * its avatar and author; its time (`.stamp`, in the avatar's column) shows on hover.
 */
export function messageRow(m: ChatLine): HTMLLIElement {
  const li = h("li", "msg");
  if (m.mine) li.classList.add("mine");
  if (m.seq !== undefined) li.dataset["seq"] = String(m.seq);
  li.dataset["author"] = m.name;
  li.dataset["who"] = m.who;
  li.dataset["ts"] = String(m.ts);
  const meta = h("div", "meta");
  meta.append(h("span", "author", m.name));
  if (m.label !== undefined) meta.append(labelSpan(m.label));
  meta.append(timeEl(m.ts, "time", formatTime(m.ts)));
  const text = h("p", "text");
  text.append(...textWithLinks(m.text));
  li.append(avatar(m.name, m.who), timeEl(m.ts, "stamp", timeFormat.format(new Date(m.ts))), meta, text);
  if (m.deleted === true) markDeleted(li);
  return li;
}

/** A shown message was deleted: it keeps its place, author and time, and loses its text. */
export function markDeleted(li: HTMLElement): void {
  li.classList.add("deleted");
  const text = li.querySelector(".text");
  if (text !== null) text.textContent = DELETED_TEXT;
}

/**
 * Consecutive messages by one author (one user id or connection, and one name) within five
 * minutes are shown as one group.
 */
export function regroup(li: Element | null): void {
  if (!(li instanceof HTMLElement) || !li.classList.contains("msg")) return;
  const prev = li.previousElementSibling;
  const cont =
    prev instanceof HTMLElement &&
    prev.classList.contains("msg") &&
    // A refused message stands on its own, with its actions.
    !prev.classList.contains("failed") &&
    !li.classList.contains("failed") &&
    prev.dataset["who"] === li.dataset["who"] &&
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
