//! What a room needs from the rest of the server, gathered once.
//!
//! The registry builds one [`RoomEnv`] and every room it spawns holds an `Arc` of it, cloned
//! once when the room loads. A room therefore depends on a store, a writer and a handful of
//! numbers rather than on the registry and the whole configuration, which is what lets its
//! batching, de-duplication and replay switch be driven directly in unit tests.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::{Config, PresenceMode};
use crate::engine::Engine;
use crate::store::reader::LoadLimits;
use crate::store::WriterHandle;
use crate::webhook::Webhooks;

/// A room's environment: where it reads and writes, and the limits it applies.
#[derive(Clone)]
pub(crate) struct RoomEnv {
    /// For loading the room and for its subscribers' replay reads; on Redis, also where its
    /// batches go.
    pub engine: Engine,
    /// Where the room's batches go on the embedded store.
    pub writer: WriterHandle,
    pub limits: RoomLimits,
    /// Where a room spawns its subscribers' replay tasks, so shutdown waits for them (after
    /// the sockets close, which ends any replay waiting for its subscriber to read).
    pub background: TaskTracker,
    /// Where the room's events for `[[webhooks]]` go (joins, leaves, messages, ...).
    pub webhooks: Webhooks,
}

/// The configuration values a room uses, copied out of [`Config`] so a room reads plain fields.
#[derive(Debug, Clone)]
pub(crate) struct RoomLimits {
    /// A room with no subscriber and nothing to write stops after this long.
    pub idle_unload: Duration,
    /// How many of the newest frames a room keeps in memory for catch-up.
    pub cache_entries: usize,
    /// How long a stored `mid` de-duplicates a retried publish.
    pub dedup_window_secs: u64,
    /// At most this many `mid`s are remembered per room.
    pub dedup_max: usize,
    pub keys_per_room: usize,
    /// The most a subscriber catches up on from the cache, and the least a replay page holds
    /// ([`RoomLimits::replay_page`]).
    pub page: usize,
    /// The largest frame a client reads (`limits.frame`): no reply is larger (`subbed`, `snap`
    /// and `who` are split to fit), and a replay page holds at most this many bytes.
    pub frame_bytes: usize,
    /// A subscriber's outbox bound: a catch-up from the cache takes at most half of it.
    pub outbox_max_bytes: usize,
    /// A subscriber's outbox bound in frames: a replay page is a quarter of it.
    pub outbox_max_frames: usize,
    /// Presence a room holds, in bytes (`rooms.presence_bytes`).
    pub presence_bytes: usize,
    /// The reconnect grace (`rooms.presence_grace_ms`; zero: off).
    pub presence_grace: Duration,
    /// Departures a room holds for the grace at once (`rooms.presence_grace_max`).
    pub presence_grace_max: usize,
    /// The configuration, for what differs per room: its namespace's retention and
    /// subscriber cap ([`RoomLimits::rules`]).
    pub config: Arc<Config>,
}

impl RoomEnv {
    /// What a room's load reads at `now` (ms since the Unix epoch): the cache's entries, and
    /// the `mid`s of the window.
    pub(crate) fn load_limits(&self, now: u64) -> LoadLimits {
        LoadLimits {
            recent: self.limits.cache_entries,
            dedup_max: self.limits.dedup_max,
            dedup_since_ms: now.saturating_sub(self.limits.dedup_window_secs * 1000),
        }
    }

    pub(crate) fn new(
        engine: Engine,
        writer: WriterHandle,
        config: &Config,
        background: TaskTracker,
        webhooks: Webhooks,
    ) -> RoomEnv {
        RoomEnv {
            engine,
            writer,
            limits: RoomLimits::from_config(config),
            background,
            webhooks,
        }
    }
}

/// What applies to one room alone (its namespace's settings, or the defaults).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoomRules {
    /// Subscribers it takes at once (0: no limit).
    pub max_subscribers: usize,
    /// Retention: keep at most this many entries (0: no bound).
    pub retain_messages: u64,
    /// Retention: drop entries older than this (0: no bound).
    pub retain_age_secs: u64,
    /// What its presence subscribers are sent (SPEC.md 4.12).
    pub presence_mode: PresenceMode,
    /// `presence_mode = "counts"`: the least time between two `count`s.
    pub count_interval: Duration,
}

impl RoomLimits {
    pub(crate) fn from_config(config: &Config) -> RoomLimits {
        RoomLimits {
            idle_unload: Duration::from_secs(config.rooms.idle_unload_secs),
            cache_entries: config.rooms.cache_entries,
            dedup_window_secs: config.rooms.dedup_window_secs,
            dedup_max: config.rooms.dedup_max,
            keys_per_room: config.limits.keys_per_room,
            page: config.limits.page,
            frame_bytes: config.websocket.max_frame_bytes,
            outbox_max_bytes: config.outbox.max_bytes,
            outbox_max_frames: config.outbox.max_frames,
            presence_bytes: config.rooms.presence_bytes,
            presence_grace: Duration::from_millis(config.rooms.presence_grace_ms),
            presence_grace_max: config.rooms.presence_grace_max,
            config: Arc::new(config.clone()),
        }
    }

    /// Entries per replay page: a quarter of the outbox (half of it is for replay, so the
    /// next page can be read while this one is written), and at least `limits.page`: each page
    /// costs a read transaction and hand-offs between threads, which pages of 256 paid every
    /// 256 messages of a catch-up (#19).
    pub(crate) fn replay_page(&self) -> usize {
        (self.outbox_max_frames / 4).max(self.page)
    }

    /// What applies to `room` alone, from its namespace: read once when the room loads.
    pub(crate) fn rules(&self, room: &str) -> RoomRules {
        let (retain_messages, retain_age_secs) = self.config.retention_of(room);
        let ns = self.config.namespace(room);
        RoomRules {
            max_subscribers: ns.map_or(0, |n| n.max_subscribers),
            retain_messages,
            retain_age_secs,
            presence_mode: ns.map_or(PresenceMode::Conns, |n| n.presence_mode),
            count_interval: Duration::from_millis(ns.map_or(1000, |n| n.count_interval_ms)),
        }
    }
}
