/**
 * The connection: one state machine (connecting → open → reconnecting → … → closed) with a
 * single `setState`, requests matched to replies by id with timeouts, a bounded queue of
 * requests waiting for the connection, and reconnects with jittered backoff. Rooms (room.ts)
 * ride on it and resubscribe themselves on every open.
 */
import { Backoff, type BackoffOptions } from "./backoff.js";
import { decode, encode } from "./codec.js";
import { CloseCode, ErrorCode, LocalCode, shouldReconnect } from "./codes.js";
import { Emitter } from "./emitter.js";
import {
  ClosedError,
  DisconnectedError,
  errorFromFrame,
  ProtocolError,
  RoomdError,
  TimeoutError,
  TooLargeError,
} from "./errors.js";
import { parseServerFrame, req, withId, type Hello, type Limits, type Reply, type Request, type ServerFrame, type Snap, type Subbed, type Who } from "./frames.js";
import { Requests, type Pending, type RequestKind } from "./requests.js";
import { Room } from "./room.js";
import {
  defaultWebSocket,
  normalizeUrl,
  OPEN,
  SUBPROTOCOL,
  toBytes,
  type SocketCloseEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./transport.js";

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface ClientOptions {
  /**
   * A JWT for servers with authentication, or a function that returns one. The function is
   * called before every (re)connect and, when the server says the token is about to expire
   * (`expiring`), to refresh it in place: the connection and its subscriptions go on. With a
   * string, listen for the `expiring` event and call `authenticate` with a fresh token, or the
   * server closes the connection at the token's `exp` (the client then reconnects with the
   * same, expired, token and is refused).
   */
  token?: string | (() => string | Promise<string>);
  /** A user id to show in presence and on messages (honoured only without authentication). */
  user?: string;
  /** This instance's stable id for publish de-duplication. Default: random per instance. */
  clientId?: string;
  /** The WebSocket implementation. Default: the global one (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** `false` never reconnects; otherwise backoff settings. Default: reconnect with defaults. */
  reconnect?: boolean | BackoffOptions;
  /** Milliseconds to wait for the reply to a sent request. Default 10 000. */
  requestTimeout?: number;
  /** Milliseconds to wait for the server's hello after dialing. Default 10 000. */
  connectTimeout?: number;
  /** Most requests that may wait for the connection (publishes made offline). Default 1 000. */
  maxQueue?: number;
  /** Refuse locally what the server's limits would refuse (oversized payloads). Default true. */
  checkLimits?: boolean;
  /** Send an application ping when nothing was received for the server's ping interval, to notice dead connections. Default true. */
  heartbeat?: boolean;
}

export interface CloseInfo {
  /** The WebSocket close code (1006: the connection was lost without one). */
  code: number;
  reason: string;
  /** Whether the client will reconnect. */
  reconnect: boolean;
  /** When reconnecting: the delay before the next attempt, ms. */
  delay?: number;
}

export interface ClientEvents {
  /** The connection state changed. */
  state: [state: ConnectionState, previous: ConnectionState];
  /** The server said hello: the connection is usable. */
  open: [hello: Hello];
  /** The connection closed. */
  close: [info: CloseInfo];
  /** An error not tied to a request: a refused token (401), an `err` without id, a malformed frame. */
  error: [error: RoomdError];
  /** The token expires at `exp` (Unix seconds). With a `token` function the client refreshes it itself. */
  expiring: [exp: number];
}

function ignore(): void {
  // A socket being abandoned may still report errors (closing while connecting); they are moot.
}

function randomId(bytes: number): string {
  const b = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// Rooms get the client as their RoomHost (`new Room(name, this)` checks that it fits); not an
// `implements` clause, which would name the internal RoomHost in the published .d.ts.
export class Client extends Emitter<ClientEvents> {
  /** The `client` id sent to the server; publishes are de-duplicated per (client, mid). */
  readonly clientId: string;
  /**
   * Every endpoint given, in the order tried: after a lost connection the client reconnects
   * to the next one (round robin), so with several roomd nodes of one cluster it moves off a
   * node that died and resumes there without a gap.
   */
  readonly urls: readonly URL[];
  private endpoint = 0;
  private readonly opts: ClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly backoff: Backoff | undefined;
  private readonly rooms = new Map<string, Room>();
  private readonly requests: Requests;
  private ws: WebSocketLike | undefined;
  private current: Hello | undefined;
  private lastHello: Hello | undefined;
  private stateValue: ConnectionState = "connecting";
  /** Replies in several frames (`subbed` or `who` with `more`), by id, until their last `snap`. */
  private readonly gathering = new Map<number, Subbed | Who>();
  private midPrefix = randomId(4);
  private midCounter = 0;
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private lastReceived = 0;
  private closedError: RoomdError | undefined;
  private pendingAuthError: RoomdError | undefined;
  private readonly onOnline = (): void => this.reconnectNow();

  /**
   * `url` is one endpoint or several (the nodes of a cluster); `ws:`/`wss:` or `http:`/`https:`
   * (`/ws` is added to a URL without a path).
   */
  constructor(url: string | readonly string[], options: ClientOptions = {}) {
    super();
    const list = typeof url === "string" ? [url] : url;
    if (list.length === 0) throw new TypeError("no endpoint URL");
    this.urls = list.map(normalizeUrl);
    this.opts = options;
    const WS = options.WebSocket ?? defaultWebSocket();
    if (WS === undefined) throw new TypeError("no WebSocket implementation: pass options.WebSocket (for example the ws package)");
    this.WS = WS;
    this.clientId = options.clientId ?? randomId(8);
    this.requests = new Requests(options.maxQueue ?? 1000);
    this.backoff = options.reconnect === false ? undefined : new Backoff(options.reconnect === true ? {} : options.reconnect);
    const g = globalThis as { addEventListener?: (type: string, fn: () => void) => void };
    if (typeof g.addEventListener === "function") g.addEventListener("online", this.onOnline);
    this.dial();
  }

  /** The endpoint in use (or dialled next). */
  get url(): URL {
    return this.urls[this.endpoint] ?? this.urls[0]!;
  }

  // -- public API --------------------------------------------------------------------------

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The hello of the current connection, when open. */
  get hello(): Hello | undefined {
    return this.current;
  }

  /** The server's limits, from the latest hello (kept while reconnecting). */
  get limits(): Limits | undefined {
    return this.lastHello?.limits;
  }

  /** The current connection's id, when open. */
  get conn(): string | undefined {
    return this.current?.conn;
  }

  /** The room called `name` (created on the server on first use). The same object every time. */
  room(name: string): Room {
    let r = this.rooms.get(name);
    if (r === undefined) {
      r = new Room(name, this);
      this.rooms.set(name, r);
    }
    return r;
  }

  /** Resolves once the connection is open (at once if it is); rejects if the client closes. */
  ready(): Promise<void> {
    if (this.stateValue === "open") return Promise.resolve();
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const off = this.on("state", (s) => {
        if (s === "open") {
          off();
          resolve();
        } else if (s === "closed") {
          off();
          reject(this.closedError ?? new ClosedError("client closed"));
        }
      });
    });
  }

  /** Round trip time of an application ping, ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.request(req.ping(), "pong", "safe");
    return Date.now() - start;
  }

  /**
   * Give the open connection a fresh token (SPEC.md 4.9): from now on its permissions are the
   * new token's, and it stays open past the old one's expiry. Rejects with the server's 401 if
   * the token is refused (the connection goes on under the old one until that expires).
   */
  async authenticate(token: string): Promise<void> {
    await this.request(req.auth(token), "ok", "internal");
  }

  /** The server warned that the token expires: fetch a fresh one and send it. */
  private async refreshToken(ws: WebSocketLike, exp: number): Promise<void> {
    this.emit("expiring", exp);
    const source = this.opts.token;
    if (typeof source !== "function") return;
    try {
      const token = await source();
      if (ws !== this.ws) return; // reconnected meanwhile: the dial took a fresh token already
      await this.authenticate(token);
    } catch (e) {
      // The connection is closed at exp with 4003 and redials, calling the function again.
      this.emit("error", e instanceof RoomdError ? e : new RoomdError(LocalCode.Token, `token refresh failed: ${String(e)}`, true));
    }
  }

  /** Drop the current connection (if any) and dial again now, without waiting for the backoff. */
  reconnectNow(): void {
    if (this.stateValue === "closed") return;
    this.backoff?.reset(); // the next delay is at most the base delay
    if (this.ws !== undefined) this.lost(this.ws, CloseCode.Abnormal, "reconnect requested");
    else if (this.stateValue === "reconnecting") {
      this.clearTimers();
      this.dial();
    }
  }

  /** Close for good: pending and queued requests fail with `ClosedError`. */
  close(): void {
    if (this.stateValue === "closed") return;
    this.shutdown(new ClosedError("client closed"), true);
  }

  /**
   * Send any request (`{t, ...fields}`, without id) and resolve with the raw reply frame.
   * For requests this SDK has no method for; `kind` says what to do if the connection drops
   * while it is in flight ("safe": resend, "unsafe": fail with DisconnectedError).
   */
  request(r: Request, expect: Reply["t"], kind: RequestKind = "unsafe", check?: (l: Limits) => RoomdError | undefined): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => this.call(r, expect, kind, resolve, reject, check));
  }

  /**
   * @internal
   * `request` with callbacks, called synchronously when the reply is read: a room must apply
   * its `subbed` before the replayed events that follow in the same read are dispatched.
   */
  call(
    r: Request,
    expect: Reply["t"],
    kind: RequestKind,
    resolve: (reply: Reply) => void,
    reject: (error: RoomdError) => void,
    check?: (l: Limits) => RoomdError | undefined,
  ): void {
    if (this.closedError !== undefined) return reject(this.closedError);
    const p: Pending = { request: r, expect, kind, resolve, reject, check, bytes: 0, timer: undefined };
    if (this.stateValue === "open") this.transmit(p);
    else if (this.refused(p) === undefined) this.requests.enqueue(p);
  }

  // -- RoomHost ----------------------------------------------------------------------------

  /** @internal Whether requests go out now (`state === "open"`). */
  get isOpen(): boolean {
    return this.stateValue === "open";
  }

  /** @internal A fresh client message id: unique per Client instance even when `clientId` is reused. */
  nextMid(): string {
    this.midCounter++;
    return `${this.midPrefix}.${this.midCounter}`;
  }

  /** @internal */
  checksLimits(): boolean {
    return this.opts.checkLimits !== false;
  }

  // -- connection lifecycle ----------------------------------------------------------------

  private setState(next: ConnectionState): void {
    const prev = this.stateValue;
    if (prev === next) return;
    this.stateValue = next;
    this.emit("state", next, prev);
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private dial(): void {
    void this.dialAsync();
  }

  private async dialAsync(): Promise<void> {
    let token: string | undefined;
    try {
      token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    } catch (e) {
      this.emit("error", new RoomdError(LocalCode.Token, `token function failed: ${String(e)}`, true));
      return this.afterClose(CloseCode.Abnormal, "no token");
    }
    if (this.stateValue === "closed") return;
    const u = new URL(this.url.href);
    u.searchParams.set("client", this.clientId);
    if (this.opts.user !== undefined) u.searchParams.set("user", this.opts.user);
    if (token !== undefined && token !== "") u.searchParams.set("token", token);
    let ws: WebSocketLike;
    try {
      ws = new this.WS(u.href, [SUBPROTOCOL]);
    } catch (e) {
      this.emit("error", new ProtocolError(`cannot open WebSocket: ${String(e)}`));
      return this.afterClose(CloseCode.Abnormal, "cannot open");
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => this.received(ws, ev.data);
    ws.onclose = (ev: SocketCloseEvent) => this.lost(ws, ev.code, ev.reason);
    ws.onerror = () => {
      /* a close event follows */
    };
    const timeout = this.opts.connectTimeout ?? 10_000;
    this.later(timeout, () => {
      if (this.ws === ws && this.current === undefined) this.lost(ws, CloseCode.Abnormal, "no hello before the connect timeout");
    });
  }

  private received(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.ws) return;
    this.lastReceived = Date.now();
    const bytes = toBytes(data);
    if (bytes === undefined) return this.emit("error", new ProtocolError("received a text frame"));
    let frame: ServerFrame | undefined;
    try {
      frame = parseServerFrame(decode(bytes));
    } catch (e) {
      return this.emit("error", e instanceof RoomdError ? e : new ProtocolError(`undecodable frame: ${String(e)}`));
    }
    if (frame === undefined) return; // a frame kind from a newer server
    this.dispatch(ws, frame);
  }

  private dispatch(ws: WebSocketLike, f: ServerFrame): void {
    switch (f.t) {
      case "hello":
        return this.opened(ws, f);
      case "msg":
      case "state":
      case "del":
      case "signal":
      case "join":
      case "leave":
      case "count":
      case "unsubbed":
        this.rooms.get(f.room)?.handleEvent(f);
        return;
      case "subbed":
      case "who":
        if (f.more === true) return this.gather(f);
        return this.settle(f.id, f);
      case "snap":
        return this.continued(f);
      case "expiring":
        void this.refreshToken(ws, f.exp);
        return;
      case "err":
        if (f.id === undefined || !this.requests.isInFlight(f.id)) {
          const err = errorFromFrame(f);
          if (f.code === 401) this.pendingAuthError = err;
          this.emit("error", err);
          return;
        }
        return this.settle(f.id, f);
      default:
        return this.settle(f.id, f);
    }
  }

  /** The first part of a reply in several frames: held until its last `snap`. */
  private gather(f: Subbed | Who): void {
    if (!this.requests.isInFlight(f.id)) return; // timed out already
    const { more: _more, ...first } = f;
    this.gathering.set(f.id, first);
    this.requests.extend(f.id, this.opts.requestTimeout ?? 10_000, (p) => this.timedOut(p));
  }

  /** A `snap`: its items join the reply it continues, which is settled with the last one. */
  private continued(s: Snap): void {
    const g = this.gathering.get(s.id);
    if (g === undefined || g.room !== s.room) return;
    if (g.t === "who") g.members.push(...(s.presence ?? []));
    else {
      if (s.state !== undefined) (g.state ??= []).push(...s.state);
      if (s.presence !== undefined) (g.presence ??= []).push(...s.presence);
    }
    if (s.more) return this.requests.extend(s.id, this.opts.requestTimeout ?? 10_000, (p) => this.timedOut(p));
    this.gathering.delete(s.id);
    this.settle(s.id, g);
  }

  private timedOut(p: Pending): void {
    p.reject(new TimeoutError(`no reply to ${p.request.t} within ${this.opts.requestTimeout ?? 10_000} ms`));
  }

  private settle(id: number, reply: Reply): void {
    const p = this.requests.take(id);
    if (p === undefined) return; // timed out already
    if (reply.t === "err" && reply.code === ErrorCode.Unavailable && p.kind === "safe") {
      // 503: the broker is shutting down and did nothing. A publish (it has its mid) or a read
      // waits and goes out again on the next connection, as if it had been made offline.
      this.requests.requeue([p]);
      this.later(1000, () => this.flushQueue());
      return;
    }
    if (reply.t === "err") p.reject(errorFromFrame(reply));
    else if (reply.t !== p.expect) p.reject(new ProtocolError(`expected ${p.expect} for ${p.request.t}, got ${reply.t}`));
    else p.resolve(reply);
  }

  private opened(ws: WebSocketLike, hello: Hello): void {
    this.current = hello;
    this.lastHello = hello;
    this.pendingAuthError = undefined;
    this.backoff?.opened(Date.now());
    this.setState("open");
    this.startHeartbeat(ws, hello.ping);
    this.emit("open", hello);
    // Rooms first, so a queued publish to a room lands after its resubscription.
    for (const room of this.rooms.values()) room.handleOpen();
    this.flushQueue();
  }

  /** Send what waits for the connection, in order, while it is open. */
  private flushQueue(): void {
    if (this.stateValue !== "open") return;
    const ws = this.ws;
    const waiting = this.requests.takeWaiting();
    waiting.forEach((p, i) => {
      if (this.ws === ws) this.transmit(p);
      else this.requests.requeue(waiting.slice(i)); // dropped again while flushing
    });
  }

  /** The limits refuse `p` (it is rejected): the error, else undefined. */
  private refused(p: Pending): RoomdError | undefined {
    const limits = this.limits;
    if (p.check === undefined || this.opts.checkLimits === false || limits === undefined) return undefined;
    const err = p.check(limits);
    if (err !== undefined) p.reject(err);
    return err;
  }

  private transmit(p: Pending): void {
    const ws = this.ws;
    if (ws === undefined || ws.readyState !== OPEN) {
      this.requests.requeue([p]);
      return;
    }
    if (this.refused(p) !== undefined) return;
    const id = this.requests.allocId();
    const bytes = encode(withId(p.request, id));
    const limits = this.current?.limits;
    if (limits !== undefined && this.opts.checkLimits !== false && bytes.byteLength > limits.frame) {
      p.reject(new TooLargeError(`frame is ${bytes.byteLength} bytes, limit ${limits.frame}`, limits.frame));
      return;
    }
    p.bytes = bytes.byteLength;
    const timeout = this.opts.requestTimeout ?? 10_000;
    this.gathering.delete(id); // a reply in parts to an earlier request with this id, abandoned
    this.requests.sent(id, p, timeout, () => this.timedOut(p));
    try {
      ws.send(bytes);
    } catch {
      // The socket is going away; its close handler requeues or fails `p`.
    }
  }

  private startHeartbeat(ws: WebSocketLike, pingSeconds: number): void {
    this.stopHeartbeat();
    if (this.opts.heartbeat === false) return;
    const every = Math.max(1, pingSeconds) * 1000;
    this.lastReceived = Date.now();
    this.heartbeatTimer = setInterval(() => {
      if (this.ws !== ws || Date.now() - this.lastReceived < every) return;
      this.request(req.ping(), "pong", "internal").catch((e: unknown) => {
        if (e instanceof TimeoutError && this.ws === ws) this.lost(ws, CloseCode.Abnormal, "heartbeat timeout");
      });
    }, every);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  /** The socket `ws` is gone (closed by either side, or abandoned by us). */
  private lost(ws: WebSocketLike, code: number, reason: string): void {
    if (ws !== this.ws) return;
    this.ws = undefined;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = ignore; // not null: `ws` in Node throws an error event nobody listens to
    if (ws.readyState <= OPEN) {
      try {
        ws.close();
      } catch {
        /* already closing */
      }
    }
    const wasOpen = this.current !== undefined;
    this.current = undefined;
    this.stopHeartbeat();
    if (wasOpen) this.backoff?.closed(Date.now());
    this.clearTimers();
    const limits = this.lastHello?.limits;
    // Requests in flight: resend the safe ones (a publish carries its mid, so the server
    // de-duplicates it), fail the rest. After 1009 the oversized frame must not be resent.
    const requeue: Pending[] = [];
    this.gathering.clear();
    for (const p of this.requests.takeInFlight()) {
      if (code === CloseCode.MessageTooBig && limits !== undefined && p.bytes > limits.frame) {
        p.reject(new TooLargeError(`frame is ${p.bytes} bytes, limit ${limits.frame}`, limits.frame));
      } else if (p.kind === "safe") requeue.push(p);
      else p.reject(new DisconnectedError(`connection lost while ${p.request.t} was in flight (close ${code})`));
    }
    this.requests.requeue(requeue);
    for (const room of this.rooms.values()) room.handleDisconnect();
    this.afterClose(code, reason);
  }

  private afterClose(code: number, reason: string): void {
    if (this.stateValue === "closed") return;
    const backoff = this.backoff;
    if (backoff === undefined || !shouldReconnect(code) || this.pendingAuthError !== undefined) {
      // A refused token explains the close better than the close code does.
      const err = this.pendingAuthError ?? new ClosedError(`connection closed with ${code}${reason ? `: ${reason}` : ""}`, code);
      this.emit("close", { code, reason, reconnect: false });
      return this.shutdown(err);
    }
    const delay = backoff.next();
    // The next node, if there are several: this one may be the one that failed.
    this.endpoint = (this.endpoint + 1) % this.urls.length;
    this.setState("reconnecting");
    this.emit("close", { code, reason, reconnect: true, delay });
    this.later(delay, () => this.dial());
  }

  private shutdown(err: RoomdError, userClose = false): void {
    this.closedError = err;
    this.clearTimers();
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = undefined;
    this.current = undefined;
    if (ws !== undefined) {
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = ignore; // not null: `ws` in Node throws an error event nobody listens to
      try {
        if (userClose) ws.close(CloseCode.Normal);
        else ws.close();
      } catch {
        /* already closing */
      }
    }
    const g = globalThis as { removeEventListener?: (type: string, fn: () => void) => void };
    if (typeof g.removeEventListener === "function") g.removeEventListener("online", this.onOnline);
    this.requests.rejectAll(err);
    for (const room of this.rooms.values()) room.handleClosed(err);
    this.setState("closed");
  }
}
