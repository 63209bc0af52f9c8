//! `[api]`: the server API's keys and bounds (the HTTP API for backends, `/api/v1`).

use serde::{Deserialize, Serialize};

/// What an API key may do. A request names the one scope it needs; `admin` is needed by the
/// operations that act on other clients (disconnect, unsubscribe, delete a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Scope {
    /// Publish and broadcast.
    Publish,
    /// History, room info, the list of active rooms.
    Read,
    /// Room state: get, list, put, delete, cas, incr.
    State,
    /// Who is in a room.
    Presence,
    /// Disconnect a user, unsubscribe a user from a room, delete a message.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::State => "state",
            Scope::Presence => "presence",
            Scope::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The keys a backend may present (`Authorization: Bearer KEY`). None: the API refuses
    /// every request with 401.
    pub keys: Vec<ApiKeyConfig>,
    /// How long one request may take, from its head to its reply (a publish waits for its
    /// fsync; an inbox may be full). Past it the answer is 503, and the request may still take
    /// effect: retry a publish with the same `mid`.
    pub request_timeout_ms: u64,
    /// The most rooms one broadcast may name.
    pub broadcast_rooms: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            keys: Vec::new(),
            request_timeout_ms: 10_000,
            broadcast_rooms: 1000,
        }
    }
}

/// One API key: a name (in logs, metrics and as the `from` of what it writes), the secret, and
/// what it may do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    pub key: String,
    pub scopes: Vec<Scope>,
}

/// Keys shorter than this are refused: they are bearer secrets, guessed offline in no time.
pub const MIN_KEY_BYTES: usize = 16;

impl ApiConfig {
    /// What is wrong with the keys and bounds, one line each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.request_timeout_ms == 0 {
            out.push("api.request_timeout_ms must be at least 1".into());
        }
        if self.broadcast_rooms == 0 {
            out.push("api.broadcast_rooms must be at least 1".into());
        }
        for (i, k) in self.keys.iter().enumerate() {
            if !roomd_protocol::valid_id(&k.name, 64) {
                out.push(format!(
                    "api.keys[{i}].name must be 1-64 bytes without control characters"
                ));
            }
            if self.keys[..i].iter().any(|o| o.name == k.name) {
                out.push(format!("api.keys[{i}].name {:?} is used twice", k.name));
            }
            if self.keys[..i].iter().any(|o| o.key == k.key) {
                out.push(format!("api.keys[{i}].key is the key of another entry"));
            }
            if k.key.len() < MIN_KEY_BYTES {
                out.push(format!(
                    "api.keys[{i}].key must be at least {MIN_KEY_BYTES} bytes (use a random one: openssl rand -hex 32)"
                ));
            }
            if k.scopes.is_empty() {
                out.push(format!("api.keys[{i}].scopes must name at least one scope"));
            }
        }
        out
    }
}
