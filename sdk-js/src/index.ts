/**
 * roomd SDK: durable rooms over WebSocket + MessagePack.
 *
 * - `client.ts`   the connection state machine: dialing, dispatch, reconnects, heartbeats
 * - `requests.ts` request ids, replies in flight with timeouts, the bounded offline queue
 * - `room.ts`     a room: subscription with resume, presence, state mirror, log and state requests
 * - `message.ts`  what the log holds: `Message`, `Edit`, `StateChange`, `Deletion`; and `Signal`
 * - `frames.ts`   the wire frames: request builders and the checked server frame parser
 * - `codec.ts`    MessagePack encode/decode in the canonical key order
 * - `codes.ts`    error codes and close codes, and which ones to retry
 * - `errors.ts`   typed errors (`RoomdError` and subclasses)
 * - `backoff.ts`  full-jitter exponential backoff
 * - `transport.ts` the WebSocket surface the client needs
 */
export { Client, type ClientOptions, type ClientEvents, type CloseInfo, type ConnectionState } from "./client.js";
export {
  Room,
  type RoomEvents,
  type SubscribeOptions,
  type Subscription,
  type HistoryPage,
  type StateEntry,
  type ResetInfo,
  type GapInfo,
  type SubscriptionState,
  type UnsubscribedInfo,
  type PresenceCount,
} from "./room.js";
export type { RequestKind } from "./requests.js";
export { Message, Edit, Signal, StateChange, Deletion, type LogEntry } from "./message.js";
export { EXPIRY_FROM } from "./message.js";
export type {
  Hello,
  Limits,
  Member,
  StateItem,
  HistOptions,
  ListOptions,
  WriteOptions,
  Request,
  Reply,
  ServerFrame,
  MsgEvent,
  StateEvent,
  DelEvent,
  SignalEvent,
  UnsubbedEvent,
} from "./frames.js";
export { req, withId, parseServerFrame } from "./frames.js";
export { encode, decode, textToBytes, bytesToText, type Value } from "./codec.js";
export { ErrorCode, LocalCode, CloseCode, codeName, isRetryable, shouldReconnect } from "./codes.js";
export {
  RoomdError,
  ServerError,
  ConflictError,
  ForbiddenError,
  TooLargeError,
  LimitError,
  RateLimitError,
  TimeoutError,
  DisconnectedError,
  ClosedError,
  QueueFullError,
  ProtocolError,
} from "./errors.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { SUBPROTOCOL, type WebSocketConstructor, type WebSocketLike } from "./transport.js";

import { Client, type ClientOptions } from "./client.js";

/** Shorthand for `new Client(url, options)`: starts connecting at once. */
export function connect(url: string, options?: ClientOptions): Client {
  return new Client(url, options);
}
