/**
 * The protocol's numbers (SPEC.md sections 6 and 7): error codes carried by `err` frames, and
 * the WebSocket close codes with the rule that decides reconnect or give up.
 */

/** Error codes of `err` frames, by name. */
export const ErrorCode = {
  Malformed: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotSubscribed: 404,
  UnknownRequest: 405,
  BadRequest: 406,
  Conflict: 409,
  AlreadySubscribed: 410,
  TooLarge: 413,
  BadRoom: 414,
  NotInteger: 422,
  NotAuthor: 423,
  Limit: 429,
  Unavailable: 503,
  Storage: 507,
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes the SDK itself raises, for failures that never reached (or never came back from) the server. */
export const LocalCode = {
  /** No reply within the request timeout. */
  Timeout: "timeout",
  /** The connection dropped while a non-idempotent request was in flight: it may or may not have been applied. */
  Disconnected: "disconnected",
  /** The client was closed (by the app, or by a close code that forbids reconnecting). */
  Closed: "closed",
  /** The offline queue is full. */
  QueueFull: "queue_full",
  /** The `token` function failed. */
  Token: "token",
  /** A reply did not have the shape SPEC.md gives it. */
  Protocol: "protocol",
} as const;

export type LocalCode = (typeof LocalCode)[keyof typeof LocalCode];

const names: Record<number, string> = {
  400: "malformed",
  401: "unauthorized",
  403: "forbidden",
  404: "not_subscribed",
  405: "unknown_request",
  406: "bad_request",
  409: "conflict",
  410: "already_subscribed",
  413: "too_large",
  414: "bad_room",
  422: "not_integer",
  423: "not_author",
  429: "limit",
  503: "unavailable",
  507: "storage",
};

/** The snake_case name SPEC.md gives a code (`"conflict"` for 409), or `"unknown"`. */
export function codeName(code: number): string {
  return names[code] ?? "unknown";
}

/**
 * Whether sending the same request again later can succeed without changing it (SPEC.md
 * section 6, "retry helps?"; the same set as the broker's `ErrorCode::retryable`). A 409 needs a
 * re-read first; 429 only helps after freeing something, or after `retryAfterMs` for a rate
 * limit (`RateLimitError`, which the application retries or not), so it is not counted.
 */
export function isRetryable(code: number): boolean {
  return code === 409 || code === 503 || code === 507;
}

/** WebSocket close codes the server uses. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  MessageTooBig: 1009,
  Internal: 1011,
  SlowConsumer: 4000,
  HeartbeatTimeout: 4001,
  AtCapacity: 4002,
  /** The token expired without a refresh: reconnect with a new one (SPEC.md 9.3). */
  TokenExpired: 4003,
  /** The application disconnected this connection; reconnecting is fine. */
  Disconnected: 4004,
  /** Cluster: the node lost its engine (Redis), or a room's epoch changed; reconnect to any node. */
  EngineUnavailable: 4005,
  Unauthorized: 4401,
  /** The application removed this user: the client closes for good. */
  Removed: 4403,
} as const;

/**
 * SPEC.md section 7: codes 1000–1003 other than 1001, 1007, 1008, 1010 and 4400–4499 mean
 * "do not reconnect"; everything else (an abnormal close 1006 included) means reconnect.
 */
export function shouldReconnect(closeCode: number): boolean {
  if (closeCode === 1000 || closeCode === 1002 || closeCode === 1003) return false;
  if (closeCode === 1007 || closeCode === 1008 || closeCode === 1010) return false;
  if (closeCode >= 4400 && closeCode <= 4499) return false;
  return true;
}
