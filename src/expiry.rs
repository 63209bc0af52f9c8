//! Token deadlines of open connections (SPEC.md 9.3), kept by one task for the whole server.
//!
//! Each connection with a token has two deadlines: the `expiring` warning, a window before its
//! `exp`, and the close with 4003 at `exp` plus the leeway. They sit in one ordered map that a
//! single task sleeps on, rather than in a timer per connection: an idle connection's task
//! stays as small as it is without auth, and refreshing a token is two map updates. The map
//! holds at most two entries per open connection (each removed when its connection refreshes
//! or closes), so its size is bounded by `server.max_connections`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomd_protocol::ServerFrame;
use tokio::sync::Notify;

use crate::lifecycle::Lifecycle;
use crate::outbox::CloseReason;
use crate::peer::Peer;

/// When a deadline is due (Unix milliseconds) and a unique number, so two connections with the
/// same deadline are two entries.
type Key = (u64, u64);

enum Due {
    /// Tell the client its token expires at `exp` (Unix seconds).
    Warn { peer: Arc<Peer>, exp: u64 },
    /// Close the connection: its token expired.
    Expire(Arc<Peer>),
}

#[derive(Default)]
pub(crate) struct Expiries {
    state: Mutex<State>,
    /// Wakes the task when a deadline earlier than the one it sleeps on may have come in.
    wake: Notify,
}

#[derive(Default)]
struct State {
    queue: BTreeMap<Key, Due>,
    next: u64,
}

/// A connection's entries, to remove when it refreshes or closes.
#[derive(Debug)]
pub(crate) struct Ticket {
    warn: Key,
    expire: Key,
}

impl Expiries {
    /// Watches a token that expires at `exp` (Unix seconds): the warning `window` before it,
    /// or halfway through the time left when that is shorter (so a token that lives less than
    /// the window is refreshed once per half-life, not in a loop); the close at `exp + leeway`.
    pub(crate) fn watch(
        &self,
        peer: &Arc<Peer>,
        exp: u64,
        window: Duration,
        leeway: Duration,
    ) -> Ticket {
        self.watch_at(now_ms(), peer, exp, window, leeway)
    }

    fn watch_at(
        &self,
        now: u64,
        peer: &Arc<Peer>,
        exp: u64,
        window: Duration,
        leeway: Duration,
    ) -> Ticket {
        let exp_ms = exp.saturating_mul(1000);
        let lead = millis(window).min(exp_ms.saturating_sub(now) / 2);
        let warn_at = exp_ms.saturating_sub(lead);
        let close_at = exp_ms.saturating_add(millis(leeway));
        let mut s = self.lock();
        let warn = s.insert(
            warn_at,
            Due::Warn {
                peer: peer.clone(),
                exp,
            },
        );
        let expire = s.insert(close_at, Due::Expire(peer.clone()));
        drop(s);
        self.wake.notify_one();
        Ticket { warn, expire }
    }

    /// Stops watching (the token was replaced, or the connection closed).
    pub(crate) fn forget(&self, ticket: &Ticket) {
        let mut s = self.lock();
        s.queue.remove(&ticket.warn);
        s.queue.remove(&ticket.expire);
    }

    /// Entries waiting, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Runs due deadlines until shutdown begins.
    pub(crate) async fn run(self: Arc<Self>, lifecycle: Lifecycle) {
        loop {
            let next = self.fire_due(now_ms());
            let sleep = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(now_ms()))
            });
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = lifecycle.stopping() => return,
            }
        }
    }

    /// Acts on every deadline at or before `now`; returns the next one.
    fn fire_due(&self, now: u64) -> Option<u64> {
        loop {
            let mut s = self.lock();
            let (&key, _) = s.queue.first_key_value()?;
            if key.0 > now {
                return Some(key.0);
            }
            let due = s.queue.remove(&key)?;
            drop(s);
            match due {
                Due::Warn { peer, exp } => peer.send(&ServerFrame::Expiring { exp }),
                Due::Expire(peer) => {
                    tracing::debug!(conn = %peer.id, user = ?peer.user, "token expired; closing");
                    peer.outbox.close(CloseReason::TokenExpired);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn insert(&mut self, at: u64, due: Due) -> Key {
        self.next += 1;
        let key = (at, self.next);
        self.queue.insert(key, due);
        key
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    fn peer() -> Arc<Peer> {
        Arc::new(Peer {
            id: "c".into(),
            user: Some("ada".into()),
            client: "c".into(),
            outbox: Outbox::new(16, 1 << 20),
            refused: Default::default(),
            in_flight: Default::default(),
        })
    }

    #[test]
    fn warns_then_closes_and_forgets_on_refresh() {
        let e = Expiries::default();
        let p = peer();
        let exp = 1_000;
        let t = e.watch_at(0, &p, exp, Duration::from_secs(60), Duration::from_secs(2));
        assert_eq!(e.len(), 2);
        // Before the window: nothing due; the next deadline is the warning.
        assert_eq!(e.fire_due(900_000), Some(940_000));
        assert!(!p.outbox.is_closed());
        // In the window: the warning goes out, the close waits for exp + leeway.
        assert_eq!(e.fire_due(950_000), Some(1_002_000));
        assert_eq!(e.len(), 1);
        assert!(!p.outbox.is_closed());
        // A refresh replaces the entries.
        e.forget(&t);
        assert_eq!(e.len(), 0);
        let _t2 = e.watch_at(
            1_000_000,
            &p,
            2_000,
            Duration::from_secs(60),
            Duration::ZERO,
        );
        assert_eq!(e.fire_due(1_500_000), Some(1_940_000));
        assert!(!p.outbox.is_closed());
        e.fire_due(2_000_000);
        let mut frames = Vec::new();
        assert_eq!(p.outbox.drain(&mut frames), Some(CloseReason::TokenExpired));
        // The warnings went out before the close.
        assert_eq!(frames.len(), 2);
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn a_token_shorter_than_the_window_is_warned_halfway() {
        let e = Expiries::default();
        let p = peer();
        let _t = e.watch_at(
            3_000_000,
            &p,
            3_010,
            Duration::from_secs(60),
            Duration::ZERO,
        );
        assert_eq!(e.fire_due(3_000_000), Some(3_005_000));
    }
}
