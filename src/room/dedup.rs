//! The `mid` de-duplication window of one room.
//!
//! A client that retries a publish after a lost ack sends the same `mid`; if the first attempt
//! was stored it must get that entry's seq back (`dup: true`), not a second entry. The room
//! remembers the `mid`s it stored for `rooms.dedup_window_secs`, at most `rooms.dedup_max` of
//! them, oldest dropped first. A retry that arrives while the first attempt is still being
//! written waits for that write's outcome instead of forming a second entry.
//!
//! Keys are `client \0 mid`: a `mid` is only unique per client instance.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use roomd_protocol::ServerFrame;

use super::RoomLimits;
use crate::peer::Peer;

/// Recently stored `mid`s, and requests waiting on a `mid` already being written.
#[derive(Default)]
pub(super) struct Dedup {
    /// Key → the seq it was stored at.
    seqs: HashMap<String, u64>,
    /// (ms stored, key), oldest first: the expiry order.
    order: VecDeque<(u64, String)>,
    /// Key being written → retries of it waiting for the outcome.
    waiting: HashMap<String, Vec<(Arc<Peer>, u32)>>,
}

impl Dedup {
    /// The window as a room loads it: (key, seq, ms stored), oldest first.
    pub(super) fn load(stored: Vec<(String, u64, u64)>) -> Box<Dedup> {
        let mut dedup = Box::<Dedup>::default();
        for (key, seq, ts) in stored {
            dedup.order.push_back((ts, key.clone()));
            dedup.seqs.insert(key, seq);
        }
        dedup
    }

    /// The key a publish with `mid` from `client` of `user` is remembered under: keyed by the
    /// user too, so nobody can make another user's publish a silent duplicate by reusing their
    /// client id (with auth on, the user is verified). Unambiguous because user and client ids
    /// hold no control characters (the server refuses them) and an anonymous key starts with
    /// the NUL a user id cannot.
    pub(super) fn key(user: Option<&str>, client: &str, mid: &str) -> String {
        format!("{}\0{client}\0{mid}", user.unwrap_or(""))
    }

    /// Decides whether a publish with `key` is written. A duplicate of a stored one is acked
    /// here with its seq; a duplicate of one being written waits for it. Either way `None`:
    /// nothing to write. Otherwise the key is marked as being written and the peer given back.
    pub(super) fn admit(
        &mut self,
        key: &String,
        peer: Arc<Peer>,
        id: u32,
        now_ms: u64,
        limits: &RoomLimits,
    ) -> Option<Arc<Peer>> {
        self.expire(now_ms, limits);
        if let Some(&seq) = self.seqs.get(key) {
            peer.send(&dup_ack(id, seq));
            return None;
        }
        if let Some(waiters) = self.waiting.get_mut(key) {
            waiters.push((peer, id));
            return None;
        }
        self.waiting.insert(key.clone(), Vec::new());
        Some(peer)
    }

    /// The publish with `key` is stored at `seq`: acks the retries that waited for it and
    /// remembers it from `now_ms`.
    pub(super) fn stored(&mut self, key: String, seq: u64, now_ms: u64) {
        for (peer, id) in self.stored_waiting(key, seq, now_ms) {
            peer.send(&dup_ack(id, seq));
        }
    }

    /// As [`Dedup::stored`], but returns the retries that waited instead of acking them, for a
    /// caller that answers them after the original's ack (which may itself wait).
    pub(super) fn stored_waiting(
        &mut self,
        key: String,
        seq: u64,
        now_ms: u64,
    ) -> Vec<(Arc<Peer>, u32)> {
        let waiting = self.waiting.remove(&key).unwrap_or_default();
        self.order.push_back((now_ms, key.clone()));
        self.seqs.insert(key, seq);
        waiting
    }

    /// The seq stored under `key`, if remembered.
    pub(super) fn stored_seq(&self, key: &str) -> Option<u64> {
        self.seqs.get(key).copied()
    }

    /// The publish with `key` was not stored: the retries that waited for it, to be answered
    /// with the same error. The key is free again.
    pub(super) fn failed(&mut self, key: &str) -> Vec<(Arc<Peer>, u32)> {
        self.waiting.remove(key).unwrap_or_default()
    }

    /// Forgets keys older than the window, and the oldest beyond the count bound.
    fn expire(&mut self, now_ms: u64, limits: &RoomLimits) {
        let cutoff = now_ms.saturating_sub(limits.dedup_window_secs * 1000);
        while let Some((ts, key)) = self.order.front() {
            if *ts >= cutoff && self.order.len() <= limits.dedup_max {
                break;
            }
            self.seqs.remove(key);
            self.order.pop_front();
        }
    }
}

/// The answer to a retried publish that was stored at `seq`.
pub(super) fn dup_ack(id: u32, seq: u64) -> ServerFrame {
    ServerFrame::Ack {
        id,
        seq,
        dup: Some(true),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::room::tests::{frames, limits, peer};

    fn dup_ack(frame: &ServerFrame) -> Option<(u32, u64)> {
        match frame {
            ServerFrame::Ack {
                id,
                seq,
                dup: Some(true),
            } => Some((*id, *seq)),
            _ => None,
        }
    }

    #[test]
    fn a_stored_mid_is_acked_with_its_seq_until_the_window_passes() {
        let lim = RoomLimits {
            dedup_window_secs: 10,
            ..limits()
        };
        let (p, key) = (peer("c"), Dedup::key(None, "client", "m1"));
        let mut d = Dedup::default();
        assert!(d.admit(&key, p.clone(), 1, 1_000, &lim).is_some());
        d.stored(key.clone(), 7, 1_000);
        // Inside the window (its last millisecond included): acked as a duplicate.
        assert!(d.admit(&key, p.clone(), 2, 11_000, &lim).is_none());
        let acks: Vec<_> = frames(&p).iter().filter_map(dup_ack).collect();
        assert_eq!(acks, [(2, 7)]);
        // Past it: written again.
        assert!(d.admit(&key, p.clone(), 3, 11_001, &lim).is_some());
        assert!(frames(&p).is_empty());
    }

    #[test]
    fn the_count_bound_forgets_the_oldest_first() {
        let lim = RoomLimits {
            dedup_max: 2,
            dedup_window_secs: 3600,
            ..limits()
        };
        let p = peer("c");
        let mut d = Dedup::default();
        for (i, mid) in ["a", "b", "c"].into_iter().enumerate() {
            let key = Dedup::key(None, "client", mid);
            assert!(d.admit(&key, p.clone(), i as u32, 1_000, &lim).is_some());
            d.stored(key, i as u64 + 1, 1_000);
        }
        // Three remembered, bound two: the next admission drops "a" only.
        let (a, b, c) = (
            Dedup::key(None, "client", "a"),
            Dedup::key(None, "client", "b"),
            Dedup::key(None, "client", "c"),
        );
        assert!(d.admit(&c, p.clone(), 10, 1_000, &lim).is_none());
        assert!(d.admit(&b, p.clone(), 11, 1_000, &lim).is_none());
        let acks: Vec<_> = frames(&p).iter().filter_map(dup_ack).collect();
        assert_eq!(acks, [(10, 3), (11, 2)]);
        assert!(d.admit(&a, p.clone(), 12, 1_000, &lim).is_some());
    }

    #[test]
    fn retries_of_a_mid_being_written_wait_for_its_outcome() {
        let lim = limits();
        let (p, q) = (peer("p"), peer("q"));
        let key = Dedup::key(None, "client", "m");
        let mut d = Dedup::default();
        assert!(d.admit(&key, p.clone(), 1, 5, &lim).is_some());
        assert!(d.admit(&key, q.clone(), 2, 5, &lim).is_none());
        assert!(frames(&q).is_empty());
        d.stored(key.clone(), 4, 5);
        let acks: Vec<_> = frames(&q).iter().filter_map(dup_ack).collect();
        assert_eq!(acks, [(2, 4)]);

        // A failed write hands its waiters back and frees the key for the next attempt.
        let other = Dedup::key(None, "client", "n");
        assert!(d.admit(&other, p.clone(), 3, 5, &lim).is_some());
        assert!(d.admit(&other, q.clone(), 4, 5, &lim).is_none());
        let waiters: Vec<u32> = d.failed(&other).into_iter().map(|(_, id)| id).collect();
        assert_eq!(waiters, [4]);
        assert!(d.admit(&other, q.clone(), 5, 5, &lim).is_some());
    }
}
