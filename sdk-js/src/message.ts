/** What the app receives from a room's log: published messages, state changes, deletions. */
import { bytesToText, decode, type Value } from "./codec.js";
import type { DelEvent, Member, MsgEvent, StateEvent } from "./frames.js";

/** A published message, in the room's log at `seq`. */
export class Message {
  readonly kind = "message" as const;
  readonly room: string;
  readonly seq: number;
  /** Milliseconds since the Unix epoch, when the server stored it. */
  readonly ts: number;
  /** The publishing connection's id. */
  readonly from: string;
  /** The publisher's user id, when it had one. */
  readonly uid: string | undefined;
  /** The payload, as published; empty once the message was deleted. */
  readonly data: Uint8Array;
  /**
   * Set when the message was deleted: the seq of the `Deletion` that deleted it. Its place,
   * time and author stay; its payload is gone from the server (SPEC.md 5.6).
   */
  readonly deleted?: number;

  constructor(e: MsgEvent) {
    this.room = e.room;
    this.seq = e.seq;
    this.ts = e.ts;
    this.from = e.from;
    this.uid = e.uid;
    this.data = e.data;
    if (e.deleted !== undefined) this.deleted = e.deleted;
  }

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

  get time(): Date {
    return new Date(this.ts);
  }
}

/** A change of one key of the room's state, in the room's log at `seq`. */
export class StateChange {
  readonly kind = "state" as const;
  readonly room: string;
  readonly seq: number;
  readonly ts: number;
  readonly from: string;
  readonly uid: string | undefined;
  readonly key: string;
  /** The key's new version; 0 when it was deleted. */
  readonly ver: number;
  /** The new value; `undefined` when the key was deleted. */
  readonly value: Value | undefined;

  constructor(e: StateEvent) {
    this.room = e.room;
    this.seq = e.seq;
    this.ts = e.ts;
    this.from = e.from;
    this.uid = e.uid;
    this.key = e.key;
    this.ver = e.ver;
    this.value = e.ver === 0 ? undefined : (e.value ?? null); // a present key without value holds nil
  }

  get deleted(): boolean {
    return this.ver === 0;
  }
}

/**
 * The deletion of the message with seq `target`, in the room's log at `seq` (an entry of its
 * own, so seqs stay dense). From now on the message reads as deleted (`Message.deleted`).
 */
export class Deletion {
  readonly kind = "deletion" as const;
  readonly room: string;
  readonly seq: number;
  readonly ts: number;
  /** The deleting connection's id. */
  readonly from: string;
  /** The deleting user's id, when it had one. */
  readonly uid: string | undefined;
  /** The seq of the deleted message. */
  readonly target: number;

  constructor(e: DelEvent) {
    this.room = e.room;
    this.seq = e.seq;
    this.ts = e.ts;
    this.from = e.from;
    this.uid = e.uid;
    this.target = e.target;
  }
}

/** An entry of a room's log. */
export type LogEntry = Message | StateChange | Deletion;

export function toEntry(e: MsgEvent | StateEvent | DelEvent): LogEntry {
  switch (e.t) {
    case "msg":
      return new Message(e);
    case "state":
      return new StateChange(e);
    case "del":
      return new Deletion(e);
  }
}

export type { Member };
