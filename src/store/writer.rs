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
//!   log is fsynced on the flush timer (`storage.flush_interval_ms`), so a power cut can lose
//!   that last interval.
//!
//! In relaxed mode a room logs its batch itself when the log is free ([`WriterHandle::try_log`]):
//! there is no fsync to share, and the two thread hand-offs of a trip through the writer thread
//! and back cost more than the write. Batches that need redb at once (a new room, a trim) and
//! batches that find the log busy still go through the thread.
//!
//! The writer never waits on a room: completions go back through oneshot channels, so there is
//! no cycle of awaited bounded queues.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::applier::{
    apply_logged, apply_state, create_room, next_room_id, record_cycle, Applier, Job, NextCycle,
};
use super::wal::{next_salt, Wal};
use super::{
    record, Store, StoreError, LOG, META, NEXT_ROOM_ID, ROOMS, STATE, WAL_COMMIT, WAL_FILE,
    WAL_SALT,
};
use crate::config::{Durability, StorageConfig};

/// Which room a batch belongs to. A room gets its id with its first write.
#[derive(Debug, Clone)]
pub enum RoomRef {
    Id(u64),
    /// A room's first write, as a room sends it.
    New {
        name: Arc<str>,
        epoch: u64,
    },
    /// A room's first write with the id the writer gave it, as it is logged: the room is
    /// created in redb when the group is applied, so creating one costs no redb transaction
    /// on the writer thread. (Logs written before this variant existed hold `New`, which
    /// recovery still applies by drawing the id from redb.)
    Created {
        id: u64,
        name: Arc<str>,
        epoch: u64,
    },
}

impl RoomRef {
    /// The room's id, once it has one.
    pub fn id(&self) -> Option<u64> {
        match self {
            RoomRef::Id(id) | RoomRef::Created { id, .. } => Some(*id),
            RoomRef::New { .. } => None,
        }
    }
}

/// Retention applied to one room inside its batch's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Trim {
    /// Delete entries with seq below this.
    pub before_seq: u64,
    /// And entries older than this (ms since the Unix epoch), if set.
    pub older_than_ms: Option<u64>,
    /// The room's last seq. That entry is always kept: it carries the numbering across
    /// restarts, so seqs continue instead of restarting at 1.
    pub head: u64,
}

/// Everything one room writes in one group.
#[derive(Debug)]
pub struct RoomWrite {
    pub room: RoomRef,
    /// (seq, log record)
    pub entries: Vec<(u64, Vec<u8>)>,
    /// (key, new state record or `None` to delete)
    pub state: Vec<(String, Option<Vec<u8>>)>,
    pub trim: Option<Trim>,
}

/// A room's write and where to report its outcome.
pub struct RoomBatch {
    pub write: RoomWrite,
    pub done: oneshot::Sender<CommitResult>,
}

#[derive(Debug, Clone, Copy)]
pub struct CommitInfo {
    pub room_id: u64,
    /// The room's first retained seq after a trim.
    pub earliest: Option<u64>,
}

pub(crate) enum WriteReq {
    Batch(RoomBatch),
    /// Rooms logged enough by themselves that an apply or a checkpoint may be due.
    Nudge,
    /// The flush tick: relaxed mode fsyncs the log; a checkpoint follows if one is due.
    Flush,
    /// Apply every logged group to redb so a reader sees it (see [`Store::catch_up`]).
    Sync(SyncReply),
    Stop(oneshot::Sender<()>),
}

/// Larger batches are logged by the writer thread: a runtime thread does only small writes.
const ROOM_LOG_MAX: usize = 256 * 1024;

/// The outcome of a room's batch.
pub type CommitResult = Result<CommitInfo, Arc<StoreError>>;

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteReq>,
    shared: Arc<Shared>,
}

/// What rooms and the writer thread share.
struct Shared {
    log: Mutex<Log>,
    store: Store,
    relaxed: bool,
    apply_bytes: usize,
    checkpoint_bytes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the log holds enough for an apply or a checkpoint.
    fn due(&self, log: &Log) -> bool {
        log.pending_bytes >= self.apply_bytes || log.wal.size() >= self.checkpoint_bytes
    }

    /// Whether the groups waiting for redb reached their bound (they pile up while a checkpoint
    /// commits): nothing more is logged until they are applied.
    fn full(&self, log: &Log) -> bool {
        log.pending_bytes as u64 >= self.checkpoint_bytes.max(self.apply_bytes as u64)
    }
}

/// The write-ahead log and the groups in it that redb has not received yet. Commit numbers are
/// given out under its lock, so they follow the order of the records in the file.
struct Log {
    wal: Wal,
    /// The number of the last group logged.
    commit_no: u64,
    /// The id the next new room gets (redb's `meta.next_room_id` lags behind until the groups
    /// that created rooms are applied).
    next_room_id: u64,
    /// Groups that are in the log (and acknowledged) but not yet in redb. They are applied
    /// together, so a room's B-tree leaf is rewritten once per apply rather than once per group;
    /// readers ask for them first ([`Store::catch_up`]).
    pending: Vec<(u64, Vec<RoomWrite>)>,
    pending_bytes: usize,
    /// A room has asked the writer thread to look at the log since it last did.
    nudged: bool,
}

impl Log {
    /// The pending groups, on their way to redb (the pending flag stays up until they are in).
    fn take_pending(&mut self) -> Vec<(u64, Vec<RoomWrite>)> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    fn push_pending(&mut self, store: &Store, n: u64, writes: Vec<RoomWrite>) {
        self.pending_bytes += writes.iter().map(write_bytes).sum::<usize>();
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
    pub fn spawn(store: Store, cfg: &StorageConfig) -> Result<WriterHandle, StoreError> {
        let (tx, rx) = mpsc::channel(cfg.queue);
        let wal = Wal::open(store.dir())?;
        store.connect_writer(tx.clone());
        let shared = Arc::new(Shared {
            log: Mutex::new(Log {
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
            syncs: Vec::new(),
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
    pub fn try_log(&self, write: RoomWrite) -> Result<CommitResult, RoomWrite> {
        let shared = &*self.shared;
        let RoomRef::Id(room_id) = write.room else {
            return Err(write);
        };
        if !shared.relaxed || write.trim.is_some() || write_bytes(&write) > ROOM_LOG_MAX {
            return Err(write);
        }
        let Ok(mut log) = shared.log.try_lock() else {
            return Err(write);
        };
        if shared.full(&log) {
            return Err(write);
        }
        let started = Instant::now();
        let n = log.commit_no + 1;
        match log.wal.append_in_place(n, std::iter::once(&write)) {
            Ok(true) => {}
            Ok(false) => return Err(write),
            Err(e) => {
                crate::metrics::commit_failed();
                tracing::error!(error = %e, "write-ahead log append failed; nothing in it was stored");
                return Ok(Err(Arc::new(e.into())));
            }
        }
        let entries = write.entries.len() + write.state.len();
        log.commit_no = n;
        log.push_pending(&shared.store, n, vec![write]);
        let nudge = !log.nudged && shared.due(&log);
        log.nudged |= nudge;
        drop(log);
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
    pub fn try_submit(&self, batch: RoomBatch) -> Result<Result<(), StoreError>, RoomBatch> {
        match self.tx.try_send(WriteReq::Batch(batch)) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(WriteReq::Batch(batch))) => Err(batch),
            Err(_) => Ok(Err(StoreError::Closed)),
        }
    }

    /// Queues a batch; waits only while the queue is full (backpressure on busy rooms).
    pub async fn submit(&self, batch: RoomBatch) -> Result<(), StoreError> {
        self.tx
            .send(WriteReq::Batch(batch))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// The flush tick: relaxed mode's periodic fsync of the log, and checkpoints when due.
    pub async fn flush(&self) {
        let _ = self.tx.send(WriteReq::Flush).await;
    }

    /// Finishes every queued batch, makes it durable, and stops the thread.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriteReq::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

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
    syncs: Vec<(u64, SyncReply)>,
}

/// What the applier thread is doing.
#[derive(Clone, Copy)]
struct Running {
    checkpoint: bool,
    /// The last group in the job.
    last: u64,
}

/// Where a reader's request for the pending groups is answered.
type SyncReply = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// One turn's requests, by kind.
struct Requests {
    writes: Vec<RoomWrite>,
    dones: Vec<oneshot::Sender<CommitResult>>,
    syncs: Vec<SyncReply>,
    flush: bool,
    stop: Option<oneshot::Sender<()>>,
}

impl Requests {
    fn sort(reqs: &mut Vec<WriteReq>) -> Requests {
        let mut out = Requests {
            writes: Vec::with_capacity(reqs.len()),
            dones: Vec::with_capacity(reqs.len()),
            syncs: Vec::new(),
            flush: false,
            stop: None,
        };
        for req in reqs.drain(..) {
            match req {
                WriteReq::Batch(b) => {
                    out.writes.push(b.write);
                    out.dones.push(b.done);
                }
                WriteReq::Nudge => {}
                WriteReq::Flush => out.flush = true,
                WriteReq::Sync(s) => out.syncs.push(s),
                WriteReq::Stop(s) => out.stop = Some(s),
            }
        }
        out
    }
}

/// Relaxed mode's periodic fsync of the log, outside the lock: rooms go on logging while the
/// disk works.
fn sync_log(shared: &Shared) {
    let file = {
        let log = shared.lock();
        (log.wal.size() > 0).then(|| log.wal.file())
    };
    if let Some(Err(e)) = file.map(|f| f.sync_data()) {
        tracing::error!(error = %e, "write-ahead log fsync failed");
    }
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

    /// Writes one group; returns the stop request if one was in it.
    fn process(&mut self, reqs: &mut Vec<WriteReq>) -> Option<oneshot::Sender<()>> {
        let shared = self.shared.clone();
        let Requests {
            writes,
            dones,
            syncs,
            flush,
            stop,
        } = Requests::sort(reqs);
        if self.job.is_some() {
            if let Some(res) = self.applier.try_done() {
                self.job_done(&mut shared.lock(), res);
            }
        }
        if !writes.is_empty() {
            self.log_group(&shared, writes, dones);
        }
        if flush && shared.relaxed {
            sync_log(&shared);
        }
        let mut log = shared.lock();
        log.nudged = false;
        let logged = log.commit_no;
        self.syncs.extend(syncs.into_iter().map(|s| (logged, s)));
        if stop.is_some() {
            self.final_checkpoint(&mut log);
        } else {
            self.schedule(&mut log, flush);
        }
        stop
    }

    /// Gives the applier thread its next job if it is free and one is due: a checkpoint (on the
    /// flush tick once `checkpoint_every` has passed, or once the log holds `checkpoint_bytes`),
    /// else an apply (once the pending groups hold `apply_bytes`, or a reader waits for them).
    /// Readers are answered once nothing they may need is left outside redb.
    fn schedule(&mut self, log: &mut Log, flush: bool) {
        if self.job.is_some() {
            return;
        }
        if self.broken {
            if !self.syncs.is_empty() {
                let res = self.recover(log).map_err(Arc::new);
                if let Err(e) = &res {
                    tracing::error!(error = %e, "recovery for a reader failed; retrying after the next group");
                }
                self.answer_syncs(u64::MAX, &res);
            }
            return;
        }
        let checkpoint_due = (flush && self.last_checkpoint.elapsed() >= self.checkpoint_every)
            || log.wal.size() >= self.shared.checkpoint_bytes;
        if checkpoint_due && self.start_checkpoint(log) {
            return;
        }
        if log.pending.is_empty() {
            self.answer_syncs(u64::MAX, &Ok(()));
        } else if log.pending_bytes >= self.shared.apply_bytes || !self.syncs.is_empty() {
            self.start_apply(log);
        }
    }

    /// Answers the readers that need no group after `applied`.
    fn answer_syncs(&mut self, applied: u64, res: &Result<(), Arc<StoreError>>) {
        if self.syncs.is_empty() {
            return;
        }
        let (ready, waiting) = std::mem::take(&mut self.syncs)
            .into_iter()
            .partition::<Vec<_>, _>(|&(needed, _)| needed <= applied);
        self.syncs = waiting;
        for (_, reply) in ready {
            let _ = reply.send(res.clone());
        }
    }

    /// Logs a group and reports its outcome to its rooms.
    fn log_group(
        &mut self,
        shared: &Shared,
        writes: Vec<RoomWrite>,
        dones: Vec<oneshot::Sender<CommitResult>>,
    ) {
        let started = Instant::now();
        let entries = writes.iter().map(|w| w.entries.len() + w.state.len()).sum();
        let res = {
            let mut log = shared.lock();
            let ready = if self.broken {
                self.recover(&mut log)
            } else if shared.full(&log) {
                // Back-pressure: the queue fills and rooms wait until the checkpoint is done.
                self.apply_pending(&mut log)
            } else {
                Ok(())
            };
            ready.and_then(|()| self.commit_logged(&mut log, writes))
        };
        report(dones, res, entries, started);
    }

    /// Logs the group (durable mode: with one fsync) and acknowledges it. Its application to redb
    /// waits in `pending`, unless the rooms need something only redb can tell them now (a new
    /// room's id, the first seq left after a trim).
    fn commit_logged(
        &mut self,
        log: &mut Log,
        writes: Vec<RoomWrite>,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        let n = log.commit_no + 1;
        let sync = !self.shared.relaxed;
        let mut writes = writes;
        for w in &mut writes {
            if let RoomRef::New { name, epoch } = &w.room {
                w.room = RoomRef::Created {
                    id: log.next_room_id,
                    name: name.clone(),
                    epoch: *epoch,
                };
                log.next_room_id += 1;
            }
        }
        // A trim's outcome (the first seq left) comes from redb.
        let needs_redb = writes.iter().any(|w| w.trim.is_some());
        if needs_redb {
            // The groups of a failed job are only in the log: replayed first, or the commit
            // below would record this group as applied without them.
            self.await_job(log);
            if self.broken {
                self.recover(log)?;
            }
            let txn = self.begin(log, redb::Durability::None)?;
            self.write_pending(&txn, log, false)?;
            let infos = self.apply(&txn, writes.iter(), Some(n))?;
            let start = log.wal.size();
            // On a log failure the transaction is dropped, which aborts it: redb stays as it was.
            log.wal.append(n, writes.iter(), sync)?;
            if let Err(e) = txn.commit() {
                log.wal.undo_last(start);
                self.broken = true;
                return Err(StoreError::redb(e));
            }
            log.clear_pending(&self.store);
            log.commit_no = n;
            self.applied = n;
            self.dirty = true;
            return Ok(infos);
        }
        log.wal.append(n, writes.iter(), sync)?;
        log.commit_no = n;
        let infos = writes
            .iter()
            .map(|w| CommitInfo {
                room_id: w.room.id().expect("new rooms were given ids above"),
                earliest: None,
            })
            .collect();
        log.push_pending(&self.store, n, writes);
        Ok(infos)
    }

    /// Applies the pending groups to redb now (back-pressure: they reached their bound while a
    /// checkpoint committed).
    fn apply_pending(&mut self, log: &mut Log) -> Result<(), StoreError> {
        self.await_job(log);
        if !self.broken && !log.pending.is_empty() {
            self.start_apply(log);
            self.await_job(log);
        }
        if self.broken {
            // Recovery replays them (and whatever a failed job held) from the log.
            return self.recover(log);
        }
        Ok(())
    }

    /// Writes the pending groups into `txn` (they stay pending until it commits); with
    /// `record`, also the number of the last one as the last group applied.
    fn write_pending(
        &mut self,
        txn: &redb::WriteTransaction,
        log: &Log,
        record: bool,
    ) -> Result<(), StoreError> {
        let Some(&(last, _)) = log.pending.last() else {
            return Ok(());
        };
        let writes = log.pending.iter().flat_map(|(_, w)| w);
        apply_logged(txn, writes, record.then_some(last)).inspect_err(|_| self.broken = true)
    }

    /// Hands the pending groups to the applier thread, to be written to redb without an fsync
    /// (they are in the log). Until that commits they are not readable from redb, so readers
    /// still ask for them (the pending flag stays up).
    fn start_apply(&mut self, log: &mut Log) {
        let groups = log.take_pending();
        let last = groups.last().map_or(self.applied, |&(n, _)| n);
        let job = Job {
            groups,
            checkpoint: None,
            started: Instant::now(),
        };
        if self.send_job(job, last, false) {
            self.dirty = true;
        }
    }

    /// Begins a checkpoint, unless nothing changed since the last one: the log switches to its
    /// other file at once, and the applier thread commits every pending group durably with the
    /// record that the log's next cycle starts there. Returns whether one began.
    fn start_checkpoint(&mut self, log: &mut Log) -> bool {
        let nothing_new = !self.dirty && log.pending.is_empty();
        if self.broken || nothing_new {
            return false;
        }
        let started = Instant::now();
        let (file, salt) = log.wal.position();
        let left = log.wal.switch();
        let groups = log.take_pending();
        let last = groups.last().map_or(self.applied, |&(n, _)| n);
        let next = NextCycle {
            file: 1 - file,
            salt: next_salt(salt),
            left: self.shared.relaxed.then_some(left),
        };
        let job = Job {
            groups,
            checkpoint: Some(next),
            started,
        };
        if !self.send_job(job, last, true) {
            return false;
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        true
    }

    fn send_job(&mut self, job: Job, last: u64, checkpoint: bool) -> bool {
        if let Err(e) = self.applier.send(job) {
            self.job_failed(&e);
            return false;
        }
        self.job = Some(Running { checkpoint, last });
        true
    }

    /// Waits for the applier's job, if any.
    fn await_job(&mut self, log: &mut Log) {
        if self.job.is_some() {
            let res = self.applier.wait();
            self.job_done(log, res);
        }
    }

    fn job_done(&mut self, log: &mut Log, res: Result<Duration, StoreError>) {
        let Some(job) = self.job.take() else {
            return;
        };
        match res {
            Ok(took) => {
                if job.checkpoint {
                    crate::metrics::checkpoint(took);
                } else {
                    crate::metrics::applied(took);
                }
                self.applied = job.last;
                if log.pending.is_empty() {
                    self.store.set_pending(false);
                }
                self.answer_syncs(job.last, &Ok(()));
            }
            // Recovery replays the groups it held from the log: both files are intact.
            Err(e) => {
                self.job_failed(&e);
                self.answer_syncs(u64::MAX, &Err(Arc::new(e)));
            }
        }
    }

    fn job_failed(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "writing logged groups to redb failed; replaying the log after the next group");
        crate::metrics::commit_failed();
        self.broken = true;
    }

    /// At shutdown: makes everything logged durable in redb.
    fn final_checkpoint(&mut self, log: &mut Log) {
        self.await_job(log);
        if self.broken {
            if let Err(e) = self.recover(log) {
                tracing::error!(error = %e, "final recovery failed; the log is replayed at the next start");
                self.answer_syncs(u64::MAX, &Err(Arc::new(e)));
                return;
            }
        }
        self.start_checkpoint(log);
        self.await_job(log);
        let res = if self.broken {
            Err(Arc::new(StoreError::Closed))
        } else {
            Ok(())
        };
        self.answer_syncs(u64::MAX, &res);
    }

    /// Reopens redb if it failed, applies the groups logged since its last durable commit,
    /// commits durably and rewinds the log.
    fn recover(&mut self, log: &mut Log) -> Result<(), StoreError> {
        self.await_job(log);
        if self.broken {
            self.store.reopen()?;
            self.broken = false;
        }
        // Whatever was pending is in the log: the replay below applies it. (The pending flag
        // stays up until then, so readers wait for it.)
        log.pending.clear();
        log.pending_bytes = 0;
        let (applied, file, salt) = self.log_position()?;
        let pending = log.wal.scan(file, salt, applied)?;
        if let Some(first) = pending.first().filter(|l| l.commit != applied + 1) {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "write-ahead log starts at group {} but the database holds groups up to {applied}",
                    first.commit
                ),
            )));
        }
        let last = pending.last().map_or(applied, |l| l.commit);
        let started = Instant::now();
        let txn = self.begin(log, redb::Durability::Immediate)?;
        self.apply(&txn, pending.iter().flat_map(|l| &l.writes), Some(last))?;
        log.next_room_id = next_room_id(&txn)?;
        // A new salt for the log's next cycle: records left from this one (say, the unsynced
        // tail of a relaxed-mode log cut by a power loss, whose numbers will be used again)
        // then fail their CRC instead of passing for new ones.
        let salt = rand::random::<u64>();
        record_cycle(&txn, file, salt)?;
        txn.commit().map_err(|e| self.fail(e))?;
        if !pending.is_empty() {
            tracing::info!(
                groups = pending.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
        }
        log.wal.reset(file, salt);
        log.commit_no = last;
        self.applied = last;
        self.store.set_pending(false);
        self.dirty = false;
        Ok(())
    }

    /// The last group applied to the durable database, and the file and salt of the log's
    /// cycle that follows it.
    fn log_position(&self) -> Result<(u64, usize, u64), StoreError> {
        let txn = self.store.db()?.begin_read().map_err(StoreError::redb)?;
        let meta = txn.open_table(META).map_err(StoreError::redb)?;
        let get = |key| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(StoreError::redb)?
                .map_or(0, |g| g.value()))
        };
        let file = usize::from(get(WAL_FILE)? == 1);
        Ok((get(WAL_COMMIT)?, file, get(WAL_SALT)?))
    }

    /// Begins a write transaction, after the applier's job, if any (it holds redb's write
    /// lock).
    fn begin(
        &mut self,
        log: &mut Log,
        durability: redb::Durability,
    ) -> Result<redb::WriteTransaction, StoreError> {
        self.await_job(log);
        let mut txn = self.store.db()?.begin_write().map_err(|e| self.fail(e))?;
        // Quick repair makes reopening after a crash take milliseconds instead of a full scan;
        // it costs a second fsync, so only durable commits (checkpoints) carry it.
        if matches!(durability, redb::Durability::Immediate) {
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(durability).map_err(|e| self.fail(e))?;
        }
        Ok(txn)
    }

    /// Marks the database for reopening: redb refuses everything after an I/O error.
    fn fail(&mut self, e: impl Into<redb::Error>) -> StoreError {
        self.broken = true;
        StoreError::redb(e)
    }

    /// Writes `writes` into `txn`; records `commit` as the last applied log group.
    fn apply<'a>(
        &mut self,
        txn: &redb::WriteTransaction,
        writes: impl Iterator<Item = &'a RoomWrite>,
        commit: Option<u64>,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        apply(txn, writes, commit).inspect_err(|_| self.broken = true)
    }
}

/// Sends each room its group's outcome.
fn report(
    dones: Vec<oneshot::Sender<CommitResult>>,
    res: Result<Vec<CommitInfo>, StoreError>,
    entries: usize,
    started: Instant,
) {
    match res {
        Ok(infos) => {
            crate::metrics::commit(entries, dones.len(), started.elapsed());
            for (done, info) in dones.into_iter().zip(infos) {
                let _ = done.send(Ok(info));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batches = dones.len(), "commit failed; nothing in it was stored");
            crate::metrics::commit_failed();
            let e = Arc::new(e);
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
            // Let a transient condition (a full disk being cleaned) pass before the next try.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Roughly what a write holds in memory while it is pending.
fn write_bytes(w: &RoomWrite) -> usize {
    let entries: usize = w.entries.iter().map(|(_, r)| r.len() + 32).sum();
    let state: usize = w
        .state
        .iter()
        .map(|(k, r)| k.len() + r.as_ref().map_or(0, Vec::len) + 48)
        .sum();
    entries + state + 64
}

fn apply<'a>(
    txn: &redb::WriteTransaction,
    writes: impl Iterator<Item = &'a RoomWrite>,
    commit: Option<u64>,
) -> Result<Vec<CommitInfo>, StoreError> {
    let mut infos = Vec::new();
    let mut rooms = txn.open_table(ROOMS).map_err(StoreError::redb)?;
    let mut log = txn.open_table(LOG).map_err(StoreError::redb)?;
    let mut state = txn.open_table(STATE).map_err(StoreError::redb)?;
    let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
    for w in writes {
        let room_id = match &w.room {
            RoomRef::Id(id) => *id,
            RoomRef::Created { id, name, epoch } => {
                create_room(&mut rooms, &mut meta, name, *id, *epoch)?;
                *id
            }
            RoomRef::New { name, epoch } => {
                let next = meta
                    .get(NEXT_ROOM_ID)
                    .map_err(StoreError::redb)?
                    .map_or(1, |g| g.value());
                meta.insert(NEXT_ROOM_ID, next + 1)
                    .map_err(StoreError::redb)?;
                rooms
                    .insert(&**name, (next, *epoch))
                    .map_err(StoreError::redb)?;
                next
            }
        };
        for (seq, rec) in &w.entries {
            log.insert((room_id, *seq), rec.as_slice())
                .map_err(StoreError::redb)?;
        }
        apply_state(&mut state, room_id, &w.state)?;
        let earliest = match w.trim {
            Some(t) => Some(trim(&mut log, room_id, t)?),
            None => None,
        };
        infos.push(CommitInfo { room_id, earliest });
    }
    if let Some(commit) = commit {
        meta.insert(WAL_COMMIT, commit).map_err(StoreError::redb)?;
    }
    Ok(infos)
}

/// Deletes the room's entries below the cut; returns the first retained seq.
fn trim(log: &mut redb::Table<(u64, u64), &[u8]>, room: u64, t: Trim) -> Result<u64, StoreError> {
    let mut cut = t.before_seq;
    if let Some(older_than) = t.older_than_ms {
        for entry in log
            .range((room, cut)..=(room, t.head))
            .map_err(StoreError::redb)?
        {
            let (k, v) = entry.map_err(StoreError::redb)?;
            match record::decode_log(v.value()) {
                Some(r) if r.ts < older_than => cut = k.value().1 + 1,
                _ => break,
            }
        }
    }
    let cut = cut.min(t.head);
    log.retain_in((room, 0)..(room, cut), |_, _| false)
        .map_err(StoreError::redb)?;
    let first = log
        .range((room, 0)..=(room, u64::MAX))
        .map_err(StoreError::redb)?
        .next()
        .transpose()
        .map_err(StoreError::redb)?
        .map(|(k, _)| k.value().1);
    Ok(first.unwrap_or(t.head + 1))
}
