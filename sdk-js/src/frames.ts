/**
 * The frames of SPEC.md as types: builders for requests (keys in the canonical order of the
 * test vectors) and a checked parser for what the server sends. Unknown keys are ignored and
 * `nil` is read as absent, as SPEC.md section 2 asks; an unknown `t` parses to `undefined`.
 */
import type { Value } from "./codec.js";
import { ProtocolError } from "./errors.js";

// ---------------------------------------------------------------------------------------------
// Requests (client to server). A request is built without its `id`; `withId` inserts it right
// after `t`, where the canonical encoding has it.

export interface SubOptions {
  since?: number | undefined;
  state?: boolean | undefined;
  presence?: boolean | undefined;
  info?: unknown;
}

export interface HistOptions {
  after?: number | undefined;
  before?: number | undefined;
  limit?: number | undefined;
}

export interface ListOptions {
  prefix?: string | undefined;
  after?: string | undefined;
  limit?: number | undefined;
}

/** A request without its id: `t` first, then its fields in canonical order. */
export type Request = { readonly t: string } & Record<string, unknown>;

export const req = {
  sub: (room: string, o: SubOptions = {}): Request => ({
    t: "sub",
    room,
    since: o.since,
    state: o.state,
    presence: o.presence,
    info: o.info,
  }),
  unsub: (room: string): Request => ({ t: "unsub", room }),
  pub: (room: string, data: Uint8Array, mid?: string): Request => ({ t: "pub", room, data, mid }),
  /** An ephemeral publish (SPEC.md 4.10): live only, no seq, never stored. */
  signal: (room: string, data: Uint8Array): Request => ({ t: "pub", room, data, ephemeral: true }),
  edit: (room: string, target: number, data: Uint8Array): Request => ({ t: "edit", room, target, data }),
  redact: (room: string, target: number): Request => ({ t: "redact", room, target }),
  hist: (room: string, o: HistOptions = {}): Request => ({
    t: "hist",
    room,
    after: o.after,
    before: o.before,
    limit: o.limit,
  }),
  get: (room: string, key: string): Request => ({ t: "get", room, key }),
  list: (room: string, o: ListOptions = {}): Request => ({
    t: "list",
    room,
    prefix: o.prefix,
    after: o.after,
    limit: o.limit,
  }),
  put: (room: string, key: string, value: unknown, o: WriteOptions = {}): Request => ({
    t: "put",
    room,
    key,
    value,
    ttl_ms: o.ttlMs,
    ephemeral: o.ephemeral === true ? true : undefined,
  }),
  del: (room: string, key: string): Request => ({ t: "del", room, key }),
  cas: (room: string, key: string, ver: number, value: unknown, o: WriteOptions = {}): Request => ({
    t: "cas",
    room,
    key,
    ver,
    value,
    ttl_ms: o.ttlMs,
    ephemeral: o.ephemeral === true ? true : undefined,
  }),
  incr: (room: string, key: string, by?: number): Request => ({ t: "incr", room, key, by }),
  who: (room: string): Request => ({ t: "who", room }),
  ping: (): Request => ({ t: "ping" }),
  auth: (token: string): Request => ({ t: "auth", token }),
};

/** The request with `id` placed right after `t`, absent fields dropped. */
export function withId(r: Request, id: number): Record<string, unknown> {
  const out: Record<string, unknown> = { t: r.t, id };
  for (const [k, v] of Object.entries(r)) {
    if (k !== "t" && k !== "id" && v !== undefined) out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server frames.

export interface Limits {
  frame: number;
  payload: number;
  room: number;
  key: number;
  value: number;
  info: number;
  subs: number;
  page: number;
  keys: number;
  mid: number;
}

export interface Hello {
  t: "hello";
  v: number;
  server: string;
  conn: string;
  user?: string;
  ping: number;
  limits: Limits;
  /** In cluster mode, the node serving this connection. */
  node?: string;
}

/** One connection present in a room; in a per-user room (SPEC.md 4.12), one user with `conns`. */
export interface Member {
  conn: string;
  user?: string;
  info?: Value;
  /** Per-user rooms: how many of the user's connections are present. */
  conns?: number;
}

export interface StateItem {
  key: string;
  value: Value;
  ver: number;
  /** When the key expires (Unix ms), if it was written with a lifetime (SPEC.md 4.13). */
  exp?: number;
}

/** Options of a state write (`put`, `cas`). */
export interface WriteOptions {
  /**
   * The key expires this many milliseconds after the write: the room deletes it with a
   * logged `state` event from `"expiry"` (SPEC.md 4.13). Absent: it never expires (and a
   * deadline set earlier is removed).
   */
  ttlMs?: number;
  /**
   * The key belongs to this connection: when the connection ends (after the server's
   * reconnect grace, if it holds this connection's subscription to the room) the room deletes
   * it with a logged `state` event from `"ephemeral"`, unless another write took it over
   * (SPEC.md 4.14). A reconnect is a new connection: take the key again. In cluster mode it
   * needs `ttlMs`.
   */
  ephemeral?: boolean;
}

export interface Subbed {
  t: "subbed";
  id: number;
  room: string;
  epoch: number;
  last: number;
  first: number;
  earliest: number;
  complete: boolean;
  state?: StateItem[];
  presence?: Member[];
  /** The snapshot continues in `snap` frames with this id (the SDK gathers them). */
  more?: boolean;
  /** What this connection may do in the room, when not everything (SPEC.md 9.2). */
  allow?: string[];
}

/**
 * The continuation of a `subbed` or `who` whose snapshot did not fit in one frame. The client
 * gathers these into the reply it resolves, so callers never see one.
 */
export interface Snap {
  t: "snap";
  id: number;
  room: string;
  state?: StateItem[];
  presence?: Member[];
  more: boolean;
}

export interface MsgEvent {
  t: "msg";
  room: string;
  seq: number;
  ts: number;
  from: string;
  uid?: string;
  data: Uint8Array;
  /**
   * The message was deleted by the `del` entry with this seq: `data` is empty (SPEC.md 5.6).
   * On an edit entry: a later edit or deletion superseded it (5.8).
   */
  deleted?: number;
  /** The message was edited; the seq of its latest edit (`data` is the edited content). */
  edited?: number;
  /** This entry is an edit of the message with this seq, `data` its new content (SPEC.md 5.8). */
  edits?: number;
}

/** An ephemeral publish (SPEC.md 5.9): no seq, never stored, never replayed. */
export interface SignalEvent {
  t: "signal";
  room: string;
  ts: number;
  from: string;
  uid?: string;
  data: Uint8Array;
}

/** A log entry that deleted the message with seq `target` (SPEC.md 5.6). */
export interface DelEvent {
  t: "del";
  room: string;
  seq: number;
  ts: number;
  from: string;
  uid?: string;
  target: number;
}

export interface StateEvent {
  t: "state";
  room: string;
  seq: number;
  ts: number;
  from: string;
  uid?: string;
  key: string;
  ver: number;
  value?: Value;
  /** When the key expires (Unix ms), if it was written with a lifetime (SPEC.md 4.13). */
  exp?: number;
}

export type LogEvent = MsgEvent | StateEvent | DelEvent;

export interface JoinEvent {
  t: "join";
  room: string;
  conn: string;
  user?: string;
  info?: Value;
  /** Per-user rooms (SPEC.md 4.12): the user's connections present. */
  conns?: number;
}

/** Counts-only rooms (SPEC.md 4.12, 5.10): how many are present, instead of join/leave. */
export interface CountEvent {
  t: "count";
  room: string;
  /** Entries: users, plus connections without a user. */
  members: number;
  /** Connections visible in presence. */
  conns: number;
}

export interface LeaveEvent {
  t: "leave";
  room: string;
  conn: string;
  user?: string;
}

/** The server ended this connection's subscription to `room`: do not resubscribe (SPEC.md 5.7). */
export interface UnsubbedEvent {
  t: "unsubbed";
  room: string;
}

export interface Ok { t: "ok"; id: number }
export interface Ack { t: "ack"; id: number; seq: number; dup?: boolean }
export interface HistReply { t: "hist"; id: number; room: string; items: LogEvent[]; more: boolean }
export interface Val { t: "val"; id: number; key: string; value?: Value; ver: number; exp?: number }
export interface Vals { t: "vals"; id: number; items: StateItem[]; more: boolean }
export interface Done { t: "done"; id: number; seq?: number; ver: number; value?: Value }
export interface Who { t: "who"; id: number; room: string; members: Member[]; more?: boolean }
export interface Pong { t: "pong"; id: number }
export interface Err { t: "err"; id?: number; code: number; msg: string; ver?: number; max?: number; retry_after_ms?: number }

export type Reply = Subbed | Ok | Ack | HistReply | Val | Vals | Done | Who | Pong | Err;
/** The connection's token expires at `exp` (Unix seconds): send a fresh one (SPEC.md 5.5). */
export interface Expiring { t: "expiring"; exp: number }
export type ServerFrame = Hello | Reply | Snap | LogEvent | SignalEvent | JoinEvent | LeaveEvent | CountEvent | UnsubbedEvent | Expiring;

type Obj = { [key: string]: Value };

function isObj(v: Value | undefined): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function fail(t: string, key: string, want: string): never {
  throw new ProtocolError(`${t} frame: field ${key} is not ${want}`);
}

/** Field readers: `nil` is absent; a wrong type is a ProtocolError. */
class Reader {
  constructor(readonly o: Obj, readonly t: string) {}
  private get(k: string): Value | undefined {
    const v = this.o[k];
    return v === null ? undefined : v;
  }
  num(k: string): number {
    const v = this.get(k);
    return typeof v === "number" ? v : fail(this.t, k, "a number");
  }
  optNum(k: string): number | undefined {
    const v = this.get(k);
    return v === undefined ? undefined : this.num(k);
  }
  str(k: string): string {
    const v = this.get(k);
    return typeof v === "string" ? v : fail(this.t, k, "a string");
  }
  optStr(k: string): string | undefined {
    const v = this.get(k);
    return v === undefined ? undefined : this.str(k);
  }
  bool(k: string): boolean {
    const v = this.get(k);
    return typeof v === "boolean" ? v : fail(this.t, k, "a boolean");
  }
  optBool(k: string): boolean | undefined {
    const v = this.get(k);
    return v === undefined ? undefined : this.bool(k);
  }
  bin(k: string): Uint8Array {
    const v = this.get(k);
    return v instanceof Uint8Array ? v : fail(this.t, k, "bin");
  }
  value(k: string): Value | undefined {
    return this.get(k);
  }
  list(k: string): Obj[] {
    const v = this.get(k);
    if (!Array.isArray(v)) return fail(this.t, k, "an array");
    return v.map((e) => (isObj(e) ? e : fail(this.t, k, "an array of maps")));
  }
  optList(k: string): Obj[] | undefined {
    return this.get(k) === undefined ? undefined : this.list(k);
  }
  optStrList(k: string): string[] | undefined {
    const v = this.get(k);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) return fail(this.t, k, "an array");
    return v.map((e) => (typeof e === "string" ? e : fail(this.t, k, "an array of strings")));
  }
  obj(k: string): Obj {
    const v = this.get(k);
    return isObj(v) ? v : fail(this.t, k, "a map");
  }
}

/** Copy optional fields only when present, so parsed frames have no `undefined` members. */
function opt<T extends object>(base: T, extra: Record<string, unknown>): T {
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) (base as Record<string, unknown>)[k] = v;
  return base;
}

function member(o: Obj): Member {
  const r = new Reader(o, "member");
  return opt({ conn: r.str("conn") }, { user: r.optStr("user"), info: r.value("info"), conns: r.optNum("conns") });
}

function stateItem(o: Obj): StateItem {
  const r = new Reader(o, "state item");
  return opt({ key: r.str("key"), value: r.value("value") ?? null, ver: r.num("ver") }, { exp: r.optNum("exp") });
}

function logEvent(o: Obj): LogEvent {
  const f = parseServerFrame(o);
  if (f === undefined || (f.t !== "msg" && f.t !== "state" && f.t !== "del")) throw new ProtocolError("hist item is not a msg, state or del event");
  return f;
}

function parseLimits(o: Obj): Limits {
  const r = new Reader(o, "limits");
  return {
    frame: r.num("frame"),
    payload: r.num("payload"),
    room: r.num("room"),
    key: r.num("key"),
    value: r.num("value"),
    info: r.num("info"),
    subs: r.num("subs"),
    page: r.num("page"),
    keys: r.num("keys"),
    mid: r.num("mid"),
  };
}

/**
 * Check and type one decoded server frame. Returns `undefined` for a frame kind this SDK does
 * not know (a newer server may add some); throws `ProtocolError` for a known kind with a
 * missing or mistyped field.
 */
export function parseServerFrame(v: Value): ServerFrame | undefined {
  if (!isObj(v)) throw new ProtocolError("frame is not a map");
  const t = v["t"];
  if (typeof t !== "string") throw new ProtocolError("frame has no t");
  const r = new Reader(v, t);
  switch (t) {
    case "hello":
      return opt(
        { t, v: r.num("v"), server: r.str("server"), conn: r.str("conn"), ping: r.num("ping"), limits: parseLimits(r.obj("limits")) },
        { user: r.optStr("user"), node: r.optStr("node") },
      );
    case "subbed":
      return opt(
        {
          t,
          id: r.num("id"),
          room: r.str("room"),
          epoch: r.num("epoch"),
          last: r.num("last"),
          first: r.num("first"),
          earliest: r.num("earliest"),
          complete: r.bool("complete"),
        },
        {
          state: r.optList("state")?.map(stateItem),
          presence: r.optList("presence")?.map(member),
          more: r.optBool("more"),
          allow: r.optStrList("allow"),
        },
      );
    case "snap":
      return opt(
        { t, id: r.num("id"), room: r.str("room"), more: r.bool("more") },
        { state: r.optList("state")?.map(stateItem), presence: r.optList("presence")?.map(member) },
      );
    case "ok":
    case "pong":
      return { t, id: r.num("id") };
    case "expiring":
      return { t, exp: r.num("exp") };
    case "ack":
      return opt({ t, id: r.num("id"), seq: r.num("seq") }, { dup: r.optBool("dup") });
    case "hist":
      return { t, id: r.num("id"), room: r.str("room"), items: r.list("items").map(logEvent), more: r.bool("more") };
    case "val":
      return opt({ t, id: r.num("id"), key: r.str("key"), ver: r.num("ver") }, { value: r.value("value"), exp: r.optNum("exp") });
    case "vals":
      return { t, id: r.num("id"), items: r.list("items").map(stateItem), more: r.bool("more") };
    case "done":
      return opt({ t, id: r.num("id"), ver: r.num("ver") }, { seq: r.optNum("seq"), value: r.value("value") });
    case "who":
      return opt({ t, id: r.num("id"), room: r.str("room"), members: r.list("members").map(member) }, { more: r.optBool("more") });
    case "err":
      return opt({ t, code: r.num("code"), msg: r.optStr("msg") ?? "" }, {
        id: r.optNum("id"),
        ver: r.optNum("ver"),
        max: r.optNum("max"),
        retry_after_ms: r.optNum("retry_after_ms"),
      });
    case "msg":
      return opt(
        { t, room: r.str("room"), seq: r.num("seq"), ts: r.num("ts"), from: r.str("from"), data: r.bin("data") },
        { uid: r.optStr("uid"), deleted: r.optNum("deleted"), edited: r.optNum("edited"), edits: r.optNum("edits") },
      );
    case "signal":
      return opt({ t, room: r.str("room"), ts: r.num("ts"), from: r.str("from"), data: r.bin("data") }, { uid: r.optStr("uid") });
    case "del":
      return opt(
        { t, room: r.str("room"), seq: r.num("seq"), ts: r.num("ts"), from: r.str("from"), target: r.num("target") },
        { uid: r.optStr("uid") },
      );
    case "state":
      return opt(
        { t, room: r.str("room"), seq: r.num("seq"), ts: r.num("ts"), from: r.str("from"), key: r.str("key"), ver: r.num("ver") },
        { uid: r.optStr("uid"), value: r.value("value"), exp: r.optNum("exp") },
      );
    case "join":
      return opt({ t, room: r.str("room"), conn: r.str("conn") }, { user: r.optStr("user"), info: r.value("info"), conns: r.optNum("conns") });
    case "count":
      return { t, room: r.str("room"), members: r.num("members"), conns: r.num("conns") };
    case "leave":
      return opt({ t, room: r.str("room"), conn: r.str("conn") }, { user: r.optStr("user") });
    case "unsubbed":
      return { t, room: r.str("room") };
    default:
      return undefined;
  }
}
