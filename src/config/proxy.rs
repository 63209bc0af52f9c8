//! `[[proxy]]`: the application endpoints that decide connects, subscribes and publishes
//! (README "Proxy hooks").

use serde::{Deserialize, Serialize};

use super::webhook::read_secret;

/// The calls an endpoint may take.
pub const PROXY_CALLS: [&str; 3] = ["connect", "subscribe", "publish"];

/// What a request gets when its endpoint gives no decision (down, timed out, breaker open,
/// an answer that is not one, too many calls in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refused (`503` to a request; `err` 503 and close 1011 at connect): the application's
    /// rules hold even while it is down. The default: a proxy is configured to enforce them.
    #[default]
    Deny,
    /// Admitted as if the endpoint allowed it, payload unchanged: availability over the
    /// application's checks.
    Allow,
}

/// One endpoint. Every bound is per endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Names the endpoint in metrics and logs; empty: the URL.
    pub name: String,
    /// `http://` or `https://` (the system's CA certificates); every call is a POST here.
    pub url: String,
    /// The HMAC-SHA256 key of the `roomd-signature` header, as for `[[webhooks]]`: exactly
    /// one of `secret`, `secret_file`, `secret_env`.
    pub secret: String,
    pub secret_file: String,
    pub secret_env: String,
    /// The calls this endpoint takes ([`PROXY_CALLS`]); empty: all of them.
    pub calls: Vec<String>,
    /// `subscribe` and `publish` only for rooms in these namespaces (the part of a room name
    /// before its first `:`); empty: every room. `connect` names no room.
    pub namespaces: Vec<String>,
    /// One call (connect, POST, answer) may take this long before it counts as failed.
    pub timeout_ms: u64,
    /// How long a `connect` or `subscribe` decision is reused for the same user (or anonymous
    /// connection) and room; 0: never. Publish decisions are never cached.
    pub cache_ms: u64,
    /// Decisions cached at most; when full, expired ones are dropped, and if none is, the new
    /// decision is not cached.
    pub cache_entries: usize,
    /// Consecutive failed calls that open the circuit breaker; while open, calls fail at once.
    pub breaker_failures: u32,
    /// How long the breaker stays open; then one call goes through as a probe and closes it
    /// if it gets an answer.
    pub breaker_open_ms: u64,
    /// What a request gets when no decision comes.
    pub on_failure: OnFailure,
    /// Calls in flight to this endpoint at once, across connections; past it a call fails at
    /// once (so `on_failure` decides).
    pub max_in_flight: usize,
    /// Calls in flight for one connection; at it the connection stops reading its socket until
    /// one returns (backpressure, as `limits.requests_in_flight`).
    pub max_in_flight_per_connection: usize,
    /// Bytes of an answer read at most; a longer answer is a failed call.
    pub max_answer_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            secret_file: String::new(),
            secret_env: String::new(),
            calls: Vec::new(),
            namespaces: Vec::new(),
            timeout_ms: 1_000,
            cache_ms: 0,
            cache_entries: 10_000,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
            on_failure: OnFailure::Deny,
            max_in_flight: 256,
            max_in_flight_per_connection: 8,
            max_answer_bytes: 256 * 1024,
        }
    }
}

impl ProxyConfig {
    /// The endpoint's name in metrics and logs.
    pub fn key(&self) -> &str {
        if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        }
    }

    /// Whether the endpoint takes `call`.
    pub fn takes(&self, call: &str) -> bool {
        self.calls.is_empty() || self.calls.iter().any(|c| c == call)
    }

    /// Whether calls about `room` go to this endpoint.
    pub fn covers(&self, room: &str) -> bool {
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

    fn problems(&self, i: usize) -> Vec<String> {
        let at = format!("proxy[{i}]");
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
        for c in &self.calls {
            if !PROXY_CALLS.contains(&c.as_str()) {
                out.push(format!("{at}.calls: unknown call {c:?}"));
            }
        }
        for (ok, what) in [
            (self.timeout_ms >= 1, "timeout_ms"),
            (self.cache_entries >= 1, "cache_entries"),
            (self.breaker_failures >= 1, "breaker_failures"),
            (self.breaker_open_ms >= 1, "breaker_open_ms"),
            (self.max_in_flight >= 1, "max_in_flight"),
            (
                self.max_in_flight_per_connection >= 1,
                "max_in_flight_per_connection",
            ),
            (self.max_answer_bytes >= 1, "max_answer_bytes"),
        ] {
            if !ok {
                out.push(format!("{at}.{what} must be at least 1"));
            }
        }
        out
    }
}

/// Problems of the whole list: each endpoint's, and names used twice.
pub(crate) fn problems(proxies: &[ProxyConfig]) -> Vec<String> {
    let mut out: Vec<String> = proxies
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.problems(i))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for p in proxies {
        if !seen.insert(p.key()) {
            out.push(format!(
                "proxy: two endpoints named {:?} (set name to tell them apart)",
                p.key()
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
        let start = file.find("\n# [[proxy]]\n").unwrap() + 1;
        let example: String = file[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# #"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        #[derive(Deserialize)]
        struct Doc {
            proxy: Vec<ProxyConfig>,
        }
        let doc: Doc = toml::from_str(&example).unwrap();
        let (got, def) = (&doc.proxy[0], ProxyConfig::default());
        assert_eq!(
            (got.timeout_ms, got.cache_ms, got.cache_entries),
            (def.timeout_ms, def.cache_ms, def.cache_entries)
        );
        assert_eq!(
            (got.breaker_failures, got.breaker_open_ms, got.on_failure),
            (def.breaker_failures, def.breaker_open_ms, def.on_failure)
        );
        assert_eq!(
            (
                got.max_in_flight,
                got.max_in_flight_per_connection,
                got.max_answer_bytes
            ),
            (
                def.max_in_flight,
                def.max_in_flight_per_connection,
                def.max_answer_bytes
            )
        );
        assert!(
            problems(&doc.proxy).is_empty(),
            "{:?}",
            problems(&doc.proxy)
        );
    }

    #[test]
    fn bad_endpoints_are_named_in_the_problems() {
        let bad = ProxyConfig {
            url: "ftp://x".into(),
            calls: vec!["nope".into()],
            breaker_failures: 0,
            ..ProxyConfig::default()
        };
        let p = problems(&[bad.clone(), bad]).join("; ");
        for want in [
            "proxy[0].url",
            "exactly one of secret",
            "unknown call \"nope\"",
            "breaker_failures",
            "two endpoints named",
        ] {
            assert!(p.contains(want), "{want} not in {p}");
        }
    }
}
