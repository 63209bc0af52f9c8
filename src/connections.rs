//! Every open WebSocket connection's outbox and user: what shutdown walks to refuse requests and
//! close sockets, and what the server API's "disconnect a user" looks up.
//!
//! One map under one lock: a connection registers once and unregisters once, shutdown walks it
//! twice, and a disconnect walks it once (an operator's request, at most 20,000 entries here),
//! so an index by user would cost every connection more than it saves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::outbox::{CloseReason, Outbox};

/// An open connection as the server sees it.
pub(crate) struct Conn {
    pub user: Option<Arc<str>>,
    pub outbox: Outbox,
}

#[derive(Default)]
pub(crate) struct Connections {
    map: Mutex<HashMap<u64, Conn>>,
}

impl Connections {
    /// The map, locked: registration and shutdown's walk take this lock, so a connection that
    /// registers after the walk sees the phase the walk set.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        // Inserts and removes cannot leave the map inconsistent if a holder panics.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn remove(&self, n: u64) {
        self.lock().remove(&n);
    }

    pub(crate) fn outboxes(&self) -> Vec<Outbox> {
        self.lock().values().map(|c| c.outbox.clone()).collect()
    }

    /// Closes every open connection of `user` with `reason` (its queued frames go out first);
    /// returns how many there were. One already closing (its task not yet ended) is not
    /// counted again.
    pub(crate) fn close_user(&self, user: &str, reason: CloseReason) -> usize {
        let matching: Vec<Outbox> = self
            .lock()
            .values()
            .filter(|c| c.user.as_deref() == Some(user) && !c.outbox.is_closed())
            .map(|c| c.outbox.clone())
            .collect();
        for outbox in &matching {
            outbox.close(reason);
        }
        matching.len()
    }
}
