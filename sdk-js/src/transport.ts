/**
 * The WebSocket the client talks through. Browsers have one built in; in Node 20 pass one in
 * (for example `import WebSocket from "ws"`). Only this small surface is used, which both
 * provide.
 */

export interface SocketMessageEvent {
  data: unknown;
}

export interface SocketCloseEvent {
  code: number;
  reason: string;
}

/**
 * Handler types declared as methods so they compare bivariantly: the browser's and the `ws`
 * package's sockets (whose events carry more fields) both fit without casts.
 */
interface Handlers {
  open(ev: unknown): void;
  message(ev: SocketMessageEvent): void;
  close(ev: SocketCloseEvent): void;
  error(ev: unknown): void;
}

export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  onopen: Handlers["open"] | null;
  onmessage: Handlers["message"] | null;
  onclose: Handlers["close"] | null;
  onerror: Handlers["error"] | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The subprotocol of protocol version 1. */
export const SUBPROTOCOL = "roomd.v1";

/** WebSocket.OPEN. */
export const OPEN = 1;

/** The environment's WebSocket, if it has one (browsers, Node 22+). */
export function defaultWebSocket(): WebSocketConstructor | undefined {
  const g = globalThis as { WebSocket?: unknown };
  return typeof g.WebSocket === "function" ? (g.WebSocket as WebSocketConstructor) : undefined;
}

/** Turn the incoming `data` of a binary message into bytes (ArrayBuffer, Buffer or view). */
export function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // ws with binaryType "fragments" hands an array of Buffers; join them.
    const parts = data.filter((p): p is Uint8Array => p instanceof Uint8Array);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
  return undefined;
}

/** `ws://host:port/ws` from `ws(s)://…` (kept as is) or `http(s)://host:port[/]` (scheme swapped, `/ws` added). */
export function normalizeUrl(url: string): URL {
  const u = new URL(url);
  if (u.protocol === "http:" || u.protocol === "https:") {
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  }
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a ws:, wss:, http: or https: URL: ${url}`);
  return u;
}
