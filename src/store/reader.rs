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
use super::tables::{ENTRIES, META, MIDS, MIDS_SINCE, ROOMS, STATE};

/// What a room needs in memory when it is loaded.
#[derive(Debug, Default)]
pub(crate) struct RoomSnapshot {
    pub id: Option<u64>,
    pub epoch: u64,
    /// Last seq in the log (0 if empty).
    pub head: u64,
    /// First retained seq (`head + 1` if the log is empty).
    pub earliest: u64,
    /// (key, version, deadline, encoded value)
    pub state: Vec<StoredKey>,
    /// The newest entries, ascending: (seq, WebSocket frame).
    pub recent: Vec<(u64, Bytes)>,
    /// Recent publishes with a dedup key, ascending by seq: (key, seq, ts).
    pub dedup: Vec<(String, u64, u64)>,
    /// Log entries the load read (the cache's, and the `mid` window's where `MIDS` does not
    /// cover it yet): what a room load costs in reads, for the log line and the tests.
    pub walked: usize,
}

/// A key of a room's state as stored: (key, version, deadline in Unix ms, encoded value).
/// (key, version, deadline in Unix ms, written with `ephemeral`, encoded value).
pub(crate) type StoredKey = (String, u64, Option<u64>, bool, Vec<u8>);

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
        // The `mid` window from `MIDS` when it covers the whole window; else (for a while after
        // an upgrade) from the log, as entries without a `mid` in the window are walked too.
        let indexed = txn
            .open_table(META)?
            .get(MIDS_SINCE)?
            .is_some_and(|since| since.value() <= lim.dedup_since_ms);
        // Walk back from the newest entry: the cache wants the last `recent`, and without the
        // index dedup wants those inside its window.
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
            let want_dedup =
                !indexed && snap.dedup.len() < lim.dedup_max && rec.ts >= lim.dedup_since_ms;
            if !want_recent && !want_dedup {
                break;
            }
            snap.walked += 1;
            if want_recent {
                snap.recent.push((seq, crate::wire::wrap(rec.frame)));
            }
            if let (true, Some(key)) = (want_dedup, rec.dedup) {
                snap.dedup.push((key.to_string(), seq, rec.ts));
            }
        }
        if indexed {
            let mids = txn.open_table(MIDS)?;
            for row in mids.range((id, 0)..=(id, u64::MAX))?.rev() {
                let (k, v) = row?;
                let Some((ts, key)) = record::decode_mid(v.value()) else {
                    continue;
                };
                if ts < lim.dedup_since_ms || snap.dedup.len() >= lim.dedup_max {
                    break;
                }
                snap.dedup.push((key.to_string(), k.value().1, ts));
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
            if let Some(rec) = record::decode_state(v.value()) {
                snap.state.push((
                    k.value().1.to_string(),
                    rec.ver,
                    rec.exp,
                    rec.ephemeral,
                    rec.value.to_vec(),
                ));
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
    ) -> Result<crate::wire::Page, StoreError> {
        let txn = self.read_txn()?;
        let entries = txn.open_table(ENTRIES)?;
        let mut page = crate::wire::PageFrames::with_capacity(limit.min(4096));
        for entry in entries.range((room, from)..=(room, u64::MAX))? {
            if page.len() == limit {
                break;
            }
            let (k, v) = entry?;
            let Some(rec) = record::decode_log(v.value()) else {
                continue;
            };
            if !page.is_empty() && page.payload_bytes() + rec.frame.len() > max_bytes {
                break;
            }
            page.push(k.value().1, rec.frame);
        }
        Ok(page.finish())
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

    /// The rooms holding a key with a deadline (SPEC.md 4.13), by name: the server loads them
    /// at start so that their deadlines are met while nobody uses them. One pass over the
    /// state table, reading each record's version word.
    pub(crate) fn timed_rooms(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read_txn()?;
        let state = txn.open_table(STATE)?;
        let mut ids = std::collections::BTreeSet::new();
        for entry in state.iter()? {
            let (k, v) = entry?;
            // An ephemeral key found at start is an orphan: its room deletes it when loaded.
            if record::decode_state(v.value()).is_some_and(|r| r.exp.is_some() || r.ephemeral) {
                ids.insert(k.value().0);
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rooms = txn.open_table(ROOMS)?;
        let mut out = Vec::new();
        for entry in rooms.iter()? {
            let (k, v) = entry?;
            if ids.contains(&v.value().0) {
                out.push(k.value().to_string());
            }
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

#[cfg(test)]
mod tests {
    use super::super::apply::apply;
    use super::super::model::{LoggedRoom, RoomWrite};
    use super::*;

    /// Writes `n` entries to room 1 ("r"): every 100th with a dedup key, at `ts` = its seq.
    fn filled(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let entries = (1..=n)
            .map(|s| {
                let key = (s % 100 == 0).then(|| format!("c\0m{s}"));
                (s, record::encode_log(s, key.as_deref(), b"\x80"))
            })
            .collect();
        let write = RoomWrite {
            room: LoggedRoom::Created {
                id: 1,
                name: "r".into(),
                epoch: 7,
            },
            entries,
            state: Vec::new(),
            redactions: Vec::new(),
            trim: None,
        };
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        apply(&txn, [write].iter(), None).unwrap();
        txn.commit().unwrap();
        (dir, store)
    }

    fn limits(dedup_since_ms: u64) -> LoadLimits {
        LoadLimits {
            recent: 10,
            dedup_max: 5,
            dedup_since_ms,
        }
    }

    /// A room's load reads the entries its cache wants and its `mid` window from `MIDS`, not
    /// the log entries inside the window that have no `mid` (#19: a room of a million such
    /// entries read them all before its first `subbed`).
    #[test]
    fn a_load_reads_the_cache_and_the_mid_index_not_the_window() {
        let (_dir, store) = filled(10_000);
        // Every entry is inside the window (ts ≥ 0).
        let snap = store.load_room("r", &limits(0)).unwrap();
        assert_eq!((snap.head, snap.earliest, snap.epoch), (10_000, 1, 7));
        assert_eq!(snap.walked, 10, "only the cache's entries are read");
        assert_eq!(snap.recent.first().map(|r| r.0), Some(9_991));
        let mids: Vec<u64> = snap.dedup.iter().map(|d| d.1).collect();
        assert_eq!(
            mids,
            [9_600, 9_700, 9_800, 9_900, 10_000],
            "the newest dedup_max"
        );
        assert_eq!(snap.dedup[4].0, "c\0m10000");
        // The window bounds the index too.
        let snap = store.load_room("r", &limits(9_850)).unwrap();
        let mids: Vec<u64> = snap.dedup.iter().map(|d| d.1).collect();
        assert_eq!(mids, [9_900, 10_000]);
    }

    /// A database written before the index: until the `mid` window lies after the first start
    /// with the index, loads find the window's keys in the log, as before.
    #[test]
    fn before_the_index_covers_the_window_the_log_is_walked() {
        let (_dir, store) = filled(1_000);
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(MIDS_SINCE, 500)
            .unwrap();
        txn.commit().unwrap();
        let snap = store.load_room("r", &limits(400)).unwrap();
        let mids: Vec<u64> = snap.dedup.iter().map(|d| d.1).collect();
        assert_eq!(mids, [600, 700, 800, 900, 1_000]);
        assert_eq!(snap.walked, 401, "back through the window to the 5th key");
        // Once the window starts after MIDS_SINCE, the index.
        let snap = store.load_room("r", &limits(600)).unwrap();
        let mids: Vec<u64> = snap.dedup.iter().map(|d| d.1).collect();
        assert_eq!(mids, [600, 700, 800, 900, 1_000]);
        assert_eq!(snap.walked, 10);
    }

    /// Retention removes a trimmed entry's `MIDS` row with it.
    #[test]
    fn a_trim_takes_the_index_rows_with_the_entries() {
        use super::super::model::Trim;
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let (_dir, store) = filled(1_000);
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        let trim = RoomWrite {
            room: LoggedRoom::Id(1),
            entries: Vec::new(),
            state: Vec::new(),
            redactions: Vec::new(),
            trim: Some(Trim {
                before_seq: 801,
                older_than_ms: None,
                head: 1_000,
            }),
        };
        apply(&txn, [trim].iter(), None).unwrap();
        txn.commit().unwrap();
        let rows = db
            .begin_read()
            .unwrap()
            .open_table(MIDS)
            .unwrap()
            .len()
            .unwrap();
        assert_eq!(rows, 2, "900 and 1000 stay");
        let snap = store.load_room("r", &limits(0)).unwrap();
        assert_eq!(snap.earliest, 801);
        let mids: Vec<u64> = snap.dedup.iter().map(|d| d.1).collect();
        assert_eq!(mids, [900, 1_000]);
    }
}
