//! A room's deadlines: the moments it must perform a logged transition by itself (a key's
//! expiry, SPEC.md 4.13), in one ordered queue that the room task sleeps on with one timer.
//!
//! Each item has at most one deadline: setting it again moves it, so the queue holds at most
//! one entry per key of the room (`limits.keys`). Firing removes an item's entry; the room then
//! submits a conditional operation into its own next batch, and the condition is checked
//! against the state as that batch sees it, so a deadline that went stale (the key was written
//! again meanwhile) changes nothing.

use std::collections::{BTreeSet, HashMap};

use super::state::RoomState;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Due {
    /// A state key written with `ttl_ms`.
    Key(String),
    /// An ephemeral key whose deletion failed to commit, tried again (SPEC.md 4.14).
    Release(String, std::sync::Arc<str>),
}

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    /// (when, what), in Unix milliseconds: the first one is the next to fire.
    queue: BTreeSet<(u64, Due)>,
    at: HashMap<Due, u64>,
}

impl Deadlines {
    /// The deadlines of a state as loaded: those already past fire at once.
    pub(crate) fn of(state: &RoomState) -> Deadlines {
        let mut d = Deadlines::default();
        for (key, exp) in state.expiring() {
            d.set(Due::Key(key.to_string()), exp);
        }
        d
    }

    /// Sets `due`'s deadline to `at` (Unix ms), replacing any earlier one.
    pub(crate) fn set(&mut self, due: Due, at: u64) {
        self.clear(&due);
        self.at.insert(due.clone(), at);
        self.queue.insert((at, due));
    }

    pub(crate) fn clear(&mut self, due: &Due) {
        if let Some(at) = self.at.remove(due) {
            self.queue.remove(&(at, due.clone()));
        }
    }

    /// When the next deadline is (Unix ms).
    pub(crate) fn next(&self) -> Option<u64> {
        self.queue.first().map(|(at, _)| *at)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Removes and returns everything due at `now` (Unix ms), earliest first.
    pub(crate) fn take_due(&mut self, now: u64) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first() {
            if *at > now {
                break;
            }
            if let Some((_, d)) = self.queue.pop_first() {
                self.at.remove(&d);
                due.push(d);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Due {
        Due::Key(k.into())
    }

    #[test]
    fn setting_again_moves_the_deadline() {
        let mut d = Deadlines::default();
        d.set(key("a"), 100);
        d.set(key("b"), 50);
        d.set(key("a"), 10);
        assert_eq!(d.next(), Some(10));
        assert_eq!(d.take_due(60), vec![key("a"), key("b")]);
        assert!(d.is_empty());
    }

    #[test]
    fn cleared_and_future_ones_stay_out() {
        let mut d = Deadlines::default();
        d.set(key("a"), 100);
        d.set(key("b"), 200);
        d.clear(&key("a"));
        assert!(d.take_due(150).is_empty());
        assert_eq!(d.next(), Some(200));
    }
}
