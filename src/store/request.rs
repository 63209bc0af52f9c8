//! What the writer thread is asked to do, through its one queue.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::StoreError;
use super::model::RoomBatch;

pub(crate) enum WriteReq {
    Batch(RoomBatch),
    /// Rooms logged enough by themselves that an apply or a checkpoint may be due.
    Nudge,
    /// The flush timer's tick (`storage.flush_interval_ms`): relaxed mode fsyncs the write-ahead
    /// log; a checkpoint follows if one is due.
    Tick,
    /// Apply every logged group to redb so a reader sees it (see `Store::catch_up` in `db`).
    CatchUp(CatchUpRequest),
    Stop(oneshot::Sender<()>),
}

/// A reader's request that every group logged so far reach redb, and where it is answered.
pub(crate) struct CatchUpRequest {
    reply: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

impl CatchUpRequest {
    pub(crate) fn new() -> (CatchUpRequest, CatchUpWait) {
        let (reply, wait) = oneshot::channel();
        (CatchUpRequest { reply }, CatchUpWait(wait))
    }

    pub(crate) fn answer(self, res: &Result<(), Arc<StoreError>>) {
        let _ = self.reply.send(res.clone());
    }
}

/// The reader's end of a [`CatchUpRequest`].
pub(crate) struct CatchUpWait(oneshot::Receiver<Result<(), Arc<StoreError>>>);

impl CatchUpWait {
    /// Blocks until the writer answers.
    pub(crate) fn wait(self) -> Result<(), StoreError> {
        match self.0.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::CatchUp(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }
}
