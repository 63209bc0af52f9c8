/**
 * "Ada is typing…": ephemeral signals (SPEC.md 4.10), never stored. While someone types, their
 * page sends `{typing: true, name}` (the first `START_AFTER` ms into it, then at most every
 * `SEND_EVERY` ms); each receiver shows them until `EXPIRE` ms pass without a new one, until
 * their message arrives, until they empty the box (`{typing: false}`), or until they leave.
 * A lost signal costs nothing: the next one, or the expiry, puts it right.
 */
import { RateLimitError, type Room, type Signal } from "../src/index.js";

/** At most one "typing" signal per this many ms while typing. */
export const SEND_EVERY = 2_000;
/**
 * The first signal waits this long into typing: a message pasted and sent at once needs no
 * indicator, and a signal costs a publish against the rate limit (SPEC.md 4.10), which the
 * message right behind it should not find spent.
 */
export const START_AFTER = 600;
/** Someone is no longer shown typing this long after their last signal. */
export const EXPIRE = 5_000;

interface TypingSignal {
  typing: boolean;
  name: string;
}

function read(s: Signal): TypingSignal | undefined {
  try {
    const v = s.json<unknown>();
    if (typeof v !== "object" || v === null) return undefined;
    const { typing, name } = v as Partial<TypingSignal>;
    return typeof typing === "boolean" && typeof name === "string" ? { typing, name: name.slice(0, 64) } : undefined;
  } catch {
    return undefined;
  }
}

export class Typing {
  /** Who is typing, by connection: their name and when their indicator expires. */
  private readonly typists = new Map<string, { name: string; timer: ReturnType<typeof setTimeout> }>();
  private lastSent = 0;
  /** The first signal of a typing spell, due `START_AFTER` ms into it. */
  private starting: ReturnType<typeof setTimeout> | undefined;
  /** No signal before this time: the broker said the publish rate is spent. */
  private quietUntil = 0;
  /** The others were told we are typing (a `typing: true` went through). */
  private announced = false;
  private readonly off: () => void;

  constructor(
    private readonly room: Room,
    private readonly me: string,
    private readonly line: HTMLElement,
  ) {
    this.off = room.on("signal", (s) => this.received(s));
    this.show();
  }

  /** The composer changed: tell the others, throttled. */
  typed(empty: boolean): void {
    if (empty) return this.stopped();
    if (this.lastSent === 0) {
      this.starting ??= setTimeout(() => {
        this.starting = undefined;
        this.beat();
      }, START_AFTER);
      return;
    }
    if (Date.now() - this.lastSent >= SEND_EVERY) this.beat();
  }

  private beat(): void {
    const now = Date.now();
    if (now < this.quietUntil) return;
    this.lastSent = now;
    this.send(true);
  }

  /**
   * The message was sent: the others stop showing us when it reaches them, so no signal here
   * (it would spend the publish rate the message needs).
   */
  sent(): void {
    clearTimeout(this.starting);
    this.starting = undefined;
    this.lastSent = 0;
    this.announced = false;
  }

  /** The box was emptied without sending: the others stop showing us at once. */
  private stopped(): void {
    const announced = this.announced;
    this.sent();
    if (announced) this.send(false);
  }

  /** A connection's message arrived, or it left: it is no longer typing. */
  done(conn: string): void {
    const t = this.typists.get(conn);
    if (t === undefined) return;
    clearTimeout(t.timer);
    this.typists.delete(conn);
    this.show();
  }

  stop(): void {
    this.off();
    clearTimeout(this.starting);
    for (const t of this.typists.values()) clearTimeout(t.timer);
    this.typists.clear();
    this.show();
  }

  private send(typing: boolean): void {
    // Best effort: offline or refused, the indicator simply does not show. Over the rate
    // limit, stay quiet until the messages have room again.
    this.room.signalJSON({ typing, name: this.me } satisfies TypingSignal).then(
      () => {
        if (typing && this.lastSent !== 0) this.announced = true;
      },
      (e: unknown) => {
        if (e instanceof RateLimitError) this.quietUntil = Date.now() + e.retryAfterMs + SEND_EVERY;
      },
    );
  }

  private received(s: Signal): void {
    const t = read(s);
    if (t === undefined) return;
    if (!t.typing) return this.done(s.from);
    const old = this.typists.get(s.from);
    if (old !== undefined) clearTimeout(old.timer);
    const timer = setTimeout(() => this.done(s.from), EXPIRE);
    this.typists.set(s.from, { name: t.name, timer });
    this.show();
  }

  private show(): void {
    const names = [...new Set([...this.typists.values()].map((t) => t.name))];
    this.line.textContent =
      names.length === 0
        ? ""
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length === 2
            ? `${names[0]} and ${names[1]} are typing…`
            : `${names.length} people are typing…`;
    this.line.hidden = names.length === 0;
  }
}
