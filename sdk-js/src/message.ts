/**
 * What the app receives from a room's log (published messages, edits, state changes,
 * deletions) and outside it (signals).
 */
import { bytesToText, decode, type Value } from "./codec.js";
import type { DelEvent, Member, MsgEvent, SignalEvent, StateEvent } from "./frames.js";

/** What every event from a room carries: the room, when, and who caused it. */
abstract class RoomEvent {
  readonly room: string;
  /** Milliseconds since the Unix epoch, when the server stored it (or passed on a signal). */
  readonly ts: number;
  /** The id of the connection that published, edited, deleted or changed the key. */
  readonly from: string;
  /** That connection's user id, when it had one. */
  readonly uid: string | undefined;

  constructor(e: { room: string; ts: number; from: string; uid?: string | undefined }) {
    this.room = e.room;
    this.ts = e.ts;
    this.from = e.from;
    this.uid = e.uid;
  }

  get time(): Date {
    return new Date(this.ts);
  }
}

/** A payload and the ways to read it, shared by messages, edits and signals. */
abstract class Payload extends RoomEvent {
  /** The payload's bytes. */
  abstract readonly data: Uint8Array;

  /** The payload read as UTF-8 text. */
  text(): string {
    return bytesToText(this.data);
  }

  /** The payload read as UTF-8 JSON (as sent by `publishJSON`). Throws `SyntaxError` if it is not. */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }

  /**
   * The payload read as one MessagePack value: what `publishValue` sends, and what the server
   * API stores for a publish with `data` (README, "From your backend"). Throws if the payload
   * is not exactly one MessagePack value.
   */
  value<T extends Value = Value>(): T {
    return decode(this.data) as T;
  }
}

/** A published message, in the room's log at `seq`. */
export class Message extends Payload {
  readonly kind = "message" as const;
  readonly seq: number;
  /** The payload, as published (or as last edited); empty once the message was deleted. */
  readonly data: Uint8Array;
  /**
   * Set when the message was deleted: the seq of the `Deletion` that deleted it. Its place,
   * time and author stay; its payload is gone from the server (SPEC.md 5.6).
   */
  readonly deleted?: number;
  /**
   * Set when the message was edited: the seq of its latest `Edit`. `data` is then the edited
   * content (SPEC.md 5.8).
   */
  readonly edited?: number;

  constructor(e: MsgEvent) {
    super(e);
    this.seq = e.seq;
    this.data = e.data;
    if (e.deleted !== undefined) this.deleted = e.deleted;
    if (e.edited !== undefined) this.edited = e.edited;
  }
}

/**
 * An edit of the message with seq `target`, in the room's log at `seq` (an entry of its own,
 * so seqs stay dense): from now on the message reads `data`, marked edited (SPEC.md 5.8).
 */
export class Edit extends Payload {
  readonly kind = "edit" as const;
  readonly seq: number;
  /** The seq of the edited message. */
  readonly target: number;
  /** The message's new content; empty when `superseded`. */
  readonly data: Uint8Array;
  /**
   * Set when a later edit or a deletion of the same message (the entry with this seq)
   * replaced this one: its content is gone, and the later entry follows in the log.
   */
  readonly superseded?: number;

  constructor(e: MsgEvent & { edits: number }) {
    super(e);
    this.seq = e.seq;
    this.target = e.edits;
    this.data = e.data;
    if (e.deleted !== undefined) this.superseded = e.deleted;
  }
}

/**
 * An ephemeral publish (`room.signal()`): delivered live to the room's other subscribers,
 * with no seq, never stored, never replayed (SPEC.md 4.10).
 */
export class Signal extends Payload {
  readonly kind = "signal" as const;
  readonly data: Uint8Array;

  constructor(e: SignalEvent) {
    super(e);
    this.data = e.data;
  }
}

/** The `from` of a key's expiry entry (SPEC.md 4.13). */
export const EXPIRY_FROM = "expiry";

/** A change of one key of the room's state, in the room's log at `seq`. */
export class StateChange extends RoomEvent {
  readonly kind = "state" as const;
  readonly seq: number;
  readonly key: string;
  /** The key's new version; 0 when it was deleted. */
  readonly ver: number;
  /** The new value; `undefined` when the key was deleted. */
  readonly value: Value | undefined;
  /** When the key expires (Unix ms), if it was written with a lifetime (SPEC.md 4.13). */
  readonly exp: number | undefined;

  constructor(e: StateEvent) {
    super(e);
    this.seq = e.seq;
    this.key = e.key;
    this.ver = e.ver;
    this.value = e.ver === 0 ? undefined : (e.value ?? null); // a present key without value holds nil
    this.exp = e.exp;
  }

  /** The room deleted the key because its lifetime ended (SPEC.md 4.13). */
  get expired(): boolean {
    return this.ver === 0 && this.from === EXPIRY_FROM;
  }

  get deleted(): boolean {
    return this.ver === 0;
  }
}

/**
 * The deletion of the message with seq `target`, in the room's log at `seq` (an entry of its
 * own, so seqs stay dense). From now on the message reads as deleted (`Message.deleted`).
 */
export class Deletion extends RoomEvent {
  readonly kind = "deletion" as const;
  readonly seq: number;
  /** The seq of the deleted message. */
  readonly target: number;

  constructor(e: DelEvent) {
    super(e);
    this.seq = e.seq;
    this.target = e.target;
  }
}

/** An entry of a room's log. */
export type LogEntry = Message | Edit | StateChange | Deletion;

export function toEntry(e: MsgEvent | StateEvent | DelEvent): LogEntry {
  switch (e.t) {
    case "msg":
      return e.edits === undefined ? new Message(e) : new Edit({ ...e, edits: e.edits });
    case "state":
      return new StateChange(e);
    case "del":
      return new Deletion(e);
  }
}

export type { Member };
