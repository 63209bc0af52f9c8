/** What the app receives from a room's log: published messages and state changes. */
import { bytesToText, type Value } from "./codec.js";
import type { Member, MsgEvent, StateEvent } from "./frames.js";

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
  /** The payload, as published. */
  readonly data: Uint8Array;

  constructor(e: MsgEvent) {
    this.room = e.room;
    this.seq = e.seq;
    this.ts = e.ts;
    this.from = e.from;
    this.uid = e.uid;
    this.data = e.data;
  }

  /** The payload read as UTF-8 text. */
  text(): string {
    return bytesToText(this.data);
  }

  /** The payload read as UTF-8 JSON (as sent by `publishJSON`). Throws `SyntaxError` if it is not. */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
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

/** An entry of a room's log. */
export type LogEntry = Message | StateChange;

export function toEntry(e: MsgEvent | StateEvent): LogEntry {
  return e.t === "msg" ? new Message(e) : new StateChange(e);
}

export type { Member };
