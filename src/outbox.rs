//! A connection's bounded outbound queue.
//!
//! Rooms never wait on a subscriber: they `push` and, if the queue is over its bound, the
//! connection is marked closed with `4000 slow consumer` and its socket task closes it. The
//! client resumes later with `since` and loses nothing. Frames are shared `Bytes`: a broadcast
//! is encoded once and queued by reference in every subscriber's outbox.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use roomd_protocol::CloseCode;
use tokio::sync::Notify;

/// Why the server is closing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    SlowConsumer,
    GoingAway,
    Internal,
    /// The connection's token expired without a refresh (SPEC.md 9.3).
    TokenExpired,
    /// The application disconnected the connection; the client may reconnect (SPEC.md 7).
    Disconnected,
    /// The application removed the user; the client must not reconnect (SPEC.md 7).
    Removed,
    /// Cluster: this node lost Redis past its grace, or a room's epoch changed under it;
    /// reconnect (to any node) and resume (SPEC.md 7).
    EngineUnavailable,
}

impl CloseReason {
    pub(crate) fn code(self) -> u16 {
        match self {
            CloseReason::SlowConsumer => CloseCode::SLOW_CONSUMER,
            CloseReason::GoingAway => CloseCode::GOING_AWAY,
            CloseReason::Internal => CloseCode::INTERNAL,
            CloseReason::TokenExpired => CloseCode::TOKEN_EXPIRED,
            CloseReason::Disconnected => CloseCode::DISCONNECTED,
            CloseReason::Removed => CloseCode::REMOVED,
            CloseReason::EngineUnavailable => CloseCode::ENGINE_UNAVAILABLE,
        }
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow consumer: outbound queue full; resume with since",
            CloseReason::GoingAway => "server shutting down",
            CloseReason::Internal => "internal error",
            CloseReason::TokenExpired => "token expired: reconnect with a new token",
            CloseReason::Disconnected => "disconnected by the application",
            CloseReason::Removed => "removed by the application: do not reconnect",
            CloseReason::EngineUnavailable => {
                "this node lost its cluster engine: reconnect (to any node) and resume"
            }
        }
    }
}

/// The queue is full (the connection is now closing) or already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

#[derive(Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the socket task: frames are ready or the outbox was closed.
    ready: Notify,
    /// Wakes replay tasks waiting for the queue to drain.
    drained: Notify,
    max_frames: usize,
    max_bytes: usize,
    /// The server is shutting down: the connection answers new requests with 503.
    refusing: AtomicBool,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: Option<CloseReason>,
}

impl Outbox {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                ready: Notify::new(),
                drained: Notify::new(),
                max_frames,
                max_bytes,
                refusing: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Over the bound, closes the connection as a slow consumer.
    pub(crate) fn push(&self, frame: Bytes) -> Result<(), Rejected> {
        self.push_frames(1, frame.len(), std::iter::once(frame))
    }

    /// Queues `count` frames of `len` bytes in all (taken, not cloned: a frame with one owner
    /// stays unshared).
    fn push_frames(
        &self,
        count: usize,
        len: usize,
        frames: impl Iterator<Item = Bytes>,
    ) -> Result<(), Rejected> {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Err(Rejected);
        }
        let fits = q.frames.len() + count <= self.shared.max_frames
            && q.bytes + len <= self.shared.max_bytes;
        if !fits && !q.frames.is_empty() {
            // The subscriber will resume from the last seq it processed, so what it has not
            // been sent yet is dropped: the close frame goes out right behind what the socket
            // already holds instead of after a queue it cannot keep up with.
            q.closed = Some(CloseReason::SlowConsumer);
            q.frames.clear();
            q.bytes = 0;
            drop(q);
            crate::metrics::slow_consumer();
            self.shared.ready.notify_one();
            self.shared.drained.notify_waiters();
            return Err(Rejected);
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len;
        q.frames.extend(frames);
        drop(q);
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Queues a replayed frame only while the queue is at most half full (in frames and bytes),
    /// leaving the other half to live traffic. `Ok(false)`: no room now, try again after the
    /// queue drains; nothing is closed.
    pub(crate) fn push_replay(&self, frame: &Bytes) -> Result<bool, Rejected> {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Err(Rejected);
        }
        let half_frames = self.shared.max_frames / 2;
        let half_bytes = self.shared.max_bytes / 2;
        if !q.frames.is_empty()
            && (q.frames.len() >= half_frames || q.bytes + frame.len() > half_bytes)
        {
            return Ok(false);
        }
        let was_empty = q.frames.is_empty();
        q.bytes += frame.len();
        q.frames.push_back(frame.clone());
        drop(q);
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(true)
    }

    /// Marks the outbox closed; queued frames (acks, say) are still written before the close
    /// frame.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
        }
        drop(q);
        self.shared.ready.notify_one();
        self.shared.drained.notify_waiters();
    }

    /// From now on the connection refuses new requests (the server is draining); wakes its
    /// task so it notices even while idle. A flag rather than a shared shutdown signal that
    /// every connection would poll on every turn of its loop.
    pub(crate) fn refuse_requests(&self) {
        self.shared.refusing.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }

    pub(crate) fn is_refusing(&self) -> bool {
        self.shared.refusing.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Moves every queued frame into `out`; returns the close reason once the queue is empty
    /// and closed.
    pub(crate) fn drain(&self, out: &mut Vec<Bytes>) -> Option<CloseReason> {
        let mut q = self.lock();
        out.extend(q.frames.drain(..));
        q.bytes = 0;
        let closed = q.closed;
        drop(q);
        self.shared.drained.notify_waiters();
        closed
    }

    /// Wakes the socket task, as a push would.
    pub(crate) fn wake(&self) {
        self.shared.ready.notify_one();
    }

    /// Waits until frames may be ready (spurious wake-ups are possible).
    pub(crate) async fn ready(&self) {
        self.shared.ready.notified().await
    }

    /// Waits until `bytes` more fit in the half of the queue left to replay (or the queue is
    /// empty), so the replay page about to be read can be queued whole and leaves room for live
    /// traffic of other rooms. Returns `false` if the outbox is closed.
    pub(crate) async fn wait_replay_room(&self, bytes: usize) -> bool {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.lock();
                if q.closed.is_some() {
                    return false;
                }
                if q.frames.is_empty()
                    || (q.frames.len() < self.shared.max_frames / 2
                        && q.bytes + bytes <= self.shared.max_bytes / 2)
                {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Queues `frame` once it fits in the half of the queue left to replay (see
    /// [`Outbox::push_replay`]), waiting for the socket to drain it: a snapshot larger than the
    /// bound goes out at the reader's pace instead of closing it as a slow consumer. Returns
    /// `false` if the outbox is closed.
    pub(crate) async fn push_paced(&self, frame: &Bytes) -> bool {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.push_replay(frame) {
                Ok(true) => return true,
                Ok(false) => notified.await,
                Err(Rejected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_closes_as_slow_consumer_and_drops_the_queue() {
        let o = Outbox::new(2, 1024);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(o.push(Bytes::from_static(b"c")), Err(Rejected));
        let mut out = Vec::new();
        assert_eq!(o.drain(&mut out), Some(CloseReason::SlowConsumer));
        assert!(out.is_empty());
        assert_eq!(o.push(Bytes::from_static(b"d")), Err(Rejected));
    }

    #[test]
    fn byte_bound_allows_one_oversized_frame_when_empty() {
        let o = Outbox::new(10, 4);
        o.push(Bytes::from_static(b"123456")).unwrap();
        assert!(o.push(Bytes::from_static(b"x")).is_err());
    }
}
