//! Which connections own which of a room's keys written with `ephemeral` (SPEC.md 4.14).
//!
//! The key's state entry names its owner (the condition a release is checked against); this
//! is the reverse index, so a connection's end finds its keys without a scan of the state.
//! It holds only committed ownership: an entry comes with the first key a connection's
//! committed write makes its own and goes with the last one it loses.

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

    /// `conn` now owns `key`; `gone` marks a connection already ended.
    pub(crate) fn add(&mut self, conn: &Arc<str>, key: &str, gone: bool) {
        let owner = self.conns.entry(conn.clone()).or_default();
        owner.keys.insert(key.to_string());
        owner.gone |= gone;
    }

    /// `conn` no longer owns `key` (deleted, or written by another or without `ephemeral`).
    pub(crate) fn remove(&mut self, conn: &Arc<str>, key: &str) {
        if let Some(owner) = self.conns.get_mut(conn) {
            owner.keys.remove(key);
            if owner.keys.is_empty() {
                self.conns.remove(conn);
            }
        }
    }

    /// `conn` ended; its keys go when its departure is final.
    pub(crate) fn mark_gone(&mut self, conn: &Arc<str>) {
        if let Some(owner) = self.conns.get_mut(conn) {
            owner.gone = true;
        }
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
        o.add(&a, "k1", false);
        o.add(&a, "k2", false);
        o.add(&b, "k3", true);
        assert!(o.is_gone(&b) && !o.is_gone(&a));
        o.mark_gone(&a);
        assert!(o.is_gone(&a));
        o.remove(&a, "k1");
        assert_eq!(o.take(&a), vec!["k2".to_string()]);
        assert!(o.take(&a).is_empty());
        o.remove(&b, "k3");
        assert!(o.is_empty());
    }
}
