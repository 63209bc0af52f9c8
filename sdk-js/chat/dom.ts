/** The page's elements (from index.html) and the notices shown over them. */
import { ClosedError, ForbiddenError, QueueFullError, RateLimitError, RoomdError, TooLargeError } from "../src/index.js";
import { byId } from "./view.js";

export const ui = {
  welcome: byId<HTMLElement>("welcome"),
  signin: byId<HTMLElement>("signin"),
  signinWhy: byId<HTMLElement>("signin-why"),
  send: byId<HTMLButtonElement>("send"),
  form: byId<HTMLFormElement>("join-form"),
  nameInput: byId<HTMLInputElement>("name"),
  roomInput: byId<HTMLInputElement>("room"),
  privateBtn: byId<HTMLButtonElement>("private"),
  chat: byId<HTMLElement>("chat"),
  title: byId<HTMLElement>("room-title"),
  me: byId<HTMLElement>("me"),
  conn: byId<HTMLElement>("conn"),
  connText: byId<HTMLElement>("conn-text"),
  leave: byId<HTMLButtonElement>("leave"),
  share: byId<HTMLButtonElement>("share"),
  peopleToggle: byId<HTMLButtonElement>("people-toggle"),
  peopleCount: byId<HTMLElement>("people-count"),
  people: byId<HTMLElement>("people"),
  peopleList: byId<HTMLElement>("people-list"),
  log: byId<HTMLElement>("log"),
  logTop: byId<HTMLElement>("log-top"),
  messages: byId<HTMLOListElement>("messages"),
  pending: byId<HTMLOListElement>("pending"),
  pendingStatus: byId<HTMLElement>("pending-status"),
  pendingText: byId<HTMLElement>("pending-text"),
  pendingRetry: byId<HTMLButtonElement>("pending-retry"),
  retry: byId<HTMLButtonElement>("retry"),
  jump: byId<HTMLButtonElement>("jump"),
  notice: byId<HTMLElement>("notice"),
  composer: byId<HTMLFormElement>("composer"),
  text: byId<HTMLTextAreaElement>("text"),
  toast: byId<HTMLElement>("toast"),
};

let noticeTimer: ReturnType<typeof setTimeout> | undefined;
/** A notice over the message column, for 10 s (or until the room changes). */
export function showNotice(text: string): void {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(clearNotice, 10_000);
}

/** A notice is about one room: leaving it takes the notice away. */
export function clearNotice(): void {
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

let toastTimer: ReturnType<typeof setTimeout> | undefined;
export function toast(text: string): void {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (ui.toast.hidden = true), 2500);
}

function kb(n: number): string {
  return n >= 1024 ? `${Math.round(n / 1024)} KB` : `${n} bytes`;
}

/** The composer can send, or says why not (never an enabled box that cannot send). */
export function composerEnabled(why: string | undefined): void {
  ui.text.disabled = why !== undefined;
  ui.send.disabled = why !== undefined;
  ui.text.placeholder = why ?? "Write a message";
}

export function refusal(e: unknown): string {
  if (e instanceof TooLargeError) return `Message refused: it is too large${e.max !== undefined ? ` (the limit is ${kb(e.max)})` : ""}.`;
  if (e instanceof ForbiddenError) return "Message refused: you may read this room but not write in it.";
  if (e instanceof RateLimitError) return `You're sending too fast — try again in ${Math.max(1, Math.ceil(e.retryAfterMs / 1000))} s.`;
  if (e instanceof QueueFullError) return "Message refused: too many messages are waiting for the connection.";
  if (e instanceof ClosedError) return "Message not sent: the connection is closed.";
  if (e instanceof RoomdError) return `Message refused: ${e.message} (${String(e.code)}).`;
  return `Message not sent: ${String(e)}`;
}
