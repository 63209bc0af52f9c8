//! `[cluster]`: where rooms live. The embedded store (one node) is the default; `redis` lets
//! many roomd nodes share rooms through one Redis (or Valkey) server.

use serde::{Deserialize, Serialize};

/// The engine that orders and keeps every room's log and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EngineKind {
    /// redb in `server.data_dir`: one node.
    #[default]
    Embedded,
    /// Redis >= 7.0 or Valkey: any number of nodes.
    Redis,
}

/// What a node demands of Redis's persistence before it acknowledges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClusterDurability {
    /// `appendonly yes` and `appendfsync always`: an ack means fsynced on the Redis primary.
    /// A node refuses to start otherwise.
    #[default]
    Strict,
    /// Whatever Redis is configured with (`everysec` loses up to a second of acknowledged
    /// writes in a Redis crash; the loss fence then rotates the room's epoch). A node logs a
    /// warning at start.
    Relaxed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub engine: EngineKind,
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). With `sentinels`, its
    /// host and port are replaced by the primary's that Sentinel names; the rest (credentials,
    /// database, TLS) applies to it.
    pub redis_url: String,
    /// Redis Sentinel addresses (`redis://host:26379`), asked in order for the primary named
    /// `sentinel_master`; empty: `redis_url` is the primary. A node follows a failover as soon
    /// as Sentinel names the new primary.
    pub sentinels: Vec<String>,
    /// The name Sentinel monitors the primary under (`sentinel monitor <name> ...`).
    pub sentinel_master: String,
    /// This node's name in `hello` and logs; empty: the host name and the listen port.
    pub node_id: String,
    pub durability: ClusterDurability,
    /// How long one Redis call may take before the write or read that made it fails with 503.
    pub timeout_ms: u64,
    /// While Redis is unreachable for this long, subscribers are closed with a reconnect code
    /// (4004) rather than left on a room that cannot move, and `/readyz` says not ready.
    pub unreachable_grace_ms: u64,
    /// How often a node compares each loaded room's last seq with Redis's, to fill what its
    /// subscription to the room's channel missed (pub/sub does not redeliver).
    pub probe_ms: u64,
    /// A node that has not renewed its heartbeat for this long is gone: every other node
    /// removes its connections from presence (with a `leave` each).
    pub node_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            engine: EngineKind::Embedded,
            redis_url: String::new(),
            sentinels: Vec::new(),
            sentinel_master: String::from("mymaster"),
            node_id: String::new(),
            durability: ClusterDurability::Strict,
            timeout_ms: 5_000,
            unreachable_grace_ms: 5_000,
            probe_ms: 1_000,
            node_ttl_ms: 5_000,
        }
    }
}

impl ClusterConfig {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.engine == EngineKind::Redis && self.redis_url.is_empty() {
            out.push("cluster.redis_url must be set when cluster.engine = \"redis\"".into());
        }
        if !self.sentinels.is_empty() && self.sentinel_master.is_empty() {
            out.push(
                "cluster.sentinel_master must name the primary when cluster.sentinels is set"
                    .into(),
            );
        }
        for (v, name) in [
            (self.timeout_ms, "timeout_ms"),
            (self.unreachable_grace_ms, "unreachable_grace_ms"),
            (self.probe_ms, "probe_ms"),
            (self.node_ttl_ms, "node_ttl_ms"),
        ] {
            if v == 0 {
                out.push(format!("cluster.{name} must be at least 1"));
            }
        }
        out
    }
}
