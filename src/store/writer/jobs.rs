//! The writer thread's jobs for the applier thread: applies, checkpoints, and the readers
//! waiting for them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Running, WalState, Writer};
use crate::store::applier::{Job, NextCycle};
use crate::store::apply::apply;
use crate::store::error::StoreError;
use crate::store::wal::next_salt;

impl Writer {
    /// Gives the applier thread its next job if it is free and one is due: a checkpoint (on the
    /// flush tick once `checkpoint_every` has passed, or once the log holds `checkpoint_bytes`),
    /// else an apply (once the pending groups hold `apply_bytes`, or a reader waits for them).
    /// Readers are answered once nothing they may need is left outside redb.
    pub(super) fn schedule(&mut self, ws: &mut WalState, tick: bool) {
        if self.job.is_some() {
            return;
        }
        if self.broken {
            if !self.catch_ups.is_empty() {
                let res = self.recover(ws).map_err(Arc::new);
                if let Err(e) = &res {
                    tracing::error!(error = %e, "recovery for a reader failed; retrying after the next group");
                }
                self.answer_catch_ups(u64::MAX, &res);
            }
            return;
        }
        let checkpoint_due = (tick && self.last_checkpoint.elapsed() >= self.checkpoint_every)
            || ws.wal.size() >= self.shared.checkpoint_bytes;
        if checkpoint_due && self.start_checkpoint(ws) {
            return;
        }
        if ws.pending.is_empty() {
            self.answer_catch_ups(u64::MAX, &Ok(()));
        } else if ws.pending_bytes >= self.shared.apply_bytes || !self.catch_ups.is_empty() {
            self.start_apply(ws);
        }
    }

    /// Answers the readers that need no group after `applied`.
    pub(super) fn answer_catch_ups(&mut self, applied: u64, res: &Result<(), Arc<StoreError>>) {
        if self.catch_ups.is_empty() {
            return;
        }
        let (ready, waiting) = std::mem::take(&mut self.catch_ups)
            .into_iter()
            .partition::<Vec<_>, _>(|&(needed, _)| needed <= applied);
        self.catch_ups = waiting;
        for (_, reply) in ready {
            reply.answer(res);
        }
    }

    /// Applies the pending groups to redb now (back-pressure: they reached their bound while a
    /// checkpoint committed).
    pub(super) fn apply_pending(&mut self, ws: &mut WalState) -> Result<(), StoreError> {
        self.await_job(ws);
        if !self.broken && !ws.pending.is_empty() {
            self.start_apply(ws);
            self.await_job(ws);
        }
        if self.broken {
            // Recovery replays them (and whatever a failed job held) from the log.
            return self.recover(ws);
        }
        Ok(())
    }

    /// Writes the pending groups into `txn` (they stay pending until it commits); with
    /// `record`, also the number of the last one as the last group applied.
    pub(super) fn write_pending(
        &mut self,
        txn: &redb::WriteTransaction,
        ws: &WalState,
        record: bool,
    ) -> Result<(), StoreError> {
        let Some(&(last, _)) = ws.pending.last() else {
            return Ok(());
        };
        let writes = ws.pending.iter().flat_map(|(_, w)| w);
        apply(txn, writes, record.then_some(last))
            .map(drop)
            .inspect_err(|_| self.broken = true)
    }

    /// Hands the pending groups to the applier thread, to be written to redb without an fsync
    /// (they are in the log). Until that commits they are not readable from redb, so readers
    /// still ask for them (the pending flag stays up).
    pub(super) fn start_apply(&mut self, ws: &mut WalState) {
        let groups = ws.take_pending();
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
    pub(super) fn start_checkpoint(&mut self, ws: &mut WalState) -> bool {
        let nothing_new = !self.dirty && ws.pending.is_empty();
        if self.broken || nothing_new {
            return false;
        }
        let started = Instant::now();
        let (file, salt) = ws.wal.position();
        let left = ws.wal.switch();
        let groups = ws.take_pending();
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

    pub(super) fn send_job(&mut self, job: Job, last: u64, checkpoint: bool) -> bool {
        if let Err(e) = self.applier.send(job) {
            self.job_failed(&e);
            return false;
        }
        self.job = Some(Running { checkpoint, last });
        true
    }

    /// Waits for the applier's job, if any.
    pub(super) fn await_job(&mut self, ws: &mut WalState) {
        if self.job.is_some() {
            let res = self.applier.wait();
            self.job_done(ws, res);
        }
    }

    pub(super) fn job_done(&mut self, ws: &mut WalState, res: Result<Duration, StoreError>) {
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
                if ws.pending.is_empty() {
                    self.store.set_pending(false);
                }
                self.answer_catch_ups(job.last, &Ok(()));
            }
            // Recovery replays the groups it held from the log: both files are intact.
            Err(e) => {
                self.job_failed(&e);
                self.answer_catch_ups(u64::MAX, &Err(Arc::new(e)));
            }
        }
    }

    pub(super) fn job_failed(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "writing logged groups to redb failed; replaying the log after the next group");
        crate::metrics::commit_failed();
        self.shared.failing.store(true, Ordering::Relaxed);
        self.broken = true;
    }

    /// At shutdown: makes everything logged durable in redb.
    pub(super) fn final_checkpoint(&mut self, ws: &mut WalState) {
        self.await_job(ws);
        if self.broken {
            if let Err(e) = self.recover(ws) {
                tracing::error!(error = %e, "final recovery failed; the log is replayed at the next start");
                self.answer_catch_ups(u64::MAX, &Err(Arc::new(e)));
                return;
            }
        }
        self.start_checkpoint(ws);
        self.await_job(ws);
        let res = if self.broken {
            Err(Arc::new(StoreError::Closed))
        } else {
            Ok(())
        };
        self.answer_catch_ups(u64::MAX, &res);
    }
}
