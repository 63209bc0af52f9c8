//! A room's writes: pending requests, the batch handed to the writer, and what its commit
//! releases.
//!
//! At most one batch per room is with the writer at a time; requests that arrive meanwhile wait
//! in `pending` and go out together as the next batch (one commit, one broadcast for all of
//! them). Seqs are assigned when a batch is formed, so a failed commit never leaves a hole: its
//! seqs are simply reused by the next batch. State mutations are evaluated against the
//! committed state plus the batch's earlier effects and applied only once the batch is durable.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use roomd_protocol::{ErrorCode, ServerFrame};
use tokio::sync::oneshot;

use super::actor::{now_ms, Room};
use super::dedup::Dedup;
use super::state::{Effect, Overlay};
use super::Mutation;
use crate::peer::{Peer, ReplyError};
use crate::store::{record, CommitResult, RoomBatch, RoomRef, RoomWrite, StoreError, Trim};
use crate::wire;

/// A request waiting to be written.
pub(super) enum Pending {
    Publish {
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        dedup: Option<String>,
        received: Instant,
    },
    Mutate {
        peer: Arc<Peer>,
        id: u32,
        op: Mutation,
    },
}

/// An entry of the batch in flight, with who to answer once it is durable.
pub(super) struct Written {
    seq: u64,
    frame: Bytes,
    reply: Reply,
}

/// Who is answered for an entry once its batch is durable, and how.
enum Reply {
    /// A publish: `ack` with the entry's seq.
    Ack {
        peer: Arc<Peer>,
        id: u32,
        dedup: Option<String>,
        received: Instant,
    },
    /// A state mutation: `done`, and the effect is applied to the committed state.
    Mutated {
        peer: Arc<Peer>,
        id: u32,
        effect: Effect,
    },
}

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

/// A batch being formed: its log entries and state records, and who to answer for each.
struct BatchBuilder<'a> {
    room: &'a str,
    ts: u64,
    /// The last seq given out.
    seq: u64,
    entries: Vec<(u64, Vec<u8>)>,
    state: Vec<(String, Option<Vec<u8>>)>,
    written: Vec<Written>,
}

impl BatchBuilder<'_> {
    fn publish(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        dedup: Option<String>,
        received: Instant,
    ) {
        self.seq += 1;
        let (seq, ts) = (self.seq, self.ts);
        let frame = wire::encode(&ServerFrame::Msg {
            room: String::from(self.room),
            seq,
            ts,
            from: String::from(&*peer.id),
            uid: peer.user.as_deref().map(str::to_string),
            data,
        });
        self.entries.push((
            seq,
            record::encode_log(ts, dedup.as_deref(), wire::payload(&frame)),
        ));
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Ack {
                peer,
                id,
                dedup,
                received,
            },
        });
    }

    fn mutation(&mut self, peer: Arc<Peer>, id: u32, effect: Effect) {
        self.seq += 1;
        let (seq, ts) = (self.seq, self.ts);
        let frame = wire::encode(&ServerFrame::State {
            room: String::from(self.room),
            seq,
            ts,
            from: String::from(&*peer.id),
            uid: peer.user.as_deref().map(str::to_string),
            key: effect.key.clone(),
            ver: effect.ver,
            value: effect.entry.as_ref().map(|e| e.value.clone()),
        });
        self.entries
            .push((seq, record::encode_log(ts, None, wire::payload(&frame))));
        let rec = effect
            .entry
            .as_ref()
            .map(|e| record::encode_state(e.ver, &e.encoded));
        self.state.push((effect.key.clone(), rec));
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Mutated { peer, id, effect },
        });
    }
}

impl Room {
    /// Queues a publish, unless its `mid` says it is a retry (see [`Dedup::admit`]).
    pub(super) fn publish(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        mid: Option<String>,
        received: Instant,
    ) {
        let dedup = mid.map(|m| Dedup::key(&peer.client, &m));
        let peer = match &dedup {
            Some(key) => match self.dedup.admit(key, peer, id, now_ms(), &self.env.limits) {
                Some(peer) => peer,
                None => return,
            },
            None => peer,
        };
        self.pending.push(Pending::Publish {
            peer,
            id,
            data,
            dedup,
            received,
        });
    }

    /// Forms the next batch from everything pending and hands it to the writer, unless the
    /// writer's queue is full.
    pub(super) fn flush(&mut self) -> Flushed {
        match self.form_batch() {
            Some(write) => self.hand_to_writer(write),
            None => Flushed::Settled,
        }
    }

    /// Gives seqs to everything pending and encodes it; the entries become `in_flight`.
    /// Mutations that fail or change nothing are answered here. `None`: nothing to write.
    fn form_batch(&mut self) -> Option<RoomWrite> {
        let mut batch = BatchBuilder {
            room: &self.name,
            ts: now_ms(),
            seq: self.head,
            entries: Vec::new(),
            state: Vec::new(),
            written: Vec::new(),
        };
        let mut overlay = Overlay::new(&self.state, self.env.limits.keys_per_room);
        // Taken and given back, so its capacity is kept from batch to batch.
        let mut pending = std::mem::take(&mut self.pending);
        for op in pending.drain(..) {
            match op {
                Pending::Publish {
                    peer,
                    id,
                    data,
                    dedup,
                    received,
                } => batch.publish(peer, id, data, dedup, received),
                Pending::Mutate { peer, id, op } => match overlay.apply(op) {
                    Err(e) => peer.send_err(Some(id), e),
                    Ok(None) => peer.send(&ServerFrame::Done {
                        id,
                        seq: None,
                        ver: 0,
                        value: None,
                    }),
                    Ok(Some(effect)) => batch.mutation(peer, id, effect),
                },
            }
        }
        let BatchBuilder {
            entries,
            state,
            written,
            ..
        } = batch;
        self.pending = pending;
        let trim = self.take_trim();
        if written.is_empty() && trim.is_none() {
            return None;
        }
        self.in_flight = written;
        Some(RoomWrite {
            room: self.room_ref(),
            entries,
            state,
            trim,
        })
    }

    fn room_ref(&self) -> RoomRef {
        match self.id {
            Some(id) => RoomRef::Id(id),
            None => RoomRef::New {
                name: self.name.clone(),
                epoch: self.epoch,
            },
        }
    }

    /// Relaxed mode logs the write right here when the log is free; otherwise it is queued for
    /// the writer thread.
    fn hand_to_writer(&mut self, write: RoomWrite) -> Flushed {
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

    /// Retention for this batch, if asked for and no subscriber is being replayed (a trim
    /// under a replay could remove the entries it is about to read).
    fn take_trim(&mut self) -> Option<Trim> {
        if !std::mem::take(&mut self.trim_wanted) || self.replays > 0 || self.head == 0 {
            return None;
        }
        let lim = &self.env.limits;
        let before_seq = match lim.retain_messages {
            0 => 0,
            max => self.head.saturating_sub(max) + 1,
        };
        let older_than_ms =
            (lim.retain_age_secs > 0).then(|| now_ms().saturating_sub(lim.retain_age_secs * 1000));
        Some(Trim {
            before_seq,
            older_than_ms,
            head: self.head,
        })
    }

    /// The batch in flight is durable (or failed): fan it out, cache it, answer it.
    pub(super) fn on_commit(&mut self, res: CommitResult) {
        let written = std::mem::take(&mut self.in_flight);
        let info = match res {
            Ok(info) => info,
            Err(e) => return self.fail_written(written, &e),
        };
        self.id = Some(info.room_id);
        if let Some(earliest) = info.earliest {
            self.trimmed_to(earliest);
        }
        self.broadcast(&concat_frames(&written), written.len());
        for Written { seq, frame, reply } in written {
            self.head = seq;
            self.cache_frame(seq, frame);
            self.answer(seq, reply);
        }
    }

    /// Retention removed everything before `earliest`.
    fn trimmed_to(&mut self, earliest: u64) {
        self.earliest = earliest;
        while self.cache.front().is_some_and(|(s, _)| *s < earliest) {
            self.cache.pop_front();
        }
    }

    fn cache_frame(&mut self, seq: u64, frame: Bytes) {
        let cache_max = self.env.limits.cache_entries;
        if cache_max > 0 {
            if self.cache.len() == cache_max {
                self.cache.pop_front();
            }
            self.cache.push_back((seq, frame));
        }
    }

    /// Acknowledges a durable entry to whoever wrote it.
    fn answer(&mut self, seq: u64, reply: Reply) {
        match reply {
            Reply::Ack {
                peer,
                id,
                dedup,
                received,
            } => {
                crate::metrics::published(received.elapsed());
                peer.send(&ServerFrame::Ack { id, seq, dup: None });
                if let Some(key) = dedup {
                    self.dedup.stored(key, seq, now_ms());
                }
            }
            Reply::Mutated { peer, id, effect } => {
                let value = effect
                    .reply_value
                    .then(|| effect.entry.as_ref().map(|e| e.value.clone()))
                    .flatten();
                peer.send(&ServerFrame::Done {
                    id,
                    seq: Some(seq),
                    ver: effect.ver,
                    value,
                });
                self.state.apply(effect);
            }
        }
    }

    /// The batch was not stored: answer everyone in it; its seqs will be reused.
    fn fail_written(&mut self, written: Vec<Written>, e: &StoreError) {
        let err = ReplyError::new(ErrorCode::Storage, format!("not stored: {e}"));
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
