//! Recovery: bringing redb up to date with the write-ahead log.

use std::time::Instant;

use super::{WalState, Writer};
use crate::store::apply::{self, next_room_id, record_cycle, wal_position, Applicable};
use crate::store::error::StoreError;
use crate::store::model::{CommitInfo, RoomWrite};

impl Writer {
    /// Reopens redb if it failed, applies the groups logged since its last durable commit,
    /// commits durably and starts the write-ahead log over.
    pub(super) fn recover(&mut self, ws: &mut WalState) -> Result<(), StoreError> {
        self.await_job(ws);
        if self.broken {
            self.store.reopen()?;
            self.broken = false;
        }
        // Whatever was pending is in the write-ahead log: the replay below applies it. (The pending flag
        // stays up until then, so readers wait for it.)
        ws.pending.clear();
        ws.pending_bytes = 0;
        let (applied, file, salt) = wal_position(&*self.store.db()?)?;
        let pending = ws.wal.scan(file, salt, applied)?;
        if let Some(first) = pending.first().filter(|l| l.commit != applied + 1) {
            return Err(StoreError::LogGap {
                first: first.commit,
                applied,
            });
        }
        let last = pending.last().map_or(applied, |l| l.commit);
        let started = Instant::now();
        let txn = self.begin(ws, redb::Durability::Immediate)?;
        self.apply(&txn, pending.iter().flat_map(|l| &l.writes), Some(last))?;
        ws.next_room_id = next_room_id(&txn)?;
        // A new salt for the log's next cycle: records left from this one (say, the unsynced
        // tail of a relaxed-mode log cut by a power loss, whose numbers will be used again)
        // then fail their CRC instead of passing for new ones.
        let salt = rand::random::<u64>();
        record_cycle(&txn, file, salt)?;
        txn.commit().map_err(|e| self.fail(e))?;
        if !pending.is_empty() {
            tracing::info!(
                groups = pending.len(),
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "write-ahead log replayed"
            );
        }
        ws.wal.reset(file, salt);
        ws.commit_no = last;
        self.applied = last;
        self.store.set_pending(false);
        self.dirty = false;
        Ok(())
    }

    /// Begins a write transaction, after the applier's job, if any (it holds redb's write
    /// lock).
    pub(super) fn begin(
        &mut self,
        ws: &mut WalState,
        durability: redb::Durability,
    ) -> Result<redb::WriteTransaction, StoreError> {
        self.await_job(ws);
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
    pub(super) fn fail(&mut self, e: impl Into<StoreError>) -> StoreError {
        self.broken = true;
        e.into()
    }

    /// Writes `writes` into `txn`; records `commit` as the last applied write-ahead log group.
    pub(super) fn apply<'a, R: Applicable + 'a>(
        &mut self,
        txn: &redb::WriteTransaction,
        writes: impl Iterator<Item = &'a RoomWrite<R>> + Clone,
        commit: Option<u64>,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        apply::apply(txn, writes, commit).inspect_err(|_| self.broken = true)
    }
}
