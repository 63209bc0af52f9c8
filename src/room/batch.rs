//! Forming a room's next write: pending requests, seqs, and the encoded batch.
//!
//! Requests that arrive while a batch is with the writer wait in `pending`; the next batch takes
//! them all, in arrival order. Seqs are given out here, from the last durable one, so a failed
//! commit never leaves a hole: its seqs are simply reused by the next batch. State mutations are
//! evaluated against the committed state plus the batch's earlier effects (see
//! [`super::state::Overlay`]) and applied only once the batch is durable ([`super::commit`]).

use std::sync::Arc;
use std::time::Instant;

use roomd_protocol::ServerFrame;

use super::dedup::Dedup;
use super::model::{now_ms, Pending, Reply, Room, Stub, Written, EXPIRY_FROM, RELEASE_FROM};
use super::state::{Effect, Overlay};
use super::{ChangeRequest, Mutation};
use crate::peer::Peer;
use crate::store::{record, RoomRef, RoomWrite, Trim};
use crate::wire;

/// A batch being formed: its log entries and state records, and who to answer for each.
struct BatchBuilder<'a> {
    room: &'a str,
    ts: u64,
    /// The last seq given out.
    seq: u64,
    entries: Vec<(u64, Vec<u8>)>,
    state: Vec<(String, Option<Vec<u8>>)>,
    redactions: Vec<(u64, Vec<u8>)>,
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
            deleted: None,
            edited: None,
            edits: None,
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
        let from = String::from(&*peer.id);
        let uid = peer.user.as_deref().map(str::to_string);
        let (seq, frame) = self.state_entry(from, uid, &effect);
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Mutated { peer, id, effect },
        });
    }

    /// A key's expiry (SPEC.md 4.13): a `state` deletion from [`EXPIRY_FROM`].
    fn expiry(&mut self, effect: Effect) {
        let (seq, frame) = self.state_entry(EXPIRY_FROM.to_string(), None, &effect);
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Expired { effect },
        });
    }

    /// An ephemeral key's deletion after its connection ended (SPEC.md 4.14): a `state`
    /// deletion from [`RELEASE_FROM`].
    fn release(&mut self, effect: Effect, owner: Arc<str>) {
        let (seq, frame) = self.state_entry(RELEASE_FROM.to_string(), None, &effect);
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Released { effect, owner },
        });
    }

    /// The log entry and state record of a state change.
    fn state_entry(
        &mut self,
        from: String,
        uid: Option<String>,
        effect: &Effect,
    ) -> (u64, bytes::Bytes) {
        self.seq += 1;
        let (seq, ts) = (self.seq, self.ts);
        let frame = wire::encode(&ServerFrame::State {
            room: String::from(self.room),
            seq,
            ts,
            from,
            uid,
            key: effect.key.clone(),
            ver: effect.ver,
            value: effect.entry.as_ref().map(|e| e.value.clone()),
            exp: effect.entry.as_ref().and_then(|e| e.exp),
        });
        self.entries
            .push((seq, record::encode_log(ts, None, wire::payload(&frame))));
        let rec = effect
            .entry
            .as_ref()
            .map(|e| record::encode_state(e.ver, e.exp, e.owner.is_some(), &e.encoded));
        self.state.push((effect.key.clone(), rec));
        (seq, frame)
    }

    /// A `del` entry (SPEC.md 5.6) or an edit entry (5.8), with the rewrites it carries
    /// ([`super::redact::rewrites`]).
    fn change(&mut self, req: ChangeRequest, stub: Stub) {
        self.seq += 1;
        let (seq, ts) = (self.seq, self.ts);
        let ChangeRequest {
            peer, id, change, ..
        } = req;
        let entry = super::redact::ChangeEntry {
            seq,
            ts,
            from: String::from(&*peer.id),
            uid: peer.user.as_deref().map(str::to_string),
        };
        let target = stub.target;
        let (frame, rewrites) = super::redact::rewrites(self.room, entry, change, stub);
        self.entries
            .push((seq, record::encode_log(ts, None, wire::payload(&frame))));
        for (at, f) in &rewrites {
            self.redactions.push((*at, wire::payload(f).to_vec()));
        }
        self.written.push(Written {
            seq,
            frame,
            reply: Reply::Changed {
                peer,
                id,
                target,
                rewrites,
            },
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
        let dedup = mid.map(|m| Dedup::key(peer.user.as_deref(), &peer.client, &m));
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

    /// Gives seqs to everything pending and encodes it; the entries become `in_flight`.
    /// Mutations that fail or change nothing are answered here. `None`: nothing to write.
    pub(super) fn form_batch(&mut self) -> Option<RoomWrite> {
        let ts = now_ms();
        let mut batch = BatchBuilder {
            room: &self.name,
            ts,
            seq: self.head,
            entries: Vec::new(),
            state: Vec::new(),
            redactions: Vec::new(),
            written: Vec::new(),
        };
        let mut overlay = Overlay::new(&self.state, self.env.limits.keys_per_room, ts);
        // Deletions whose target retention removed meanwhile: answered once the batch is formed.
        let mut trimmed = Vec::new();
        // Taken and given back, so its capacity is kept from batch to batch.
        let mut pending = std::mem::take(&mut self.pending);
        // On Redis: copies of what goes into the batch, formed again if another node wrote
        // first.
        let linked = self.linked.is_some();
        let mut retry = Vec::new();
        // On Redis: changes whose target another node changed meanwhile, decided again.
        let mut recheck = Vec::new();
        for op in pending.drain(..) {
            let copy = match linked {
                true if super::cluster::answered_as_dup(&self.dedup, &op) => continue,
                true => Some(op.clone()),
                false => None,
            };
            let before = batch.written.len();
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
                // Retention may have removed the target since it was checked.
                Pending::Change { req, stub } if stub.target < self.earliest => {
                    req.peer
                        .send_err(Some(req.id), super::redact::not_stored(stub.target));
                    trimmed.push(stub.target);
                }
                Pending::Change { req, stub }
                    if self
                        .linked
                        .as_mut()
                        .is_some_and(|l| l.stale_changes.remove(&stub.target)) =>
                {
                    recheck.push((req, stub.target));
                }
                Pending::Change { req, stub } => batch.change(req, stub),
                Pending::Expire { key } => match overlay.apply(Mutation::Expire { key }) {
                    Ok(Some(effect)) => batch.expiry(effect),
                    // Written again since its deadline was set: nothing to do.
                    Ok(None) => {}
                    Err(e) => tracing::error!(room = %self.name, code = ?e.code, "expiry refused"),
                },
                Pending::Release { key, owner } => {
                    let op = Mutation::Release {
                        key,
                        owner: owner.clone(),
                    };
                    match overlay.apply(op) {
                        Ok(Some(effect)) => batch.release(effect, owner),
                        // Taken over or deleted since: nothing to do.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(room = %self.name, code = ?e.code, "release refused")
                        }
                    }
                }
            }
            if let Some(copy) = copy.filter(|_| batch.written.len() > before) {
                retry.push(copy);
            }
        }
        let BatchBuilder {
            entries,
            state,
            redactions,
            written,
            ..
        } = batch;
        self.pending = pending;
        if let Some(l) = &mut self.linked {
            l.retry = retry;
        }
        for target in trimmed {
            self.redaction_failed(target, &super::redact::not_stored(target));
        }
        for (req, target) in recheck {
            self.change_again(req, target);
        }
        let trim = self.take_trim();
        if written.is_empty() && trim.is_none() {
            return None;
        }
        self.in_flight = written;
        Some(RoomWrite {
            room: self.room_ref(),
            entries,
            state,
            redactions,
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

    /// Retention for this batch, if asked for and no subscriber is being replayed (a trim
    /// under a replay could remove the entries it is about to read).
    fn take_trim(&mut self) -> Option<Trim> {
        if !std::mem::take(&mut self.trim_wanted) || self.replays > 0 || self.head == 0 {
            return None;
        }
        let lim = self.rules;
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
}
