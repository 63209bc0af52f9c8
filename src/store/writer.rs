//! The single writer thread and its group commit.
//!
//! redb has one writer at a time, so all writes go through one OS thread fed by a bounded
//! queue. The thread waits for the first request, takes everything else already queued (up to
//! `storage.max_batch`) and writes it all as one group: while one group is being made durable
//! the next accumulates, so throughput grows with concurrency instead of paying one fsync per
//! message.
//!
//! Each group is appended to the write-ahead log ([`super::wal`]) and acknowledged; it is
//! applied to redb later, many groups at once ([`Writer::apply_pending`]), and redb is made
//! durable by periodic checkpoints, after which the log starts over.
//! - durable mode: the append is followed by one `fdatasync` before the acks.
//! - relaxed mode: the append is only written (it survives a crash of the process at once); the
//!   log is fsynced on the flush timer (`storage.flush_interval_ms`), so a power cut can lose
//!   that last interval.
//!
//! The writer never waits on a room: completions go back through oneshot channels, so there is
//! no cycle of awaited bounded queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::wal::Wal;
use super::{
    record, Store, StoreError, LOG, META, NEXT_ROOM_ID, ROOMS, STATE, WAL_COMMIT, WAL_SALT,
};
use crate::config::{Durability, StorageConfig};

/// Which room a batch belongs to. A room gets its id in the transaction of its first write.
#[derive(Debug, Clone)]
pub enum RoomRef {
    Id(u64),
    New { name: Arc<str>, epoch: u64 },
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
    pub done: oneshot::Sender<Result<CommitInfo, Arc<StoreError>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct CommitInfo {
    pub room_id: u64,
    /// The room's first retained seq after a trim.
    pub earliest: Option<u64>,
}

pub(crate) enum WriteReq {
    Batch(RoomBatch),
    /// The flush tick: relaxed mode fsyncs the log; a checkpoint follows if one is due.
    Flush,
    /// Apply every logged group to redb so a reader sees it (see [`Store::catch_up`]).
    Sync(oneshot::Sender<Result<(), Arc<StoreError>>>),
    Stop(oneshot::Sender<()>),
}

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteReq>,
}

impl WriterHandle {
    /// Brings the database up to date with the write-ahead log (after a crash, the groups
    /// logged since the last checkpoint), then starts the writer thread. Blocking.
    pub fn spawn(store: Store, cfg: &StorageConfig) -> Result<WriterHandle, StoreError> {
        let (tx, rx) = mpsc::channel(cfg.queue);
        let wal = Wal::open(store.dir())?;
        store.connect_writer(tx.clone());
        let mut writer = Writer {
            store,
            pending: Vec::new(),
            pending_bytes: 0,
            apply_bytes: cfg.apply_bytes,
            broken: false,
            relaxed: cfg.durability == Durability::Relaxed,
            dirty: false,
            max_batch: cfg.max_batch,
            wal,
            commit_no: 0,
            checkpoint_bytes: cfg.checkpoint_bytes,
            checkpoint_every: Duration::from_millis(cfg.checkpoint_interval_ms),
            last_checkpoint: Instant::now(),
        };
        writer.recover()?;
        std::thread::Builder::new()
            .name("roomd-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(WriterHandle { tx })
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
    /// Groups that are in the log (and acknowledged) but not yet in redb. They
    /// are applied together, so a room's B-tree leaf is rewritten once per apply rather than once
    /// per group; readers ask for them first ([`Store::catch_up`]).
    pending: Vec<(u64, Vec<RoomWrite>)>,
    pending_bytes: usize,
    /// Apply the pending groups once they hold this many bytes.
    apply_bytes: usize,
    /// A redb operation failed: reopen the database (and replay the log) before the next one.
    broken: bool,
    relaxed: bool,
    /// A non-durable redb commit happened since the last durable one.
    dirty: bool,
    max_batch: usize,
    wal: Wal,
    /// The number of the last group logged.
    commit_no: u64,
    /// Checkpoint once the log holds this many bytes...
    checkpoint_bytes: u64,
    /// ... or on the first flush tick this long after the last checkpoint.
    checkpoint_every: Duration,
    last_checkpoint: Instant,
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
        let mut writes = Vec::with_capacity(reqs.len());
        let mut dones = Vec::with_capacity(reqs.len());
        let mut syncs = Vec::new();
        let mut flush = false;
        let mut stop = None;
        for req in reqs.drain(..) {
            match req {
                WriteReq::Batch(b) => {
                    writes.push(b.write);
                    dones.push(b.done);
                }
                WriteReq::Flush => flush = true,
                WriteReq::Sync(s) => syncs.push(s),
                WriteReq::Stop(s) => stop = Some(s),
            }
        }
        if !writes.is_empty() {
            let started = Instant::now();
            let entries = writes.iter().map(|w| w.entries.len() + w.state.len()).sum();
            let res = if self.broken { self.recover() } else { Ok(()) }
                .and_then(|()| self.commit_logged(writes));
            report(dones, res, entries, started);
        }
        if !syncs.is_empty() || self.pending_bytes >= self.apply_bytes {
            let res = self.apply_pending().map_err(Arc::new);
            if let Err(e) = &res {
                tracing::error!(error = %e, "applying logged groups failed; retrying after the next group");
            }
            for s in syncs {
                let _ = s.send(res.clone());
            }
        }
        if flush && self.relaxed && self.wal.size() > 0 {
            if let Err(e) = self.wal.sync() {
                tracing::error!(error = %e, "write-ahead log fsync failed");
            }
        }
        let checkpoint_due = (flush && self.last_checkpoint.elapsed() >= self.checkpoint_every)
            || stop.is_some()
            || self.wal.size() >= self.checkpoint_bytes;
        if checkpoint_due && (self.dirty || !self.pending.is_empty()) && !self.broken {
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "checkpoint failed; retrying after the next group");
                crate::metrics::commit_failed();
                self.broken = true;
            }
        }
        stop
    }

    /// Logs the group (durable mode: with one fsync) and acknowledges it. Its application to redb
    /// waits in `pending`, unless the rooms need something only redb can tell them now (a new
    /// room's id, the first seq left after a trim).
    fn commit_logged(&mut self, writes: Vec<RoomWrite>) -> Result<Vec<CommitInfo>, StoreError> {
        let n = self.commit_no + 1;
        let needs_redb = writes
            .iter()
            .any(|w| matches!(w.room, RoomRef::New { .. }) || w.trim.is_some());
        if needs_redb {
            let txn = self.begin(redb::Durability::None)?;
            self.write_pending(&txn, false)?;
            let infos = self.apply(&txn, writes.iter(), Some(n))?;
            let start = self.wal.size();
            // On a log failure the transaction is dropped, which aborts it: redb stays as it was.
            self.wal.append(n, writes.iter(), !self.relaxed)?;
            if let Err(e) = txn.commit() {
                self.wal.undo_last(start);
                self.broken = true;
                return Err(StoreError::redb(e));
            }
            self.clear_pending();
            self.commit_no = n;
            self.dirty = true;
            return Ok(infos);
        }
        self.wal.append(n, writes.iter(), !self.relaxed)?;
        self.commit_no = n;
        let infos = writes
            .iter()
            .map(|w| CommitInfo {
                room_id: match w.room {
                    RoomRef::Id(id) => id,
                    RoomRef::New { .. } => unreachable!("a new room is applied at once"),
                },
                earliest: None,
            })
            .collect();
        self.pending_bytes += writes.iter().map(write_bytes).sum::<usize>();
        self.pending.push((n, writes));
        self.store.set_pending(true);
        Ok(infos)
    }

    /// Applies the pending groups to redb (not durably: they are in the log).
    fn apply_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.broken {
            // Recovery replays them from the log.
            return self.recover();
        }
        let txn = self.begin(redb::Durability::None)?;
        self.write_pending(&txn, true)?;
        txn.commit().map_err(|e| self.fail(e))?;
        self.clear_pending();
        self.dirty = true;
        Ok(())
    }

    /// Writes the pending groups into `txn` (they stay pending until it commits); with
    /// `record`, also the number of the last one as the last group applied.
    fn write_pending(
        &mut self,
        txn: &redb::WriteTransaction,
        record: bool,
    ) -> Result<(), StoreError> {
        let Some(&(last, _)) = self.pending.last() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.pending);
        let res = self.apply(
            txn,
            pending.iter().flat_map(|(_, w)| w),
            record.then_some(last),
        );
        self.pending = pending;
        res.map(|_| ())
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.store.set_pending(false);
    }

    /// Makes every applied or pending group durable in redb, so the log can start over.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let txn = self.begin(redb::Durability::Immediate)?;
        self.write_pending(&txn, true)?;
        let salt = new_salt(&txn)?;
        txn.commit().map_err(|e| self.fail(e))?;
        self.clear_pending();
        self.wal.rewind(salt);
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        crate::metrics::checkpoint(started.elapsed());
        Ok(())
    }

    /// Reopens redb if it failed, applies the groups logged since its last durable commit,
    /// commits durably and rewinds the log.
    fn recover(&mut self) -> Result<(), StoreError> {
        if self.broken {
            self.store.reopen()?;
            self.broken = false;
        }
        // Whatever was pending is in the log: the replay below applies it.
        self.clear_pending();
        let (applied, salt) = self.log_position()?;
        let pending: Vec<_> = self
            .wal
            .scan(salt)?
            .into_iter()
            .filter(|l| l.commit > applied)
            .collect();
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
        let txn = self.begin(redb::Durability::Immediate)?;
        self.apply(&txn, pending.iter().flat_map(|l| &l.writes), Some(last))?;
        // A new salt for the log's next cycle: records left from this one (say, the unsynced
        // tail of a relaxed-mode log cut by a power loss, whose numbers will be used again)
        // then fail their CRC instead of passing for new ones.
        let salt = new_salt(&txn)?;
        txn.commit().map_err(|e| self.fail(e))?;
        if !pending.is_empty() {
            tracing::info!(
                groups = pending.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
        }
        self.wal.rewind(salt);
        self.commit_no = last;
        self.dirty = false;
        Ok(())
    }

    /// The last group applied to the durable database, and the salt of the log's cycle.
    fn log_position(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.store.db()?.begin_read().map_err(StoreError::redb)?;
        let meta = txn.open_table(META).map_err(StoreError::redb)?;
        let get = |key| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(StoreError::redb)?
                .map_or(0, |g| g.value()))
        };
        Ok((get(WAL_COMMIT)?, get(WAL_SALT)?))
    }

    fn begin(
        &mut self,
        durability: redb::Durability,
    ) -> Result<redb::WriteTransaction, StoreError> {
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

/// Picks the salt of the log's next cycle and records it in `txn` (a durable commit, after which
/// the log starts over).
fn new_salt(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let salt = rand::random::<u64>();
    let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
    meta.insert(WAL_SALT, salt).map_err(StoreError::redb)?;
    Ok(salt)
}

/// Sends each room its group's outcome.
fn report(
    dones: Vec<oneshot::Sender<Result<CommitInfo, Arc<StoreError>>>>,
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
        for (key, rec) in &w.state {
            match rec {
                Some(rec) => state.insert((room_id, key.as_str()), rec.as_slice()),
                None => state.remove((room_id, key.as_str())),
            }
            .map_err(StoreError::redb)?;
        }
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
