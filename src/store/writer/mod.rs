//! The single writer thread and its group commit.
//!
//! redb has one writer at a time, so all writes go through one OS thread fed by a bounded
//! queue. The thread waits for the first request, takes everything else already queued (up to
//! `storage.max_batch`) and writes it all as one group: while one group is being made durable
//! the next accumulates, so throughput grows with concurrency instead of paying one fsync per
//! message.
//!
//! Each group is appended to the write-ahead log ([`super::wal`]) and acknowledged; it reaches
//! redb later, many groups at once, and redb is made durable by periodic checkpoints. Both are
//! done by a second thread ([`super::applier`]), one job at a time, so groups go on being logged
//! and acknowledged meanwhile ([`Writer::schedule`]); the rare group that needs redb's write
//! lock itself (a new room, a trim) waits for the job first.
//! - durable mode: the append is followed by one `fdatasync` before the acks.
//! - relaxed mode: the append is only written (it survives a crash of the process at once); the
//!   write-ahead log is fsynced on the flush timer's tick (`storage.flush_interval_ms`), so a
//!   power cut can lose that last interval.
//!
//! In relaxed mode a room logs its batch itself when the write-ahead log is free ([`WriterHandle::try_log`]):
//! there is no fsync to share, and the two thread hand-offs of a trip through the writer thread
//! and back cost more than the write. Batches that need redb at once (a new room, a trim) and
//! batches that find the log busy still go through the thread.
//!
//! The writer never waits on a room: completions go back through oneshot channels, so there is
//! no cycle of awaited bounded queues.
//!
//! Here: the handle rooms use and what they share with the thread; the thread's turn (`group`),
//! its jobs for the applier thread (`jobs`) and recovery (`recover`) are in submodules.

mod group;
mod jobs;
mod recover;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::applier::Applier;
use super::db::Store;
use super::error::StoreError;
use super::model::{
    CommitInfo, CommitResult, LoggedRoom, LoggedWrite, RoomBatch, RoomRef, RoomWrite,
};
use super::request::{CatchUpRequest, WriteReq};
use super::wal::Wal;
use crate::config::{Durability, StorageConfig};

/// Larger batches are logged by the writer thread: a runtime thread does only small writes.
const ROOM_LOG_MAX: usize = 256 * 1024;

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<WriteReq>,
    shared: Arc<Shared>,
}

/// What rooms and the writer thread share.
struct Shared {
    wal: Mutex<WalState>,
    /// The last write (a group commit, a room's own append, an apply to redb) failed; cleared by
    /// the next group that commits. Readiness reports it (see [`WriterHandle::healthy`]).
    failing: AtomicBool,
    store: Store,
    relaxed: bool,
    apply_bytes: usize,
    checkpoint_bytes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the write-ahead log holds enough for an apply or a checkpoint.
    fn due(&self, ws: &WalState) -> bool {
        ws.pending_bytes >= self.apply_bytes || ws.wal.size() >= self.checkpoint_bytes
    }

    /// Whether the groups waiting for redb reached their bound (they pile up while a checkpoint
    /// commits): nothing more is logged until they are applied.
    fn full(&self, ws: &WalState) -> bool {
        ws.pending_bytes as u64 >= self.checkpoint_bytes.max(self.apply_bytes as u64)
    }
}

/// The write-ahead log and the groups in it that redb has not received yet. Commit numbers are
/// given out under its lock, so they follow the order of the records in the file.
struct WalState {
    wal: Wal,
    /// The number of the last group logged.
    commit_no: u64,
    /// The id the next new room gets (redb's `meta.next_room_id` lags behind until the groups
    /// that created rooms are applied).
    next_room_id: u64,
    /// Groups that are in the write-ahead log (and acknowledged) but not yet in redb. They are applied
    /// together, so a room's B-tree leaf is rewritten once per apply rather than once per group;
    /// readers ask for them first ([`Store::catch_up`]).
    pending: Vec<(u64, Vec<LoggedWrite>)>,
    pending_bytes: usize,
    /// A room has asked the writer thread to look at the log since it last did.
    nudged: bool,
}

impl WalState {
    /// The pending groups, on their way to redb (the pending flag stays up until they are in).
    fn take_pending(&mut self) -> Vec<(u64, Vec<LoggedWrite>)> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    fn push_pending(&mut self, store: &Store, n: u64, writes: Vec<LoggedWrite>) {
        self.pending_bytes += writes.iter().map(LoggedWrite::mem_bytes).sum::<usize>();
        self.pending.push((n, writes));
        store.set_pending(true);
    }

    fn clear_pending(&mut self, store: &Store) {
        self.pending.clear();
        self.pending_bytes = 0;
        store.set_pending(false);
    }
}

impl WriterHandle {
    /// Brings the database up to date with the write-ahead log (after a crash, the groups
    /// logged since the last checkpoint), then starts the writer thread. Blocking.
    pub(crate) fn spawn(store: Store, cfg: &StorageConfig) -> Result<WriterHandle, StoreError> {
        let (tx, rx) = mpsc::channel(cfg.queue);
        let wal = Wal::open(store.dir())?;
        store.connect_writer(tx.clone());
        let shared = Arc::new(Shared {
            failing: AtomicBool::new(false),
            wal: Mutex::new(WalState {
                wal,
                commit_no: 0,
                next_room_id: 1,
                pending: Vec::new(),
                pending_bytes: 0,
                nudged: false,
            }),
            store: store.clone(),
            relaxed: cfg.durability == Durability::Relaxed,
            apply_bytes: cfg.apply_bytes,
            checkpoint_bytes: cfg.checkpoint_bytes,
        });
        let mut writer = Writer {
            shared: shared.clone(),
            broken: false,
            dirty: false,
            max_batch: cfg.max_batch,
            checkpoint_every: Duration::from_millis(cfg.checkpoint_interval_ms),
            last_checkpoint: Instant::now(),
            applier: Applier::spawn(store.clone(), tx.clone())?,
            job: None,
            applied: 0,
            catch_ups: Vec::new(),
            store,
        };
        writer.recover(&mut shared.lock())?;
        std::thread::Builder::new()
            .name("roomd-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(WriterHandle { tx, shared })
    }

    /// Relaxed mode: logs a room's batch on the caller's thread and returns its outcome, if the
    /// log is free and the batch needs nothing from redb. Otherwise gives the write back, to be
    /// submitted: durable mode (the writer thread shares one fsync among everything waiting),
    /// a new room or a trim (their outcome comes from redb), a batch over [`ROOM_LOG_MAX`], a
    /// log someone else holds, or one that must grow first (a zero-fill and an fsync: not for a
    /// runtime thread).
    #[allow(
        clippy::result_large_err,
        reason = "the write comes back whole to be submitted; boxing it would cost an allocation per batch to move a few words"
    )]
    pub(crate) fn try_log(&self, write: RoomWrite) -> Result<CommitResult, RoomWrite> {
        let shared = &*self.shared;
        let RoomRef::Id(room_id) = write.room else {
            return Err(write);
        };
        if !shared.relaxed || write.trim.is_some() || write.mem_bytes() > ROOM_LOG_MAX {
            return Err(write);
        }
        let Ok(mut ws) = shared.wal.try_lock() else {
            return Err(write);
        };
        if shared.full(&ws) {
            return Err(write);
        }
        let started = Instant::now();
        let n = ws.commit_no + 1;
        let write = write.with_room(LoggedRoom::Id(room_id));
        match ws.wal.append_in_place(n, std::iter::once(&write)) {
            Ok(true) => {}
            Ok(false) => return Err(write.with_room(RoomRef::Id(room_id))),
            Err(e) => {
                crate::metrics::commit_failed();
                shared.failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "write-ahead log append failed; nothing in it was stored");
                return Ok(Err(Arc::new(e.into())));
            }
        }
        let entries = write.entries.len() + write.state.len();
        ws.commit_no = n;
        ws.push_pending(&shared.store, n, vec![write]);
        let nudge = !ws.nudged && shared.due(&ws);
        ws.nudged |= nudge;
        drop(ws);
        if nudge {
            // A full queue means the thread is busy and looks at the log after its next group.
            let _ = self.tx.try_send(WriteReq::Nudge);
        }
        crate::metrics::room_logged(entries, started.elapsed());
        Ok(Ok(CommitInfo {
            room_id,
            earliest: None,
        }))
    }

    /// Queues a batch if the queue has room; gives it back if the queue is full.
    // The batch comes back by move in the rare full case; boxing it to shrink the `Err` would
    // cost an allocation for every batch.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_submit(&self, batch: RoomBatch) -> Result<Result<(), StoreError>, RoomBatch> {
        match self.tx.try_send(WriteReq::Batch(batch)) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(WriteReq::Batch(batch))) => Err(batch),
            Err(_) => Ok(Err(StoreError::Closed)),
        }
    }

    /// Queues a batch; waits only while the queue is full (backpressure on busy rooms).
    pub(crate) async fn submit(&self, batch: RoomBatch) -> Result<(), StoreError> {
        self.tx
            .send(WriteReq::Batch(batch))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// The flush timer's tick: relaxed mode's periodic fsync of the write-ahead log, and
    /// checkpoints when due.
    pub(crate) async fn flush(&self) {
        let _ = self.tx.send(WriteReq::Tick).await;
    }

    /// Whether the writer thread runs and its last write succeeded: what readiness means for
    /// storage. (A full disk makes it false until a write goes through again.)
    pub(crate) fn healthy(&self) -> bool {
        !self.tx.is_closed() && !self.shared.failing.load(Ordering::Relaxed)
    }

    /// Finishes every queued batch, makes it durable, and stops the thread.
    pub(crate) async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriteReq::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// The writer thread's state.
struct Writer {
    store: Store,
    shared: Arc<Shared>,
    /// A redb operation failed: reopen the database (and replay the log) before the next one.
    broken: bool,
    /// A non-durable redb commit happened since the last checkpoint began.
    dirty: bool,
    max_batch: usize,
    /// Checkpoint once the log holds `storage.checkpoint_bytes`, or on the first flush tick
    /// this long after the last checkpoint began.
    checkpoint_every: Duration,
    last_checkpoint: Instant,
    applier: Applier,
    /// The job the applier thread is on; meanwhile it holds redb's write lock.
    job: Option<Running>,
    /// The last group in redb (committed, durably or not).
    applied: u64,
    /// Readers waiting for groups to reach redb, each with the last group logged when it asked.
    catch_ups: Vec<(u64, CatchUpRequest)>,
}

/// What the applier thread is doing.
#[derive(Clone, Copy)]
struct Running {
    checkpoint: bool,
    /// The last group in the job.
    last: u64,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<WriteReq>) {
        let mut reqs = Vec::with_capacity(self.max_batch);
        while let Some(first) = rx.blocking_recv() {
            reqs.push(first);
            while reqs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(req) => reqs.push(req),
                    Err(_) => break,
                }
            }
            let stop = self.process(&mut reqs);
            if let Some(stop) = stop {
                let _ = stop.send(());
                return;
            }
        }
        self.process(&mut reqs);
    }
}
