/**
 * One open room in the chat: its subscription with presence, the history (last page on join,
 * older pages on scroll-up), live messages placed by seq (each shown once), and sending with
 * a local echo that is confirmed by the publish's seq or marked refused.
 */
import {
  ForbiddenError,
  RateLimitError,
  TooLargeError,
  type Client,
  type Deletion,
  type Edit,
  type LogEntry,
  type Member,
  type Message,
  type Room,
  type Subscription,
} from "../src/index.js";
import { composerEnabled, refusal, showNotice, toast, ui } from "./dom.js";
import { addActions, markEdited, removeActions } from "./edits.js";
import { identity, Presence } from "./presence.js";
import { Typing } from "./typing.js";
import { avatar, DELETED_TEXT, h, labelSpan, markDeleted, messageRow, regroup, seqOf, systemRow } from "./view.js";

/** Messages per history page. */
const PAGE = 50;

/** A chat message's payload: UTF-8 JSON. */
export interface ChatPayload {
  text: string;
  name: string;
}

/**
 * A message's payload as a value: UTF-8 JSON (what this chat publishes) or one MessagePack
 * value (what a backend's `data` through the server API is stored as); `undefined` if neither.
 * A JSON object's text starts with `{`, which MessagePack reads as one small integer followed
 * by more bytes, so the two cannot be mistaken for each other.
 */
function payloadOf(m: Message | Edit): unknown {
  try {
    return m.json<unknown>();
  } catch {
    // not JSON: MessagePack?
  }
  try {
    return m.value();
  } catch {
    return undefined;
  }
}

/** An edit's new text: the chat's JSON payload's, else the payload as text. */
function editedText(e: Edit): string {
  const v = payloadOf(e);
  if (typeof v === "object" && v !== null && typeof (v as ChatPayload).text === "string") return (v as ChatPayload).text;
  return e.data.length === 0 ? "(empty message)" : e.text();
}

/** The line under the messages that says who is typing (made here: the page has none). */
function typingLine(): HTMLElement {
  const found = document.getElementById("typing");
  if (found !== null) return found;
  const line = h("div", "typing");
  line.id = "typing";
  line.setAttribute("aria-live", "polite");
  ui.composer.before(line);
  return line;
}

/**
 * A message as shown: its text, its author (`who`: the user id the broker stamped, else the
 * connection; `name`: what is shown), and (tokens on) the display name they chose.
 */
function lineOf(m: Message): { text: string; who: string; name: string; label?: string } {
  const who = m.uid ?? m.from;
  if (m.deleted !== undefined) {
    // The payload (and the name chosen in it) is gone: the author is what the broker stamped.
    return { text: DELETED_TEXT, who, name: m.uid ?? `conn ${m.from.slice(-4)}` };
  }
  let text = m.data.length === 0 ? "(empty message)" : m.text();
  let chosen: string | undefined;
  const v = payloadOf(m);
  if (typeof v === "object" && v !== null && typeof (v as ChatPayload).text === "string") {
    text = (v as ChatPayload).text;
    const name = (v as ChatPayload).name;
    if (typeof name === "string" && name !== "") chosen = name;
  }
  // Tokens on: the author is the verified user id the broker stamped; the name is a label.
  if (identity.verified && m.uid !== undefined) {
    return chosen !== undefined && chosen !== m.uid ? { text, who, name: m.uid, label: chosen } : { text, who, name: m.uid };
  }
  return { text, who, name: chosen ?? m.uid ?? `conn ${m.from.slice(-4)}` };
}

export class ChatRoom {
  private readonly room: Room;
  private readonly offs: (() => void)[] = [];
  private readonly rendered = new Map<number, HTMLLIElement>();
  /** Seqs of deleted messages seen in `del` entries, for a row rendered after its deletion. */
  private readonly deleted = new Set<number>();
  private readonly presence: Presence;
  private readonly typing: Typing;
  private oldest: number | undefined;
  private more = false;
  private loading = false;
  private started = false;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly me: string,
    private readonly client: Client,
    /** Every connection id this page has had: their messages are "mine". */
    private readonly myConns: ReadonlySet<string>,
    /** A live message from someone else was shown (for the unread count). */
    private readonly onOthers: () => void = () => undefined,
  ) {
    this.room = client.room(name);
    this.presence = new Presence((text) => this.system(text), () => client.conn);
    this.typing = new Typing(this.room, me, typingLine());
  }

  /** The composer's text changed: tell the room we are typing (throttled), or stopped. */
  typed(empty: boolean): void {
    this.typing.typed(empty);
  }

  async start(): Promise<void> {
    const r = this.room;
    this.offs.push(
      r.on("message", (m) => this.live(m)),
      r.on("deleted", (d) => this.render(d)),
      r.on("edited", (e) => this.render(e)),
      r.on("join", (m) => this.presence.join(m)),
      r.on("leave", (m) => {
        this.typing.done(m.conn);
        this.presence.leave(m);
      }),
      r.on("presence", (ms) => this.people(ms)),
      r.on("subscribed", (s) => this.subscribed(s)),
      r.on("reset", () => void this.reload()),
      r.on("gap", (g) => this.system(`Messages ${g.from}–${g.to} are no longer kept by the server.`, true)),
      r.on("error", (e) => this.system(`Lost the room: ${e.message}`, true)),
      r.on("unsubscribed", () => {
        // The application removed this user: the SDK does not subscribe again, nor does the chat.
        composerEnabled("You were removed from this room.");
        this.system(`You were removed from #${this.name}.`, true);
      }),
    );
    try {
      await r.subscribe({ presence: true, info: { name: this.me } });
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof ForbiddenError) {
        const why = `You don't have access to #${this.name}.`;
        composerEnabled(why);
        ui.logTop.textContent = why;
        showNotice(`${why} Ask whoever runs this chat, or pick another room.`);
        return;
      }
      showNotice(`Cannot open #${this.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.offs) off();
    this.presence.stop();
    this.typing.stop();
    void this.room.unsubscribe();
  }

  private subscribed(s: Subscription): void {
    // Each (re)subscription says what this connection may do here (after a token refresh too).
    composerEnabled(s.allow === undefined || s.allow.includes("pub") ? undefined : "You can read this room but not write in it.");
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
    this.typing.done(m.from);
    const stick = this.nearBottom();
    const row = this.render(m);
    if (row === undefined) return;
    if (!row.classList.contains("mine")) this.onOthers();
    if (stick || row.classList.contains("mine")) this.scrollToBottom();
    else ui.jump.hidden = false;
  }

  /** Show a log entry once, at its place by seq; a deletion mutes the message it deleted. */
  private render(entry: LogEntry): HTMLLIElement | undefined {
    if (entry.kind === "deletion") return this.markDeleted(entry);
    if (entry.kind === "edit") return this.applyEdit(entry);
    if (entry.kind !== "message") return undefined;
    const shown = this.rendered.get(entry.seq);
    if (shown !== undefined) {
      // A replay or history page can bring the stub of a message shown before its deletion.
      if (entry.deleted !== undefined) {
        markDeleted(shown);
        removeActions(shown);
      } else if (entry.edited !== undefined) markEdited(shown, lineOf(entry).text);
      return undefined;
    }
    const p = lineOf(entry);
    const deleted = entry.deleted !== undefined || this.deleted.has(entry.seq);
    const row = messageRow({ seq: entry.seq, ts: entry.ts, ...p, mine: this.myConns.has(entry.from), deleted });
    if (entry.edited !== undefined && !deleted) markEdited(row, p.text);
    this.place(row, entry.seq);
    if (this.authored(entry.uid)) this.withActions(row, entry.seq);
    return row;
  }

  /** Whether a message with this user id is this user's (the broker lets only them change it). */
  private authored(uid: string | undefined): boolean {
    return uid !== undefined && uid === this.client.hello?.user;
  }

  /** Edit and Delete on one of this user's rows. */
  private withActions(row: HTMLLIElement, seq: number): void {
    addActions(row, {
      edit: (text) => this.room.edit(seq, JSON.stringify({ text, name: this.me } satisfies ChatPayload)),
      remove: () => this.room.deleteMessage(seq),
      failed: (e) => showNotice(refusal(e).replace(/^Message (refused|not sent)/, "Change refused")),
    });
  }

  /** An edit: the message it changed shows the new text, marked edited. A superseded edit's
   * content is gone, and the entry that superseded it follows: nothing to show. */
  private applyEdit(e: Edit): undefined {
    if (e.superseded !== undefined || this.deleted.has(e.target)) return undefined;
    const row = this.rendered.get(e.target);
    if (row !== undefined && !row.classList.contains("deleted")) markEdited(row, editedText(e));
    return undefined;
  }

  /** Keeps the row (its place, author and time) and drops its text. */
  private markDeleted(d: Deletion): undefined {
    this.deleted.add(d.target);
    const row = this.rendered.get(d.target);
    if (row !== undefined) {
      markDeleted(row);
      removeActions(row);
    }
    return undefined;
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
        li.append(avatar(g.name, g.id), h("span", "who", g.name));
        if (g.label !== undefined) li.append(labelSpan(g.label));
        if (g.you) li.append(h("span", "you", "(you)"));
        if (g.count > 1) li.append(h("span", "count", `×${g.count}`));
        return li;
      }),
    );
  }

  /**
   * Show `text` at once as pending, and publish it. Pending rows of one author are grouped,
   * with one status line under them (`showPending`). Refused, the row keeps the whole text
   * with Retry, Edit (back into the composer) and Copy.
   */
  send(text: string): void {
    this.typing.sent();
    const id = identity.verified ? this.client.hello?.user : undefined;
    const echo = messageRow({
      ts: Date.now(),
      who: this.client.hello?.user ?? identity.me ?? "me",
      ...(id !== undefined && id !== this.me ? { name: id, label: this.me } : { name: id ?? this.me }),
      text,
      mine: true,
    });
    echo.classList.add("pending");
    ui.pending.append(echo);
    regroup(echo);
    showPending(this.client);
    this.scrollToBottom();
    this.publish(echo, text);
  }

  private publish(echo: HTMLLIElement, text: string): void {
    this.room.publishJSON({ text, name: this.me } satisfies ChatPayload).then(
      (seq) => {
        const next = echo.nextElementSibling;
        echo.classList.remove("pending");
        if (this.rendered.has(seq) || this.stopped) echo.remove();
        else {
          this.place(echo, seq);
          if (this.client.hello?.user !== undefined) this.withActions(echo, seq);
        }
        regroup(next);
        showPending(this.client);
      },
      (e: unknown) => {
        if (e instanceof RateLimitError && ui.text.value === "") {
          // Too fast: nothing was stored. The text goes back into the composer to send again
          // (unless something new is being typed there: then it stays below, marked refused).
          this.drop(echo);
          putInComposer(text);
          showNotice(refusal(e));
          return;
        }
        if (e instanceof ForbiddenError) composerEnabled(refusal(e));
        // Sent again as it is, too large or forbidden would only be refused again.
        this.failed(echo, text, refusal(e), !(e instanceof TooLargeError || e instanceof ForbiddenError));
        showNotice(refusal(e));
      },
    );
  }

  /** A refused message: the whole text stays, with what can be done about it. */
  private failed(echo: HTMLLIElement, text: string, why: string, retryable: boolean): void {
    echo.classList.remove("pending");
    echo.classList.add("failed");
    regroup(echo);
    regroup(echo.nextElementSibling);
    const bar = h("div", "failure");
    bar.append(h("span", "status", why));
    const action = (label: string, title: string, fn: () => void): void => {
      const b = h("button", "act", label);
      b.type = "button";
      b.title = title;
      b.addEventListener("click", fn);
      bar.append(b);
    };
    const retry = (): void => {
      bar.remove();
      echo.classList.remove("failed");
      echo.classList.add("pending");
      regroup(echo);
      showPending(this.client);
      this.publish(echo, text);
    };
    if (retryable) action("Retry", "Send this message again", retry);
    action("Edit", "Put this message back in the box to change it", () => {
      this.drop(echo);
      putInComposer(text);
    });
    action("Copy", "Copy the text of this message", () => {
      void navigator.clipboard?.writeText(text).then(() => toast("Message copied"));
    });
    echo.append(bar);
    showPending(this.client);
  }

  private drop(echo: HTMLLIElement): void {
    const next = echo.nextElementSibling;
    echo.remove();
    regroup(next);
    showPending(this.client);
  }

  nearBottom(): boolean {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  scrollToBottom(): void {
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.jump.hidden = true;
  }
}

/** The composer gets `text` back (to edit or send again), unless the user is typing. */
function putInComposer(text: string): void {
  if (ui.text.value !== "" && ui.text.value !== text) return toast("Finish or clear the message you are typing first");
  ui.text.value = text;
  ui.text.dispatchEvent(new Event("input"));
  ui.text.focus();
}

/** One status line under the messages not yet confirmed, instead of one per message. */
export function showPending(client: Client): void {
  const n = ui.pending.querySelectorAll(".msg.pending").length;
  ui.pendingStatus.hidden = n === 0;
  const messages = n === 1 ? "1 message" : `${n} messages`;
  ui.pendingText.textContent = client.state === "open" ? `Sending ${messages}…` : `${messages} waiting for the connection: sent as soon as it is back`;
  ui.pendingRetry.hidden = client.state === "open";
}
