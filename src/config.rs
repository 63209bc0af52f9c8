//! The broker's configuration, read from TOML (`config/roomd.toml` documents every key).
//!
//! Every queue, buffer and cache in roomd takes its bound from here; the defaults are sized for
//! a small server with many mostly-idle connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::Allow;

mod api;
mod cluster;
mod proxy;
mod webhook;
pub use api::{ApiConfig, ApiKeyConfig, Scope, MIN_KEY_BYTES};
pub use cluster::{ClusterConfig, ClusterDurability, EngineKind};
pub use proxy::{OnFailure, ProxyConfig, PROXY_CALLS};
pub use webhook::{WebhookConfig, EVENT_TYPES};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("invalid environment variable {var}: {source}")]
    Env {
        var: String,
        source: Box<toml::de::Error>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub websocket: WebSocketConfig,
    pub limits: LimitsConfig,
    pub rate: RateConfig,
    pub outbox: OutboxConfig,
    pub rooms: RoomsConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub ui: UiConfig,
    pub permissions: PermissionsConfig,
    /// The server API for backends (`/api/v1`).
    pub api: ApiConfig,
    /// Where rooms live: the embedded store, or Redis shared by many nodes.
    pub cluster: ClusterConfig,
    /// Settings per namespace: the part of a room name before its first `:` (`chat` for
    /// `chat:lobby`). A room without a `:`, or whose namespace has no table here, gets the
    /// defaults.
    pub namespaces: std::collections::BTreeMap<String, NamespaceConfig>,
    /// HTTP endpoints told of connections, joins, rooms, messages and state changes, through
    /// a durable outbox (README "Webhooks").
    pub webhooks: Vec<WebhookConfig>,
    /// Application endpoints that decide connects, subscribes and publishes (README "Proxy
    /// hooks"); each `[[proxy]]` table is one.
    pub proxy: Vec<ProxyConfig>,
}

/// The bundled chat.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// With auth on: a same-origin path (`/auth/roomd-token`) the chat fetches its token from,
    /// with the user's cookies; it answers a JWT as text, or JSON `{"token": ...}`.
    pub token_url: String,
}

/// What a connection may do in a room when its token has no `rooms` claim (SPEC.md 9.2).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionsConfig {
    /// With a verified token.
    pub authenticated: Allow,
    /// Without one: every connection of an open server, and (with `allow_anonymous`) a
    /// connection without a token on a server that checks tokens.
    pub anonymous: Allow,
    /// With token checks on: admit connections that bring no token (as anonymous).
    pub allow_anonymous: bool,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        PermissionsConfig {
            authenticated: Allow::ALL,
            anonymous: Allow::ALL,
            allow_anonymous: false,
        }
    }
}

/// One namespace's settings; each permission set left out is `[permissions]`'s.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    pub authenticated: Option<Allow>,
    pub anonymous: Option<Allow>,
    /// Presence (a `sub` with `presence` or `info`, and `who`) in this namespace's rooms.
    pub presence: bool,
    /// Subscribers a room of this namespace takes at once; 0: no limit.
    pub max_subscribers: usize,
    /// Retention of this namespace's rooms; unset: `[retention]`'s.
    pub max_messages: Option<u64>,
    pub max_age_secs: Option<u64>,
    /// Publishes per second per connection into this namespace's rooms (a token bucket beside
    /// `[rate]`'s, which still applies); 0: no limit of its own.
    pub publishes_per_sec: u64,
    pub publishes_burst: u64,
    /// What presence subscribers of its rooms are sent (SPEC.md 4.12).
    pub presence_mode: PresenceMode,
    /// `presence_mode = "counts"`: at most one `count` per room per this many milliseconds.
    pub count_interval_ms: u64,
}

/// The shape of a namespace's presence (SPEC.md 4.12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceMode {
    /// One entry per connection (protocol v1's `join`/`leave`).
    #[default]
    Conns,
    /// One entry per user id, with the count of its connections.
    Users,
    /// Only the numbers, coalesced to one `count` per `count_interval_ms`.
    Counts,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            authenticated: None,
            anonymous: None,
            presence: true,
            max_subscribers: 0,
            max_messages: None,
            max_age_secs: None,
            publishes_per_sec: 0,
            publishes_burst: 0,
            presence_mode: PresenceMode::Conns,
            count_interval_ms: 1000,
        }
    }
}

/// TLS on the main port: both files set, or neither (plain HTTP and `ws://`, for a port behind
/// a TLS-terminating proxy or on loopback). Relative paths are taken from the config file's
/// directory, like `server.data_dir`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// An optional second listener for operators: `/metrics`, `/healthz` and `/readyz` only, on an
/// address that need not be public.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_timeout_ms: u64,
    /// Proxies whose `X-Forwarded-For` is believed for the client address in logs.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Browser origins (`https://app.example.com`) allowed to open WebSockets besides the
    /// server's own; `"*"` allows any. A request without `Origin` (not a browser) is allowed.
    pub allowed_origins: Vec<String>,
    pub log_format: LogFormat,
    pub shutdown_timeout_ms: u64,
    pub lame_duck_ms: u64,
    /// The listen queue: connections the kernel completes before the server accepts them. A
    /// restart brings every client back at once; the kernel drops a connection beyond the queue
    /// and the client's retry comes a second later. Capped by `net.core.somaxconn`.
    pub listen_backlog: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub max_frame_bytes: usize,
    pub ping_interval_secs: u32,
    pub write_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub payload_bytes: usize,
    pub room_name_bytes: usize,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub info_bytes: usize,
    pub subscriptions_per_connection: usize,
    pub page: usize,
    pub keys_per_room: usize,
    pub mid_bytes: usize,
    /// Requests one connection may have in flight (read, not yet answered); at the bound the
    /// connection stops reading its socket until a reply is queued.
    pub requests_in_flight: usize,
    /// Shortest and longest `ttl_ms` of a state write (SPEC.md 4.13), in milliseconds.
    pub ttl_min_ms: u64,
    pub ttl_max_ms: u64,
}

/// Per-connection and per-user rate limits (token buckets, see `src/ratelimit.rs`). A rate of
/// 0 turns that limit off; a burst of 0 means one period's worth (the rate itself).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Publishes per second per connection.
    pub publishes_per_sec: u64,
    pub publishes_burst: u64,
    /// Published `data` bytes per second per connection.
    pub publish_bytes_per_sec: u64,
    pub publish_bytes_burst: u64,
    /// State writes (`put`, `del`, `cas`, `incr`) per second per connection.
    pub state_writes_per_sec: u64,
    pub state_writes_burst: u64,
    /// Rooms a user may cause to be loaded, per minute.
    pub rooms_per_minute: u64,
    pub rooms_burst: u64,
    /// In-band token refreshes (`auth`) per minute per connection: each costs a signature check.
    pub auths_per_minute: u64,
    pub auths_burst: u64,
    /// Users the room-load limiter tracks at once (its memory bound).
    pub rooms_users: usize,
    /// Presence updates (`sub` with `info`) per second per connection: each is sent to every
    /// presence subscriber of the room, so a connection re-subscribing in a loop would
    /// multiply its traffic by the room's size.
    pub presence_updates_per_sec: u64,
    pub presence_updates_burst: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    pub max_frames: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub inbox: usize,
    pub idle_unload_secs: u64,
    pub cache_entries: usize,
    pub dedup_window_secs: u64,
    pub dedup_max: usize,
    /// Bytes of presence a room holds: every member's encoded `info` plus its connection and
    /// user ids and 32 bytes of framing. A `sub` whose member would pass it gets 429.
    pub presence_bytes: usize,
    /// Reconnect grace (SPEC.md 4.12): a subscription of a user's connection that drops stays
    /// (in presence, to webhooks) this long, and a subscription of the same user to the room
    /// within it takes its place without a leave. 0: off.
    pub presence_grace_ms: u64,
    /// Departures a room holds for the grace at once; a drop past it is final at once.
    pub presence_grace_max: usize,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only on a terminal without `NO_COLOR`.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Ack after fsync (of the write-ahead log; redb is checkpointed periodically).
    Durable,
    /// Ack after the write-ahead log append reaches the OS; fsync every `flush_interval_ms`.
    Relaxed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub durability: Durability,
    pub flush_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    pub checkpoint_bytes: u64,
    pub apply_bytes: usize,
    pub max_batch: usize,
    pub queue: usize,
    pub cache_bytes: usize,
}

impl StorageConfig {
    /// The writer's tick: relaxed mode fsyncs the log on it (its loss window); checkpoints
    /// are taken on the first tick after `checkpoint_interval_ms`.
    pub fn flush_every(&self) -> Duration {
        Duration::from_millis(match self.durability {
            Durability::Relaxed => self.flush_interval_ms.min(self.checkpoint_interval_ms),
            Durability::Durable => self.checkpoint_interval_ms,
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_messages: u64,
    pub max_age_secs: u64,
    pub sweep_interval_secs: u64,
}

/// Token verification (SPEC.md section 9). Any key source (`jwt_secret`, `public_key`,
/// `jwks_file`, `jwks_url`) turns authentication on; they may be combined, and a token's key is
/// picked by its header's `alg` and `kid` among the keys of that algorithm's family. Relative
/// paths are taken from the config file's directory, like `server.data_dir`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC secret (HS256, HS384, HS512); empty: none.
    pub jwt_secret: String,
    /// A PEM public key file: RSA, EC (P-256 or P-384) or Ed25519.
    pub public_key: Option<PathBuf>,
    /// A JWKS document (RFC 7517) file, read at startup.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document's `http://` or `https://` URL, fetched at startup, every
    /// `jwks_refresh_secs`, and when a token names a key id it does not hold.
    pub jwks_url: Option<String>,
    /// The algorithms a token may be signed with; empty: every algorithm of the keys configured.
    #[serde(deserialize_with = "one_or_many")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Accepted `iss` values; empty: `iss` is not checked. A string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values; empty: a token with an `aud` claim is refused. A string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// How long before its token's `exp` a connection is sent `expiring` (SPEC.md 9.3).
    pub refresh_window_secs: u64,
    /// How often the JWKS at `jwks_url` is fetched again, so removed keys stop verifying.
    pub jwks_refresh_secs: u64,
    /// At most one JWKS fetch per this many seconds, whatever asks for it: a client sending
    /// unknown key ids cannot make roomd hammer the JWKS server.
    pub jwks_min_refetch_secs: u64,
    /// How long one JWKS fetch may take (connect, TLS, response).
    pub jwks_timeout_ms: u64,
}

/// A JWT signature algorithm (RFC 7518 names). There is no `none`.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// An HMAC algorithm: verified with a shared secret, not a public key.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

impl AuthConfig {
    /// Whether connections need a token: some key source is configured.
    pub fn enabled(&self) -> bool {
        !self.jwt_secret.is_empty() || self.has_public_keys()
    }

    /// Whether a public-key source (PEM file or JWKS) is configured.
    pub fn has_public_keys(&self) -> bool {
        self.public_key.is_some() || self.jwks_file.is_some() || self.jwks_url.is_some()
    }
}

/// A value that may be written as one string or as a list (`audience = "roomd"` or
/// `audience = ["roomd", "chat"]`), so an environment variable can set a single value.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    struct OneOrMany<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::de::DeserializeOwned> serde::de::Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(serde::de::value::StrDeserializer::<E>::new(v)).map(|t| vec![t])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(OneOrMany(std::marker::PhantomData))
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            public_key: None,
            jwks_file: None,
            jwks_url: None,
            algorithms: Vec::new(),
            issuer: Vec::new(),
            audience: Vec::new(),
            leeway_secs: 0,
            refresh_window_secs: 60,
            jwks_refresh_secs: 600,
            jwks_min_refetch_secs: 30,
            jwks_timeout_ms: 5000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("data"),
            max_connections: 19_000,
            max_connections_per_ip: 0,
            header_timeout_ms: 10_000,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            log_format: LogFormat::Text,
            shutdown_timeout_ms: 10_000,
            lame_duck_ms: 0,
            listen_backlog: 4096,
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            read_buffer_bytes: 256,
            write_buffer_bytes: 16 * 1024,
            max_frame_bytes: 1024 * 1024,
            ping_interval_secs: 20,
            write_timeout_ms: 10_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            payload_bytes: 64 * 1024,
            room_name_bytes: 128,
            key_bytes: 256,
            value_bytes: 16 * 1024,
            info_bytes: 1024,
            subscriptions_per_connection: 1024,
            page: 256,
            keys_per_room: 1000,
            mid_bytes: 64,
            requests_in_flight: 1024,
            ttl_min_ms: 100,
            ttl_max_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            publishes_per_sec: 0,
            publishes_burst: 0,
            publish_bytes_per_sec: 0,
            publish_bytes_burst: 0,
            state_writes_per_sec: 0,
            state_writes_burst: 0,
            rooms_per_minute: 600,
            rooms_burst: 1024,
            auths_per_minute: 6,
            auths_burst: 3,
            rooms_users: 65_536,
            presence_updates_per_sec: 5,
            presence_updates_burst: 20,
        }
    }
}

impl RateConfig {
    /// A configured burst, or the rate when the burst is 0.
    pub fn burst(rate: u64, burst: u64) -> u64 {
        if burst == 0 {
            rate
        } else {
            burst
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_frames: 4096,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            inbox: 1024,
            idle_unload_secs: 60,
            cache_entries: 256,
            dedup_window_secs: 600,
            dedup_max: 1024,
            presence_bytes: 1024 * 1024,
            presence_grace_ms: 5000,
            presence_grace_max: 10_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Durable,
            flush_interval_ms: 50,
            checkpoint_interval_ms: 500,
            checkpoint_bytes: 8 * 1024 * 1024,
            apply_bytes: 256 * 1024,
            max_batch: 4096,
            queue: 16 * 1024,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_messages: 0,
            max_age_secs: 0,
            sweep_interval_secs: 60,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that would make the broker misbehave rather than merely be slow.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let r = &self.rate;
        let checks = [
            (
                self.server.max_connections >= 1,
                "server.max_connections must be at least 1",
            ),
            (
                self.outbox.max_frames >= 1 && self.outbox.max_bytes >= 1,
                "outbox.max_frames and outbox.max_bytes must be at least 1",
            ),
            (self.storage.queue >= 1, "storage.queue must be at least 1"),
            (
                self.limits.subscriptions_per_connection >= 1,
                "limits.subscriptions_per_connection must be at least 1",
            ),
            (
                self.server.listen_backlog >= 1,
                "server.listen_backlog must be at least 1",
            ),
            (
                self.server.header_timeout_ms >= 1,
                "server.header_timeout_ms must be at least 1",
            ),
            (l.page >= 1, "limits.page must be at least 1"),
            (
                l.room_name_bytes >= 1,
                "limits.room_name_bytes must be at least 1",
            ),
            (l.mid_bytes <= 128, "limits.mid_bytes must be at most 128"),
            (
                l.ttl_min_ms >= 1 && l.ttl_min_ms <= l.ttl_max_ms,
                "limits.ttl_min_ms must be at least 1 and at most limits.ttl_max_ms",
            ),
            (
                l.requests_in_flight >= 1,
                "limits.requests_in_flight must be at least 1",
            ),
            (
                l.payload_bytes + 1024 <= self.websocket.max_frame_bytes,
                "websocket.max_frame_bytes must exceed limits.payload_bytes by 1 KiB",
            ),
            (
                self.outbox.max_frames >= 2 * l.page,
                "outbox.max_frames must be at least 2 × limits.page",
            ),
            (
                self.outbox.max_bytes >= 2 * self.websocket.max_frame_bytes,
                "outbox.max_bytes must be at least 2 × websocket.max_frame_bytes",
            ),
            (self.rooms.inbox >= 1, "rooms.inbox must be at least 1"),
            (
                self.rooms.presence_grace_ms <= 600_000,
                "rooms.presence_grace_ms must be at most 600000",
            ),
            (
                self.namespaces.values().all(|n| n.count_interval_ms >= 10),
                "namespaces.*.count_interval_ms must be at least 10",
            ),
            (
                self.rooms.presence_bytes >= l.info_bytes + 512,
                "rooms.presence_bytes must exceed limits.info_bytes by 512 bytes",
            ),
            (
                self.storage.max_batch >= 1,
                "storage.max_batch must be at least 1",
            ),
            (
                self.websocket.ping_interval_secs >= 1,
                "websocket.ping_interval_secs must be at least 1",
            ),
            (
                r.publish_bytes_per_sec == 0
                    || RateConfig::burst(r.publish_bytes_per_sec, r.publish_bytes_burst)
                        >= l.payload_bytes as u64,
                "rate.publish_bytes_burst (or, if 0, rate.publish_bytes_per_sec) must be at least limits.payload_bytes",
            ),
            (
                r.rooms_per_minute == 0 || r.rooms_users >= 1,
                "rate.rooms_users must be at least 1",
            ),
            (
                self.tls.cert.is_some() == self.tls.key.is_some(),
                "tls.cert and tls.key must be set together",
            ),
            (
                self.ui.token_url.is_empty()
                    || (self.ui.token_url.starts_with('/') && !self.ui.token_url.starts_with("//")),
                "ui.token_url must be a same-origin path starting with /",
            ),
        ];
        let mut failed: Vec<String> = checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, msg)| (*msg).to_string())
            .collect();
        failed.extend(self.auth.problems());
        failed.extend(self.api.problems());
        failed.extend(self.cluster.problems());
        failed.extend(webhook::problems(&self.webhooks));
        failed.extend(proxy::problems(&self.proxy));
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(failed))
        }
    }

    /// The settings of `room`'s namespace (the part of its name before the first `:`), when
    /// the config has a table for it.
    pub fn namespace(&self, room: &str) -> Option<&NamespaceConfig> {
        if self.namespaces.is_empty() {
            return None;
        }
        let (ns, _) = room.split_once(':')?;
        self.namespaces.get(ns)
    }

    /// `room`'s retention, (max messages, max age in seconds), 0 meaning no bound: its
    /// namespace's where set, else `[retention]`'s.
    pub fn retention_of(&self, room: &str) -> (u64, u64) {
        let r = &self.retention;
        let ns = self.namespace(room);
        (
            ns.and_then(|n| n.max_messages).unwrap_or(r.max_messages),
            ns.and_then(|n| n.max_age_secs).unwrap_or(r.max_age_secs),
        )
    }

    /// Whether any room can have retention (the sweep runs only then).
    pub fn retention_anywhere(&self) -> bool {
        let r = &self.retention;
        r.max_messages > 0
            || r.max_age_secs > 0
            || self.namespaces.values().any(|n| {
                n.max_messages.is_some_and(|m| m > 0) || n.max_age_secs.is_some_and(|a| a > 0)
            })
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.websocket.ping_interval_secs))
    }

    /// The limits as announced to clients in `hello`.
    pub fn wire_limits(&self) -> roomd_protocol::Limits {
        let l = &self.limits;
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        roomd_protocol::Limits {
            frame: n(self.websocket.max_frame_bytes),
            payload: n(l.payload_bytes),
            room: n(l.room_name_bytes),
            key: n(l.key_bytes),
            value: n(l.value_bytes),
            info: n(l.info_bytes),
            subs: n(l.subscriptions_per_connection),
            page: n(l.page),
            keys: n(l.keys_per_room),
            mid: n(l.mid_bytes),
        }
    }
}

/// The prefix of environment variables that override config keys: `ROOMD_SECTION_KEY`, e.g.
/// `ROOMD_SERVER_LISTEN=0.0.0.0:7700` or `ROOMD_STORAGE_DURABILITY=relaxed`.
pub const ENV_PREFIX: &str = "ROOMD_";

/// A `jwt_secret` shorter than this is accepted with a warning: HS256 keys should have at
/// least as many bytes as the hash (RFC 7518 section 3.2).
pub const WEAK_SECRET_BYTES: usize = 32;

impl Config {
    /// The config a server runs with: the file (if any), then every `ROOMD_SECTION_KEY`
    /// variable in `env` over it, then a relative `server.data_dir` (and TLS file) taken from
    /// the file's directory (so a service started from anywhere uses the files its config says).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut config, text) = match path {
            // Parsed on its own first, so a mistake in the file is reported with its line.
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
                (config, text)
            }
            None => (Config::default(), String::new()),
        };
        let overrides = env_overrides(env);
        if !overrides.is_empty() {
            config = with_overrides(&text, &overrides)?;
        }
        if let Some(dir) = path.and_then(Path::parent) {
            let paths = [
                Some(&mut config.server.data_dir),
                config.tls.cert.as_mut(),
                config.tls.key.as_mut(),
                config.auth.public_key.as_mut(),
                config.auth.jwks_file.as_mut(),
            ];
            for p in paths.into_iter().flatten() {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML, with secrets masked (for `roomd check-config`).
    pub fn to_toml_masked(&self) -> String {
        let mut shown = self.clone();
        if !shown.auth.jwt_secret.is_empty() {
            shown.auth.jwt_secret = "********".into();
        }
        for key in &mut shown.api.keys {
            key.key = "********".into();
        }
        for proxy in &mut shown.proxy {
            if !proxy.secret.is_empty() {
                proxy.secret = "********".into();
            }
        }
        for hook in &mut shown.webhooks {
            if !hook.secret.is_empty() {
                hook.secret = "********".into();
            }
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot show the config: {e}\n"))
    }

    /// Settings that work but are probably not what the operator wants.
    pub fn warnings(&self) -> Vec<String> {
        self.auth.warnings()
    }
}

/// The largest `auth.leeway_secs`: clocks further apart than this are broken, not skewed.
pub const MAX_LEEWAY_SECS: u64 = 600;

impl AuthConfig {
    /// What makes `[auth]` unusable, one message each (see [`Config::validate`]).
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(url) = &self.jwks_url {
            if let Err(why) = check_jwks_url(url) {
                out.push(format!("auth.jwks_url {url:?}: {why}"));
            }
        }
        let checks = [
            (
                self.jwks_min_refetch_secs >= 1,
                "auth.jwks_min_refetch_secs must be at least 1",
            ),
            (
                self.jwks_refresh_secs >= self.jwks_min_refetch_secs,
                "auth.jwks_refresh_secs must be at least auth.jwks_min_refetch_secs",
            ),
            (
                self.jwks_timeout_ms >= 1,
                "auth.jwks_timeout_ms must be at least 1",
            ),
            (
                self.leeway_secs <= MAX_LEEWAY_SECS,
                "auth.leeway_secs must be at most 600",
            ),
            (
                self.issuer
                    .iter()
                    .chain(&self.audience)
                    .all(|s| !s.is_empty()),
                "auth.issuer and auth.audience must not hold empty strings",
            ),
        ];
        out.extend(
            checks
                .iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, msg)| (*msg).to_string()),
        );
        out.extend(self.algorithms.iter().filter_map(|alg| self.keyless(*alg)));
        out
    }

    /// Why `alg` can never verify with the key sources configured, if it cannot.
    fn keyless(&self, alg: JwtAlgorithm) -> Option<String> {
        if alg.is_hmac() && self.jwt_secret.is_empty() && self.jwks_file.is_none() {
            Some(format!(
                "auth.algorithms lists {alg:?}, which needs auth.jwt_secret or auth.jwks_file"
            ))
        } else if !alg.is_hmac() && !self.has_public_keys() {
            Some(format!(
                "auth.algorithms lists {alg:?}, which needs auth.public_key, auth.jwks_file or auth.jwks_url"
            ))
        } else {
            None
        }
    }

    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let secret = self.jwt_secret.len();
        if secret > 0 && secret < WEAK_SECRET_BYTES {
            out.push(format!(
                "auth.jwt_secret is {secret} bytes; use at least {WEAK_SECRET_BYTES} random bytes"
            ));
        }
        let checks_claims =
            !self.issuer.is_empty() || !self.audience.is_empty() || !self.algorithms.is_empty();
        if !self.enabled() && checks_claims {
            out.push(
                "auth.algorithms, auth.issuer or auth.audience is set but no key is: the server is open and checks no token".into(),
            );
        }
        // An identity provider signs tokens for every application it serves with the same keys.
        if self.has_public_keys() && self.audience.is_empty() {
            out.push(
                "auth.audience is not set: any token the key owner signs without an `aud` claim is accepted, whatever application it was issued for".into(),
            );
        }
        if let Some(url) = &self.jwks_url {
            if is_plain_http_off_host(url) {
                out.push(format!(
                    "auth.jwks_url {url:?} is plain http: anyone on the network path can substitute keys; use https"
                ));
            }
        }
        out
    }
}

/// An `http://` or `https://` URL with a host and no credentials (roomd sends none).
fn check_jwks_url(url: &str) -> Result<(), &'static str> {
    let uri: hyper::Uri = url.parse().map_err(|_| "not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must be an http:// or https:// URL");
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not hold credentials");
    }
    if authority.host().is_empty() {
        return Err("has no host");
    }
    Ok(())
}

/// Plain http to anywhere but this machine.
fn is_plain_http_off_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    uri.scheme_str() == Some("http") && !loopback
}

/// The `ROOMD_SECTION_KEY` variables that name a config section: (variable, section, key, value).
/// Others with the prefix (test hooks, say) are not config and are left alone.
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String, String, String)> {
    let sections = section_names();
    env.into_iter()
        .filter_map(|(var, value)| {
            let rest = var.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let section = sections.iter().find(|s| {
                rest.strip_prefix(s.as_str())
                    .is_some_and(|k| k.starts_with('_'))
            })?;
            let key = rest[section.len() + 1..].to_string();
            Some((var, section.clone(), key, value))
        })
        .collect()
}

fn section_names() -> Vec<String> {
    toml::Table::try_from(Config::default())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// Parses `text` with the overrides applied. A value is read as TOML (a number, a boolean, a
/// quoted string) and otherwise taken as a plain string (an address, a path, a secret).
fn with_overrides(
    text: &str,
    overrides: &[(String, String, String, String)],
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).unwrap_or_default();
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    for (_, section, key, value) in overrides {
        // A key whose default is a string takes the text as it is (a secret of digits stays
        // a string).
        let is_text = defaults
            .get(section)
            .and_then(|s| s.get(key))
            .is_some_and(toml::Value::is_str);
        let parsed = (!is_text)
            .then(|| toml::from_str::<toml::Table>(&format!("v = {value}")).ok())
            .flatten()
            .and_then(|mut t| t.remove("v"));
        let value = parsed.unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key.clone(), value);
        }
    }
    let vars: Vec<&str> = overrides.iter().map(|(var, ..)| var.as_str()).collect();
    toml::Value::Table(table)
        .try_into()
        .map_err(|source| ConfigError::Env {
            var: vars.join(", "),
            source: Box::new(source),
        })
}
