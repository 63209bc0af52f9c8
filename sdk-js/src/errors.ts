/**
 * Typed errors. Every failure the SDK reports is a `RoomdError` with a `code`: a protocol code
 * (number, SPEC.md section 6) when the server refused, or a `LocalCode` (string) when the
 * request never got an answer. `retryable` says whether the same request can succeed later.
 */
import { codeName, isRetryable, LocalCode } from "./codes.js";

export class RoomdError extends Error {
  /** A protocol error code (400…507) or a local code (`"timeout"`, `"closed"`, …). */
  readonly code: number | LocalCode;
  /** Whether sending the same request again later can succeed. */
  readonly retryable: boolean;

  constructor(code: number | LocalCode, message: string, retryable: boolean) {
    super(message);
    this.name = "RoomdError";
    this.code = code;
    this.retryable = retryable;
  }
}

/** The server answered a request with an `err` frame (or sent one without an id). */
export class ServerError extends RoomdError {
  /** SPEC.md's name for the code, e.g. `"too_large"`. */
  readonly codeName: string;
  /** The id of the request that failed, when the server could read it. */
  readonly requestId: number | undefined;

  constructor(code: number, message: string, requestId?: number) {
    super(code, message, isRetryable(code));
    this.name = "ServerError";
    this.codeName = codeName(code);
    this.requestId = requestId;
  }
}

/** 409: a `cas` found another version. `ver` is the key's current version; re-read and retry. */
export class ConflictError extends ServerError {
  readonly ver: number;
  constructor(message: string, ver: number, requestId?: number) {
    super(409, message, requestId);
    this.name = "ConflictError";
    this.ver = ver;
  }
}

/**
 * 413: something is over its limit (`max`, in bytes). Raised by the server, or by the SDK
 * before sending when it already knows the server's limits.
 */
export class TooLargeError extends ServerError {
  readonly max: number | undefined;
  constructor(message: string, max?: number, requestId?: number) {
    super(413, message, requestId);
    this.name = "TooLargeError";
    this.max = max;
  }
}

/** 429: too many subscriptions on the connection, or too many keys in the room. */
export class LimitError extends ServerError {
  readonly max: number | undefined;
  constructor(message: string, max?: number, requestId?: number) {
    super(429, message, requestId);
    this.name = "LimitError";
    this.max = max;
  }
}

/**
 * 429 from a rate limit (SPEC.md section 6.1): the request came too fast and was not acted on
 * (nothing stored). The same request may succeed after `retryAfterMs`; `max` is the rate.
 * A `LimitError`, so code that handles 429 as a whole still catches it. Not retried by the SDK:
 * the application decides (the chat keeps the unsent text and says when to try again).
 */
export class RateLimitError extends LimitError {
  /** Milliseconds until the same request would be admitted. */
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, max?: number, requestId?: number) {
    super(message, max, requestId);
    this.name = "RateLimitError";
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * 403: the connection may not do this in this room (SPEC.md 9.2): its token's `rooms` claim,
 * or the room's namespace defaults, do not grant it. Not retryable with the same token.
 */
export class ForbiddenError extends ServerError {
  constructor(message: string, requestId?: number) {
    super(403, message, requestId);
    this.name = "ForbiddenError";
  }
}

/** No reply within the request timeout. The request may or may not have been applied. */
export class TimeoutError extends RoomdError {
  constructor(message: string) {
    super(LocalCode.Timeout, message, true);
    this.name = "TimeoutError";
  }
}

/**
 * The connection dropped while a request that is not safe to resend (`put`, `del`, `cas`,
 * `incr`) was in flight: it may or may not have been applied. Re-read, then decide.
 */
export class DisconnectedError extends RoomdError {
  constructor(message: string) {
    super(LocalCode.Disconnected, message, true);
    this.name = "DisconnectedError";
  }
}

/** The client is closed: by `close()`, or by the server with a code that forbids reconnecting. */
export class ClosedError extends RoomdError {
  /** The WebSocket close code, when the server closed. */
  readonly closeCode: number | undefined;
  constructor(message: string, closeCode?: number) {
    super(LocalCode.Closed, message, false);
    this.name = "ClosedError";
    this.closeCode = closeCode;
  }
}

/** The offline queue is full: too many requests are waiting for the connection. */
export class QueueFullError extends RoomdError {
  readonly max: number;
  constructor(max: number) {
    super(LocalCode.QueueFull, `offline queue is full (${max} requests)`, true);
    this.name = "QueueFullError";
    this.max = max;
  }
}

/** A frame from the server did not have the shape SPEC.md gives it. */
export class ProtocolError extends RoomdError {
  constructor(message: string) {
    super(LocalCode.Protocol, message, false);
    this.name = "ProtocolError";
  }
}

/** Build the most specific error for an `err` frame. */
export function errorFromFrame(f: {
  code: number;
  msg: string;
  id?: number;
  ver?: number;
  max?: number;
  retry_after_ms?: number;
}): ServerError {
  switch (f.code) {
    case 403:
      return new ForbiddenError(f.msg, f.id);
    case 409:
      return new ConflictError(f.msg, f.ver ?? 0, f.id);
    case 413:
      return new TooLargeError(f.msg, f.max, f.id);
    case 429:
      return f.retry_after_ms === undefined
        ? new LimitError(f.msg, f.max, f.id)
        : new RateLimitError(f.msg, f.retry_after_ms, f.max, f.id);
    default:
      return new ServerError(f.code, f.msg, f.id);
  }
}
