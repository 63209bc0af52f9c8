//! What a room needs from the rest of the server, gathered once.
//!
//! The registry builds one [`RoomEnv`] and every room it spawns holds an `Arc` of it, cloned
//! once when the room loads. A room therefore depends on a store, a writer and a handful of
//! numbers rather than on the registry and the whole configuration, which is what lets its
//! batching, de-duplication and replay switch be driven directly in unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::store::{Store, WriterHandle};

/// A room's environment: where it reads and writes, and the limits it applies.
#[derive(Clone)]
pub(crate) struct RoomEnv {
    /// For loading the room and for its subscribers' replay reads.
    pub store: Store,
    /// Where the room's batches go.
    pub writer: WriterHandle,
    pub limits: RoomLimits,
    /// Where a room spawns its subscribers' replay tasks, so shutdown waits for them (after
    /// the sockets close, which ends any replay waiting for its subscriber to read).
    pub background: TaskTracker,
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
    /// Entries per replay page, and the most a subscriber catches up on from the cache.
    pub page: usize,
    /// The largest frame a client reads (`limits.frame`): no reply is larger (`subbed`, `snap`
    /// and `who` are split to fit), and a replay page holds at most this many bytes.
    pub frame_bytes: usize,
    /// A subscriber's outbox bound: a catch-up from the cache takes at most half of it.
    pub outbox_max_bytes: usize,
    /// Presence a room holds, in bytes (`rooms.presence_bytes`).
    pub presence_bytes: usize,
    /// Retention: keep at most this many entries (0: no bound).
    pub retain_messages: u64,
    /// Retention: drop entries older than this (0: no bound).
    pub retain_age_secs: u64,
    /// `max_subscribers` of the namespaces that set one (`namespaces.NAME.max_subscribers`).
    pub max_subscribers: Arc<BTreeMap<String, usize>>,
}

impl RoomEnv {
    pub(crate) fn new(
        store: Store,
        writer: WriterHandle,
        config: &Config,
        background: TaskTracker,
    ) -> RoomEnv {
        RoomEnv {
            store,
            writer,
            limits: RoomLimits::from_config(config),
            background,
        }
    }
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
            presence_bytes: config.rooms.presence_bytes,
            retain_messages: config.retention.max_messages,
            retain_age_secs: config.retention.max_age_secs,
            max_subscribers: Arc::new(
                config
                    .namespaces
                    .iter()
                    .filter(|(_, ns)| ns.max_subscribers > 0)
                    .map(|(name, ns)| (name.clone(), ns.max_subscribers))
                    .collect(),
            ),
        }
    }

    /// The most subscribers `room` takes at once (its namespace's setting); 0: no limit.
    pub(crate) fn max_subscribers(&self, room: &str) -> usize {
        room.split_once(':')
            .and_then(|(ns, _)| self.max_subscribers.get(ns))
            .copied()
            .unwrap_or(0)
    }
}
