/**
 * The roomd chat: the SDK's first real client. A page served by the broker at `/`.
 *
 * - the URL's fragment names the room (`/#lobby`), so a room is shared by its link;
 * - the last messages load on join, older ones when scrolling up;
 * - live messages arrive through the SDK, which resumes from the last seq after any drop,
 *   so the conversation goes on after a network drop or a broker restart with nothing missing;
 * - messages typed while offline wait in the SDK's queue and are sent (once) on reconnect.
 */
import {
  Client,
  ClosedError,
  QueueFullError,
  RoomdError,
  TooLargeError,
  type ConnectionState,
  type LogEntry,
  type Member,
  type Message,
  type Room,
  type Subscription,
} from "../src/index.js";
import { Presence } from "./presence.js";
import { avatar, byId, h, messageRow, regroup, seqOf, systemRow } from "./view.js";

const PAGE = 50;
const NAME_KEY = "roomd.chat.name";
const ROOM_RE = /^[A-Za-z0-9\-_.:@/~]{1,128}$/;

interface ChatPayload {
  text: string;
  name: string;
}

const ui = {
  welcome: byId<HTMLElement>("welcome"),
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
  jump: byId<HTMLButtonElement>("jump"),
  notice: byId<HTMLElement>("notice"),
  composer: byId<HTMLFormElement>("composer"),
  text: byId<HTMLTextAreaElement>("text"),
  toast: byId<HTMLElement>("toast"),
};

const client = new Client(location.origin);
/** Every connection id this page has had: its messages are shown as "mine" after reconnects too. */
const myConns = new Set<string>();
client.on("open", (hello) => myConns.add(hello.conn));

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
  for (const el of ui.pending.querySelectorAll<HTMLElement>(".msg.pending .status")) el.textContent = pendingText();
}
client.on("state", showConnection);
client.on("error", (e) => {
  if (e.code === 401) showNotice("The server refused this client's credentials.");
});
showConnection(client.state);

function pendingText(): string {
  return client.state === "open" ? "Sending…" : "Waiting for the connection…";
}

// -- notices -------------------------------------------------------------------------------

let noticeTimer: ReturnType<typeof setTimeout> | undefined;
function showNotice(text: string): void {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), 10_000);
}

let toastTimer: ReturnType<typeof setTimeout> | undefined;
function toast(text: string): void {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (ui.toast.hidden = true), 2500);
}

function kb(n: number): string {
  return n >= 1024 ? `${Math.round(n / 1024)} KB` : `${n} bytes`;
}

function refusal(e: unknown): string {
  if (e instanceof TooLargeError) return `Message refused: it is too large${e.max !== undefined ? ` (the limit is ${kb(e.max)})` : ""}.`;
  if (e instanceof QueueFullError) return "Message refused: too many messages are waiting for the connection.";
  if (e instanceof ClosedError) return "Message not sent: the connection is closed.";
  if (e instanceof RoomdError) return `Message refused: ${e.message} (${String(e.code)}).`;
  return `Message not sent: ${String(e)}`;
}

// -- one open room -------------------------------------------------------------------------

function payloadOf(m: Message): ChatPayload {
  try {
    const v = m.json<unknown>();
    if (typeof v === "object" && v !== null && typeof (v as ChatPayload).text === "string") {
      const name = (v as ChatPayload).name;
      return { text: (v as ChatPayload).text, name: typeof name === "string" && name !== "" ? name : (m.uid ?? "anonymous") };
    }
  } catch {
    // not a chat message: show what it is
  }
  return { text: m.data.length === 0 ? "(empty message)" : m.text(), name: m.uid ?? `conn ${m.from.slice(-4)}` };
}

class ChatRoom {
  private readonly room: Room;
  private readonly offs: (() => void)[] = [];
  private readonly rendered = new Map<number, HTMLLIElement>();
  private readonly presence: Presence;
  private oldest: number | undefined;
  private more = false;
  private loading = false;
  private started = false;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly me: string,
  ) {
    this.room = client.room(name);
    this.presence = new Presence((text) => this.system(text), () => client.conn);
  }

  async start(): Promise<void> {
    const r = this.room;
    this.offs.push(
      r.on("message", (m) => this.live(m)),
      r.on("join", (m) => this.presence.join(m)),
      r.on("leave", (m) => this.presence.leave(m)),
      r.on("presence", (ms) => this.people(ms)),
      r.on("subscribed", (s) => this.subscribed(s)),
      r.on("reset", () => void this.reload()),
      r.on("gap", (g) => this.system(`Messages ${g.from}–${g.to} are no longer kept by the server.`, true)),
      r.on("error", (e) => this.system(`Lost the room: ${e.message}`, true)),
    );
    try {
      await r.subscribe({ presence: true, info: { name: this.me } });
    } catch (e) {
      if (this.stopped) return;
      showNotice(`Cannot open #${this.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.offs) off();
    this.presence.stop();
    void this.room.unsubscribe();
  }

  private subscribed(s: Subscription): void {
    if (!this.started) {
      this.started = true;
      this.presence.reset(this.room.members);
      void this.loadInitial(s.last);
    } else {
      this.presence.resync(this.room.members);
    }
  }

  private async loadInitial(last: number): Promise<void> {
    this.loading = true;
    ui.logTop.textContent = "Loading messages…";
    try {
      const page = await this.room.history({ before: last + 1, limit: PAGE });
      if (this.stopped) return;
      for (const item of page.items) this.render(item);
      this.oldest = page.items[0]?.seq;
      this.more = page.more && this.oldest !== undefined;
    } catch (e) {
      this.system(`Could not load history: ${e instanceof Error ? e.message : String(e)}`, true);
    } finally {
      this.loading = false;
    }
    this.showTop();
    this.scrollToBottom();
    // Fill a tall screen: keep loading while nothing can scroll yet.
    while (!this.stopped && this.more && ui.log.scrollHeight <= ui.log.clientHeight + 40) {
      if (!(await this.loadOlder())) break;
    }
  }

  /** The page before the oldest shown message, prepended without moving what the user sees. */
  async loadOlder(): Promise<boolean> {
    if (this.loading || !this.more || this.oldest === undefined) return false;
    this.loading = true;
    ui.logTop.textContent = "Loading older messages…";
    const before = this.oldest;
    try {
      const page = await this.room.history({ before, limit: PAGE });
      if (this.stopped) return false;
      const height = ui.log.scrollHeight;
      const top = ui.log.scrollTop;
      for (const item of page.items) this.render(item);
      ui.log.scrollTop = top + (ui.log.scrollHeight - height);
      this.oldest = page.items[0]?.seq ?? before;
      this.more = page.more && page.items.length > 0;
      return true;
    } catch (e) {
      this.system(`Could not load older messages: ${e instanceof Error ? e.message : String(e)}`, true);
      return false;
    } finally {
      this.loading = false;
      this.showTop();
    }
  }

  private showTop(): void {
    ui.logTop.textContent = this.more ? "Scroll up for older messages" : `This is the beginning of #${this.name}.`;
  }

  private async reload(): Promise<void> {
    ui.messages.replaceChildren();
    this.rendered.clear();
    this.system("The room's history was reset on the server.", true);
    await this.loadInitial(this.room.lastSeq ?? 0);
  }

  private live(m: Message): void {
    const stick = this.nearBottom();
    const row = this.render(m);
    if (row === undefined) return;
    if (stick || row.classList.contains("mine")) this.scrollToBottom();
    else ui.jump.hidden = false;
  }

  /** Show a log entry once, at its place by seq. */
  private render(entry: LogEntry): HTMLLIElement | undefined {
    if (entry.kind !== "message" || this.rendered.has(entry.seq)) return undefined;
    const p = payloadOf(entry);
    const row = messageRow({ seq: entry.seq, ts: entry.ts, name: p.name, text: p.text, mine: myConns.has(entry.from) });
    this.place(row, entry.seq);
    return row;
  }

  private place(row: HTMLLIElement, seq: number): void {
    this.rendered.set(seq, row);
    row.dataset["seq"] = String(seq);
    let after: Element | null = null;
    let middle = false;
    for (let el = ui.messages.lastElementChild; el !== null; el = el.previousElementSibling) {
      const s = seqOf(el);
      if (s === undefined) continue;
      if (s < seq) {
        after = el;
        break;
      }
      middle = true;
    }
    if (!middle) ui.messages.append(row);
    else if (after !== null) after.after(row);
    else ui.messages.prepend(row);
    regroup(row);
    regroup(row.nextElementSibling);
  }

  private system(text: string, warn = false): void {
    const stick = this.nearBottom();
    ui.messages.append(systemRow(text, warn));
    if (stick) this.scrollToBottom();
  }

  private people(members: Member[]): void {
    const groups = this.presence.groups(members);
    ui.peopleCount.textContent = String(groups.length);
    ui.peopleList.replaceChildren(
      ...groups.map((g) => {
        const li = h("li");
        li.append(avatar(g.name), h("span", "who", g.name));
        if (g.you) li.append(h("span", "you", "(you)"));
        if (g.count > 1) li.append(h("span", "count", `×${g.count}`));
        return li;
      }),
    );
  }

  send(text: string): void {
    const echo = messageRow({ ts: Date.now(), name: this.me, text, mine: true });
    echo.classList.add("pending");
    const status = h("span", "status", pendingText());
    echo.append(status);
    ui.pending.append(echo);
    this.scrollToBottom();
    this.room.publishJSON({ text, name: this.me } satisfies ChatPayload).then(
      (seq) => {
        echo.classList.remove("pending");
        status.remove();
        if (this.rendered.has(seq) || this.stopped) echo.remove();
        else this.place(echo, seq);
      },
      (e: unknown) => {
        echo.classList.remove("pending");
        echo.classList.add("failed");
        const shown = echo.querySelector(".text");
        if (shown !== null && text.length > 300) shown.textContent = `${text.slice(0, 300)}… (${text.length - 300} more characters)`;
        status.textContent = refusal(e);
        showNotice(refusal(e));
      },
    );
  }

  nearBottom(): boolean {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  scrollToBottom(): void {
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.jump.hidden = true;
  }
}

// -- routing: the fragment names the room --------------------------------------------------

let current: ChatRoom | undefined;

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
  ui.messages.replaceChildren();
  ui.pending.replaceChildren();
  ui.peopleList.replaceChildren();
  if (room === "" || name === "" || !ROOM_RE.test(room)) {
    ui.chat.hidden = true;
    ui.welcome.hidden = false;
    ui.nameInput.value = name;
    ui.roomInput.value = room !== "" ? room : ui.roomInput.value;
    (name === "" ? ui.nameInput : ui.roomInput).focus();
    document.title = "roomd chat";
    return;
  }
  ui.welcome.hidden = true;
  ui.chat.hidden = false;
  ui.title.textContent = `#${room}`;
  ui.me.textContent = `You are ${name}`;
  ui.text.placeholder = "Write a message";
  document.title = `#${room} · roomd chat`;
  current = new ChatRoom(room, name);
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

ui.peopleToggle.addEventListener("click", () => {
  const open = ui.people.classList.toggle("open");
  ui.peopleToggle.setAttribute("aria-expanded", String(open));
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
ui.text.addEventListener("input", autosize);

ui.log.addEventListener("scroll", () => {
  if (current === undefined) return;
  if (ui.log.scrollTop < 120) void current.loadOlder();
  if (current.nearBottom()) ui.jump.hidden = true;
});
ui.jump.addEventListener("click", () => current?.scrollToBottom());

route();
