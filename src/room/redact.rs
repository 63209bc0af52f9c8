//! Deleting a message (SPEC.md 5.6): a `del` entry of its own, and the target rewritten as a
//! stub.
//!
//! A deletion is a log entry like a publish: it gets the next seq (so seqs stay dense and every
//! subscriber learns of it in order), goes out in the room's next batch and is acknowledged
//! once durable. The same write carries a *redaction*: the target's stored frame replaced by a
//! stub without its payload, applied to redb in log order with the `del` entry (and again,
//! harmlessly, by recovery). The room's cache gets the stub when the batch is durable.
//!
//! Checking the target needs its frame: from the cache when it is there, else read on the
//! blocking pool, the answer coming back through the room's inbox ([`Command::RedactRead`]).
//! While a deletion is under way (read, pending or in flight) its target is in
//! `Room::redacting`, and later requests to delete the same message wait there for its
//! outcome: two deletions racing yield one `del` and one duplicate, never two.

use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::{codec, ErrorCode, ServerFrame};

use super::model::{Pending, Room, Stub};
use super::Command;
use crate::peer::{Peer, ReplyError};
use crate::store::StoreError;
use crate::wire;

/// What a target's stored frame says about deleting it.
enum Verdict {
    /// A message: delete it.
    Delete(Stub),
    /// A message already deleted by the entry with this seq.
    Deleted(u64),
    /// Not a message (a `state` or `del` entry, or unreadable).
    NotAMessage,
    /// No longer stored: retention removed it after the request was checked.
    Trimmed,
}

impl Room {
    /// Deletes message `target` on behalf of `peer` (request `id`).
    pub(super) fn redact(&mut self, peer: Arc<Peer>, id: u32, target: u64) {
        if let Some(waiters) = self.redacting.get_mut(&target) {
            waiters.push((peer, id));
            return;
        }
        if target == 0 || target > self.head || target < self.earliest {
            return peer.send_err(Some(id), not_stored(target));
        }
        if let Some(frame) = self.cached(target) {
            let verdict = verdict(target, &frame);
            return self.decide(peer, id, target, verdict, Vec::new());
        }
        let Some(room_id) = self.id else {
            // A room with a head has an id; without one there is nothing to delete.
            return peer.send_err(Some(id), not_stored(target));
        };
        self.redacting.insert(target, Vec::new());
        let (engine, tx, name) = (self.env.engine.clone(), self.tx.clone(), self.name.clone());
        self.env.background.spawn(async move {
            let read = engine
                .read_entry((room_id, &name), target)
                .await
                .map_err(Arc::new);
            let back = Command::RedactRead {
                peer,
                id,
                target,
                read,
            };
            // The room waits for this answer before it goes idle or stops (`redacting` is not
            // empty), so its inbox is open; were it not, the requester still gets an answer.
            if let Err(e) = tx.send(Box::new(back)).await {
                if let Command::RedactRead { peer, id, .. } = *e.0 {
                    peer.send_err(
                        Some(id),
                        ReplyError::new(ErrorCode::Unavailable, "room stopped"),
                    );
                }
            }
        });
    }

    /// The target's frame, read from disk for a deletion, is back.
    pub(super) fn redact_read(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        target: u64,
        read: Result<Option<Bytes>, Arc<StoreError>>,
    ) {
        let waiters = self.redacting.remove(&target).unwrap_or_default();
        let verdict = match read {
            Ok(Some(frame)) => verdict(target, &frame),
            Ok(None) => Verdict::Trimmed,
            Err(e) => {
                let err = ReplyError::from(&*e);
                for (peer, id) in std::iter::once((peer, id)).chain(waiters) {
                    peer.send_err(Some(id), err.clone());
                }
                return;
            }
        };
        self.decide(peer, id, target, verdict, waiters);
    }

    /// Acts on a verdict for the requester and those waiting on the same target.
    fn decide(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        target: u64,
        verdict: Verdict,
        waiters: Vec<(Arc<Peer>, u32)>,
    ) {
        let answer = match verdict {
            Verdict::Delete(stub) => {
                self.redacting.insert(target, waiters);
                self.pending.push(Pending::Redact { peer, id, stub });
                return;
            }
            Verdict::Deleted(seq) => Ok(seq),
            Verdict::NotAMessage => Err(not_a_message(target)),
            Verdict::Trimmed => Err(not_stored(target)),
        };
        for (peer, id) in std::iter::once((peer, id)).chain(waiters) {
            match &answer {
                Ok(seq) => peer.send(&ServerFrame::Ack {
                    id,
                    seq: *seq,
                    dup: Some(true),
                }),
                Err(e) => peer.send_err(Some(id), e.clone()),
            }
        }
    }

    /// The deletion of `target` was not written (trimmed meanwhile, or the commit failed):
    /// those waiting on it get `err`.
    pub(super) fn redaction_failed(&mut self, target: u64, err: &ReplyError) {
        for (peer, id) in self.redacting.remove(&target).unwrap_or_default() {
            peer.send_err(Some(id), err.clone());
        }
    }

    /// The deletion of `target` by entry `seq` is durable: the cache holds the stub from now
    /// on, and those waiting on it get the `del`'s seq as duplicates.
    pub(super) fn redacted(&mut self, target: u64, seq: u64, stub: Bytes) {
        if let Ok(i) = self.cache.binary_search_by_key(&target, |(s, _)| *s) {
            self.cache[i].1 = stub;
        }
        for (peer, id) in self.redacting.remove(&target).unwrap_or_default() {
            peer.send(&ServerFrame::Ack {
                id,
                seq,
                dup: Some(true),
            });
        }
    }

    /// A deletion stored by another node (cluster): the target's cached frame becomes its
    /// stub, and requests here to delete the same message are answered with its seq.
    pub(super) fn redacted_elsewhere(&mut self, target: u64, seq: u64) {
        match self.cached(target).map(|f| verdict(target, &f)) {
            Some(Verdict::Delete(stub)) => {
                let frame = stub_frame(&self.name, stub, seq);
                self.redacted(target, seq, frame);
            }
            _ => {
                for (peer, id) in self.redacting.remove(&target).unwrap_or_default() {
                    peer.send(&ServerFrame::Ack {
                        id,
                        seq,
                        dup: Some(true),
                    });
                }
            }
        }
    }

    fn cached(&self, seq: u64) -> Option<Bytes> {
        let i = self.cache.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(self.cache[i].1.clone())
    }
}

/// The frame a deleted message keeps: its seq, time and author, and the seq of its `del`.
pub(super) fn stub_frame(room: &str, stub: Stub, del: u64) -> Bytes {
    wire::encode(&ServerFrame::Msg {
        room: String::from(room),
        seq: stub.target,
        ts: stub.ts,
        from: stub.from,
        uid: stub.uid,
        data: Vec::new(),
        deleted: Some(del),
    })
}

/// Reads a target's stored frame.
fn verdict(target: u64, frame: &[u8]) -> Verdict {
    match codec::decode_server(wire::payload(frame)) {
        Ok(ServerFrame::Msg {
            deleted: Some(seq), ..
        }) => Verdict::Deleted(seq),
        Ok(ServerFrame::Msg { ts, from, uid, .. }) => Verdict::Delete(Stub {
            target,
            ts,
            from,
            uid,
        }),
        _ => Verdict::NotAMessage,
    }
}

pub(super) fn not_stored(target: u64) -> ReplyError {
    ReplyError::new(
        ErrorCode::BadRequest,
        format!("seq {target} is not a stored entry of this room"),
    )
}

fn not_a_message(target: u64) -> ReplyError {
    ReplyError::new(
        ErrorCode::BadRequest,
        format!("seq {target} is not a message: only messages can be deleted"),
    )
}
