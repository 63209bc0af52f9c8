//! The single writer thread and its group commit.
//!
//! redb has one writer at a time and `commit` blocks on fsync, so all writes go through one
//! OS thread fed by a bounded queue. The thread waits for the first request, takes everything
//! else already queued (up to `storage.max_batch`), writes it all in one transaction and
//! commits once: while one fsync is in flight the next batch accumulates, so throughput grows
//! with concurrency instead of paying one fsync per message.
//!
//! The writer never waits on a room: completions go back through oneshot channels, so there is
//! no cycle of awaited bounded queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::ReadableTable;
use tokio::sync::{mpsc, oneshot};

use super::{record, Store, StoreError, LOG, META, NEXT_ROOM_ID, ROOMS, STATE};
use crate::config::Durability;

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

/// Everything one room writes in one transaction.
pub struct RoomBatch {
    pub room: RoomRef,
    /// (seq, log record)
    pub entries: Vec<(u64, Vec<u8>)>,
    /// (key, new state record or `None` to delete)
    pub state: Vec<(String, Option<Vec<u8>>)>,
    pub trim: Option<Trim>,
    pub done: oneshot::Sender<Result<CommitInfo, Arc<StoreError>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct CommitInfo {
    pub room_id: u64,
    /// The room's first retained seq after a trim.
    pub earliest: Option<u64>,
}

enum WriteReq {
    Batch(RoomBatch),
    /// Make every earlier commit durable (relaxed mode's periodic fsync).
    Flush,
    Stop(oneshot::Sender<()>),
}

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteReq>,
}

impl WriterHandle {
    pub fn spawn(
        store: Store,
        durability: Durability,
        queue: usize,
        max_batch: usize,
    ) -> std::io::Result<WriterHandle> {
        let (tx, rx) = mpsc::channel(queue);
        let mut writer = Writer {
            store,
            broken: false,
            relaxed: durability == Durability::Relaxed,
            dirty: false,
            max_batch,
        };
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

    /// Asks for a durable commit of everything written so far (no-op in durable mode).
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
    /// The last commit failed: reopen the database before the next one.
    broken: bool,
    relaxed: bool,
    /// A non-durable commit happened since the last durable one.
    dirty: bool,
    max_batch: usize,
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

    /// Commits one group; returns the stop request if one was in it.
    fn process(&mut self, reqs: &mut Vec<WriteReq>) -> Option<oneshot::Sender<()>> {
        let mut batches = Vec::with_capacity(reqs.len());
        let mut flush = false;
        let mut stop = None;
        for req in reqs.drain(..) {
            match req {
                WriteReq::Batch(b) => batches.push(b),
                WriteReq::Flush => flush = true,
                WriteReq::Stop(s) => stop = Some(s),
            }
        }
        let durable = !self.relaxed || flush || stop.is_some();
        if batches.is_empty() && !(durable && self.dirty) {
            return stop;
        }
        let started = Instant::now();
        let entries: usize = batches
            .iter()
            .map(|b| b.entries.len() + b.state.len())
            .sum();
        match self.commit(&batches, durable) {
            Ok(infos) => {
                self.dirty = !durable;
                crate::metrics::commit(entries, batches.len(), started.elapsed());
                for (b, info) in batches.into_iter().zip(infos) {
                    let _ = b.done.send(Ok(info));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = batches.len(), "commit failed; nothing in it was stored");
                crate::metrics::commit_failed();
                let e = Arc::new(e);
                for b in batches {
                    let _ = b.done.send(Err(e.clone()));
                }
                // redb refuses everything after an I/O error until the file is reopened.
                self.broken = true;
                // Let a transient condition (a full disk being cleaned) pass before the next try.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        stop
    }

    fn commit(
        &mut self,
        batches: &[RoomBatch],
        durable: bool,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        if self.broken {
            self.store.reopen()?;
            self.broken = false;
        }
        let mut txn = self.store.db()?.begin_write().map_err(StoreError::redb)?;
        // Quick repair: reopening after a crash takes milliseconds instead of a full scan.
        txn.set_quick_repair(true);
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(StoreError::redb)?;
        }
        let mut infos = Vec::with_capacity(batches.len());
        {
            let mut rooms = txn.open_table(ROOMS).map_err(StoreError::redb)?;
            let mut log = txn.open_table(LOG).map_err(StoreError::redb)?;
            let mut state = txn.open_table(STATE).map_err(StoreError::redb)?;
            let mut meta = txn.open_table(META).map_err(StoreError::redb)?;
            for b in batches {
                let room_id = match &b.room {
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
                for (seq, rec) in &b.entries {
                    log.insert((room_id, *seq), rec.as_slice())
                        .map_err(StoreError::redb)?;
                }
                for (key, rec) in &b.state {
                    match rec {
                        Some(rec) => state.insert((room_id, key.as_str()), rec.as_slice()),
                        None => state.remove((room_id, key.as_str())),
                    }
                    .map_err(StoreError::redb)?;
                }
                let earliest = match b.trim {
                    Some(t) => Some(trim(&mut log, room_id, t)?),
                    None => None,
                };
                infos.push(CommitInfo { room_id, earliest });
            }
        }
        txn.commit().map_err(StoreError::redb)?;
        Ok(infos)
    }
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
