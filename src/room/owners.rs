//! Which connections own which of a room's keys written with `ephemeral` (SPEC.md 4.14).
//!
//! The key's state entry names its owner (the condition a release is checked against); this
//! is the reverse index, so a connection's end finds its keys without a scan of the state.
//! It holds committed ownership: an entry comes with the first key a connection's committed
//! write makes its own and goes with the last one it loses; except for a connection that
//! ended while its subscription is held for the reconnect grace, listed until its departure
//! is final (a room with any entry stays loaded).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Owners {
    conns: HashMap<Arc<str>, Owner>,
}

#[derive(Debug, Default)]
struct Owner {
    keys: BTreeSet<String>,
    /// The connection ended, but its keys wait for its departure to be final (its
    /// subscription here is held for the reconnect grace, SPEC.md 4.12).
    gone: bool,
}

impl Owners {
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// `conn` now owns `key`.
    pub(crate) fn add(&mut self, conn: &Arc<str>, key: &str) {
        let owner = self.conns.entry(conn.clone()).or_default();
        owner.keys.insert(key.to_string());
    }

    /// `conn` no longer owns `key` (deleted, or written by another or without `ephemeral`).
    /// A connection that ended stays listed until its departure is final: its writes in
    /// flight may still give it keys.
    pub(crate) fn remove(&mut self, conn: &Arc<str>, key: &str) {
        if let Some(owner) = self.conns.get_mut(conn) {
            owner.keys.remove(key);
            if owner.keys.is_empty() && !owner.gone {
                self.conns.remove(conn);
            }
        }
    }

    /// `conn` ended while its subscription is held for the reconnect grace: its keys, and
    /// those its writes in flight give it, go when its departure is final.
    pub(crate) fn hold(&mut self, conn: &Arc<str>) {
        self.conns.entry(conn.clone()).or_default().gone = true;
    }

    pub(crate) fn is_gone(&self, conn: &Arc<str>) -> bool {
        self.conns.get(conn).is_some_and(|o| o.gone)
    }

    /// Takes the keys of `conn`, whose end is final: their releases are on their way, and
    /// each is checked against the key's owner when it is written.
    pub(crate) fn take(&mut self, conn: &Arc<str>) -> Vec<String> {
        self.conns
            .remove(conn)
            .map(|o| o.keys.into_iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_tracked_while_it_owns_a_key() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut o = Owners::default();
        o.add(&a, "k1");
        o.add(&a, "k2");
        o.add(&b, "k3");
        o.hold(&b);
        assert!(o.is_gone(&b) && !o.is_gone(&a));
        o.remove(&a, "k1");
        o.remove(&a, "k2");
        assert!(
            !o.is_gone(&a),
            "a live connection without keys is not listed"
        );
        // A held one is, without keys too, until its departure is final.
        o.remove(&b, "k3");
        assert!(o.is_gone(&b));
        o.add(&b, "k4");
        assert_eq!(o.take(&b), vec!["k4".to_string()]);
        assert!(o.take(&b).is_empty());
        assert!(o.is_empty());
    }
}
