//! Every write to redb's tables, and the reads of `META` that go with them. The writer (for
//! trims and recovery) and the applier thread (for logged groups) both write through [`apply`].

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::error::StoreError;
use super::model::{CommitInfo, LoggedRoom, RecoveredRoom, RoomWrite, Trim};
use super::record;
use super::tables::{
    ENTRIES, META, MIDS, MIDS_SINCE, NEXT_ROOM_ID, ROOMS, STATE, WAL_COMMIT, WAL_FILE, WAL_SALT,
};

/// Creates the tables a new database lacks, and notes since when `MIDS` is complete.
pub(super) fn create_tables(db: &redb::Database, now_ms: u64) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        txn.open_table(ROOMS)?;
        let entries = txn.open_table(ENTRIES)?;
        txn.open_table(STATE)?;
        txn.open_table(MIDS)?;
        let mut meta = txn.open_table(META)?;
        if meta.get(MIDS_SINCE)?.is_none() {
            // A database with entries was written by a build without the index.
            let since = if entries.is_empty()? { 0 } else { now_ms };
            meta.insert(MIDS_SINCE, since)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Stores one log entry, and its dedup key in `MIDS` when it has one.
fn insert_entry(
    entries: &mut redb::Table<(u64, u64), &[u8]>,
    mids: &mut redb::Table<(u64, u64), &[u8]>,
    room: u64,
    seq: u64,
    rec: &[u8],
) -> Result<(), StoreError> {
    entries.insert((room, seq), rec)?;
    if let Some(r) = record::decode_log(rec) {
        if let Some(key) = r.dedup {
            mids.insert((room, seq), record::encode_mid(r.ts, key).as_slice())?;
        }
    }
    Ok(())
}

/// A room reference as [`apply`] sees it.
pub(super) enum Target<'a> {
    Id(u64),
    /// Create the room with this id.
    Created {
        id: u64,
        name: &'a str,
        epoch: u64,
    },
    /// Create the room with the next id redb gives out (logs from before `Created`).
    LegacyNew {
        name: &'a str,
        epoch: u64,
    },
}

/// A stage's room reference that can be applied.
pub(crate) trait Applicable {
    fn target(&self) -> Target<'_>;
}

impl Applicable for LoggedRoom {
    fn target(&self) -> Target<'_> {
        match self {
            LoggedRoom::Id(id) => Target::Id(*id),
            LoggedRoom::Created { id, name, epoch } => Target::Created {
                id: *id,
                name,
                epoch: *epoch,
            },
        }
    }
}

impl Applicable for RecoveredRoom {
    fn target(&self) -> Target<'_> {
        match self {
            RecoveredRoom::Logged(room) => room.target(),
            RecoveredRoom::LegacyNew { name, epoch } => Target::LegacyNew {
                name,
                epoch: *epoch,
            },
        }
    }
}

/// Writes `writes` into `txn`; with `commit`, records it as the last write-ahead log group
/// applied. Rooms are created first, in order. Without trims the entries then go in key order:
/// one room's run of entries after another, so each B-tree leaf is visited once. A trim's
/// outcome depends on the entries written before it, so with trims every write goes in order.
pub(super) fn apply<'a, R: Applicable + 'a>(
    txn: &redb::WriteTransaction,
    writes: impl Iterator<Item = &'a RoomWrite<R>> + Clone,
    commit: Option<u64>,
) -> Result<Vec<CommitInfo>, StoreError> {
    let ids = create_rooms(txn, writes.clone())?;
    let mut entries = txn.open_table(ENTRIES)?;
    let mut mids = txn.open_table(MIDS)?;
    let mut state = txn.open_table(STATE)?;
    let infos = if writes.clone().any(|w| w.trim.is_some()) {
        let mut infos = Vec::with_capacity(ids.len());
        for (w, &room_id) in writes.zip(&ids) {
            for (seq, rec) in &w.entries {
                insert_entry(&mut entries, &mut mids, room_id, *seq, rec)?;
            }
            redact(&mut entries, room_id, &w.redactions)?;
            apply_state(&mut state, room_id, &w.state)?;
            let earliest = match w.trim {
                Some(t) => Some(trim(&mut entries, &mut mids, room_id, t)?),
                None => None,
            };
            infos.push(CommitInfo { room_id, earliest });
        }
        infos
    } else {
        let mut sorted: Vec<(u64, u64, &[u8])> = Vec::new();
        for (w, &room) in writes.clone().zip(&ids) {
            sorted.extend(
                w.entries
                    .iter()
                    .map(|(seq, rec)| (room, *seq, rec.as_slice())),
            );
        }
        sorted.sort_unstable_by_key(|&(room, seq, _)| (room, seq));
        for (room, seq, rec) in sorted {
            insert_entry(&mut entries, &mut mids, room, seq, rec)?;
        }
        // After every entry: a redaction's target is older than the entry that deletes it, so
        // it is in the table by now (or gone for good), whichever group of this apply logged it.
        for (w, &room) in writes.zip(&ids) {
            redact(&mut entries, room, &w.redactions)?;
            apply_state(&mut state, room, &w.state)?;
        }
        ids.iter()
            .map(|&room_id| CommitInfo {
                room_id,
                earliest: None,
            })
            .collect()
    };
    if let Some(commit) = commit {
        let mut meta = txn.open_table(META)?;
        meta.insert(WAL_COMMIT, commit)?;
    }
    Ok(infos)
}

/// Each write's room id, creating the new rooms in order (the tables they need are opened only
/// if there is one).
fn create_rooms<'a, R: Applicable + 'a>(
    txn: &redb::WriteTransaction,
    writes: impl Iterator<Item = &'a RoomWrite<R>>,
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    let mut tables = None;
    for w in writes {
        let target = w.room.target();
        if let Target::Id(id) = target {
            ids.push(id);
            continue;
        }
        let (rooms, meta) = match &mut tables {
            Some(t) => t,
            None => tables.insert((txn.open_table(ROOMS)?, txn.open_table(META)?)),
        };
        let id = match target {
            Target::Id(id) => id,
            Target::Created { id, name, epoch } => {
                create_room(rooms, meta, name, id, epoch)?;
                id
            }
            Target::LegacyNew { name, epoch } => {
                let next = meta.get(NEXT_ROOM_ID)?.map_or(1, |g| g.value());
                meta.insert(NEXT_ROOM_ID, next + 1)?;
                rooms.insert(name, (next, epoch))?;
                next
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// Records a room the writer created (with the id it gave it), and that ids below it are taken.
fn create_room(
    rooms: &mut redb::Table<&str, (u64, u64)>,
    meta: &mut redb::Table<&str, u64>,
    name: &str,
    id: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    rooms.insert(name, (id, epoch))?;
    let next = meta.get(NEXT_ROOM_ID)?.map_or(1, |g| g.value());
    if next <= id {
        meta.insert(NEXT_ROOM_ID, id + 1)?;
    }
    Ok(())
}

/// Writes a room's state changes (a new record, or `None` to delete the key), in order.
fn apply_state(
    state: &mut redb::Table<(u64, &str), &[u8]>,
    room: u64,
    changes: &[(String, Option<Vec<u8>>)],
) -> Result<(), StoreError> {
    for (key, rec) in changes {
        match rec {
            Some(rec) => state.insert((room, key.as_str()), rec.as_slice()),
            None => state.remove((room, key.as_str())),
        }?;
    }
    Ok(())
}

/// Rewrites entries in place with new event frames (deleted messages' stubs, SPEC.md 5.6),
/// keeping each record's `ts` (retention by age) and dedup key (a retried `pub` stays a
/// duplicate). An entry no longer stored is left alone: retention removed it, and recovery
/// applying the same redaction again must not bring it back.
fn redact(
    entries: &mut redb::Table<(u64, u64), &[u8]>,
    room: u64,
    redactions: &[(u64, Vec<u8>)],
) -> Result<(), StoreError> {
    for (seq, frame) in redactions {
        let rec = entries
            .get((room, *seq))?
            .and_then(|old| {
                record::decode_log(old.value()).map(|r| (r.ts, r.dedup.map(str::to_string)))
            })
            .map(|(ts, dedup)| record::encode_log(ts, dedup.as_deref(), frame));
        if let Some(rec) = rec {
            entries.insert((room, *seq), rec.as_slice())?;
        }
    }
    Ok(())
}

/// Deletes the room's entries below the cut; returns the first retained seq.
fn trim(
    entries: &mut redb::Table<(u64, u64), &[u8]>,
    mids: &mut redb::Table<(u64, u64), &[u8]>,
    room: u64,
    t: Trim,
) -> Result<u64, StoreError> {
    let mut cut = t.before_seq;
    if let Some(older_than) = t.older_than_ms {
        for entry in entries.range((room, cut)..=(room, t.head))? {
            let (k, v) = entry?;
            match record::decode_log(v.value()) {
                Some(r) if r.ts < older_than => cut = k.value().1 + 1,
                _ => break,
            }
        }
    }
    let cut = cut.min(t.head);
    entries.retain_in((room, 0)..(room, cut), |_, _| false)?;
    mids.retain_in((room, 0)..(room, cut), |_, _| false)?;
    let first = entries
        .range((room, 0)..=(room, u64::MAX))?
        .next()
        .transpose()?
        .map(|(k, _)| k.value().1);
    Ok(first.unwrap_or(t.head + 1))
}

/// Records in `txn` (a durable commit) where the write-ahead log's next cycle starts: at the
/// start of `file`, with `salt`.
pub(super) fn record_cycle(
    txn: &redb::WriteTransaction,
    file: usize,
    salt: u64,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    meta.insert(WAL_SALT, salt)?;
    meta.insert(WAL_FILE, file as u64)?;
    Ok(())
}

/// The id the next new room gets, as redb has it.
pub(super) fn next_room_id(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META)?;
    let next = meta.get(NEXT_ROOM_ID)?;
    Ok(next.map_or(1, |g| g.value()))
}

/// The last group applied to the durable database, and the file and salt of the write-ahead
/// log's cycle that follows it.
pub(super) fn wal_position(db: &redb::Database) -> Result<(u64, usize, u64), StoreError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let get = |key| -> Result<u64, StoreError> { Ok(meta.get(key)?.map_or(0, |g| g.value())) };
    let file = usize::from(get(WAL_FILE)? == 1);
    Ok((get(WAL_COMMIT)?, file, get(WAL_SALT)?))
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;

    fn write<R>(room: R, seqs: &[u64], trim: Option<Trim>) -> RoomWrite<R> {
        RoomWrite {
            room,
            entries: seqs
                .iter()
                .map(|&s| (s, record::encode_log(s, None, b"x")))
                .collect(),
            state: vec![("k".into(), Some(vec![1]))],
            redactions: Vec::new(),
            trim,
        }
    }

    #[test]
    fn new_rooms_get_their_ids_and_a_trim_sees_the_entries_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        create_tables(&db, 0).unwrap();

        // A log from before `Created`: the id comes from redb.
        let legacy = [write(
            RecoveredRoom::LegacyNew {
                name: "old".into(),
                epoch: 1,
            },
            &[1, 2],
            None,
        )];
        let txn = db.begin_write().unwrap();
        let infos = apply(&txn, legacy.iter(), Some(1)).unwrap();
        txn.commit().unwrap();
        assert_eq!(infos[0].room_id, 1);

        let created = LoggedRoom::Created {
            id: 5,
            name: "new".into(),
            epoch: 2,
        };
        let trim = Trim {
            before_seq: 3,
            older_than_ms: None,
            head: 4,
        };
        let writes = [
            write(created, &[1, 2, 3], None),
            write(LoggedRoom::Id(5), &[4], Some(trim)),
        ];
        let txn = db.begin_write().unwrap();
        let infos = apply(&txn, writes.iter(), Some(2)).unwrap();
        assert_eq!(next_room_id(&txn).unwrap(), 6);
        txn.commit().unwrap();
        assert_eq!(
            infos
                .iter()
                .map(|i| (i.room_id, i.earliest))
                .collect::<Vec<_>>(),
            [(5, None), (5, Some(3))]
        );

        let txn = db.begin_read().unwrap();
        let rooms = txn.open_table(ROOMS).unwrap();
        assert_eq!(rooms.get("old").unwrap().unwrap().value(), (1, 1));
        assert_eq!(rooms.get("new").unwrap().unwrap().value(), (5, 2));
        let entries = txn.open_table(ENTRIES).unwrap();
        let kept: Vec<_> = entries
            .range((5, 0)..=(5, u64::MAX))
            .unwrap()
            .map(|e| e.unwrap().0.value().1)
            .collect();
        assert_eq!(kept, [3, 4]);
        drop((rooms, entries, txn));
        assert_eq!(wal_position(&db).unwrap(), (2, 0, 0));
    }

    fn stored(db: &redb::Database, room: u64) -> Vec<(u64, Vec<u8>)> {
        let txn = db.begin_read().unwrap();
        let entries = txn.open_table(ENTRIES).unwrap();
        entries
            .range((room, 0)..=(room, u64::MAX))
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().1, v.value().to_vec())
            })
            .collect()
    }

    /// A redaction rewrites its target's frame, keeping the record's ts and dedup key, after
    /// the entries of the same apply (its target may be among them); applied again (recovery)
    /// it changes nothing, and it never brings back a trimmed entry.
    #[test]
    fn redactions_rewrite_in_place_keep_ts_and_dedup_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        create_tables(&db, 0).unwrap();
        let created = LoggedRoom::Created {
            id: 1,
            name: "r".into(),
            epoch: 1,
        };
        let first = RoomWrite {
            room: created,
            entries: vec![
                (1, record::encode_log(10, Some("c\0m"), b"one")),
                (2, record::encode_log(11, None, b"two")),
            ],
            state: Vec::new(),
            redactions: Vec::new(),
            trim: None,
        };
        let del = RoomWrite {
            room: LoggedRoom::Id(1),
            entries: vec![(3, record::encode_log(12, None, b"del"))],
            state: Vec::new(),
            redactions: vec![(1, b"stub".to_vec())],
            trim: None,
        };
        // One apply holding the target's group and the redaction's, as after a crash.
        for _ in 0..2 {
            let txn = db.begin_write().unwrap();
            apply(&txn, [&first, &del].into_iter(), Some(2)).unwrap();
            txn.commit().unwrap();
            let got = stored(&db, 1);
            assert_eq!(got.len(), 3);
            let r = record::decode_log(&got[0].1).unwrap();
            assert_eq!((r.ts, r.dedup, r.frame), (10, Some("c\0m"), &b"stub"[..]));
            assert_eq!(got[1].1, record::encode_log(11, None, b"two"));
        }

        // Trimmed, then the redaction applied again: the entry stays gone.
        let trim = RoomWrite {
            room: LoggedRoom::Id(1),
            entries: Vec::new(),
            state: Vec::new(),
            redactions: Vec::new(),
            trim: Some(Trim {
                before_seq: 2,
                older_than_ms: None,
                head: 3,
            }),
        };
        let txn = db.begin_write().unwrap();
        apply(&txn, [&trim, &del].into_iter(), Some(3)).unwrap();
        txn.commit().unwrap();
        let seqs: Vec<u64> = stored(&db, 1).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [2, 3]);
    }
}
