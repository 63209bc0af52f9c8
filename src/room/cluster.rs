//! What a room does differently when its engine is Redis (cluster mode).
//!
//! The room task is the same: it forms batches, checks state operations against its copy of
//! the state, de-duplicates `mid`s and fans out to its node's subscribers. What changes:
//! - its batch goes to the `roomd_apply` Function, which stores it only if the room's last seq
//!   is still the one the batch follows. If another node wrote first (`Behind`), the batch's
//!   requests go back to `pending` unanswered, the room reads what it missed, and forms them
//!   again (so a `cas` is checked again, and a `mid` stored meanwhile elsewhere is a `dup`);
//! - other nodes' entries arrive on the node's feed ([`crate::cluster::feed`]) and are applied
//!   as if committed here: broadcast, cached, state and `mid`s updated. An entry after a gap,
//!   or a probe, makes the room read the missing entries from Redis (a *fill*);
//! - while a batch is in flight, arriving entries wait (they may be this batch's own, read by
//!   a fill), and are applied once its outcome is known;
//! - when the room's epoch changes (Redis lost writes and a node's write tripped the fence),
//!   the room reloads and closes its subscribers' connections so that they resume and are told
//!   the history they hold is not complete.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use roomd_protocol::{codec, ServerFrame};

use super::dedup::Dedup;
use super::model::HELD_MAX_BYTES;
use super::model::{now_ms, Linked, Pending, Room};
use super::redact::ChangeEntry;
use super::snapshot::Present;
use super::state::{Effect, Entry};
use super::{Change, Command, InboxSender};
use crate::cluster::feed::{FeedEvent, Member};
use crate::cluster::keys::RoomKeys;
use crate::cluster::{Applied, Apply, Cluster, Range};
use crate::outbox::CloseReason;
use crate::peer::Peer;
use crate::store::model::CommitInfo;
use crate::store::reader::RoomSnapshot;
use crate::store::{record, CommitResult, RoomWrite, StoreError};
use crate::wire;

/// Subscribes the room's inbox to its channel; resolves once Redis confirmed it.
pub(super) async fn watch(cluster: &Cluster, name: &str, tx: InboxSender) {
    let channel = RoomKeys::new(name).channel;
    let deliver = Box::new(move |ev: FeedEvent| {
        // A full inbox drops the event: the next entry's gap, or the probe, fills it.
        let _ = tx.try_send(Box::new(Command::Feed(ev)));
    });
    let wait = cluster.feed().watch(&channel, deliver);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
}

pub(super) fn unwatch(cluster: &Cluster, name: &str) {
    cluster.feed().unwatch(&RoomKeys::new(name).channel);
}

impl Room {
    /// Whether the room may hand a batch to its engine now: on Redis, not while it still has
    /// to read entries it knows exist, nor while it reloads.
    pub(super) fn may_write(&self) -> bool {
        self.linked
            .as_ref()
            .is_none_or(|l| !l.reloading && l.known <= self.head)
    }

    /// Sends the batch to Redis; its outcome comes back as a commit result.
    pub(super) fn send_to_redis(
        &mut self,
        write: RoomWrite,
    ) -> tokio::sync::oneshot::Receiver<CommitResult> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let Some(linked) = &self.linked else {
            return wait;
        };
        let cluster = linked.cluster.clone();
        let (name, epoch, base) = (self.name.clone(), self.epoch, self.head);
        let dedup_max = self.env.limits.dedup_max;
        let trim_before = match self.rules.retain_messages {
            0 => 0,
            max => (base + write.entries.len() as u64 + 1).saturating_sub(max),
        };
        self.env.background.spawn(async move {
            let apply = Apply {
                epoch,
                base,
                dedup_max,
                trim_before,
                write: &write,
            };
            let res = match cluster.apply(&name, &apply).await {
                Ok(Applied::Stored { earliest, .. }) => Ok(CommitInfo {
                    room_id: 0,
                    earliest: Some(earliest),
                }),
                Ok(Applied::Behind { head }) => Err(Arc::new(StoreError::Behind { head })),
                Ok(Applied::Epoch { epoch }) => Err(Arc::new(StoreError::EpochChanged { epoch })),
                Err(e) => Err(Arc::new(e)),
            };
            let stored = res.is_ok();
            let _ = done.send(res);
            if stored {
                cluster.publish(&name, epoch, &write.entries).await;
            }
        });
        wait
    }

    /// The batch was not stored because the room moved on (another node wrote first, or its
    /// epoch changed): its requests go back to the front of `pending`, unanswered. Returns
    /// false for any other failure.
    pub(super) fn requeue(&mut self, err: &StoreError) -> bool {
        let Some(linked) = &mut self.linked else {
            return false;
        };
        match err {
            StoreError::Behind { head } => {
                crate::metrics::cluster_write_conflict();
                linked.known = linked.known.max(*head);
            }
            StoreError::EpochChanged { .. } => linked.reloading = true,
            _ => {
                linked.retry.clear();
                return false;
            }
        }
        let mut retry = std::mem::take(&mut linked.retry);
        retry.append(&mut self.pending);
        self.pending = retry;
        if matches!(err, StoreError::EpochChanged { .. }) {
            self.reload();
        } else {
            self.fill();
        }
        true
    }

    /// The batch's outcome is known: the requests kept for a retry go.
    pub(super) fn committed(&mut self) {
        if let Some(linked) = &mut self.linked {
            linked.retry.clear();
        }
    }

    pub(super) fn on_feed(&mut self, ev: FeedEvent) {
        match ev {
            FeedEvent::Entries { epoch, entries } => {
                if epoch != self.epoch {
                    // Stale (from before a reload) or news of a new epoch: Redis says which.
                    return self.fill();
                }
                self.take_entries(entries);
            }
            FeedEvent::Probe => self.fill(),
            FeedEvent::Presence { conn, member } => self.remote_presence(conn, member),
            FeedEvent::NodeGone(instance) => self.node_gone(&instance),
            FeedEvent::Signal { instance, frame } => {
                // Our own come back too: they were delivered here already.
                if self
                    .linked
                    .as_ref()
                    .is_some_and(|l| **l.cluster.instance() != *instance)
                {
                    self.deliver_signal(&wire::wrap(&frame), None);
                }
            }
        }
    }

    /// Answers `get` from Redis, so that it sees every acknowledged write, whichever node
    /// made it.
    pub(super) fn get_from_redis(&self, peer: Arc<Peer>, id: u32, key: String) {
        let Some(linked) = &self.linked else {
            return;
        };
        let (cluster, room) = (linked.cluster.clone(), self.name.clone());
        self.env.background.spawn(async move {
            let (ver, exp, value) = match cluster.state_get(&room, &key).await {
                Ok(Some((ver, exp, encoded))) => match rmpv::decode::read_value(&mut encoded.as_slice()) {
                    Ok(value) => (ver, exp, Some(value)),
                    Err(e) => {
                        tracing::error!(%room, key, error = %e, "cluster: a state value that does not decode");
                        (0, None, None)
                    }
                },
                Ok(None) => (0, None, None),
                Err(e) => return peer.send_err(Some(id), &e),
            };
            peer.send(&ServerFrame::Val {
                id,
                key,
                ver,
                value,
                exp,
            });
        });
    }

    /// The members other nodes hold, read once the room is loaded.
    pub(super) async fn load_remote(&mut self) {
        let Some(linked) = &self.linked else {
            return;
        };
        let cluster = linked.cluster.clone();
        match cluster.remote_members(&self.name).await {
            Ok(members) => {
                for (conn, m) in members {
                    self.remote_presence(conn, Some(m));
                }
            }
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "cluster: reading the room's presence failed")
            }
        }
    }

    /// A join or leave on another node.
    fn remote_presence(&mut self, conn: String, member: Option<Member>) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        let conn: Arc<str> = Arc::from(conn);
        match member {
            // Our own, echoed back.
            Some(m) if *m.instance == **linked.cluster.instance() => {}
            Some(m) => {
                let present = Present {
                    user: m.user.map(Arc::from),
                    info: Bytes::from(m.info),
                };
                let cost = present.cost(&conn);
                if linked.remote.contains_key(&conn) {
                    return;
                }
                if self.presence_bytes + cost > self.env.limits.presence_bytes {
                    tracing::warn!(room = %self.name, %conn, "cluster: presence full; a remote member is not shown here");
                    return;
                }
                self.presence_bytes += cost;
                linked
                    .remote
                    .insert(conn.clone(), (Arc::from(m.instance), present.clone()));
                self.member_added(&conn, &present);
            }
            None => {
                if let Some((_, present)) = linked.remote.remove(&conn) {
                    self.remote_left(&conn, &present);
                }
            }
        }
    }

    fn remote_left(&mut self, conn: &Arc<str>, present: &Present) {
        self.presence_bytes = self.presence_bytes.saturating_sub(present.cost(conn));
        self.member_removed(conn, present);
    }

    /// A node stopped heart-beating: its members leave, here and in Redis.
    fn node_gone(&mut self, instance: &Arc<str>) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        let gone: Vec<Arc<str>> = linked
            .remote
            .iter()
            .filter(|(_, (i, _))| i == instance)
            .map(|(c, _)| c.clone())
            .collect();
        for conn in gone {
            let Some(linked) = &mut self.linked else {
                return;
            };
            if let Some((_, present)) = linked.remote.remove(&conn) {
                linked.cluster.set_presence(&self.name, &conn, None);
                self.remote_left(&conn, &present);
            }
        }
    }

    /// Applies entries now, or holds them while a batch is in flight.
    fn take_entries(&mut self, entries: Vec<(u64, Vec<u8>)>) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        if let Some((last, _)) = entries.last() {
            linked.known = linked.known.max(*last);
        }
        if self.in_flight.is_empty() {
            return self.apply_entries(entries);
        }
        for (seq, rec) in entries {
            if linked.held_bytes + rec.len() > HELD_MAX_BYTES {
                // Read again by a fill once the batch is settled (`known` is past the head).
                break;
            }
            linked.held_bytes += rec.len();
            linked.held.push((seq, rec));
        }
    }

    /// After a batch's outcome: the entries that waited for it.
    pub(super) fn release_held(&mut self) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        let held = std::mem::take(&mut linked.held);
        linked.held_bytes = 0;
        if !held.is_empty() {
            self.apply_entries(held);
        }
        if self.linked.as_ref().is_some_and(|l| l.known > self.head) {
            self.fill();
        }
    }

    /// Applies the entries that continue the room's log, in order; a gap starts a fill.
    fn apply_entries(&mut self, entries: Vec<(u64, Vec<u8>)>) {
        let mut frames = Vec::new();
        for (seq, rec) in entries {
            if seq <= self.head {
                continue;
            }
            if seq > self.head + 1 {
                break;
            }
            let Some(frame) = self.apply_entry(seq, &rec) else {
                break;
            };
            frames.push(frame);
        }
        if !frames.is_empty() {
            let n = frames.len();
            self.broadcast(&concat(frames), n);
        }
        if self.linked.as_ref().is_some_and(|l| l.known > self.head) {
            self.fill();
        }
    }

    /// One entry stored by another node: its effects here, and its frame.
    fn apply_entry(&mut self, seq: u64, rec: &[u8]) -> Option<Bytes> {
        let Some(r) = record::decode_log(rec) else {
            tracing::error!(room = %self.name, seq, "cluster: an entry that does not decode");
            return None;
        };
        match codec::decode_server(r.frame) {
            Ok(ServerFrame::State {
                key,
                ver,
                value,
                exp,
                ..
            }) => {
                let entry = value.map(|value| {
                    let encoded = Bytes::from(codec::encode(&value));
                    // Another node's write: no connection of this node owns the key now.
                    Entry {
                        ver,
                        value,
                        encoded,
                        exp,
                        owner: None,
                    }
                });
                self.apply_effect(Effect {
                    key,
                    ver,
                    entry,
                    reply_value: false,
                });
            }
            Ok(ServerFrame::Del {
                target,
                ts,
                from,
                uid,
                ..
            }) => {
                self.changed_elsewhere(ChangeEntry { seq, ts, from, uid }, Change::Delete, target)
            }
            Ok(ServerFrame::Msg {
                edits: Some(target),
                ts,
                from,
                uid,
                data,
                ..
            }) => self.changed_elsewhere(
                ChangeEntry { seq, ts, from, uid },
                Change::Edit(data),
                target,
            ),
            _ => {}
        }
        if let Some(key) = r.dedup {
            self.dedup.stored(key.to_string(), seq, now_ms());
        }
        let frame = wire::wrap(r.frame);
        self.head = seq;
        self.cache_frame(seq, frame.clone());
        Some(frame)
    }

    /// Reads the entries after the head from Redis (one page at a time), unless a read is
    /// already under way.
    fn fill(&mut self) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        if linked.filling || linked.reloading {
            return;
        }
        linked.filling = true;
        crate::metrics::cluster_gap_fill();
        let (cluster, tx, name) = (linked.cluster.clone(), self.tx.clone(), self.name.clone());
        let (head, page) = (self.head, self.env.limits.page);
        self.env.background.spawn(async move {
            let read = cluster
                .range(&name, head + 1, u64::MAX, page, false, head)
                .await;
            let _ = tx.send(Box::new(Command::Filled(read))).await;
        });
    }

    pub(super) fn filled(&mut self, read: Result<Range, StoreError>) {
        let Some(linked) = &mut self.linked else {
            return;
        };
        linked.filling = false;
        let range = match read {
            Ok(range) => range,
            Err(e) => {
                // Tried again by the next probe.
                tracing::warn!(room = %self.name, error = %e, "cluster: reading missed entries failed");
                return;
            }
        };
        if range.epoch != self.epoch && range.epoch != 0 {
            linked.reloading = true;
            return self.reload();
        }
        let entries: Vec<(u64, Vec<u8>)> = (range.first..).zip(range.recs).collect();
        if range.more {
            linked.known = linked.known.max(range.first + entries.len() as u64);
        } else if let Some((last, _)) = entries.last() {
            linked.known = linked.known.max(*last);
        }
        self.take_entries(entries);
    }

    /// The room's epoch changed: load it again.
    fn reload(&mut self) {
        let Some(linked) = &self.linked else {
            return;
        };
        let (cluster, tx, name) = (linked.cluster.clone(), self.tx.clone(), self.name.clone());
        let lim = self.env.load_limits(now_ms());
        self.env.background.spawn(async move {
            let epoch = rand::random::<u64>() >> 11;
            let snap = cluster.load(&name, epoch, &lim).await;
            let _ = tx.send(Box::new(Command::Reloaded(snap))).await;
        });
    }

    /// The room as Redis has it now, on its new epoch: every subscriber's connection is closed
    /// so that it resumes, and is told that what it holds is not complete.
    pub(super) fn reloaded(&mut self, snap: Result<RoomSnapshot, StoreError>) {
        let snap = match snap {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "cluster: reloading the room failed; retrying");
                return self.reload();
            }
        };
        tracing::warn!(room = %self.name, old = self.epoch, new = snap.epoch, head = snap.head, "cluster: the room's epoch changed; subscribers resume");
        for sub in self.subs.values() {
            sub.peer.outbox.close(CloseReason::EngineUnavailable);
        }
        self.epoch = snap.epoch;
        self.head = snap.head;
        self.earliest = snap.earliest;
        self.state = super::state::RoomState::load(snap.state);
        self.deadlines = super::deadlines::Deadlines::of(&self.state);
        // Ephemeral keys reloaded are orphans here: their `ttl_ms`, which cluster mode
        // requires with `ephemeral`, ends them (SPEC.md 4.14).
        self.owners = super::owners::Owners::default();
        self.cache = snap.recent.into();
        self.dedup = super::dedup::Dedup::load(snap.dedup);
        if let Some(linked) = &mut self.linked {
            linked.reloading = false;
            linked.known = self.head;
            linked.held.clear();
            linked.held_bytes = 0;
        }
    }
}

/// This node's member as Redis holds it.
pub(super) fn member_of(linked: &Linked, present: &Present) -> Member {
    Member {
        instance: linked.cluster.instance().to_string(),
        user: present.user.as_deref().map(str::to_string),
        info: present.info.to_vec(),
    }
}

/// A request about to be formed again whose `mid` another node stored meanwhile: answered as
/// a duplicate with that seq. Returns whether it was answered.
pub(super) fn answered_as_dup(dedup: &Dedup, op: &Pending) -> bool {
    let Pending::Publish {
        peer,
        id,
        dedup: Some(key),
        ..
    } = op
    else {
        return false;
    };
    let Some(seq) = dedup.stored_seq(key) else {
        return false;
    };
    peer.send(&ServerFrame::Ack {
        id: *id,
        seq,
        dup: Some(true),
    });
    true
}

fn concat(frames: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(frames) {
        Ok([one]) => one,
        Err(many) => {
            let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for f in &many {
                all.extend_from_slice(f);
            }
            all.freeze()
        }
    }
}
