//! What a room knows about a connection: who it is and where its frames go.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::ServerFrame;

pub(crate) use crate::error::ReplyError;
use crate::outbox::Outbox;

pub(crate) struct Peer {
    /// Connection id, unique while the server runs.
    pub id: Arc<str>,
    /// Authenticated (or, without auth, self-declared) user id.
    pub user: Option<Arc<str>>,
    /// Stable client-instance id for publish de-duplication; the connection id if not given.
    pub client: Arc<str>,
    pub outbox: Outbox,
    /// Rooms that refused this connection's `sub` (with its id) after the connection counted
    /// it (presence full): the connection forgets them at its next `sub` or `unsub`.
    pub refused: std::sync::Mutex<Vec<(Arc<str>, u32)>>,
    /// Requests read from this connection and not yet answered.
    pub in_flight: InFlight,
}

/// Requests of one connection between being read and their reply being queued, counted so the
/// connection stops reading its socket at `limits.requests_in_flight` (SPEC.md 4): without the
/// bound, a client could start any number of disk reads (`hist`) or room commands with a few
/// bytes each, and the server would hold all of their replies at once. The cost is one atomic
/// add as a frame is read and one atomic subtract as its reply is queued (uncontended: the
/// connection's own task and the replying room or read), no lock and no allocation.
///
/// Signed, so a reply that was never counted can only let more requests in, never stop the
/// connection for good.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    requests: AtomicI64,
    /// Of those, the ones whose reply may be as large as `limits.frame` ([`LargeReply`]).
    large: AtomicI64,
}

impl InFlight {
    /// A request was read (every frame read gets exactly one reply: SPEC.md 4).
    pub(crate) fn start(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `max` requests, or `max_large` with large replies, are in flight: the connection
    /// reads nothing more until one is answered.
    pub(crate) fn full(&self, max: usize, max_large: usize) -> bool {
        let at = |n: &AtomicI64, max: usize| {
            n.load(Ordering::Acquire) >= i64::try_from(max).unwrap_or(i64::MAX)
        };
        at(&self.requests, max) || at(&self.large, max_large)
    }

    /// A reply is about to be queued. Counted before the push, so the connection task, woken
    /// by the push, already sees the slot free.
    fn end(&self) {
        self.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held by a request whose reply may be as large as `limits.frame` (`hist`, `list`) until it
/// is answered or dropped. The outbox (`outbox.max_bytes`, at least 2 frames) is what holds
/// replies until the socket takes them, and a connection whose queued replies pass it is closed
/// as a slow consumer; so a connection has at most `outbox.max_bytes / (2 × limits.frame)` of
/// these at once (2 by default), and its own pipelined reads can never overflow its outbox.
pub(crate) struct LargeReply(Arc<Peer>);

impl LargeReply {
    pub(crate) fn new(peer: &Arc<Peer>) -> LargeReply {
        peer.in_flight.large.fetch_add(1, Ordering::AcqRel);
        LargeReply(peer.clone())
    }
}

impl Drop for LargeReply {
    fn drop(&mut self) {
        self.0.in_flight.large.fetch_sub(1, Ordering::AcqRel);
        // The reply went out before this is dropped: wake the connection (a spurious wake-up
        // costs a turn of its loop) so it sees the slot free.
        self.0.outbox.wake();
    }
}

impl Peer {
    /// Encodes and queues a frame for this connection only. A reply (a frame answering a
    /// request) ends that request's time in flight.
    pub(crate) fn send(&self, frame: &ServerFrame) {
        if is_reply(frame) {
            self.in_flight.end();
        }
        let _ = self.outbox.push(crate::wire::encode(frame));
    }

    /// A room refused a subscription the connection had counted; tells the connection.
    pub(crate) fn refuse_sub(&self, room: &Arc<str>, id: u32) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.push((room.clone(), id));
    }

    /// The rooms (and `sub` ids) that refused a subscription since the last call.
    pub(crate) fn take_refused(&self) -> Vec<(Arc<str>, u32)> {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *refused)
    }

    /// Queues a reply already built as a WebSocket frame.
    pub(crate) fn send_reply(&self, frame: Bytes) {
        self.in_flight.end();
        let _ = self.outbox.push(frame);
    }

    pub(crate) fn send_err(&self, id: Option<u32>, err: impl Into<ReplyError>) {
        let err = err.into();
        crate::metrics::error(err.code);
        self.send(&ServerFrame::Err {
            id,
            code: err.code.as_u16(),
            msg: err.msg,
            ver: err.ver,
            max: err.max,
            retry_after_ms: err.retry_after_ms,
        });
    }
}

/// Whether a frame is the one reply to a request (SPEC.md 4), rather than the hello or an
/// event. Every `err` is one: those without an `id` answer frames that could not be read.
fn is_reply(frame: &ServerFrame) -> bool {
    match frame {
        ServerFrame::Hello { .. }
        | ServerFrame::Msg { .. }
        | ServerFrame::State { .. }
        | ServerFrame::Join { .. }
        | ServerFrame::Leave { .. }
        | ServerFrame::Count { .. }
        | ServerFrame::Del { .. }
        | ServerFrame::Signal { .. }
        // Ends a subscription on the server's initiative: no request asked for it.
        | ServerFrame::Unsubbed { .. }
        | ServerFrame::Expiring { .. }
        // A continuation of the `subbed` or `who` that was the reply.
        | ServerFrame::Snap { .. } => false,
        ServerFrame::Subbed { .. }
        | ServerFrame::Ok { .. }
        | ServerFrame::Ack { .. }
        | ServerFrame::Hist { .. }
        | ServerFrame::Val { .. }
        | ServerFrame::Vals { .. }
        | ServerFrame::Done { .. }
        | ServerFrame::Who { .. }
        | ServerFrame::Pong { .. }
        | ServerFrame::Err { .. } => true,
    }
}
