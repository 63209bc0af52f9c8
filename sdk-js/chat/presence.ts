/**
 * Who is here. Presence is per connection; people are shown per user id (two tabs of one
 * browser are one entry, two people who chose one name are two) and a quick leave-and-rejoin
 * (a reconnect) is not announced.
 */
import type { Member } from "../src/index.js";

/**
 * How long a leave waits for a rejoin before it is announced. The server already holds a dropped
 * member for its reconnect grace (SPEC.md 4.12, default 5 s), so a leave that arrives is final
 * there; this short wait covers only a server with the grace off.
 */
const LEAVE_GRACE_MS = 1000;

/**
 * With tokens on, people are their verified user ids; the names they give are labels. `me` is
 * this page's user id (the token's, else this browser's own), known before it connects.
 */
export const identity: { verified: boolean; me: string | undefined } = { verified: false, me: undefined };

export interface Person {
  /** Who they are: their user id, else their connection (see `personOf`). */
  id: string;
  name: string;
  /** The display name they chose, when it differs from `name` (tokens on only). */
  label?: string;
  /** How many connections this person has in the room. */
  count: number;
  you: boolean;
}

/** The name a member gave in its `info`, if any. */
function chosenName(m: Member): string | undefined {
  const info = m.info;
  if (typeof info === "object" && info !== null && !Array.isArray(info) && !(info instanceof Uint8Array)) {
    const name = info["name"];
    if (typeof name === "string" && name.trim() !== "") return name.trim();
  }
  return undefined;
}

/** Who a member is: its verified user id with tokens on, else the name it gave. */
export function nameOf(m: Member): string {
  if (identity.verified && m.user !== undefined) return m.user;
  return chosenName(m) ?? m.user ?? `guest ${m.conn.slice(-4)}`;
}

/**
 * The person behind a member: its user id (verified with tokens on; without, the chat's
 * per-browser id, so one browser's tabs are one person), else its connection.
 */
export function personOf(m: Member): string {
  return m.user ?? m.conn;
}

/** With tokens on, the display name a member chose, when it is not its user id. */
export function labelOf(m: Member): string | undefined {
  if (!identity.verified) return undefined;
  const chosen = chosenName(m);
  return chosen !== undefined && chosen !== m.user ? chosen : undefined;
}

export class Presence {
  /** Each connection here: the person it belongs to and the name it shows. */
  private readonly conns = new Map<string, { id: string; name: string }>();
  /** People whose last connection left, announced after a grace period unless they return. */
  private readonly leaving = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    private readonly announce: (text: string) => void,
    private readonly myConn: () => string | undefined,
  ) {}

  private has(id: string): boolean {
    for (const c of this.conns.values()) if (c.id === id) return true;
    return false;
  }

  private people(): Map<string, string> {
    return new Map([...this.conns.values()].map((c) => [c.id, c.name]));
  }

  /** The first list after joining: nothing to announce. */
  reset(members: Member[]): void {
    this.conns.clear();
    for (const m of members) this.conns.set(m.conn, { id: personOf(m), name: nameOf(m) });
  }

  /** A fresh list after our own reconnect: announce who came and went meanwhile. */
  resync(members: Member[]): void {
    const before = this.people();
    this.reset(members);
    const after = this.people();
    const mine = members.find((m) => m.conn === this.myConn());
    const me = mine === undefined ? undefined : personOf(mine);
    for (const [id, name] of after) if (!before.has(id) && id !== me) this.announce(`${name} joined`);
    for (const [id, name] of before) if (!after.has(id) && id !== me && !this.leaving.has(id)) this.announce(`${name} left`);
  }

  join(m: Member): void {
    const id = personOf(m);
    const known = this.has(id);
    this.conns.set(m.conn, { id, name: nameOf(m) });
    const pending = this.leaving.get(id);
    if (pending !== undefined) {
      clearTimeout(pending);
      this.leaving.delete(id);
      return;
    }
    if (!known && m.conn !== this.myConn()) this.announce(`${nameOf(m)} joined`);
  }

  leave(m: Member): void {
    const who = this.conns.get(m.conn) ?? { id: personOf(m), name: nameOf(m) };
    this.conns.delete(m.conn);
    if (this.has(who.id) || this.leaving.has(who.id)) return;
    this.leaving.set(
      who.id,
      setTimeout(() => {
        this.leaving.delete(who.id);
        if (!this.has(who.id)) this.announce(`${who.name} left`);
      }, LEAVE_GRACE_MS),
    );
  }

  /** People (by user id, else connection): you first, then alphabetically. */
  groups(members: Member[]): Person[] {
    const me = this.myConn();
    const byId = new Map<string, Person>();
    for (const m of members) {
      const id = personOf(m);
      const p: Person = byId.get(id) ?? { id, name: nameOf(m), count: 0, you: false };
      p.label ??= labelOf(m);
      // A per-user room (SPEC.md 4.12) lists a user once, with their connections' count.
      p.count += m.conns ?? 1;
      if (m.conn === me) p.you = true;
      byId.set(id, p);
    }
    return [...byId.values()].sort((a, b) => Number(b.you) - Number(a.you) || a.name.localeCompare(b.name));
  }

  stop(): void {
    for (const t of this.leaving.values()) clearTimeout(t);
    this.leaving.clear();
  }
}
