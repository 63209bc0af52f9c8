//! Blocking reads of the database; callers run them on tokio's blocking pool.
//!
//! Readers see committed transactions only, so they never return an entry that a crash could
//! take back (in the default durable mode a group is committed to redb only after it is fsynced
//! in the write-ahead log). Every read first has the writer apply the groups that are logged
//! but not yet in redb ([`Store::catch_up`]), so it sees every acknowledged write.

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable};

use super::db::Store;
use super::error::StoreError;
use super::record;
use super::tables::{ENTRIES, ROOMS, STATE};

/// What a room needs in memory when it is loaded.
#[derive(Debug, Default)]
pub(crate) struct RoomSnapshot {
    pub id: Option<u64>,
    pub epoch: u64,
    /// Last seq in the log (0 if empty).
    pub head: u64,
    /// First retained seq (`head + 1` if the log is empty).
    pub earliest: u64,
    /// (key, version, encoded value)
    pub state: Vec<(String, u64, Vec<u8>)>,
    /// The newest entries, ascending: (seq, WebSocket frame).
    pub recent: Vec<(u64, Bytes)>,
    /// Recent publishes with a dedup key, ascending by seq: (key, seq, ts).
    pub dedup: Vec<(String, u64, u64)>,
}

pub(crate) struct LoadLimits {
    pub recent: usize,
    pub dedup_max: usize,
    /// Dedup entries older than this (ms since the Unix epoch) are not loaded.
    pub dedup_since_ms: u64,
}

impl Store {
    fn read_txn(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.catch_up()?;
        Ok(self.db()?.begin_read()?)
    }

    pub(crate) fn load_room(
        &self,
        name: &str,
        lim: &LoadLimits,
    ) -> Result<RoomSnapshot, StoreError> {
        let txn = self.read_txn()?;
        let rooms = txn.open_table(ROOMS)?;
        let Some((id, epoch)) = rooms.get(name)?.map(|g| g.value()) else {
            return Ok(RoomSnapshot {
                earliest: 1,
                ..RoomSnapshot::default()
            });
        };
        let entries = txn.open_table(ENTRIES)?;
        let mut snap = RoomSnapshot {
            id: Some(id),
            epoch,
            ..RoomSnapshot::default()
        };
        let mut range = entries.range((id, 0)..=(id, u64::MAX))?;
        snap.earliest = match range.next() {
            Some(e) => e?.0.value().1,
            None => 0,
        };
        // Walk back from the newest entry: the cache wants the last `recent`, dedup wants those
        // inside its window.
        for entry in range_rev(&entries, id)? {
            let (k, v) = entry?;
            let seq = k.value().1;
            let raw = v.value();
            if snap.head == 0 {
                snap.head = seq;
            }
            let Some(rec) = record::decode_log(raw) else {
                continue;
            };
            let want_recent = snap.recent.len() < lim.recent;
            let want_dedup = snap.dedup.len() < lim.dedup_max && rec.ts >= lim.dedup_since_ms;
            if !want_recent && !want_dedup {
                break;
            }
            if want_recent {
                snap.recent.push((seq, crate::wire::wrap(rec.frame)));
            }
            if let (true, Some(key)) = (want_dedup, rec.dedup) {
                snap.dedup.push((key.to_string(), seq, rec.ts));
            }
        }
        snap.recent.reverse();
        snap.dedup.reverse();
        if snap.head == 0 {
            // Retention always keeps a room's newest entry, so an empty log was never written.
            snap.earliest = 1;
        }
        let state = txn.open_table(STATE)?;
        for entry in state.range((id, "")..(id + 1, ""))? {
            let (k, v) = entry?;
            if let Some((ver, value)) = record::decode_state(v.value()) {
                snap.state
                    .push((k.value().1.to_string(), ver, value.to_vec()));
            }
        }
        Ok(snap)
    }

    /// Up to `limit` entries with seq ≥ `from`, ascending, as (seq, WebSocket frame), and no
    /// more than `max_bytes` of frames unless the first alone is larger: a replay page holds
    /// `limits.page` small entries or a few large ones, never `limits.page` large ones.
    pub(crate) fn read_forward(
        &self,
        room: u64,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let txn = self.read_txn()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut bytes = 0;
        for entry in entries.range((room, from)..=(room, u64::MAX))? {
            if out.len() == limit {
                break;
            }
            let (k, v) = entry?;
            let Some(rec) = record::decode_log(v.value()) else {
                continue;
            };
            if !out.is_empty() && bytes + rec.frame.len() > max_bytes {
                break;
            }
            bytes += rec.frame.len();
            out.push((k.value().1, crate::wire::wrap(rec.frame)));
        }
        Ok(out)
    }

    /// One entry of a room's log as a WebSocket frame, if it is stored (a message about to be
    /// deleted that has left the room's cache).
    pub(crate) fn read_entry(&self, room: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        let txn = self.read_txn()?;
        let entries = txn.open_table(ENTRIES)?;
        let Some(v) = entries.get((room, seq))? else {
            return Ok(None);
        };
        Ok(record::decode_log(v.value()).map(|r| crate::wire::wrap(r.frame)))
    }

    /// One page of a room's history (SPEC.md 4.4): frames ascending, and whether more exist in
    /// the paging direction. The page ends before `limit` entries or before its frames would
    /// exceed `max_bytes` (but holds at least one entry), whichever comes first; entries past
    /// the budget are not copied out of the database.
    pub(crate) fn history(
        &self,
        name: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        let txn = self.read_txn()?;
        let rooms = txn.open_table(ROOMS)?;
        let Some((id, _)) = rooms.get(name)?.map(|g| g.value()) else {
            return Ok((Vec::new(), false));
        };
        let entries = txn.open_table(ENTRIES)?;
        let lo = after.map_or(0, |a| a.saturating_add(1));
        let hi = before.unwrap_or(u64::MAX);
        if lo >= hi {
            return Ok((Vec::new(), false));
        }
        let range = entries.range((id, lo)..(id, hi))?;
        let mut frames = Vec::with_capacity(limit.min(256));
        let mut more = false;
        let mut bytes = 0;
        let forward = after.is_some();
        let mut push = |entry: LogEntry| -> Result<bool, StoreError> {
            if frames.len() == limit {
                more = true;
                return Ok(false);
            }
            let (_, v) = entry?;
            let Some(rec) = record::decode_log(v.value()) else {
                return Ok(true);
            };
            if !frames.is_empty() && bytes + rec.frame.len() > max_bytes {
                more = true;
                return Ok(false);
            }
            bytes += rec.frame.len();
            frames.push(Bytes::copy_from_slice(rec.frame));
            Ok(true)
        };
        if forward {
            for entry in range {
                if !push(entry)? {
                    break;
                }
            }
        } else {
            for entry in range.rev() {
                if !push(entry)? {
                    break;
                }
            }
            frames.reverse();
        }
        Ok((frames, more))
    }

    /// Every stored room: (name, id).
    pub(crate) fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read_txn()?;
        let rooms = txn.open_table(ROOMS)?;
        let mut out = Vec::new();
        for entry in rooms.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value().0));
        }
        Ok(out)
    }

    /// (first seq, its ts, last seq) of a room's log, if it has entries.
    pub(crate) fn log_bounds(&self, room: u64) -> Result<Option<(u64, u64, u64)>, StoreError> {
        let txn = self.read_txn()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut range = entries.range((room, 0)..=(room, u64::MAX))?;
        let Some(first) = range.next() else {
            return Ok(None);
        };
        let (k, v) = first?;
        let ts = record::decode_log(v.value()).map_or(0, |r| r.ts);
        let first_seq = k.value().1;
        let last = match range.next_back() {
            Some(e) => e?.0.value().1,
            None => first_seq,
        };
        Ok(Some((first_seq, ts, last)))
    }
}

type LogEntry<'a> = Result<
    (
        redb::AccessGuard<'a, (u64, u64)>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;
type LogRange<'a> = redb::Range<'a, (u64, u64), &'static [u8]>;

fn range_rev<'a>(
    entries: &'a redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
    id: u64,
) -> Result<std::iter::Rev<LogRange<'a>>, StoreError> {
    Ok(entries.range((id, 0)..=(id, u64::MAX))?.rev())
}
