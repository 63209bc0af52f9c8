//! Pages a subscriber through history from disk, then hands it to the room for the live switch.
//!
//! The task waits until the subscriber's outbox has room for a page in the half left to
//! replay, reads the page, and gives it to the room task, which queues it (as one item: the
//! page's frames are back to back in one buffer) and decides (under single ownership, so no
//! entry can slip between) whether the subscriber is now live or needs another page.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Command, InboxSender};
use crate::engine::Engine;
use crate::outbox::{CloseReason, Outbox};

pub(crate) struct Replay {
    pub engine: Engine,
    pub room_tx: InboxSender,
    pub room_id: u64,
    pub room: Arc<str>,
    pub conn: Arc<str>,
    pub token: u64,
    pub outbox: Outbox,
    pub from: u64,
    pub page: usize,
    /// Bytes per page (`limits.frame`): a page of large entries is shorter, so a replay holds
    /// about one frame's worth of entries however large they are.
    pub page_bytes: usize,
}

impl Replay {
    pub(crate) async fn run(self) {
        let mut from = self.from;
        loop {
            // The page's frames: its MessagePack bytes and a WebSocket header each.
            let room = self.page_bytes + self.page * crate::wire::MAX_HEADER;
            if !self.outbox.wait_replay_room(room).await {
                return;
            }
            let read = self
                .engine
                .read_forward((self.room_id, &self.room), from, self.page, self.page_bytes)
                .await;
            let frames = match read {
                Ok(frames) => frames,
                Err(e) => return self.fail(&e.to_string()),
            };
            let (next, wait) = oneshot::channel();
            let page = Command::ReplayPage {
                conn: self.conn.clone(),
                token: self.token,
                frames,
                next,
            };
            if self.room_tx.send(Box::new(page)).await.is_err() {
                return;
            }
            match wait.await {
                Ok(Some(next)) => from = next,
                _ => return,
            }
        }
    }

    /// The client cannot be given a complete replay: close it so it reconnects and resumes.
    fn fail(&self, error: &str) {
        tracing::error!(conn = %self.conn, error, "replay read failed; closing the connection");
        self.outbox.close(CloseReason::Internal);
    }
}
