//! The writer thread's turn: one group of requests, logged and acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Shared, WalState, Writer};
use crate::store::error::StoreError;
use crate::store::model::{CommitInfo, CommitResult, LoggedRoom, LoggedWrite, RoomRef, RoomWrite};
use crate::store::request::{CatchUpRequest, WriteReq};

impl Writer {
    /// Writes one group; returns the stop request if one was in it.
    pub(super) fn process(&mut self, reqs: &mut Vec<WriteReq>) -> Option<oneshot::Sender<()>> {
        let shared = self.shared.clone();
        let Requests {
            writes,
            dones,
            catch_ups,
            tick,
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
        if tick && shared.relaxed {
            fsync_wal(&shared);
        }
        let mut ws = shared.lock();
        ws.nudged = false;
        let logged = ws.commit_no;
        self.catch_ups
            .extend(catch_ups.into_iter().map(|s| (logged, s)));
        if stop.is_some() {
            self.final_checkpoint(&mut ws);
        } else {
            self.schedule(&mut ws, tick);
        }
        stop
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
            let mut ws = shared.lock();
            let ready = if self.broken {
                self.recover(&mut ws)
            } else if shared.full(&ws) {
                // Back-pressure: the queue fills and rooms wait until the checkpoint is done.
                self.apply_pending(&mut ws)
            } else {
                Ok(())
            };
            ready.and_then(|()| self.commit_logged(&mut ws, writes))
        };
        shared.failing.store(res.is_err(), Ordering::Relaxed);
        report(dones, res, entries, started);
    }

    /// Logs the group (durable mode: with one fsync) and acknowledges it. Its application to redb
    /// waits in `pending`, unless the rooms need something only redb can tell them now (a new
    /// room's id, the first seq left after a trim).
    fn commit_logged(
        &mut self,
        ws: &mut WalState,
        writes: Vec<RoomWrite>,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        let n = ws.commit_no + 1;
        let sync = !self.shared.relaxed;
        let writes: Vec<LoggedWrite> = writes
            .into_iter()
            .map(|w| {
                let room = match w.room {
                    RoomRef::Id(id) => LoggedRoom::Id(id),
                    RoomRef::New { name, epoch } => {
                        let id = ws.next_room_id;
                        ws.next_room_id += 1;
                        LoggedRoom::Created { id, name, epoch }
                    }
                };
                LoggedWrite {
                    room,
                    entries: w.entries,
                    state: w.state,
                    redactions: w.redactions,
                    trim: w.trim,
                }
            })
            .collect();
        // A trim's outcome (the first seq left) comes from redb.
        let needs_redb = writes.iter().any(|w| w.trim.is_some());
        if needs_redb {
            // The groups of a failed job are only in the write-ahead log: replayed first, or the commit
            // below would record this group as applied without them.
            self.await_job(ws);
            if self.broken {
                self.recover(ws)?;
            }
            let txn = self.begin(ws, redb::Durability::None)?;
            self.write_pending(&txn, ws, false)?;
            let infos = self.apply(&txn, writes.iter(), Some(n))?;
            let start = ws.wal.size();
            // On a write-ahead log failure the transaction is dropped, which aborts it: redb stays as it was.
            ws.wal.append(n, writes.iter(), sync)?;
            if let Err(e) = txn.commit() {
                ws.wal.undo_last(start);
                self.broken = true;
                return Err(e.into());
            }
            ws.clear_pending(&self.store);
            ws.commit_no = n;
            self.applied = n;
            self.dirty = true;
            return Ok(infos);
        }
        ws.wal.append(n, writes.iter(), sync)?;
        ws.commit_no = n;
        let infos = writes
            .iter()
            .map(|w| CommitInfo {
                room_id: w.room.id(),
                earliest: None,
            })
            .collect();
        ws.push_pending(&self.store, n, writes);
        Ok(infos)
    }
}

/// One turn's requests, by kind.
struct Requests {
    writes: Vec<RoomWrite>,
    dones: Vec<oneshot::Sender<CommitResult>>,
    catch_ups: Vec<CatchUpRequest>,
    /// The flush timer ticked.
    tick: bool,
    stop: Option<oneshot::Sender<()>>,
}

impl Requests {
    fn sort(reqs: &mut Vec<WriteReq>) -> Requests {
        let mut out = Requests {
            writes: Vec::with_capacity(reqs.len()),
            dones: Vec::with_capacity(reqs.len()),
            catch_ups: Vec::new(),
            tick: false,
            stop: None,
        };
        for req in reqs.drain(..) {
            match req {
                WriteReq::Batch(b) => {
                    out.writes.push(b.write);
                    out.dones.push(b.done);
                }
                WriteReq::Nudge => {}
                WriteReq::Tick => out.tick = true,
                WriteReq::CatchUp(c) => out.catch_ups.push(c),
                WriteReq::Stop(s) => out.stop = Some(s),
            }
        }
        out
    }
}

/// Relaxed mode's periodic fsync of the write-ahead log, outside the lock: rooms go on logging while the
/// disk works.
fn fsync_wal(shared: &Shared) {
    let file = {
        let ws = shared.lock();
        (ws.wal.size() > 0).then(|| ws.wal.file())
    };
    if let Some(Err(e)) = file.map(|f| f.sync_data()) {
        tracing::error!(error = %e, "write-ahead log fsync failed");
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
