//! The shutdown order. It is what "no acknowledged message lost" rests on at a deploy: stop
//! accepting, stop acting on requests, let every room commit and acknowledge what it has, stop
//! the writer (final fsync), and only then close every socket with 1001 after its queued frames.

use std::time::Duration;

use super::Shared;
use crate::lifecycle::Phase;
use crate::outbox::CloseReason;
use crate::store::WriterHandle;

/// Walks the phases after the listener has closed; bounded by `server.shutdown_timeout_ms`
/// (the lame-duck wait comes before that deadline starts).
pub(super) async fn run(shared: &Shared, writer: &WriterHandle) {
    lame_duck(shared).await;
    let deadline = Duration::from_millis(shared.config.server.shutdown_timeout_ms);
    let graceful = async {
        shared.lifecycle.enter(Phase::Committing);
        shared.registry.shutdown().await;
        writer.stop().await;
        shared.lifecycle.enter(Phase::Closing);
        for outbox in shared.conns.outboxes() {
            outbox.close(CloseReason::GoingAway);
        }
        shared.lifecycle.connections_done().await;
        shared.lifecycle.background_done().await;
    };
    if tokio::time::timeout(deadline, graceful).await.is_err() {
        tracing::warn!("shutdown deadline passed; closing remaining connections");
        writer.stop().await;
    }
    // Last: the events of everything above (rooms unloaded, connections closed) are written.
    shared.webhooks.stop().await;
    shared.lifecycle.enter(Phase::Stopped);
    tracing::info!("roomd stopped");
}

/// Connections stay open answering 503 while load balancers move clients away.
async fn lame_duck(shared: &Shared) {
    {
        // Entered under the lock that registration takes: a connection that registers after
        // this walk sees the phase and refuses requests from the start.
        let conns = shared.conns.lock();
        shared.lifecycle.enter(Phase::LameDuck);
        for conn in conns.values() {
            conn.outbox.refuse_requests();
        }
    }
    tokio::time::sleep(Duration::from_millis(shared.config.server.lame_duck_ms)).await;
}
