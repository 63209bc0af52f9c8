//! Handing a room's batch to the writer, and what its commit releases.
//!
//! At most one batch per room is with the writer at a time, so a commit's outcome is handled in
//! order. A durable batch is broadcast to live subscribers as one buffer, cached, and answered
//! (acks, `done`s, state applied, `mid`s remembered); a failed one is answered with an error.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use roomd_protocol::ServerFrame;
use tokio::sync::oneshot;

use super::deadlines::Due;
use super::dedup::dup_ack;
use super::model::{now_ms, Reply, Room, Written};
use super::state::Effect;
use crate::peer::{Peer, ReplyError};
use crate::store::{CommitResult, RoomBatch, RoomWrite, StoreError};
use crate::webhook::Durable;

/// How long after a failed write a key's expiry is tried again.
const EXPIRY_RETRY_MS: u64 = 1000;

/// What became of a room's pending requests.
pub(super) enum Flushed {
    /// Nothing to wait for: nothing to write, logged already (relaxed mode), or failed; all
    /// answered.
    Settled,
    /// With the writer: the outcome comes through this.
    Queued(oneshot::Receiver<CommitResult>),
    /// The writer's queue is full: the batch waits to be queued.
    QueueFull(RoomBatch, oneshot::Receiver<CommitResult>),
}

/// The outcome of the batch in flight; never resolves while there is none.
pub(super) async fn recv_commit(rx: &mut Option<oneshot::Receiver<CommitResult>>) -> CommitResult {
    match rx {
        Some(r) => r
            .await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Closed))),
        None => std::future::pending().await,
    }
}

impl Room {
    /// Forms the next batch from everything pending and hands it to the writer, unless the
    /// writer's queue is full.
    pub(super) fn flush(&mut self) -> Flushed {
        match self.form_batch() {
            Some(write) => self.hand_to_writer(write),
            None => Flushed::Settled,
        }
    }

    /// Relaxed mode logs the write right here when the log is free; otherwise it is queued for
    /// the writer thread.
    fn hand_to_writer(&mut self, write: RoomWrite) -> Flushed {
        if self.linked.is_some() {
            return Flushed::Queued(self.send_to_redis(write));
        }
        let write = match self.env.writer.try_log(write) {
            Ok(res) => {
                self.on_commit(res);
                return Flushed::Settled;
            }
            Err(write) => write,
        };
        let (done, wait) = oneshot::channel();
        match self.env.writer.try_submit(RoomBatch { write, done }) {
            Ok(Ok(())) => Flushed::Queued(wait),
            Ok(Err(e)) => {
                self.on_commit(Err(Arc::new(e)));
                Flushed::Settled
            }
            Err(batch) => Flushed::QueueFull(batch, wait),
        }
    }

    /// Waits for room in the writer's queue (backpressure on a busy room).
    pub(super) async fn submit(
        &mut self,
        batch: RoomBatch,
        wait: oneshot::Receiver<CommitResult>,
    ) -> Option<oneshot::Receiver<CommitResult>> {
        if let Err(e) = self.env.writer.submit(batch).await {
            self.on_commit(Err(Arc::new(e)));
            return None;
        }
        Some(wait)
    }

    /// The batch in flight is durable (or failed): fan it out, cache it, answer it.
    pub(super) fn on_commit(&mut self, res: CommitResult) {
        let written = std::mem::take(&mut self.in_flight);
        let info = match res {
            Ok(info) => info,
            // On Redis, a room that moved on: the requests are formed again.
            Err(e) if self.requeue(&e) => {
                drop(written);
                return self.release_held();
            }
            // The writer logged the failure, once for its whole group.
            Err(e) => {
                self.fail_written(written, &e);
                return self.release_held();
            }
        };
        self.committed();
        if self.id.is_none() {
            self.hook_created();
        }
        self.id = Some(info.room_id);
        if let Some(earliest) = info.earliest {
            self.trimmed_to(earliest);
        }
        self.broadcast(&concat_frames(&written), written.len());
        let mut held = HeldAnswers::default();
        for Written { seq, frame, reply } in written {
            let event = self.hook_written(seq, &frame, &reply);
            self.head = seq;
            self.cache_frame(seq, frame);
            let answers = match event {
                Some(event) => held.hold(event),
                None => Answers::Now,
            };
            self.answer(seq, reply, answers);
        }
        held.send_when_durable();
        self.release_held();
    }

    /// A committed state change, and the key's deadline with it: set when the new entry
    /// expires, cleared when the key is gone or no longer expires.
    pub(super) fn apply_effect(&mut self, effect: Effect) {
        let due = Due::Key(effect.key.clone());
        match effect.entry.as_ref().and_then(|e| e.exp) {
            Some(exp) => self.deadlines.set(due, exp),
            None => self.deadlines.clear(&due),
        }
        self.owner_changes(&effect);
        self.state.apply(effect);
    }

    /// Retention removed everything before `earliest`.
    fn trimmed_to(&mut self, earliest: u64) {
        self.earliest = earliest;
        while self.cache.front().is_some_and(|(s, _)| *s < earliest) {
            self.cache.pop_front();
        }
    }

    pub(super) fn cache_frame(&mut self, seq: u64, frame: Bytes) {
        let cache_max = self.env.limits.cache_entries;
        if cache_max > 0 {
            if self.cache.len() == cache_max {
                self.cache.pop_front();
            }
            self.cache.push_back((seq, frame));
        }
    }

    /// Takes a durable entry into the room's committed view and answers its writer (and the
    /// retries of the same `mid` that waited for it, after it) through `answers`.
    fn answer(&mut self, seq: u64, reply: Reply, mut answers: Answers<'_>) {
        match reply {
            Reply::Ack {
                peer,
                id,
                dedup,
                received,
            } => {
                crate::metrics::published(received.elapsed());
                answers.send(peer, ServerFrame::Ack { id, seq, dup: None });
                if let Some(key) = dedup {
                    for (peer, id) in self.dedup.stored_waiting(key, seq, now_ms()) {
                        answers.send(peer, dup_ack(id, seq));
                    }
                }
            }
            Reply::Mutated { peer, id, effect } => {
                let value = effect
                    .reply_value
                    .then(|| effect.entry.as_ref().map(|e| e.value.clone()))
                    .flatten();
                let done = ServerFrame::Done {
                    id,
                    seq: Some(seq),
                    ver: effect.ver,
                    value,
                };
                answers.send(peer, done);
                self.apply_effect(effect);
            }
            Reply::Expired { effect } | Reply::Released { effect, .. } => {
                self.apply_effect(effect);
            }
            Reply::Changed {
                peer,
                id,
                target,
                rewrites,
            } => {
                answers.send(peer, ServerFrame::Ack { id, seq, dup: None });
                self.changed(target, seq, rewrites);
            }
        }
    }

    /// The batch was not stored: answer everyone in it; its seqs will be reused.
    fn fail_written(&mut self, written: Vec<Written>, cause: &StoreError) {
        let err = match cause {
            // Redis did not answer: a retry may succeed.
            StoreError::Engine(_) => ReplyError::from(cause),
            _ => ReplyError::storage_logged(),
        };
        for w in written {
            match w.reply {
                Reply::Ack {
                    peer, id, dedup, ..
                } => {
                    peer.send_err(Some(id), err.clone());
                    let waiters = dedup.map(|k| self.dedup.failed(&k)).unwrap_or_default();
                    for (peer, id) in waiters {
                        peer.send_err(Some(id), err.clone());
                    }
                }
                Reply::Mutated { peer, id, .. } => peer.send_err(Some(id), err.clone()),
                // Tried again after a pause, not at once: the disk just failed.
                Reply::Expired { effect } => self.deadlines.set(
                    Due::Key(effect.key),
                    now_ms().saturating_add(EXPIRY_RETRY_MS),
                ),
                Reply::Released { effect, owner } => self.deadlines.set(
                    Due::Release(effect.key, owner),
                    now_ms().saturating_add(EXPIRY_RETRY_MS),
                ),
                Reply::Changed {
                    peer, id, target, ..
                } => {
                    peer.send_err(Some(id), err.clone());
                    self.redaction_failed(target, &err);
                }
            }
        }
    }
}

/// The batch's frames are contiguous WebSocket frames: concatenated once, they cost each
/// subscriber one reference, one queue slot and one wake-up, however many entries the commit
/// carried.
fn concat_frames(written: &[Written]) -> Bytes {
    match written {
        [one] => one.frame.clone(),
        many => {
            let mut all = BytesMut::with_capacity(many.iter().map(|w| w.frame.len()).sum());
            for w in many {
                all.extend_from_slice(&w.frame);
            }
            all.freeze()
        }
    }
}

/// Where a durable entry's answers go: to their peers at once, or held until the entry's
/// webhook event is durable.
enum Answers<'a> {
    Now,
    Held(&'a mut Vec<(Arc<Peer>, ServerFrame)>),
}

impl Answers<'_> {
    fn send(&mut self, peer: Arc<Peer>, frame: ServerFrame) {
        match self {
            Answers::Now => peer.send(&frame),
            Answers::Held(held) => held.push((peer, frame)),
        }
    }
}

/// Answers whose entries' webhook events are still on their way to the outbox (README
/// "Webhooks"): sent, in order, once all of those events are durable. One task per batch that
/// has any, not per answer; how many can wait is bounded by the webhook queue
/// ([`crate::webhook::QUEUE`]), since an event that did not fit is not waited for.
#[derive(Default)]
struct HeldAnswers {
    events: Vec<Durable>,
    answers: Vec<(Arc<Peer>, ServerFrame)>,
}

impl HeldAnswers {
    /// Holds the answers of an entry whose event is `event`.
    fn hold(&mut self, event: Durable) -> Answers<'_> {
        self.events.push(event);
        Answers::Held(&mut self.answers)
    }

    fn send_when_durable(self) {
        if self.answers.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for event in self.events {
                // An error only says the event was dropped (counted, logged): nothing to wait for.
                let _ = event.await;
            }
            for (peer, answer) in self.answers {
                peer.send(&answer);
            }
        });
    }
}
