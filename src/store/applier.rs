//! The thread that writes logged groups into redb, so the writer thread never waits for redb.
//!
//! Applying a few hundred logged groups to redb takes milliseconds of CPU, and a checkpoint's
//! durable commit tens of milliseconds of disk; on the writer thread either one held up every
//! publish behind it (with 64 publishers, an apply every 50 ms stalled all of them for ~5 ms).
//! Here they run beside the writer, which goes on logging and acknowledging groups; it hands
//! over one [`Job`] at a time and learns of its outcome between groups.

use std::fs::File;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::ReadableTable;
use tokio::sync::mpsc;

use super::writer::{RoomRef, RoomWrite, WriteReq};
use super::{
    Store, StoreError, LOG, META, NEXT_ROOM_ID, ROOMS, STATE, WAL_COMMIT, WAL_FILE, WAL_SALT,
};

/// Fault injection for the tests: the first checkpoint is held this long before it commits,
/// so the server can be killed (or read from, or loaded) while one is in flight.
const CHECKPOINT_HOLD_ENV: &str = "ROOMD_TEST_CHECKPOINT_HOLD_MS";

/// Logged groups to write into redb in one transaction.
pub(super) struct Job {
    /// (commit number, the group's writes), in log order.
    pub groups: Vec<(u64, Vec<RoomWrite>)>,
    /// `Some`: a checkpoint, a durable commit that also records where the log's next cycle
    /// starts. `None`: a non-durable apply (the groups are in the log already).
    pub checkpoint: Option<NextCycle>,
    pub started: Instant,
}

/// Where the log goes on after a checkpoint (see [`super::wal`]).
pub(super) struct NextCycle {
    pub file: usize,
    pub salt: u64,
    /// Relaxed mode: the log file just left, fsynced first so a power cut during the commit
    /// cannot leave a hole before the records that follow in the other file.
    pub left: Option<Arc<File>>,
}

/// The writer's end of the thread.
pub(super) struct Applier {
    jobs: std_mpsc::Sender<Job>,
    done: std_mpsc::Receiver<Result<Duration, StoreError>>,
}

impl Applier {
    /// Starts the thread; it pokes the writer (`wake`) when a job is done.
    pub fn spawn(store: Store, wake: mpsc::Sender<WriteReq>) -> std::io::Result<Applier> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let (tx, done) = std_mpsc::channel();
        let mut hold = std::env::var(CHECKPOINT_HOLD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        std::thread::Builder::new()
            .name("roomd-apply".into())
            .spawn(move || {
                for job in rx {
                    if job.checkpoint.is_some() {
                        if let Some(hold) = hold.take() {
                            std::thread::sleep(hold);
                        }
                    }
                    if tx.send(run(&store, job)).is_err() {
                        return;
                    }
                    // A full queue means the writer is busy: it looks for this after its group.
                    let _ = wake.try_send(WriteReq::Nudge);
                }
            })?;
        Ok(Applier { jobs, done })
    }

    pub fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::Closed)
    }

    /// The outcome of the job sent last, if it is done.
    pub fn try_done(&self) -> Option<Result<Duration, StoreError>> {
        match self.done.try_recv() {
            Ok(res) => Some(res),
            Err(std_mpsc::TryRecvError::Empty) => None,
            Err(std_mpsc::TryRecvError::Disconnected) => Some(Err(StoreError::Closed)),
        }
    }

    /// Waits for the outcome of the job sent last.
    pub fn wait(&self) -> Result<Duration, StoreError> {
        self.done.recv().unwrap_or(Err(StoreError::Closed))
    }
}

fn run(store: &Store, job: Job) -> Result<Duration, StoreError> {
    if let Some(left) = job.checkpoint.as_ref().and_then(|c| c.left.as_ref()) {
        left.sync_data()?;
    }
    let db = store.db()?;
    let mut txn = db.begin_write().map_err(StoreError::redb)?;
    match &job.checkpoint {
        // Quick repair makes reopening after a crash take milliseconds instead of a full
        // scan; it costs a second fsync, so only durable commits carry it.
        Some(_) => txn.set_quick_repair(true),
        None => txn
            .set_durability(redb::Durability::None)
            .map_err(StoreError::redb)?,
    }
    let last = job.groups.last().map(|&(n, _)| n);
    apply_logged(&txn, job.groups.iter().flat_map(|(_, w)| w), last)?;
    if let Some(next) = &job.checkpoint {
        record_cycle(&txn, next.file, next.salt)?;
    }
    txn.commit().map_err(StoreError::redb)?;
    Ok(job.started.elapsed())
}

/// Writes logged groups (rooms that have their id, no trims) into `txn`, in key order: one
/// room's run of entries after another, so each B-tree leaf is visited once. With `commit`,
/// records it as the last group applied.
pub(super) fn apply_logged<'a>(
    txn: &redb::WriteTransaction,
    writes: impl Iterator<Item = &'a RoomWrite> + Clone,
    commit: Option<u64>,
) -> Result<(), StoreError> {
    let mut entries: Vec<(u64, u64, &[u8])> = Vec::new();
    let mut created = writes
        .clone()
        .filter(|w| matches!(w.room, RoomRef::Created { .. }))
        .peekable();
    if created.peek().is_some() {
        let mut rooms = txn.open_table(ROOMS).map_err(StoreError::redb)?;
        let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
        for w in created {
            if let RoomRef::Created { id, name, epoch } = &w.room {
                create_room(&mut rooms, &mut meta, name, *id, *epoch)?;
            }
        }
    }
    for w in writes.clone() {
        let Some(room) = w.room.id() else {
            unreachable!("the writer gives new rooms their ids before logging them")
        };
        debug_assert!(w.trim.is_none(), "a trim is applied at once");
        entries.extend(
            w.entries
                .iter()
                .map(|(seq, rec)| (room, *seq, rec.as_slice())),
        );
    }
    entries.sort_unstable_by_key(|&(room, seq, _)| (room, seq));
    let mut log = txn.open_table(LOG).map_err(StoreError::redb)?;
    for (room, seq, rec) in entries {
        log.insert((room, seq), rec).map_err(StoreError::redb)?;
    }
    let mut state = txn.open_table(STATE).map_err(StoreError::redb)?;
    for w in writes {
        if let Some(room) = w.room.id() {
            apply_state(&mut state, room, &w.state)?;
        }
    }
    if let Some(commit) = commit {
        let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
        meta.insert(WAL_COMMIT, commit).map_err(StoreError::redb)?;
    }
    Ok(())
}

/// Records a room the writer created (with the id it gave it), and that ids below it are taken.
pub(super) fn create_room(
    rooms: &mut redb::Table<&str, (u64, u64)>,
    meta: &mut redb::Table<&str, u64>,
    name: &str,
    id: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    rooms.insert(name, (id, epoch)).map_err(StoreError::redb)?;
    let next = meta
        .get(NEXT_ROOM_ID)
        .map_err(StoreError::redb)?
        .map_or(1, |g| g.value());
    if next <= id {
        meta.insert(NEXT_ROOM_ID, id + 1)
            .map_err(StoreError::redb)?;
    }
    Ok(())
}

/// The id the next new room gets, as redb has it.
pub(super) fn next_room_id(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(StoreError::redb)?;
    let next = meta.get(NEXT_ROOM_ID).map_err(StoreError::redb)?;
    Ok(next.map_or(1, |g| g.value()))
}

/// Writes a room's state changes (a new record, or `None` to delete the key), in order.
pub(super) fn apply_state(
    state: &mut redb::Table<(u64, &str), &[u8]>,
    room: u64,
    changes: &[(String, Option<Vec<u8>>)],
) -> Result<(), StoreError> {
    for (key, rec) in changes {
        match rec {
            Some(rec) => state.insert((room, key.as_str()), rec.as_slice()),
            None => state.remove((room, key.as_str())),
        }
        .map_err(StoreError::redb)?;
    }
    Ok(())
}

/// Records in `txn` (a durable commit) where the log's next cycle starts: at the start of `file`,
/// with `salt`.
pub(super) fn record_cycle(
    txn: &redb::WriteTransaction,
    file: usize,
    salt: u64,
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
    meta.insert(WAL_SALT, salt).map_err(StoreError::redb)?;
    meta.insert(WAL_FILE, file as u64)
        .map_err(StoreError::redb)?;
    Ok(())
}
