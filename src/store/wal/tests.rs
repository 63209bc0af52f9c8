//! Tests of the log files (append, scan, switch, reset, growth) and of the legacy layout.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::files::Wal;
use super::format::next_salt;
use super::grower::GROW;
use crate::store::model::{LoggedRoom, RecoveredRoom, RoomWrite, Trim};

fn write(id: u64, seqs: std::ops::Range<u64>) -> RoomWrite<RecoveredRoom> {
    RoomWrite {
        room: RecoveredRoom::Logged(LoggedRoom::Id(id)),
        entries: seqs.map(|s| (s, vec![s as u8; 10])).collect(),
        state: vec![("k".into(), Some(vec![1, 2])), ("gone".into(), None)],
        redactions: vec![(1, b"stub".to_vec())],
        trim: Some(Trim {
            before_seq: 2,
            older_than_ms: None,
            head: 9,
        }),
    }
}

#[test]
fn a_scan_returns_the_run_of_appended_records_and_stops_at_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    for c in 1..=5 {
        wal.append(c, [write(c, 0..c)].iter(), true).unwrap();
    }
    let new_room = RoomWrite {
        room: RecoveredRoom::LegacyNew {
            name: "lobby".into(),
            epoch: 7,
        },
        entries: vec![],
        state: vec![],
        redactions: vec![],
        trim: None,
    };
    let created = RoomWrite {
        room: RecoveredRoom::Logged(LoggedRoom::Created {
            id: 42,
            name: "hall".into(),
            epoch: 9,
        }),
        entries: vec![(1, b"first".to_vec())],
        state: vec![],
        redactions: vec![],
        trim: None,
    };
    wal.append(6, [write(1, 0..1), new_room, created].iter(), true)
        .unwrap();
    let all = Wal::open(dir.path()).unwrap().scan(0, 0, 0).unwrap();
    assert_eq!(
        all.iter().map(|l| l.commit).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(all[2].writes[0].entries.len(), 3);
    assert_eq!(all[2].writes[0].state[1], ("gone".to_string(), None));
    assert_eq!(all[2].writes[0].redactions, [(1, b"stub".to_vec())]);
    assert!(all[5].writes[1].redactions.is_empty());
    assert!(
        matches!(&all[5].writes[1].room, RecoveredRoom::LegacyNew { name, epoch: 7 } if &**name == "lobby")
    );
    assert!(
        matches!(&all[5].writes[2].room, RecoveredRoom::Logged(LoggedRoom::Created { id: 42, name, epoch: 9 }) if &**name == "hall")
    );
    assert_eq!(all[5].writes[2].entries, [(1, b"first".to_vec())]);

    // After a rewind, new records overwrite the old ones; the scan ends where they end.
    wal.rewind(0, 7);
    wal.append(7, [write(2, 0..1)].iter(), true).unwrap();
    let after = Wal::open(dir.path()).unwrap().scan(0, 7, 0).unwrap();
    assert_eq!(after.iter().map(|l| l.commit).collect::<Vec<_>>(), [7]);
}

#[test]
fn a_torn_or_invalidated_record_ends_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    wal.append(1, [write(1, 0..3)].iter(), true).unwrap();
    let second = wal.size();
    wal.append(2, [write(1, 3..6)].iter(), true).unwrap();
    // Flip one byte of the second record's body.
    wal.files[0].write_all_at(&[0xff], second + 30).unwrap();
    let got = Wal::open(dir.path()).unwrap().scan(0, 0, 0).unwrap();
    assert_eq!(got.len(), 1);

    wal.undo_last(0);
    assert!(Wal::open(dir.path())
        .unwrap()
        .scan(0, 0, 0)
        .unwrap()
        .is_empty());
}

#[test]
fn a_record_of_an_earlier_cycle_never_continues_a_new_run() {
    // Cycle 1 logs groups 5, 6, 7 (say, unsynced, in relaxed mode); a power loss keeps only
    // group 5, so after recovery the numbers 6 and 7 are used again. Same-sized records put
    // the old group 6 right where the new run ends.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    wal.rewind(0, 1);
    for c in 5..=7 {
        wal.append(c, [write(1, 0..2)].iter(), true).unwrap();
    }
    wal.rewind(0, 2);
    wal.append(5, [write(1, 0..2)].iter(), true).unwrap();
    let got = Wal::open(dir.path()).unwrap().scan(0, 2, 0).unwrap();
    assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [5]);
    // With one salt for both cycles the stale records would pass.
    let mut same = Wal::open(dir.path()).unwrap();
    same.rewind(0, 1);
    same.append(5, [write(1, 0..2)].iter(), true).unwrap();
    let stale = Wal::open(dir.path()).unwrap().scan(0, 1, 0).unwrap();
    assert_eq!(
        stale.iter().map(|l| l.commit).collect::<Vec<_>>(),
        [5, 6, 7]
    );
}

#[test]
fn a_scan_follows_a_switch_whose_checkpoint_did_not_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    // Cycle 1 (salt 5, file 0) logs 1..=3, then a checkpoint switches to file 1.
    wal.rewind(0, 5);
    for c in 1..=3 {
        wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
    }
    wal.switch();
    assert_eq!(wal.position(), (1, next_salt(5)));
    for c in 4..=5 {
        wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
    }
    let commits = |file, salt, applied| -> Vec<u64> {
        let wal = Wal::open(dir.path()).unwrap();
        let got = wal.scan(file, salt, applied).unwrap();
        got.iter().map(|l| l.commit).collect()
    };
    // The checkpoint did not commit: redb still points at cycle 1.
    assert_eq!(commits(0, 5, 0), [1, 2, 3, 4, 5]);
    // It committed: redb holds 1..=3 and points at file 1.
    assert_eq!(commits(1, next_salt(5), 3), [4, 5]);

    // The next switch goes back to file 0, whose old records belong to another cycle.
    wal.switch();
    wal.append(6, [write(1, 0..1)].iter(), true).unwrap();
    assert_eq!(commits(1, next_salt(5), 3), [4, 5, 6]);
    assert_eq!(commits(0, next_salt(next_salt(5)), 5), [6]);
    // Nothing follows in the other file: a stale run there is not taken for a continuation.
    wal.rewind(1, 9);
    assert!(commits(1, 9, 6).is_empty());
    assert_eq!(commits(0, next_salt(next_salt(5)), 5), [6]);
}

#[test]
fn a_log_from_before_the_two_files_is_read_as_file_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    wal.rewind(0, 3);
    for c in 1..=2 {
        wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
    }
    drop(wal);
    std::fs::remove_file(dir.path().join("roomd.wal.1")).unwrap();
    std::fs::rename(dir.path().join("roomd.wal.0"), dir.path().join("roomd.wal")).unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    let got = wal.scan(0, 3, 0).unwrap();
    assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2]);
    assert!(!dir.path().join("roomd.wal").exists());
}

/// A log started afresh (cycle salt 5 in file 0), once the grower has filled its first step.
fn grown_log(dir: &Path) -> Wal {
    let mut wal = Wal::open(dir).unwrap();
    wal.reset(0, 5);
    wal.settle_grow(true);
    wal
}

/// One room's write of a single entry of `len` bytes.
fn sized(seq: u64, len: usize) -> RoomWrite<RecoveredRoom> {
    RoomWrite {
        room: RecoveredRoom::Logged(LoggedRoom::Id(1)),
        entries: vec![(seq, vec![7; len])],
        state: Vec::new(),
        redactions: Vec::new(),
        trim: None,
    }
}

#[test]
fn space_is_grown_ahead_of_the_appends_in_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = grown_log(dir.path());
    assert_eq!(wal.lens[0], GROW, "the active file is grown after a reset");
    wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
    wal.settle_grow(true);
    assert_eq!(wal.lens[1], GROW, "then the other one, for the next switch");
    // Past half of the first step, appends find the next one zero-filled for them.
    let big = sized(2, GROW as usize / 2);
    assert!(wal.append_in_place(2, std::iter::once(&big)).unwrap());
    wal.settle_grow(true);
    assert_eq!(wal.lens[0], 2 * GROW);
    let len = std::fs::metadata(dir.path().join("roomd.wal.0"))
        .unwrap()
        .len();
    assert_eq!(len, 2 * GROW);
    let got = wal.scan(0, 5, 0).unwrap();
    assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_failed_zero_fill_ahead_is_not_asked_again_until_one_on_the_spot_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = grown_log(dir.path());
    // The other file can no longer be written (as on a full disk): its zero-fill fails.
    wal.files[1] = Arc::new(File::open(dir.path().join("roomd.wal.1")).unwrap());
    wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
    wal.settle_grow(true);
    assert!(wal.ahead_failed);
    wal.append(2, [write(1, 0..1)].iter(), true).unwrap();
    assert!(wal.growing.is_none(), "asked again after a failure");
    // A record that does not fit makes the active file grow on the spot; that works, so
    // growing ahead resumes.
    wal.append(3, std::iter::once(&sized(3, GROW as usize)), true)
        .unwrap();
    assert!(
        wal.growing.is_some(),
        "not asked again after growing on the spot"
    );
    let got = wal.scan(0, 5, 0).unwrap();
    assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn a_reset_empties_both_files_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    wal.rewind(0, 5);
    wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
    wal.switch();
    wal.append(2, [write(1, 0..1)].iter(), true).unwrap();
    wal.reset(1, 9);
    // Emptied (the grower may already be zero-filling them again).
    for i in 0..2 {
        let bytes = std::fs::read(dir.path().join(format!("roomd.wal.{i}"))).unwrap();
        assert!(
            bytes.iter().all(|&b| b == 0),
            "file {i} still holds records"
        );
    }
    assert_eq!(wal.position(), (1, 9));
    wal.append(3, [write(1, 0..1)].iter(), true).unwrap();
    let got = Wal::open(dir.path()).unwrap().scan(1, 9, 2).unwrap();
    assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [3]);
}

/// A deletion logged and never applied (a crash before redb saw it) is applied by recovery:
/// the target is a stub in redb afterwards, with its ts and dedup key.
#[tokio::test]
async fn recovery_applies_a_logged_redaction() {
    use crate::config::StorageConfig;
    use crate::store::{record, Store, WriterHandle};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut wal = Wal::open(dir.path()).unwrap();
    let created = RoomWrite {
        room: LoggedRoom::Created {
            id: 1,
            name: "r".into(),
            epoch: 3,
        },
        entries: vec![(1, record::encode_log(5, Some("c\0m"), b"\x81\xa1t\xa3msg"))],
        state: Vec::new(),
        redactions: Vec::new(),
        trim: None,
    };
    let del = RoomWrite {
        room: LoggedRoom::Id(1),
        entries: vec![(2, record::encode_log(6, None, b"\x81\xa1t\xa3del"))],
        state: Vec::new(),
        redactions: vec![(1, b"\x81\xa1t\xa4stub".to_vec())],
        trim: None,
    };
    wal.append(1, [created].iter(), true).unwrap();
    wal.append(2, [del].iter(), true).unwrap();
    drop(wal);

    let writer = WriterHandle::spawn(store.clone(), &StorageConfig::default()).unwrap();
    let read = store.clone();
    let got = tokio::task::spawn_blocking(move || read.read_forward(1, 1, 10, usize::MAX))
        .await
        .unwrap()
        .unwrap();
    let got = got.frames();
    let bodies: Vec<&[u8]> = got.iter().map(|(_, f)| crate::wire::payload(f)).collect();
    assert_eq!(
        bodies,
        [&b"\x81\xa1t\xa4stub"[..], &b"\x81\xa1t\xa3del"[..]]
    );
    {
        let txn = redb::ReadableDatabase::begin_read(&*store.db().unwrap()).unwrap();
        let entries = txn.open_table(crate::store::tables::ENTRIES).unwrap();
        let raw = redb::ReadableTable::get(&entries, (1, 1)).unwrap().unwrap();
        let rec = record::decode_log(raw.value()).unwrap();
        assert_eq!((rec.ts, rec.dedup), (5, Some("c\0m")));
    }
    writer.stop().await;
}
