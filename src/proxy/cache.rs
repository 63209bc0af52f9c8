//! Decisions reused for `cache_ms`, so a reconnect storm or a client resubscribing costs the
//! application one call per user and room, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Verdict;

pub(crate) struct Cache {
    map: Mutex<HashMap<String, (Instant, Verdict)>>,
    ttl: Duration,
    max: usize,
}

impl Cache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Cache {
        Cache {
            map: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Verdict)>> {
        // Entries are whole values: a panic elsewhere cannot leave one half written.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<Verdict> {
        let map = self.lock();
        map.get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `verdict` for the cache's time. At the bound, expired entries are dropped (one
    /// pass, at most once per insert while full); if none has expired, `verdict` is not kept:
    /// evicting a live one would let a flood of new keys churn the cache for everyone.
    pub(crate) fn put(&self, key: String, verdict: Verdict, now: Instant) {
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, (expires, _)| now < *expires);
            if map.len() >= self.max {
                return;
            }
        }
        map.insert(key, (now + self.ttl, verdict));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_bound_holds() {
        let t0 = Instant::now();
        let c = Cache::new(Duration::from_secs(1), 2);
        c.put("a".into(), Verdict::Allow { data: None }, t0);
        c.put("b".into(), Verdict::Allow { data: None }, t0);
        c.put("c".into(), Verdict::Allow { data: None }, t0);
        assert!(c.get("a", t0).is_some());
        assert!(c.get("c", t0).is_none(), "full of live entries: not kept");
        assert!(c.get("a", t0 + Duration::from_secs(1)).is_none(), "expired");
        c.put(
            "c".into(),
            Verdict::Allow { data: None },
            t0 + Duration::from_secs(1),
        );
        assert!(c.get("c", t0 + Duration::from_secs(1)).is_some());
        assert_eq!(c.lock().len(), 1, "the expired ones went");
    }
}
