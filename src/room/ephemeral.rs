//! Keys that go with their connection (`put`/`cas` with `ephemeral`, SPEC.md 4.14).
//!
//! A key written with `ephemeral` belongs to the writing connection until a later write
//! takes it over (another connection's, or one without `ephemeral`) or it is deleted. When
//! the connection's departure from the room is final, the room deletes the keys it still
//! owns with a logged `state` deletion from [`RELEASE_FROM`](super::model::RELEASE_FROM),
//! formed into the room's own next batch under the condition that the key still belongs to
//! that connection, so a key taken over meanwhile is never deleted.
//!
//! When is a departure final: a connection tells each room it subscribed to or wrote an
//! ephemeral key in when it ends ([`Command::Leave`](super::Command::Leave)). Its keys go
//! then, unless its subscription here is held for the reconnect grace (SPEC.md 4.12): then
//! they go when that hold ends ([`Room::departure_final`]), whether the grace ran out or the
//! user resumed on a new connection (the keys were the old connection's). A room that owns
//! keys for a live connection stays loaded, so this bookkeeping is never lost to an unload.
//!
//! After a restart no connection survives: a room deletes the ephemeral keys it loads from
//! disk at once (standalone). On Redis, a node that loads a room cannot tell whether another
//! node's connection owns a key, so it leaves them to their `ttl_ms`, which cluster mode
//! requires with `ephemeral`.

use std::sync::Arc;

use super::model::{Pending, Reply, Room};
use super::state::{Effect, ORPHAN};
use super::Mutation;

impl Room {
    /// The connection `conn` ended: its subscription here ends (or is held), and its keys go
    /// now unless the hold keeps them until its departure is final.
    pub(super) fn left(&mut self, conn: &Arc<str>) {
        self.drop_sub(conn);
        if self.held.iter().any(|h| h.conn == *conn) {
            self.owners.hold(conn);
            return;
        }
        self.release_all(conn);
    }

    /// A departure became final ([`Room::departure_final`]): the keys of a connection that
    /// ended go. (An `unsub` is a departure too; its connection lives on, and so do its keys.)
    pub(super) fn departed(&mut self, conn: &Arc<str>) {
        if self.owners.is_gone(conn) {
            self.release_all(conn);
        }
    }

    /// Queues the release of every key `conn` owns, and of every key its writes still
    /// pending or in flight will make its own: a release queued behind such a write deletes
    /// the key right after it (in the same batch, or the next one).
    fn release_all(&mut self, conn: &Arc<str>) {
        let mut keys = self.owners.take(conn);
        keys.extend(self.pending.iter().filter_map(|p| match p {
            Pending::Mutate { peer, op, .. } if peer.id == *conn => owned_key(op, conn),
            _ => None,
        }));
        keys.extend(self.in_flight.iter().filter_map(|w| {
            match &w.reply {
                Reply::Mutated { effect, .. } => effect
                    .entry
                    .as_ref()
                    .and_then(|e| e.owner.as_ref())
                    .filter(|o| **o == *conn)
                    .map(|_| effect.key.clone()),
                _ => None,
            }
        }));
        for key in keys {
            self.release(key, conn.clone());
        }
    }

    fn release(&mut self, key: String, owner: Arc<str>) {
        self.pending.push(Pending::Release { key, owner });
    }

    /// A committed state change moves the key's ownership (before the state takes it).
    pub(super) fn owner_changes(&mut self, effect: &Effect) {
        let old = self.state.get(&effect.key).and_then(|e| e.owner.clone());
        let new = effect.entry.as_ref().and_then(|e| e.owner.clone());
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.owners.remove(&old, &effect.key);
        }
        if let Some(new) = new {
            // A write that was in flight when its connection ended, while the connection's
            // subscription is held, joins the keys that wait for the hold's end.
            self.owners.add(&new, &effect.key);
        }
    }

    /// At load: ephemeral keys on disk belong to connections of an earlier run, which are
    /// gone; they are deleted in the room's first batch. Not on Redis (see the module's
    /// documentation).
    pub(super) fn orphans_loaded(&mut self) {
        if self.linked.is_some() {
            return;
        }
        let orphans: Vec<String> = self
            .state
            .owned()
            .filter(|(_, o)| &***o == ORPHAN)
            .map(|(k, _)| k.to_string())
            .collect();
        let orphan: Arc<str> = Arc::from(ORPHAN);
        for key in orphans {
            self.release(key, orphan.clone());
        }
    }
}

/// The key an ephemeral write of `conn` makes its own.
fn owned_key(op: &Mutation, conn: &Arc<str>) -> Option<String> {
    match op {
        Mutation::Put { key, owner, .. } | Mutation::Cas { key, owner, .. }
            if owner.as_ref() == Some(conn) =>
        {
            Some(key.clone())
        }
        _ => None,
    }
}
