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

use tokio::sync::mpsc;

use super::apply::{apply, record_cycle};
use super::db::Store;
use super::error::StoreError;
use super::model::LoggedWrite;
use super::request::WriteReq;

/// Fault injection for the tests: the first checkpoint is held this long before it commits,
/// so the server can be killed (or read from, or loaded) while one is in flight.
const CHECKPOINT_HOLD_ENV: &str = "ROOMD_TEST_CHECKPOINT_HOLD_MS";

/// Logged groups to write into redb in one transaction.
pub(super) struct Job {
    /// (commit number, the group's writes), in log order.
    pub groups: Vec<(u64, Vec<LoggedWrite>)>,
    /// `Some`: a checkpoint, a durable commit that also records where the log's next cycle
    /// starts. `None`: a non-durable apply (the groups are in the write-ahead log already).
    pub checkpoint: Option<NextCycle>,
    pub started: Instant,
}

/// Where the write-ahead log goes on after a checkpoint (see [`super::wal`]).
pub(super) struct NextCycle {
    pub file: usize,
    pub salt: u64,
    /// Relaxed mode: the write-ahead log file just left, fsynced first so a power cut during the commit
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
    pub(super) fn spawn(store: Store, wake: mpsc::Sender<WriteReq>) -> std::io::Result<Applier> {
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

    pub(super) fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::Closed)
    }

    /// The outcome of the job sent last, if it is done.
    pub(super) fn try_done(&self) -> Option<Result<Duration, StoreError>> {
        match self.done.try_recv() {
            Ok(res) => Some(res),
            Err(std_mpsc::TryRecvError::Empty) => None,
            Err(std_mpsc::TryRecvError::Disconnected) => Some(Err(StoreError::Closed)),
        }
    }

    /// Waits for the outcome of the job sent last.
    pub(super) fn wait(&self) -> Result<Duration, StoreError> {
        self.done.recv().unwrap_or(Err(StoreError::Closed))
    }
}

fn run(store: &Store, job: Job) -> Result<Duration, StoreError> {
    if let Some(left) = job.checkpoint.as_ref().and_then(|c| c.left.as_ref()) {
        left.sync_data()?;
    }
    let db = store.db()?;
    let mut txn = db.begin_write()?;
    match &job.checkpoint {
        // Quick repair makes reopening after a crash take milliseconds instead of a full
        // scan; it costs a second fsync, so only durable commits carry it.
        Some(_) => txn.set_quick_repair(true),
        None => txn.set_durability(redb::Durability::None)?,
    }
    let last = job.groups.last().map(|&(n, _)| n);
    apply(&txn, job.groups.iter().flat_map(|(_, w)| w), last)?;
    if let Some(next) = &job.checkpoint {
        record_cycle(&txn, next.file, next.salt)?;
    }
    txn.commit()?;
    Ok(job.started.elapsed())
}
