//! What a publisher puts in a payload, and what a subscriber checks on receipt.
//!
//! Payload layout (both brokers): bytes 0..8 the intended send time (ns since the shared clock
//! base, little endian), 8..12 the publisher index, 12..16 that publisher's message counter,
//! then padding up to the payload size. Loss and duplicates are counted per subscriber from the
//! counters; latency is receive time minus send time.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::{clock, stats};

/// The most publishers one cell may have.
pub const MAX_PUBS: usize = 64;
/// Smallest payload that holds the header.
pub const HEADER: usize = 16;
/// Ring of per-message delivery counters; a publisher never has more than this in flight.
const RING: usize = 1 << 16;

/// Writes the header into `buf` (at least [`HEADER`] bytes).
pub fn stamp(buf: &mut [u8], sent_ns: u64, publisher: u32, counter: u32) {
    buf[0..8].copy_from_slice(&sent_ns.to_le_bytes());
    buf[8..12].copy_from_slice(&publisher.to_le_bytes());
    buf[12..16].copy_from_slice(&counter.to_le_bytes());
}

/// Reads the header; `None` if the payload is too short.
pub fn read(buf: &[u8]) -> Option<(u64, u32, u32)> {
    if buf.len() < HEADER {
        return None;
    }
    let ts = u64::from_le_bytes(buf[0..8].try_into().ok()?);
    let p = u32::from_le_bytes(buf[8..12].try_into().ok()?);
    let k = u32::from_le_bytes(buf[12..16].try_into().ok()?);
    Some((ts, p, k))
}

/// Per-publisher completion tracking: message k is complete once every subscriber has it.
/// Publishers keep at most a window of incomplete messages, which paces them at the rate the
/// slowest subscriber sustains (a closed loop: no queue grows without bound, nothing is dropped
/// for being slow).
pub struct Flow {
    subs: u32,
    pubs: Vec<PubFlow>,
}

pub struct PubFlow {
    ring: Box<[AtomicU32]>,
    /// Messages 0..completed have reached every subscriber.
    pub completed: AtomicU64,
    pub notify: Notify,
}

impl Flow {
    pub fn new(subs: u32, pubs: usize) -> Flow {
        Flow {
            subs,
            pubs: (0..pubs)
                .map(|_| PubFlow {
                    ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
                    completed: AtomicU64::new(0),
                    notify: Notify::new(),
                })
                .collect(),
        }
    }

    pub fn publisher(&self, p: usize) -> &PubFlow {
        &self.pubs[p]
    }

    /// The largest window a publisher may use.
    pub const MAX_WINDOW: u64 = (RING / 2) as u64;

    fn delivered(&self, p: u32, k: u32) {
        let Some(pf) = self.pubs.get(p as usize) else {
            return;
        };
        let slot = &pf.ring[k as usize & (RING - 1)];
        // Subscribers receive in order, so message k completes before k+1 does; fetch_max keeps
        // `completed` monotonic when two threads finish neighbours at once.
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == self.subs {
            slot.store(0, Ordering::Relaxed);
            pf.completed.fetch_max(u64::from(k) + 1, Ordering::AcqRel);
            pf.notify.notify_one();
        }
    }

    /// Whether every message sent so far (`sent[p]`) has reached every subscriber.
    pub fn all_complete(&self, sent: &[u64]) -> bool {
        self.pubs
            .iter()
            .zip(sent)
            .all(|(pf, s)| pf.completed.load(Ordering::Acquire) >= *s)
    }
}

/// One subscriber's view: next expected counter per publisher, and what went wrong.
pub struct SubTrack {
    next: [u32; MAX_PUBS],
    pub unique: u64,
    pub dups: u64,
    pub gaps: u64,
    /// roomd only: the last seq seen, for resuming with `since` and checking order.
    pub last_seq: u64,
    pub seq_errors: u64,
}

impl Default for SubTrack {
    fn default() -> Self {
        SubTrack {
            next: [0; MAX_PUBS],
            unique: 0,
            dups: 0,
            gaps: 0,
            last_seq: 0,
            seq_errors: 0,
        }
    }
}

impl SubTrack {
    /// Handles one delivered payload.
    #[inline]
    pub fn on_payload(&mut self, payload: &[u8], flow: &Flow) {
        let Some((ts, p, k)) = read(payload) else {
            self.gaps += 1;
            return;
        };
        let Some(next) = self.next.get_mut(p as usize) else {
            return;
        };
        if k < *next {
            self.dups += 1;
            return;
        }
        if k > *next {
            self.gaps += u64::from(k - *next);
        }
        *next = k + 1;
        self.unique += 1;
        stats::record(clock::now_ns().saturating_sub(ts));
        flow.delivered(p, k);
    }

    /// roomd: checks that seqs strictly increase (dense seqs are checked by the counters).
    #[inline]
    pub fn on_seq(&mut self, seq: u64) {
        if seq <= self.last_seq {
            self.seq_errors += 1;
        }
        self.last_seq = self.last_seq.max(seq);
    }
}

/// Totals over all subscribers of a cell.
#[derive(Default)]
pub struct Totals {
    pub unique: AtomicU64,
    pub dups: AtomicU64,
    pub gaps: AtomicU64,
    pub seq_errors: AtomicU64,
    /// Connections that ended before the cell did (slow-consumer closes, errors).
    pub disconnects: AtomicU64,
    /// roomd subscribers that reconnected with `since` after a disconnect.
    pub resumes: AtomicU64,
}

impl Totals {
    pub fn add(&self, t: &SubTrack) {
        self.unique.fetch_add(t.unique, Ordering::Relaxed);
        self.dups.fetch_add(t.dups, Ordering::Relaxed);
        self.gaps.fetch_add(t.gaps, Ordering::Relaxed);
        self.seq_errors.fetch_add(t.seq_errors, Ordering::Relaxed);
    }
}
