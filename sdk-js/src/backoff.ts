/**
 * Reconnect delays: exponential backoff with full jitter (a delay drawn uniformly from
 * [0, min(max, base · factor^attempt)]), so a crowd of clients cut by one server restart does
 * not come back in lockstep. The attempt count resets only after a connection has stayed up
 * for `minUptime`, so a server that accepts and immediately drops does not get hammered.
 */

export interface BackoffOptions {
  /** First delay ceiling, ms. Default 250. */
  baseDelay?: number;
  /** Largest delay ceiling, ms. Default 10 000. */
  maxDelay?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /** A connection must stay open this long (ms) before the attempt count resets. Default 5 000. */
  minUptime?: number;
}

export class Backoff {
  readonly baseDelay: number;
  readonly maxDelay: number;
  readonly factor: number;
  readonly minUptime: number;
  private attempt = 0;
  private openedAt: number | undefined;

  constructor(o: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.baseDelay = o.baseDelay ?? 250;
    this.maxDelay = o.maxDelay ?? 10_000;
    this.factor = o.factor ?? 2;
    this.minUptime = o.minUptime ?? 5_000;
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The ceiling of the next delay. */
  ceiling(): number {
    return Math.min(this.maxDelay, this.baseDelay * Math.pow(this.factor, this.attempt));
  }

  /** The delay before the next attempt (full jitter), counting the attempt. */
  next(): number {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt++;
    return delay;
  }

  /** A connection opened at `now` (ms). */
  opened(now: number): void {
    this.openedAt = now;
  }

  /** A connection closed at `now`: reset the count if it had been up for `minUptime`. */
  closed(now: number): void {
    if (this.openedAt !== undefined && now - this.openedAt >= this.minUptime) this.attempt = 0;
    this.openedAt = undefined;
  }

  reset(): void {
    this.attempt = 0;
  }
}
