//! Loading, at start, the rooms that hold keys with deadlines (SPEC.md 4.13).
//!
//! A loaded room meets its own deadlines on its timer, and a room with a pending deadline does
//! not unload when idle; but a restart leaves every room unloaded. This task loads the rooms
//! whose keys have deadlines once, right after start, so a key expires on time (or, if its
//! deadline passed while the server was down, at once) whether or not anyone uses its room.
//! The same pass finds the rooms holding ephemeral keys (SPEC.md 4.14): their connections
//! ended with the previous process, and the loaded room deletes them at once.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::lifecycle::Lifecycle;
use crate::room::{Command, Registry};
use crate::store::Store;

pub(crate) async fn timed_rooms(registry: Arc<Registry>, store: Store, lifecycle: Lifecycle) {
    let rooms = match tokio::task::spawn_blocking(move || store.timed_rooms()).await {
        Ok(Ok(rooms)) => rooms,
        Ok(Err(e)) => return tracing::error!(error = %e, "could not find rooms with deadlines"),
        Err(e) => return tracing::error!(error = %e, "finding rooms with deadlines failed"),
    };
    if !rooms.is_empty() {
        tracing::info!(rooms = rooms.len(), "loading rooms with key deadlines");
    }
    for name in rooms {
        // Any command loads a room; its numbers are not needed.
        let (reply, _) = oneshot::channel();
        tokio::select! {
            sent = registry.send(&name, Command::Info { reply }) => if sent.is_err() {
                return;
            },
            () = lifecycle.stopping() => return,
        }
    }
}
