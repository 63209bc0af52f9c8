/**
 * Request bookkeeping for one client: ids, the requests in flight (each with its timeout),
 * and the bounded queue of requests waiting for a connection. No I/O here: the client
 * decides when to send, resend or fail.
 */
import { QueueFullError, type RoomdError } from "./errors.js";
import type { Limits, Reply, Request } from "./frames.js";

/** What a request does when the connection drops while it is in flight. */
export type RequestKind =
  /** Resent after reconnecting (reads, and publishes, which carry a mid). */
  | "safe"
  /** Failed with DisconnectedError (mutations: they may have been applied). */
  | "unsafe"
  /** The SDK's own (subscriptions, heartbeats): failed, the SDK redoes them itself. */
  | "internal";

/** @internal A request waiting for the connection or for its reply. */
export interface Pending {
  readonly request: Request;
  readonly expect: Reply["t"];
  readonly kind: RequestKind;
  readonly resolve: (reply: Reply) => void;
  readonly reject: (error: RoomdError) => void;
  /** Refuses the request locally, given the server's limits. */
  readonly check: ((l: Limits) => RoomdError | undefined) | undefined;
  /** Encoded size of the frame as last sent. */
  bytes: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const MAX_ID = 0xffff_ffff;

/** @internal */
export class Requests {
  private readonly waiting: Pending[] = [];
  private readonly inflight = new Map<number, Pending>();
  private nextId = 1;

  constructor(private readonly maxQueue: number) {}

  /** Queue a request until the connection opens; false (and rejected) when the queue is full. */
  enqueue(p: Pending): boolean {
    if (this.waiting.length >= this.maxQueue) {
      p.reject(new QueueFullError(this.maxQueue));
      return false;
    }
    this.waiting.push(p);
    return true;
  }

  /** Put requests back at the front of the queue (they were sent before the others waited). */
  requeue(ps: Pending[]): void {
    this.waiting.unshift(...ps);
  }

  /** Take every waiting request, oldest first. */
  takeWaiting(): Pending[] {
    return this.waiting.splice(0);
  }

  isInFlight(id: number): boolean {
    return this.inflight.has(id);
  }

  /** A fresh id among those in flight. */
  allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }

  /** `p` was sent as `id`: `onTimeout` runs if no reply comes within `ms`. */
  sent(id: number, p: Pending, ms: number, onTimeout: (p: Pending) => void): void {
    this.inflight.set(id, p);
    p.timer = setTimeout(() => {
      if (this.inflight.get(id) !== p) return;
      this.inflight.delete(id);
      onTimeout(p);
    }, ms);
  }

  /** Part of the reply to `id` came (a snapshot in several frames): its timeout starts again. */
  extend(id: number, ms: number, onTimeout: (p: Pending) => void): void {
    const p = this.inflight.get(id);
    if (p === undefined) return;
    if (p.timer !== undefined) clearTimeout(p.timer);
    this.sent(id, p, ms, onTimeout);
  }

  /** The reply to `id` came: stop tracking it. */
  take(id: number): Pending | undefined {
    const p = this.inflight.get(id);
    if (p === undefined) return undefined;
    this.inflight.delete(id);
    if (p.timer !== undefined) clearTimeout(p.timer);
    return p;
  }

  /** The connection dropped: every request in flight, in the order it was sent. */
  takeInFlight(): Pending[] {
    const all = [...this.inflight.values()];
    for (const p of all) if (p.timer !== undefined) clearTimeout(p.timer);
    this.inflight.clear();
    return all;
  }

  /** Fail everything, in flight and waiting. */
  rejectAll(err: RoomdError): void {
    for (const p of this.takeInFlight()) p.reject(err);
    for (const p of this.takeWaiting()) p.reject(err);
  }
}
