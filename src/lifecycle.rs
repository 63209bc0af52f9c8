//! The server's lifecycle in one place: the phase it is in, the token that stops its background
//! work, and the trackers shutdown waits on.
//!
//! Shutdown walks the phases in order, and each phase's guarantee is what the next relies on:
//! no request is acted on after lame duck begins, so what the rooms commit is all there is; the
//! writer's final fsync comes before any socket closes, so every acknowledgement a client
//! received is durable. See [`crate::server`] for the order itself.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the server is in its life. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting connections and serving requests.
    Running,
    /// The listener is closed; open connections answer every request with 503 while load
    /// balancers move clients away (`server.lame_duck_ms`).
    LameDuck,
    /// Rooms commit and acknowledge what they hold, then the writer makes it durable and stops.
    Committing,
    /// Sockets close with 1001 after their queued frames.
    Closing,
    /// Everything has stopped.
    Stopped,
}

/// A cloneable handle to the lifecycle.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    phase: watch::Sender<Phase>,
    /// Cancelled when the server leaves [`Phase::Running`]: the accept loop and periodic
    /// background work stop on it.
    stop: CancellationToken,
    /// Every HTTP and WebSocket connection task.
    connections: TaskTracker,
    /// Periodic work (flush tick, retention) and one-off reads (history pages).
    background: TaskTracker,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            inner: Arc::new(Inner {
                phase: watch::Sender::new(Phase::Running),
                stop: CancellationToken::new(),
                connections: TaskTracker::new(),
                background: TaskTracker::new(),
            }),
        }
    }
}

impl Lifecycle {
    pub(crate) fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Moves to `phase` (never back); leaving [`Phase::Running`] cancels the stop token.
    pub(crate) fn enter(&self, phase: Phase) {
        self.inner.phase.send_if_modified(|now| {
            let forward = phase > *now;
            if forward {
                tracing::debug!(from = ?*now, to = ?phase, "lifecycle");
                *now = phase;
            }
            forward
        });
        if phase > Phase::Running {
            self.inner.stop.cancel();
        }
    }

    /// Asks the server to shut down; the accept loop then walks the phases.
    pub(crate) fn request_stop(&self) {
        self.inner.stop.cancel();
    }

    /// Resolves once the server has reached `phase`.
    pub(crate) async fn reached(&self, phase: Phase) {
        let mut rx = self.inner.phase.subscribe();
        let _ = rx.wait_for(|now| *now >= phase).await;
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.stop.cancelled()
    }

    pub(crate) fn spawn_connection<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.connections.spawn(task);
    }

    pub(crate) fn spawn_background<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.background.spawn(task);
    }

    /// The tracker of background tasks, for a component that spawns its own (history reads).
    pub(crate) fn background(&self) -> &TaskTracker {
        &self.inner.background
    }

    /// Waits until every connection task has ended.
    pub(crate) async fn connections_done(&self) {
        self.inner.connections.close();
        self.inner.connections.wait().await;
    }

    /// Waits until every background task has ended.
    pub(crate) async fn background_done(&self) {
        self.inner.background.close();
        self.inner.background.wait().await;
    }
}
