//! `[[webhooks]]`: the HTTP endpoints that hear of what happens in rooms (README "Webhooks").

use serde::{Deserialize, Serialize};

/// The event types an endpoint may ask for (README "Webhooks" lists their fields).
pub const EVENT_TYPES: [&str; 9] = [
    "connection.opened",
    "connection.closed",
    "room.joined",
    "room.left",
    "room.created",
    "room.emptied",
    "room.unloaded",
    "message.published",
    "state.changed",
];

/// One endpoint. Every bound is per endpoint, so a dead one holds back nothing of the others.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in metrics, logs and its outbox; empty: the URL. Renaming it (or
    /// changing the URL of an unnamed one) drops what its outbox held.
    pub name: String,
    /// `http://` or `https://` (the system's CA certificates).
    pub url: String,
    /// The HMAC-SHA256 key of the signature header; one of `secret`, `secret_file`,
    /// `secret_env` is required.
    pub secret: String,
    /// A file holding the secret (surrounding whitespace trimmed).
    pub secret_file: String,
    /// An environment variable holding the secret.
    pub secret_env: String,
    /// The event types wanted ([`EVENT_TYPES`]); empty: all of them.
    pub events: Vec<String>,
    /// `message.published` only for rooms in these namespaces (the part of a room name before
    /// its first `:`); empty: every room. Other events are not filtered by namespace.
    pub namespaces: Vec<String>,
    /// One delivery (connect, send, answer) may take this long before it counts as failed.
    pub timeout_ms: u64,
    /// Events per delivery at most.
    pub batch_events: usize,
    /// Bytes of events per delivery at most (one larger event still goes alone).
    pub batch_bytes: usize,
    /// The first retry waits about this long; each further one doubles it, up to
    /// `retry_max_ms` (with jitter: between half and all of it).
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Events held for the endpoint (in its durable outbox) at most; past it new events for
    /// it are dropped, counted and logged.
    pub outbox_events: u64,
    /// Bytes of events held for the endpoint at most; past it as `outbox_events`.
    pub outbox_bytes: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            secret_file: String::new(),
            secret_env: String::new(),
            events: Vec::new(),
            namespaces: Vec::new(),
            timeout_ms: 5_000,
            batch_events: 100,
            batch_bytes: 256 * 1024,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            outbox_events: 100_000,
            outbox_bytes: 64 * 1024 * 1024,
        }
    }
}

impl WebhookConfig {
    /// The endpoint's name in metrics, logs and its outbox's keys.
    pub fn key(&self) -> &str {
        if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        }
    }

    /// Whether the endpoint asked for events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    /// Whether `message.published` in `room` is for this endpoint.
    pub fn wants_room(&self, room: &str) -> bool {
        if self.namespaces.is_empty() {
            return true;
        }
        let ns = room.split_once(':').map_or("", |(ns, _)| ns);
        self.namespaces.iter().any(|n| n == ns)
    }

    /// The secret from `secret`, `secret_file` or `secret_env`.
    pub fn read_secret(&self) -> Result<Vec<u8>, String> {
        read_secret(&self.secret, &self.secret_file, &self.secret_env)
    }

    pub(crate) fn problems(&self, i: usize) -> Vec<String> {
        let at = format!("webhooks[{i}]");
        let mut out = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || self.url.parse::<hyper::Uri>().is_err()
        {
            out.push(format!("{at}.url must be an http:// or https:// URL"));
        }
        let secrets = [&self.secret, &self.secret_file, &self.secret_env]
            .iter()
            .filter(|s| !s.is_empty())
            .count();
        if secrets != 1 {
            out.push(format!(
                "{at}: exactly one of secret, secret_file, secret_env must be set"
            ));
        }
        for e in &self.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                out.push(format!("{at}.events: unknown event type {e:?}"));
            }
        }
        for (ok, what) in [
            (self.timeout_ms >= 1, "timeout_ms"),
            (self.batch_events >= 1, "batch_events"),
            (self.batch_bytes >= 1, "batch_bytes"),
            (self.retry_base_ms >= 1, "retry_base_ms"),
            (
                self.retry_max_ms >= self.retry_base_ms,
                "retry_max_ms (≥ retry_base_ms)",
            ),
            (self.outbox_events >= 1, "outbox_events"),
            (self.outbox_bytes >= 1, "outbox_bytes"),
        ] {
            if !ok {
                out.push(format!("{at}.{what} must be at least 1"));
            }
        }
        out
    }
}

/// A secret given inline, in a file (surrounding whitespace trimmed) or in an environment
/// variable: the forms `[[webhooks]]` and `[[proxy]]` share.
pub(crate) fn read_secret(secret: &str, file: &str, env: &str) -> Result<Vec<u8>, String> {
    if !secret.is_empty() {
        return Ok(secret.as_bytes().to_vec());
    }
    if !file.is_empty() {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        return Ok(text.trim().as_bytes().to_vec());
    }
    if !env.is_empty() {
        return std::env::var(env)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {env} is not set"));
    }
    Err("one of secret, secret_file, secret_env is required".into())
}

/// Problems of the whole list: each endpoint's, and names used twice.
pub(crate) fn problems(hooks: &[WebhookConfig]) -> Vec<String> {
    let mut out: Vec<String> = hooks
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.problems(i))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for h in hooks {
        if !seen.insert(h.key()) {
            out.push(format!(
                "webhooks: two endpoints named {:?} (set name to tell them apart)",
                h.key()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented example in config/roomd.toml, uncommented, is a valid endpoint whose
    /// bounds are the defaults: the file documents what the code does.
    #[test]
    fn the_documented_example_parses_with_the_defaults() {
        let file = include_str!("../../config/roomd.toml");
        let start = file.find("\n# [[webhooks]]\n").unwrap() + 1;
        let example: String = file[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# #"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        #[derive(Deserialize)]
        struct Doc {
            webhooks: Vec<WebhookConfig>,
        }
        let doc: Doc = toml::from_str(&example).unwrap();
        let (got, def) = (&doc.webhooks[0], WebhookConfig::default());
        assert_eq!(got.timeout_ms, def.timeout_ms);
        assert_eq!(
            (got.batch_events, got.batch_bytes),
            (def.batch_events, def.batch_bytes)
        );
        assert_eq!(
            (got.retry_base_ms, got.retry_max_ms),
            (def.retry_base_ms, def.retry_max_ms)
        );
        assert_eq!(
            (got.outbox_events, got.outbox_bytes),
            (def.outbox_events, def.outbox_bytes)
        );
        assert!(
            problems(&doc.webhooks).is_empty(),
            "{:?}",
            problems(&doc.webhooks)
        );
    }

    #[test]
    fn bad_endpoints_are_named_in_the_problems() {
        let bad = WebhookConfig {
            url: "ftp://x".into(),
            events: vec!["nope".into()],
            retry_base_ms: 10,
            retry_max_ms: 5,
            ..WebhookConfig::default()
        };
        let p = problems(&[bad.clone(), bad]).join("; ");
        for want in [
            "webhooks[0].url",
            "exactly one of secret",
            "unknown event type \"nope\"",
            "retry_max_ms",
            "two endpoints named",
        ] {
            assert!(p.contains(want), "{want} not in {p}");
        }
    }

    #[test]
    fn namespaces_filter_messages_by_the_part_before_the_colon() {
        let c = WebhookConfig {
            namespaces: vec!["chat".into()],
            ..WebhookConfig::default()
        };
        assert!(c.wants_room("chat:a"));
        assert!(!c.wants_room("chatter:a"));
        assert!(!c.wants_room("chat"));
        assert!(WebhookConfig::default().wants_room("anything"));
    }
}
