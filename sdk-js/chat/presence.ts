/**
 * Who is here, by name. Presence is per connection; people are shown per name (two tabs of
 * one person are one entry) and a quick leave-and-rejoin (a reconnect) is not announced.
 */
import type { Member } from "../src/index.js";

/** How long a leave waits for a rejoin before it is announced. */
const LEAVE_GRACE_MS = 3000;

/** With tokens on, people are their verified user ids; the names they give are labels. */
export const identity = { verified: false };

export interface Person {
  name: string;
  /** The display name they chose, when it differs from `name` (tokens on only). */
  label?: string;
  /** How many connections this name has in the room. */
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

/** With tokens on, the display name a member chose, when it is not its user id. */
export function labelOf(m: Member): string | undefined {
  if (!identity.verified) return undefined;
  const chosen = chosenName(m);
  return chosen !== undefined && chosen !== m.user ? chosen : undefined;
}

export class Presence {
  private readonly conns = new Map<string, string>();
  private readonly leaving = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    private readonly announce: (text: string) => void,
    private readonly myConn: () => string | undefined,
  ) {}

  private has(name: string): boolean {
    for (const n of this.conns.values()) if (n === name) return true;
    return false;
  }

  /** The first list after joining: nothing to announce. */
  reset(members: Member[]): void {
    this.conns.clear();
    for (const m of members) this.conns.set(m.conn, nameOf(m));
  }

  /** A fresh list after our own reconnect: announce who came and went meanwhile. */
  resync(members: Member[]): void {
    const before = new Set(this.conns.values());
    this.reset(members);
    const after = new Set(this.conns.values());
    const mine = members.find((m) => m.conn === this.myConn());
    const me = mine === undefined ? undefined : nameOf(mine);
    for (const n of after) if (!before.has(n) && n !== me) this.announce(`${n} joined`);
    for (const n of before) if (!after.has(n) && n !== me && !this.leaving.has(n)) this.announce(`${n} left`);
  }

  join(m: Member): void {
    const name = nameOf(m);
    const known = this.has(name);
    this.conns.set(m.conn, name);
    const pending = this.leaving.get(name);
    if (pending !== undefined) {
      clearTimeout(pending);
      this.leaving.delete(name);
      return;
    }
    if (!known && m.conn !== this.myConn()) this.announce(`${name} joined`);
  }

  leave(m: Member): void {
    const name = this.conns.get(m.conn) ?? nameOf(m);
    this.conns.delete(m.conn);
    if (this.has(name) || this.leaving.has(name)) return;
    this.leaving.set(
      name,
      setTimeout(() => {
        this.leaving.delete(name);
        if (!this.has(name)) this.announce(`${name} left`);
      }, LEAVE_GRACE_MS),
    );
  }

  /** People by name: you first, then alphabetically. */
  groups(members: Member[]): Person[] {
    const me = this.myConn();
    const byName = new Map<string, Person>();
    for (const m of members) {
      const name = nameOf(m);
      const p: Person = byName.get(name) ?? { name, count: 0, you: false };
      p.label ??= labelOf(m);
      p.count++;
      if (m.conn === me) p.you = true;
      byName.set(name, p);
    }
    return [...byName.values()].sort((a, b) => Number(b.you) - Number(a.you) || a.name.localeCompare(b.name));
  }

  stop(): void {
    for (const t of this.leaving.values()) clearTimeout(t);
    this.leaving.clear();
  }
}
