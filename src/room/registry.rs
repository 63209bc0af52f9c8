//! Room name → room task handle, and the rooms' lifecycle: loading on first use, idle unload,
//! shutdown.
//!
//! The name map is behind a std `Mutex` held for a hash lookup, never across an `.await`. It is
//! not the only lock a request meets: every connection's outbox is a `Mutex`-guarded queue that
//! rooms push to and the socket task drains (see [`crate::outbox`]), and in relaxed mode a room
//! logs its own batch under the write-ahead log's lock, taken with `try_lock` so a room never
//! waits for it (see [`crate::store::writer`]). None of them is held across an `.await`.
//!
//! A room that has been idle removes itself here before it stops; a sender that raced with that
//! sees a closed inbox and simply looks the name up again, which loads a fresh room from disk.
//!
//! Rooms get what they need from the server through the [`RoomEnv`] the registry hands each
//! one, not through the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::{actor, Command, Inbox, InboxSender, RoomEnv};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::ReplyError;
use crate::peer::Peer;
use crate::ratelimit::RoomLoads;
use crate::store::WriterHandle;
use crate::webhook::Webhooks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down")]
pub(crate) struct ShuttingDown;

/// Why [`Registry::try_send`] did not send.
pub(crate) enum TrySend {
    /// The room's inbox is full: the command, to send when there is room.
    Full(Box<Command>),
    ShuttingDown(ShuttingDown),
    /// The room was not loaded and the requester is over its room-load rate (429).
    Limited(ReplyError),
}

pub(crate) struct Registry {
    rooms: Mutex<HashMap<Arc<str>, InboxSender>>,
    /// Handed to every room this spawns.
    env: Arc<RoomEnv>,
    /// Each room's inbox bound (`rooms.inbox`).
    inbox: usize,
    /// Every room task and every forward of a command to a reloaded room. Closed at shutdown:
    /// from then on no room is loaded.
    tasks: TaskTracker,
    /// The per-user limit on loading rooms (`rate.rooms_per_minute`).
    loads: RoomLoads,
}

impl Registry {
    /// `background` tracks the rooms' replay tasks (see [`RoomEnv::background`]); rooms emit
    /// their events into `webhooks`.
    pub(crate) fn new(
        engine: Engine,
        writer: WriterHandle,
        config: Arc<Config>,
        background: TaskTracker,
        webhooks: Webhooks,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            rooms: Mutex::new(HashMap::new()),
            env: Arc::new(RoomEnv::new(engine, writer, &config, background, webhooks)),
            loads: RoomLoads::new(&config.rate),
            inbox: config.rooms.inbox,
            tasks: TaskTracker::new(),
        })
    }

    /// Where rooms live, for reads that do not go through a room (history).
    pub(crate) fn engine(&self) -> Engine {
        self.env.engine.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, InboxSender>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a command to the named room, loading it if needed. Waits while the room's inbox is
    /// full (backpressure on the sending connection).
    pub(crate) async fn send(
        self: &Arc<Self>,
        name: &str,
        cmd: Command,
    ) -> Result<(), ShuttingDown> {
        self.send_boxed(name, Box::new(cmd)).await
    }

    /// [`Registry::send`] without waiting: a command that finds the room's inbox full is given
    /// back, to be sent with [`Registry::send_boxed`]. A command that finds its room not loaded
    /// loads it only if `by`'s user is within its room-load rate.
    pub(crate) fn try_send(
        self: &Arc<Self>,
        name: &str,
        cmd: Command,
        by: &Peer,
    ) -> Result<(), TrySend> {
        let mut cmd = Box::new(cmd);
        loop {
            let tx = self.handle(name, Some(by))?;
            match tx.try_send(cmd) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(back)) => return Err(TrySend::Full(back)),
                // The room unloaded between lookup and send: look it up again.
                Err(mpsc::error::TrySendError::Closed(back)) => cmd = back,
            }
        }
    }

    /// [`Registry::send`] of a command already boxed (as [`TrySend::Full`] gives it back).
    pub(crate) async fn send_boxed(
        self: &Arc<Self>,
        name: &str,
        mut cmd: Box<Command>,
    ) -> Result<(), ShuttingDown> {
        loop {
            // With no requester to count, the only refusal is shutdown.
            let Ok(tx) = self.handle(name, None) else {
                return Err(ShuttingDown);
            };
            match tx.send(cmd).await {
                Ok(()) => return Ok(()),
                // The room unloaded between lookup and send: look it up again.
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
        }
    }

    /// The room's inbox, loading the room if needed; a load on behalf of `by` is counted against
    /// its user's room-load rate first (under the map's lock, so exactly the requests that load
    /// a room are counted).
    fn handle(self: &Arc<Self>, name: &str, by: Option<&Peer>) -> Result<InboxSender, TrySend> {
        let mut rooms = self.lock();
        // Checked under the lock that shutdown's walk over the rooms takes: a room is either
        // loaded before the walk (and told to shut down) or not at all.
        if self.tasks.is_closed() {
            return Err(TrySend::ShuttingDown(ShuttingDown));
        }
        if let Some(tx) = rooms.get(name) {
            return Ok(tx.clone());
        }
        if let Some(peer) = by {
            self.loads.admit(peer).map_err(TrySend::Limited)?;
        }
        let (tx, rx) = mpsc::channel(self.inbox);
        let name: Arc<str> = Arc::from(name);
        rooms.insert(name.clone(), tx.clone());
        crate::metrics::rooms_active(rooms.len());
        drop(rooms);
        self.tasks.spawn(actor::run(name, rx, self.clone()));
        Ok(tx)
    }

    /// Removes an idle room, but only if nothing is waiting in its inbox. The caller closes its
    /// inbox right after and forwards anything that slipped in.
    pub(crate) fn remove_if_idle(&self, name: &str, rx: &Inbox) -> bool {
        let mut rooms = self.lock();
        if !rx.is_empty() {
            return false;
        }
        rooms.remove(name);
        crate::metrics::rooms_active(rooms.len());
        true
    }

    /// Called by a room task as its last act.
    pub(crate) fn stopped(&self, name: &str, rx_closed: bool) {
        if !rx_closed {
            let mut rooms = self.lock();
            if rooms.get(name).is_some_and(|tx| tx.is_closed()) {
                rooms.remove(name);
            }
            crate::metrics::rooms_active(rooms.len());
        }
    }

    /// Sends a command that reached a room as it unloaded on to its next incarnation.
    pub(crate) fn forward(self: &Arc<Self>, name: Arc<str>, cmd: Box<Command>) {
        let registry = self.clone();
        self.tasks.spawn(async move {
            let _ = registry.send_boxed(&name, cmd).await;
        });
    }

    /// Names of loaded rooms in name order: those starting with `prefix`, after `after`, at
    /// most `limit`; and whether more follow. Copies at most `limit + 1` names under the lock.
    pub(crate) fn loaded(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let rooms = self.lock();
        let mut names: Vec<&str> = rooms
            .keys()
            .map(|n| &**n)
            .filter(|n| n.starts_with(prefix) && after.is_none_or(|a| *n > a))
            .collect();
        let more = names.len() > limit;
        if more {
            names.select_nth_unstable(limit);
            names.truncate(limit);
        }
        names.sort_unstable();
        (names.into_iter().map(str::to_string).collect(), more)
    }

    /// The environment rooms run in.
    pub(crate) fn env(&self) -> &Arc<RoomEnv> {
        &self.env
    }

    pub(crate) fn sender(&self, name: &str) -> Option<InboxSender> {
        self.lock().get(name).cloned()
    }

    /// Stops accepting commands, lets every room finish its pending writes, and waits for all
    /// room tasks to end.
    pub(crate) async fn shutdown(&self) {
        let senders: Vec<_> = {
            let rooms = self.lock();
            self.tasks.close();
            rooms.values().cloned().collect()
        };
        for tx in senders {
            let _ = tx.send(Box::new(Command::Shutdown)).await;
        }
        self.tasks.wait().await;
    }
}

impl actor::RoomHost for Registry {
    fn env(&self) -> &Arc<RoomEnv> {
        Registry::env(self)
    }

    fn sender(&self, name: &str) -> Option<InboxSender> {
        Registry::sender(self, name)
    }

    fn remove_if_idle(&self, name: &str, rx: &Inbox) -> bool {
        Registry::remove_if_idle(self, name, rx)
    }

    fn forward(self: Arc<Self>, name: Arc<str>, cmd: Box<Command>) {
        Registry::forward(&self, name, cmd);
    }

    fn stopped(&self, name: &str, rx_closed: bool) {
        Registry::stopped(self, name, rx_closed);
    }
}
