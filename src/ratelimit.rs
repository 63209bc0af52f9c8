//! Rate limits: per connection on publishes, published bytes and state writes, and per user on
//! the rooms its requests load (`[rate]` in the config).
//!
//! Each limit is a token bucket kept as its "theoretical arrival time" (GCRA): the instant at
//! which the bucket would be full again. A request of cost `n` moves it `n` emission intervals
//! later; it is admitted if that stays within `burst` intervals of now, and otherwise refused
//! with the time until it would be. One integer per bucket, no timer, nothing to refill.
//!
//! The per-connection buckets ([`ConnLimits`]) belong to the connection's session, which alone
//! touches them: no lock on the publish path, and no clock read at all while they are off. The
//! per-user table ([`RoomLoads`]) is shared by every connection and bounded by
//! `rate.rooms_users`; a user whose bucket has refilled is forgotten (it is then the same as a
//! user never seen), and when the table is still full a new user is refused rather than another
//! evicted, because eviction would give the evicted user a fresh budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use roomd_protocol::ErrorCode;

use crate::config::{NamespaceConfig, RateConfig};
use crate::error::ReplyError;
use crate::peer::Peer;

const SECOND: u128 = 1_000_000_000;
const MINUTE: u128 = 60 * SECOND;

/// How often, at most, the per-user table is swept of refilled users while it is not full.
const SWEEP_EVERY: u64 = 60_000_000_000;
/// While it is full, at most one sweep per this long: a sweep walks the whole table under the
/// registry's lock, and a flood of new user ids must not make it walk on every request.
const SWEEP_GAP: u64 = 1_000_000_000;

/// A rate: `rate` per `period`, at most `burst` at once. Times are nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Rate {
    rate: u64,
    period: u128,
    /// `burst` emission intervals: how far ahead of now a bucket may run.
    window: u64,
    /// What the refusal says: "`rate` publishes per second", and so on.
    what: &'static str,
}

impl Rate {
    /// `None` when the limit is off (rate 0).
    fn new(rate: u64, burst: u64, period: u128, what: &'static str) -> Option<Rate> {
        if rate == 0 {
            return None;
        }
        let mut r = Rate {
            rate,
            period,
            window: 0,
            what,
        };
        r.window = r.cost(RateConfig::burst(rate, burst));
        Some(r)
    }

    /// The time `n` units take at this rate.
    fn cost(&self, n: u64) -> u64 {
        let nanos = u128::from(n) * self.period / u128::from(self.rate);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Where a bucket at `tat` would be after taking `n` at `now`, or how long until it could.
    fn take(&self, tat: u64, now: u64, n: u64) -> Result<u64, u64> {
        let next = tat.max(now).saturating_add(self.cost(n));
        let ahead = next - now;
        if ahead <= self.window {
            Ok(next)
        } else {
            Err(ahead - self.window)
        }
    }

    fn refusal(&self, wait_nanos: u64) -> ReplyError {
        let unit = if self.period == MINUTE {
            "minute"
        } else {
            "second"
        };
        limited(
            format!(
                "rate limit: {} {} per {unit}; retry later",
                self.rate, self.what
            ),
            self.rate,
            wait_nanos,
        )
    }
}

/// A 429 with `max` and `retry_after_ms` (rounded up, at least 1).
fn limited(msg: String, max: u64, wait_nanos: u64) -> ReplyError {
    ReplyError {
        max: Some(max),
        retry_after_ms: Some(wait_nanos.div_ceil(1_000_000).max(1)),
        ..ReplyError::new(ErrorCode::Limit, msg)
    }
}

/// One bucket: `rate` and its theoretical arrival time.
#[derive(Debug)]
struct Bucket {
    rate: Rate,
    tat: u64,
}

impl Bucket {
    fn new(rate: Option<Rate>) -> Option<Bucket> {
        rate.map(|rate| Bucket { rate, tat: 0 })
    }
}

/// What a request costs against a connection's rate limits (the room module says which
/// request costs what: see `Command::cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// A publish of `bytes` of data.
    Publish { bytes: usize },
    /// A `put`, `del`, `cas` or `incr`.
    StateWrite,
    /// An in-band token refresh.
    Auth,
    /// A presence update: a `sub` with `info` (a join, or the same connection's new info
    /// after an `unsub`), which every presence subscriber of the room is sent.
    Presence,
    /// Anything else: no connection limit counts it.
    Free,
}

/// A connection's own buckets, owned by its session.
#[derive(Debug)]
pub(crate) struct ConnLimits {
    start: Instant,
    publishes: Option<Bucket>,
    bytes: Option<Bucket>,
    writes: Option<Bucket>,
    auths: Option<Bucket>,
    presence: Option<Bucket>,
    /// The publish buckets of namespaces with a rate of their own (`namespaces.NAME.
    /// publishes_per_sec`): at most one per configured namespace.
    namespaces: Vec<(String, Option<Bucket>)>,
}

impl ConnLimits {
    pub(crate) fn new(c: &RateConfig) -> ConnLimits {
        ConnLimits {
            start: Instant::now(),
            publishes: Bucket::new(Rate::new(
                c.publishes_per_sec,
                c.publishes_burst,
                SECOND,
                "publishes",
            )),
            bytes: Bucket::new(Rate::new(
                c.publish_bytes_per_sec,
                c.publish_bytes_burst,
                SECOND,
                "published bytes",
            )),
            writes: Bucket::new(Rate::new(
                c.state_writes_per_sec,
                c.state_writes_burst,
                SECOND,
                "state writes",
            )),
            auths: Bucket::new(Rate::new(
                c.auths_per_minute,
                c.auths_burst,
                MINUTE,
                "token refreshes",
            )),
            presence: Bucket::new(Rate::new(
                c.presence_updates_per_sec,
                c.presence_updates_burst,
                SECOND,
                "presence updates",
            )),
            namespaces: Vec::new(),
        }
    }

    /// Adds a publish bucket for each namespace that sets its own rate.
    pub(crate) fn with_namespaces(
        mut self,
        namespaces: &std::collections::BTreeMap<String, NamespaceConfig>,
    ) -> ConnLimits {
        self.namespaces = namespaces
            .iter()
            .filter_map(|(name, ns)| {
                let rate = Rate::new(
                    ns.publishes_per_sec,
                    ns.publishes_burst,
                    SECOND,
                    "publishes in this namespace",
                )?;
                Some((name.clone(), Bucket::new(Some(rate))))
            })
            .collect();
        self
    }

    /// [`ConnLimits::admit`] for a request into `room`, whose namespace may have a publish
    /// rate of its own: taken together with the connection's, or neither.
    pub(crate) fn admit_in(&mut self, room: &str, cmd: Cost) -> Result<(), ReplyError> {
        let Cost::Publish { bytes } = cmd else {
            return self.admit(cmd);
        };
        let ns = room.split_once(':').map(|(ns, _)| ns);
        let Some(i) = ns.and_then(|ns| self.namespaces.iter().position(|(n, _)| n == ns)) else {
            return self.admit(cmd);
        };
        let now = nanos_since(self.start, Instant::now());
        let len = u64::try_from(bytes).unwrap_or(u64::MAX);
        let ns_bucket = &mut self.namespaces[i].1;
        take_all(
            now,
            [
                (&mut self.publishes, 1),
                (&mut self.bytes, len),
                (ns_bucket, 1),
            ],
        )
    }

    /// Takes what `cmd` costs from this connection's buckets, or refuses it and takes nothing.
    /// Called once the request has passed its own checks, so an invalid request costs nothing.
    pub(crate) fn admit(&mut self, cmd: Cost) -> Result<(), ReplyError> {
        let start = self.start;
        self.admit_with(cmd, || nanos_since(start, Instant::now()))
    }

    /// [`ConnLimits::admit`] with the clock read by `now`, only when a limit applies.
    fn admit_with(&mut self, cmd: Cost, now: impl FnOnce() -> u64) -> Result<(), ReplyError> {
        match cmd {
            Cost::Publish { bytes } => {
                if self.publishes.is_none() && self.bytes.is_none() {
                    return Ok(());
                }
                let len = u64::try_from(bytes).unwrap_or(u64::MAX);
                take_all(now(), [(&mut self.publishes, 1), (&mut self.bytes, len)])
            }
            Cost::StateWrite => {
                if self.writes.is_none() {
                    return Ok(());
                }
                take_all(now(), [(&mut self.writes, 1)])
            }
            Cost::Auth => {
                if self.auths.is_none() {
                    return Ok(());
                }
                take_all(now(), [(&mut self.auths, 1)])
            }
            Cost::Presence => {
                if self.presence.is_none() {
                    return Ok(());
                }
                take_all(now(), [(&mut self.presence, 1)])
            }
            Cost::Free => Ok(()),
        }
    }

    #[cfg(test)]
    fn admit_at(&mut self, cmd: Cost, at: std::time::Duration) -> Result<(), ReplyError> {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.admit_with(cmd, || nanos)
    }
}

/// Takes from every bucket, or from none: the longest wait is the answer.
fn take_all<const N: usize>(
    now: u64,
    buckets: [(&mut Option<Bucket>, u64); N],
) -> Result<(), ReplyError> {
    let mut next = [0u64; N];
    let mut refused: Option<(Rate, u64)> = None;
    for (i, (bucket, n)) in buckets.iter().enumerate() {
        if let Some(b) = bucket {
            match b.rate.take(b.tat, now, *n) {
                Ok(t) => next[i] = t,
                Err(wait) => {
                    if refused.is_none_or(|(_, w)| wait > w) {
                        refused = Some((b.rate, wait));
                    }
                }
            }
        }
    }
    if let Some((rate, wait)) = refused {
        return Err(rate.refusal(wait));
    }
    for (i, (bucket, _)) in buckets.into_iter().enumerate() {
        if let Some(b) = bucket {
            b.tat = next[i];
        }
    }
    Ok(())
}

fn nanos_since(start: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

/// Whom the room-load limit counts: the user id, or the connection when there is none (two
/// variants, so a user named like a connection id is still someone else).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    User(Arc<str>),
    Conn(Arc<str>),
}

/// The per-user limit on loading rooms, shared by every connection.
pub(crate) struct RoomLoads {
    rate: Option<Rate>,
    max_users: usize,
    start: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    users: HashMap<Who, u64>,
    /// No tracked user's bucket is full before this (a lower bound): sweeping earlier frees
    /// nothing.
    first_full: u64,
    last_sweep: u64,
}

impl RoomLoads {
    pub(crate) fn new(c: &RateConfig) -> RoomLoads {
        RoomLoads {
            rate: Rate::new(c.rooms_per_minute, c.rooms_burst, MINUTE, "new rooms"),
            max_users: c.rooms_users,
            start: Instant::now(),
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this lock leaves at worst one bucket not updated.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `peer`'s request is about to load a room: takes one from its user's bucket, or refuses.
    pub(crate) fn admit(&self, peer: &Peer) -> Result<(), ReplyError> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let who = match &peer.user {
            Some(u) => Who::User(u.clone()),
            None => Who::Conn(peer.id.clone()),
        };
        self.admit_at(rate, who, nanos_since(self.start, Instant::now()))
    }

    fn admit_at(&self, rate: Rate, who: Who, now: u64) -> Result<(), ReplyError> {
        let mut t = self.lock();
        if let Some(tat) = t.users.get_mut(&who) {
            *tat = rate.take(*tat, now, 1).map_err(|w| rate.refusal(w))?;
            return Ok(());
        }
        let full = t.users.len() >= self.max_users;
        let since_sweep = now.saturating_sub(t.last_sweep);
        let due = if full { SWEEP_GAP } else { SWEEP_EVERY };
        if since_sweep >= due && now >= t.first_full {
            t.users.retain(|_, tat| *tat > now);
            t.first_full = t.users.values().copied().min().unwrap_or(u64::MAX);
            t.last_sweep = now;
        }
        if t.users.len() >= self.max_users {
            let next_sweep = t.first_full.max(t.last_sweep.saturating_add(SWEEP_GAP));
            let wait = next_sweep.saturating_sub(now);
            return Err(limited(
                format!(
                    "rate limit: {} users are loading rooms; retry later",
                    self.max_users
                ),
                rate.rate,
                wait,
            ));
        }
        let tat = rate.take(0, now, 1).map_err(|w| rate.refusal(w))?;
        t.first_full = t.first_full.min(tat);
        t.users.insert(who, tat);
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().users.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(f: impl FnOnce(&mut RateConfig)) -> RateConfig {
        let mut c = RateConfig {
            rooms_per_minute: 0,
            ..RateConfig::default()
        };
        f(&mut c);
        c
    }

    fn publish(len: usize) -> Cost {
        Cost::Publish { bytes: len }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn publishes_pass_up_to_the_burst_then_wait_for_the_rate() {
        let mut l = ConnLimits::new(&config(|c| {
            c.publishes_per_sec = 10;
            c.publishes_burst = 3;
        }));
        let p = publish(1);
        for _ in 0..3 {
            l.admit_at(p, Duration::ZERO).unwrap();
        }
        let e = l.admit_at(p, Duration::ZERO).unwrap_err();
        assert_eq!(e.code, ErrorCode::Limit);
        assert_eq!(e.retry_after_ms, Some(100));
        assert_eq!(e.max, Some(10));
        l.admit_at(p, 100 * MS).unwrap();
        assert!(l.admit_at(p, 150 * MS).is_err());
        l.admit_at(p, 200 * MS).unwrap();
    }

    #[test]
    fn a_refused_publish_takes_from_no_bucket() {
        let mut l = ConnLimits::new(&config(|c| {
            c.publishes_per_sec = 100;
            c.publish_bytes_per_sec = 1000;
        }));
        l.admit_at(publish(900), Duration::ZERO).unwrap();
        let e = l.admit_at(publish(200), Duration::ZERO).unwrap_err();
        assert_eq!(e.retry_after_ms, Some(100));
        // The refused one took no publish token: 99 more of 1 byte still fit.
        for _ in 0..99 {
            l.admit_at(publish(1), Duration::ZERO).unwrap();
        }
        assert!(l.admit_at(publish(0), Duration::ZERO).is_err());
    }

    #[test]
    fn off_limits_admit_everything() {
        let mut l = ConnLimits::new(&RateConfig::default());
        for _ in 0..100_000 {
            l.admit(publish(64 * 1024)).unwrap();
        }
    }

    fn who(n: u32) -> Who {
        Who::User(Arc::from(format!("u{n}").as_str()))
    }

    #[test]
    fn room_loads_per_user_and_the_table_bound() {
        let loads = RoomLoads::new(&config(|c| {
            c.rooms_per_minute = 60;
            c.rooms_burst = 2;
            c.rooms_users = 2;
        }));
        let rate = loads.rate.unwrap();
        let s = 1_000_000_000;
        loads.admit_at(rate, who(1), 0).unwrap();
        loads.admit_at(rate, who(1), 0).unwrap();
        let e = loads.admit_at(rate, who(1), 0).unwrap_err();
        assert_eq!(e.retry_after_ms, Some(1000));
        loads.admit_at(rate, who(2), 0).unwrap();
        // Full of users who are not refilled: a third is refused until the first refills.
        let e = loads.admit_at(rate, who(3), s / 2).unwrap_err();
        assert_eq!(e.retry_after_ms, Some(500));
        loads.admit_at(rate, who(3), s).unwrap();
        assert_eq!(loads.tracked(), 2);
        // Users whose buckets refilled are forgotten.
        loads.admit_at(rate, who(4), 10 * s).unwrap();
        assert_eq!(loads.tracked(), 1);
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::Config;

    #[test]
    fn a_byte_burst_below_the_largest_payload_is_refused() {
        let mut c = Config::default();
        c.rate.publish_bytes_per_sec = 1000;
        assert!(c.validate().is_err(), "a largest publish could never pass");
        c.rate.publish_bytes_burst = c.limits.payload_bytes as u64;
        assert!(c.validate().is_ok());
    }
}
