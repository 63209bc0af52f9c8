/**
 * A room: its subscription (kept across reconnects), the resume position, presence and an
 * optional mirror of its state, plus the request methods (publish, history, state operations).
 *
 * Resume rule: `lastSeq` is the seq of the last log entry handed to the app. Every
 * (re)subscription asks for `since: lastSeq`, and any entry with seq ≤ lastSeq is dropped, so
 * the app sees each entry once and in order across reconnects and server restarts. A changed
 * epoch means the room's log was reset: the app gets a `reset` event and resumes live.
 *
 * The subscription is one state machine (`SubscriptionState`, changed only by `setState`, which
 * emits `subscriptionState`): unsubscribed → subscribing → subscribed, and after a lost
 * connection waiting → resubscribing → subscribed; `unsubscribe()`, a refusal, or the server
 * ending it (`unsubbed`: the application removed this user) ends it, and only the app starts
 * it again.
 */
import { encode, textToBytes, type Value } from "./codec.js";
import { ErrorCode } from "./codes.js";
import { Emitter } from "./emitter.js";
import { DisconnectedError, RoomdError, TooLargeError } from "./errors.js";
import {
  req,
  type DelEvent,
  type HistOptions,
  type JoinEvent,
  type LeaveEvent,
  type CountEvent,
  type Limits,
  type ListOptions,
  type Member,
  type MsgEvent,
  type Reply,
  type Request,
  type SignalEvent,
  type StateEvent,
  type WriteOptions,
  type StateItem,
  type Subbed,
  type UnsubbedEvent,
} from "./frames.js";
import { Deletion, Edit, Message, Signal, StateChange, toEntry, type LogEntry } from "./message.js";
import type { RequestKind } from "./requests.js";

/** @internal What a Room needs from its Client. */
export interface RoomHost {
  readonly isOpen: boolean;
  readonly limits: Limits | undefined;
  request(r: Request, expect: Reply["t"], kind?: RequestKind, check?: (l: Limits) => RoomdError | undefined): Promise<Reply>;
  call(r: Request, expect: Reply["t"], kind: RequestKind, resolve: (reply: Reply) => void, reject: (e: RoomdError) => void): void;
  nextMid(): string;
}

/**
 * Where a room's subscription stands:
 * - `unsubscribed`: not wanted (never subscribed, `unsubscribe()` called, or refused for good);
 * - `waiting`: wanted, but no `sub` is on the wire: the connection is not open, an earlier
 *   `unsub` is still being answered, a retry after 503 or a timeout is due, or a `sub` got
 *   410 (an earlier `sub` whose reply was lost took effect) and the `unsub` that clears it
 *   is on the wire, the `sub` going out behind it;
 * - `subscribing`: the first `sub` is on the wire, the server has not confirmed it yet;
 * - `subscribed`: confirmed on the current connection; entries and presence arrive;
 * - `resubscribing`: a `sub` is on the wire again (resuming after `lastSeq`) after the
 *   subscription was confirmed once and then lost.
 */
export type SubscriptionState = "unsubscribed" | "waiting" | "subscribing" | "subscribed" | "resubscribing";

export interface SubscribeOptions {
  /** Replay every entry with seq > since before going live. Default: live only. */
  since?: number;
  /** Keep a mirror of the room's state (`room.state`), starting from a snapshot. */
  state?: boolean;
  /** Track who is here (`room.members`, `join` / `leave` events). */
  presence?: boolean;
  /** Presence info for this connection, e.g. `{ name: "Ada" }`; makes this client visible to others. */
  info?: Value | { [key: string]: unknown };
}

/** The position of a subscription, from the server's `subbed` reply. */
export interface Subscription {
  epoch: number;
  /** Seq of the last entry when (re)subscribing: live entries start after it. */
  last: number;
  /** Seq of the oldest entry still retained. */
  earliest: number;
  /** False if entries after the resume position were already trimmed (see the `gap` event). */
  complete: boolean;
  /**
   * What this connection may do in the room (`"sub"`, `"pub"`, `"hist"`, `"state.read"`,
   * `"state.write"`, `"presence"`), or `undefined` when it may do everything.
   */
  allow?: readonly string[];
}

export interface ResetInfo {
  /** The epoch remembered before; undefined if the position came from `since`. */
  previousEpoch: number | undefined;
  epoch: number;
  /** The new log's last seq: the room goes on live from here. */
  last: number;
}

export interface GapInfo {
  /** First missing seq. */
  from: number;
  /** Last missing seq. */
  to: number;
}

/** Why the server ended a subscription. */
export interface UnsubscribedInfo {
  /** `removed`: the application removed this user from the room (SPEC.md 5.7). */
  reason: "removed";
}

export interface RoomEvents {
  /**
   * A published message, in seq order, each once. A message replayed after it was deleted
   * comes with `deleted` set and no data.
   */
  message: [message: Message];
  /** A message was deleted (`deletion.target`): show it as deleted. In seq order, each once. */
  deleted: [deletion: Deletion];
  /**
   * A message was edited (`edit.target`): show `edit.data` in its place, marked edited. In seq
   * order with the messages, each once. An edit that a later edit or deletion superseded is
   * not emitted (its content is gone; the later entry follows).
   */
  edited: [edit: Edit];
  /**
   * An ephemeral publish by another connection (`room.signal()`): live only, no seq. It does
   * not move `lastSeq`, and nothing replays it after a reconnect.
   */
  signal: [signal: Signal];
  /** A state change, in seq order with the messages, each once. */
  state: [change: StateChange];
  /** A connection became present (it subscribed with info). */
  join: [member: Member];
  /** A present connection left. */
  leave: [member: Member];
  /** Who is here changed (after join, leave, or a resubscription's fresh list). */
  presence: [members: Member[]];
  /** Counts-only rooms (SPEC.md 4.12): how many are present now. */
  count: [count: PresenceCount];
  /** (Re)subscribed on a connection. */
  subscribed: [subscription: Subscription];
  /** The room's log was reset on the server: reload what you show. */
  reset: [info: ResetInfo];
  /** Entries were lost to retention before they could be replayed. */
  gap: [info: GapInfo];
  /** The subscription failed for good (e.g. 414 or 429 on resubscribe). */
  error: [error: RoomdError];
  /**
   * The server ended the subscription (the application removed this user). The room is now
   * `unsubscribed` and is not resubscribed after a reconnect; `subscribe()` tries again.
   */
  unsubscribed: [info: UnsubscribedInfo];
  /** The subscription's state changed (see `SubscriptionState`). */
  subscriptionState: [state: SubscriptionState, previous: SubscriptionState];
}

export interface HistoryPage {
  /** Log entries in ascending seq order. */
  items: LogEntry[];
  /** Whether more entries exist in the paging direction. */
  more: boolean;
}

export interface StateEntry {
  value: Value;
  ver: number;
  /** When the key expires (Unix ms), if it was written with a lifetime (SPEC.md 4.13). */
  exp?: number;
}

interface Waiter {
  resolve: (s: Subscription) => void;
  reject: (e: RoomdError) => void;
}

/** A mirrored key; `exp` only when it has one, so a key without a lifetime has no `exp` field. */
function stateEntry(value: Value, ver: number, exp: number | undefined): StateEntry {
  return exp === undefined ? { value, ver } : { value, ver, exp };
}

export class Room extends Emitter<RoomEvents> {
  /** The seq of the last entry handed to the app (the resume position). */
  lastSeq: number | undefined;
  /** The room's epoch as last reported. */
  epoch: number | undefined;
  /** How many replayed or repeated entries were dropped as already seen. */
  duplicatesDropped = 0;

  /** The options of the wanted subscription; set exactly when the state is not `unsubscribed`. */
  private want: SubscribeOptions | undefined;
  private stateValue: SubscriptionState = "unsubscribed";
  private generation = 0;
  /** A 410 was answered with `unsub` and a new `sub`; a second 410 in a row is final. */
  private resyncing = false;
  private waiters: Waiter[] = [];
  /** The latest confirmed position; set once confirmed, until unsubscribed or refused. */
  private sub: Subscription | undefined;
  /** Keyed by `memberKey`: per connection, or per user in a per-user room. */
  private readonly memberMap = new Map<string, Member>();
  private countValue: PresenceCount | undefined;
  private readonly mirror = new Map<string, StateEntry>();
  private snapshotSeq = 0;
  private unsubscribing: Promise<void> | undefined;

  /** @internal Rooms come from `client.room(name)`. */
  constructor(
    readonly name: string,
    private readonly host: RoomHost,
  ) {
    super();
  }

  // -- subscription ------------------------------------------------------------------------

  /** Whether the app asked to be subscribed (the SDK keeps it so across reconnects). */
  get subscribed(): boolean {
    return this.stateValue !== "unsubscribed";
  }

  /** Where the subscription stands; every change is a `subscriptionState` event. */
  get subscriptionState(): SubscriptionState {
    return this.stateValue;
  }

  /**
   * Who is here (when subscribed with `presence`): one entry per connection, or in a per-user
   * room (SPEC.md 4.12) one per user, with `conns`.
   */
  get members(): Member[] {
    return [...this.memberMap.values()];
  }

  /** Counts-only rooms (SPEC.md 4.12): the latest count, once one arrived. */
  get count(): PresenceCount | undefined {
    return this.countValue;
  }

  /** The room's state (when subscribed with `state`), kept current by state events. */
  get state(): ReadonlyMap<string, StateEntry> {
    return this.mirror;
  }

  /**
   * Subscribe: live entries (and a replay after `since`) arrive as `message` / `state` events.
   * Resolves once the server confirmed; the subscription then survives reconnects. Calling it
   * again while subscribed resolves with the current position.
   */
  subscribe(options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.stateValue === "subscribed" && this.sub !== undefined) return Promise.resolve(this.sub);
    const p = new Promise<Subscription>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.stateValue === "unsubscribed") {
      this.want = options;
      if (options.since !== undefined) this.lastSeq = options.since;
      if (this.host.isOpen && this.unsubscribing === undefined) this.sendSub();
      else {
        const unsubscribing = this.unsubscribing;
        this.setState("waiting");
        void unsubscribing?.then(() => this.host.isOpen && this.stateValue === "waiting" && this.sendSub());
      }
    }
    return p;
  }

  /** Stop the subscription. No event of this room is delivered after this is called. */
  async unsubscribe(): Promise<void> {
    if (this.stateValue === "unsubscribed") return;
    const wasOnWire = this.stateValue !== "waiting"; // a `sub` was sent on this connection
    this.want = undefined;
    this.lastSeq = undefined; // a later subscribe starts live unless it gives `since`
    this.generation++;
    this.sub = undefined;
    this.memberMap.clear();
    this.rejectWaiters(new RoomdError("closed", "unsubscribed before the subscription completed", false));
    if (!wasOnWire || !this.host.isOpen) return this.setState("unsubscribed");
    // `sub` and `unsub` on one connection are handled in order, so this cannot overtake it.
    const unsubscribing = this.host
      .request(req.unsub(this.name), "ok", "internal")
      .then(() => undefined)
      .catch(() => undefined) // disconnected: the new connection has no subscription anyway
      .finally(() => {
        this.unsubscribing = undefined;
      });
    this.unsubscribing = unsubscribing;
    // After `unsub` went out: a handler that subscribes again sends its `sub` behind it.
    this.setState("unsubscribed");
    return unsubscribing;
  }

  /** The one place the subscription's state changes. */
  private setState(next: SubscriptionState): void {
    const prev = this.stateValue;
    if (prev === next) return;
    this.stateValue = next;
    this.emit("subscriptionState", next, prev);
  }

  private sendSub(): void {
    const want = this.want;
    if (want === undefined) return;
    const gen = ++this.generation;
    const next = this.sub === undefined ? "subscribing" : "resubscribing";
    const r = req.sub(this.name, {
      since: this.lastSeq,
      state: want.state || undefined,
      presence: want.presence || undefined,
      info: want.info,
    });
    let answered = false;
    // Synchronous callbacks: the replay right behind `subbed` must find the room subscribed.
    this.host.call(
      r,
      "subbed",
      "internal",
      (reply) => {
        answered = true;
        if (gen === this.generation && reply.t === "subbed") this.subbed(reply);
      },
      (e) => {
        answered = true;
        if (gen === this.generation) this.subFailed(e);
      },
    );
    // `sub` is on the wire now, unless the client refused it at once (closed, frame too large).
    // The state changes after sending, so a handler that unsubscribes sends its `unsub` behind it.
    if (!answered && gen === this.generation) this.setState(next);
  }

  private subbed(s: Subbed): void {
    this.resyncing = false;
    const since = this.lastSeq;
    const reset = (this.epoch !== undefined && s.epoch !== this.epoch) || (since !== undefined && since > s.last);
    if (reset) {
      // Remembered seqs mean nothing in the new log: skip its replay and go on live.
      this.lastSeq = s.last;
      this.emit("reset", { previousEpoch: this.epoch, epoch: s.epoch, last: s.last });
    } else if (since === undefined) {
      this.lastSeq = s.last;
    } else if (!s.complete && s.first > since + 1) {
      this.emit("gap", { from: since + 1, to: s.first - 1 });
      this.lastSeq = s.first - 1;
    }
    this.epoch = s.epoch;
    this.sub = { epoch: s.epoch, last: s.last, earliest: s.earliest, complete: s.complete && !reset, ...(s.allow === undefined ? {} : { allow: s.allow }) };
    const gen = this.generation;
    this.setState("subscribed");
    if (gen !== this.generation) return; // a handler unsubscribed
    if (s.state !== undefined) this.loadSnapshot(s.state, s.last);
    if (s.presence !== undefined) {
      this.memberMap.clear();
      for (const m of s.presence) this.memberMap.set(memberKey(m), m);
      this.emit("presence", this.members);
    }
    const sub = this.sub;
    for (const w of this.waiters.splice(0)) w.resolve(sub);
    this.emit("subscribed", sub);
  }

  private loadSnapshot(items: StateItem[], last: number): void {
    this.mirror.clear();
    for (const it of items) this.mirror.set(it.key, stateEntry(it.value, it.ver, it.exp));
    this.snapshotSeq = last;
  }

  private subFailed(e: RoomdError): void {
    if (e instanceof DisconnectedError || e.code === "disconnected") return this.setState("waiting"); // resubscribed on the next open
    if (e.code === ErrorCode.AlreadySubscribed && !this.resyncing) return this.resync();
    this.resyncing = false;
    if (e.retryable || e.code === "timeout") {
      // 503 and friends: try again shortly, while still wanted.
      const gen = this.generation;
      setTimeout(() => {
        if (gen === this.generation && this.stateValue === "waiting" && this.host.isOpen) this.sendSub();
      }, 1000);
      return this.setState("waiting");
    }
    this.want = undefined;
    this.sub = undefined;
    this.rejectWaiters(e);
    this.setState("unsubscribed");
    this.emit("error", e);
  }

  /**
   * The server holds a subscription whose `subbed` this client never saw (the earlier `sub`
   * timed out here but took effect there): drop it with `unsub` and subscribe again from the
   * last seq seen. Its events were not delivered (the room was not subscribed), so the new
   * `sub`'s replay from `since` brings them exactly once.
   */
  private resync(): void {
    this.resyncing = true;
    const gen = this.generation;
    this.setState("waiting");
    void this.host
      .request(req.unsub(this.name), "ok", "internal")
      .catch(() => undefined) // 404: gone already; disconnected: the next open resubscribes
      .then(() => {
        if (gen === this.generation && this.stateValue === "waiting" && this.host.isOpen) this.sendSub();
      });
  }

  private rejectWaiters(e: RoomdError): void {
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  // -- called by the client ----------------------------------------------------------------

  /** @internal A connection opened: resubscribe from the last seen seq. */
  handleOpen(): void {
    if (this.stateValue !== "unsubscribed") this.sendSub();
  }

  /** @internal The connection dropped: the server forgot this subscription. */
  handleDisconnect(): void {
    this.generation++;
    this.resyncing = false;
    this.unsubscribing = undefined;
    if (this.stateValue !== "unsubscribed") this.setState("waiting");
  }

  /** @internal The client closed for good. */
  handleClosed(e: RoomdError): void {
    this.handleDisconnect();
    this.rejectWaiters(e);
  }

  /** @internal An event for this room. */
  handleEvent(e: MsgEvent | StateEvent | DelEvent | SignalEvent | JoinEvent | LeaveEvent | CountEvent | UnsubbedEvent): void {
    if (e.t === "unsubbed") return this.removed();
    if (this.stateValue !== "subscribed") return;
    switch (e.t) {
      case "signal":
        // Outside the log: never a resume position.
        this.emit("signal", new Signal(e));
        return;
      case "msg":
      case "state":
      case "del":
        return this.entry(e);
      case "join": {
        const m: Member = { conn: e.conn };
        if (e.user !== undefined) m.user = e.user;
        if (e.info !== undefined) m.info = e.info;
        if (e.conns !== undefined) m.conns = e.conns;
        this.memberMap.set(memberKey(m), m);
        this.emit("join", m);
        this.emit("presence", this.members);
        return;
      }
      case "leave": {
        // Per-user rooms: the leave may name another of the user's connections than the join.
        const byUser = e.user === undefined ? undefined : `u:${e.user}`;
        const key = byUser !== undefined && this.memberMap.has(byUser) ? byUser : `c:${e.conn}`;
        const m = this.memberMap.get(key) ?? (e.user !== undefined ? { conn: e.conn, user: e.user } : { conn: e.conn });
        this.memberMap.delete(key);
        this.emit("leave", m);
        this.emit("presence", this.members);
        return;
      }
      case "count":
        this.countValue = { members: e.members, conns: e.conns };
        this.emit("count", this.countValue);
        return;
    }
  }

  /**
   * The server ended the subscription (SPEC.md 5.7). Heeded while a `sub` of this connection
   * is confirmed or on the wire (a snapshot in `snap` frames may still be coming); while
   * `waiting` the subscription it ended is one this client is already replacing.
   */
  private removed(): void {
    const s = this.stateValue;
    if (s === "unsubscribed" || s === "waiting") return;
    this.want = undefined;
    this.lastSeq = undefined; // as after unsubscribe(): a later subscribe starts live
    this.generation++; // a `subbed` still being gathered is ignored
    this.sub = undefined;
    this.memberMap.clear();
    this.rejectWaiters(new RoomdError("closed", "the server ended the subscription", false));
    this.setState("unsubscribed");
    this.emit("unsubscribed", { reason: "removed" });
  }

  private entry(e: MsgEvent | StateEvent | DelEvent): void {
    const last = this.lastSeq;
    if (last !== undefined && e.seq <= last) {
      this.duplicatesDropped++;
      return;
    }
    if (last !== undefined && e.seq > last + 1) this.emit("gap", { from: last + 1, to: e.seq - 1 });
    this.lastSeq = e.seq;
    if (e.t === "state" && this.want?.state && e.seq > this.snapshotSeq) {
      if (e.ver === 0) this.mirror.delete(e.key);
      else this.mirror.set(e.key, stateEntry(e.value ?? null, e.ver, e.exp));
    }
    const entry = toEntry(e);
    if (entry instanceof Message) this.emit("message", entry);
    else if (entry instanceof Edit) {
      if (entry.superseded === undefined) this.emit("edited", entry);
    } else if (entry instanceof StateChange) this.emit("state", entry);
    else this.emit("deleted", entry);
  }

  // -- publishing and the log --------------------------------------------------------------

  /**
   * Publish bytes (or a string, sent as UTF-8). Resolves with the entry's seq once it is
   * durable. Made while disconnected, it waits in the client's queue; it carries a client
   * message id, so a resend after a lost ack is stored only once.
   */
  async publish(data: Uint8Array | string): Promise<number> {
    const bytes = typeof data === "string" ? textToBytes(data) : data;
    const reply = await this.host.request(req.pub(this.name, bytes, this.host.nextMid()), "ack", "safe", (l) =>
      bytes.byteLength > l.payload ? new TooLargeError(`payload is ${bytes.byteLength} bytes, limit ${l.payload}`, l.payload) : undefined,
    );
    return expect(reply, "ack").seq;
  }

  /**
   * Publish a value as MessagePack (read it back with `message.value()`): the encoding the
   * server API stores for a publish with `data`, so backend and browser messages read alike.
   */
  publishValue(value: Value): Promise<number> {
    return this.publish(encode(value));
  }

  /** Publish a value as UTF-8 JSON (read it back with `message.json()`). */
  publishJSON(value: unknown): Promise<number> {
    return this.publish(JSON.stringify(value));
  }

  /**
   * Send an ephemeral message (a typing indicator, a cursor): delivered at once to the room's
   * other live subscribers as a `signal` event, with no seq; never stored, never replayed
   * (SPEC.md 4.10). Resolves once the server passed it on. Not queued while disconnected (it
   * would be stale by then): rejects with `DisconnectedError` instead. Rate-limited and
   * size-limited like `publish`.
   */
  async signal(data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === "string" ? textToBytes(data) : data;
    if (!this.host.isOpen) throw new DisconnectedError("not connected: a signal is not queued");
    const reply = await this.host.request(req.signal(this.name, bytes), "ok", "unsafe", (l) =>
      bytes.byteLength > l.payload ? new TooLargeError(`payload is ${bytes.byteLength} bytes, limit ${l.payload}`, l.payload) : undefined,
    );
    expect(reply, "ok");
  }

  /** `signal` with a value as UTF-8 JSON (read it back with `signal.json()`). */
  signalJSON(value: unknown): Promise<void> {
    return this.signal(JSON.stringify(value));
  }

  /**
   * Replace the content of your own message `seq` (SPEC.md 4.11): resolves with the seq of the
   * edit entry once durable. Subscribers get an `edited` event; history serves the message
   * with its new content and `edited` set. Rejects with `ServerError` code 423 (`not_author`)
   * for another user's message, 406 for a deleted one or one that is not a message.
   */
  async edit(seq: number, data: Uint8Array | string): Promise<number> {
    const bytes = typeof data === "string" ? textToBytes(data) : data;
    const reply = await this.host.request(req.edit(this.name, seq, bytes), "ack", "unsafe", (l) =>
      bytes.byteLength > l.payload ? new TooLargeError(`payload is ${bytes.byteLength} bytes, limit ${l.payload}`, l.payload) : undefined,
    );
    return expect(reply, "ack").seq;
  }

  /**
   * Delete your own message `seq` (SPEC.md 4.11; `delete(key)` deletes a state key): resolves
   * with the seq of the deletion entry once durable (`dup`: it was deleted already, and the
   * seq is the first deletion's). Subscribers get a `deleted` event. Rejects with code 423
   * (`not_author`) for another user's message. Safe to resend: a repeat is a duplicate.
   */
  async deleteMessage(seq: number): Promise<{ seq: number; dup: boolean }> {
    const r = expect(await this.host.request(req.redact(this.name, seq), "ack", "safe"), "ack");
    return { seq: r.seq, dup: r.dup === true };
  }

  /**
   * A page of the log. Without `after`: the newest entries below `before` (paging backward);
   * with `after`: the entries just after it (paging forward). Items ascend by seq.
   */
  async history(options: HistOptions = {}): Promise<HistoryPage> {
    const reply = expect(await this.host.request(req.hist(this.name, options), "hist", "safe"), "hist");
    return { items: reply.items.map(toEntry), more: reply.more };
  }

  /** Who is here now (connections that subscribed with info). */
  async who(): Promise<Member[]> {
    return expect(await this.host.request(req.who(this.name), "who", "safe"), "who").members;
  }

  // -- state -------------------------------------------------------------------------------

  /**
   * A key's value and version (`ver` 0 and `value` undefined: absent), and its deadline
   * (Unix ms) if it was written with a lifetime.
   */
  async get(key: string): Promise<{ value: Value | undefined; ver: number; exp?: number }> {
    const r = expect(await this.host.request(req.get(this.name, key), "val", "safe"), "val");
    // nil reads as absent on the wire; a present key (ver > 0) with no value holds nil.
    const got = { value: r.ver > 0 ? (r.value ?? null) : undefined, ver: r.ver };
    return r.exp === undefined ? got : { ...got, exp: r.exp };
  }

  /** Keys in order, optionally under a prefix; page on with `after` = the last key. */
  async list(options: ListOptions = {}): Promise<{ items: StateItem[]; more: boolean }> {
    const r = expect(await this.host.request(req.list(this.name, options), "vals", "safe"), "vals");
    return { items: r.items, more: r.more };
  }

  /**
   * Set a key. Resolves with the entry's seq and the key's new version. With `ttlMs` the key
   * expires that long after the write (SPEC.md 4.13).
   */
  async put(key: string, value: unknown, options: WriteOptions = {}): Promise<{ seq: number; ver: number }> {
    const r = expect(await this.host.request(req.put(this.name, key, value, options), "done", "unsafe"), "done");
    return { seq: r.seq ?? 0, ver: r.ver };
  }

  /** Delete a key. `seq` is undefined when the key was absent (nothing stored). */
  async delete(key: string): Promise<{ seq: number | undefined; ver: number }> {
    const r = expect(await this.host.request(req.del(this.name, key), "done", "unsafe"), "done");
    return { seq: r.seq, ver: r.ver };
  }

  /**
   * Set a key only if its version is `ver` (0: only if absent). Otherwise rejects with
   * `ConflictError`, whose `ver` is the current version.
   */
  async cas(
    key: string,
    ver: number,
    value: unknown,
    options: WriteOptions = {},
  ): Promise<{ seq: number; ver: number }> {
    const r = expect(await this.host.request(req.cas(this.name, key, ver, value, options), "done", "unsafe"), "done");
    return { seq: r.seq ?? 0, ver: r.ver };
  }

  /** Add `by` (default 1) to an integer key (absent counts as 0). Resolves with the new value. */
  async incr(key: string, by?: number): Promise<{ seq: number; ver: number; value: number }> {
    const r = expect(await this.host.request(req.incr(this.name, key, by), "done", "unsafe"), "done");
    return { seq: r.seq ?? 0, ver: r.ver, value: typeof r.value === "number" ? r.value : 0 };
  }
}

function expect<T extends Reply["t"]>(reply: Reply, t: T): Extract<Reply, { t: T }> {
  if (reply.t !== t) throw new RoomdError("protocol", `expected ${t}, got ${reply.t}`, false);
  return reply as Extract<Reply, { t: T }>;
}

/** Counts-only rooms (SPEC.md 4.12, 5.10): how many are present. */
export interface PresenceCount {
  /** Entries: users, plus connections without a user. */
  members: number;
  /** Connections visible in presence. */
  conns: number;
}

/** A member's key: its user in a per-user room (entries carry `conns`), else its connection. */
function memberKey(m: Member): string {
  return m.conns !== undefined && m.user !== undefined ? `u:${m.user}` : `c:${m.conn}`;
}
