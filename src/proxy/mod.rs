//! Proxy hooks: the application's endpoints decide whether a connect, subscribe or publish
//! goes ahead, and may replace a publish's payload (README "Proxy hooks").
//!
//! Each call is one signed JSON POST through [`crate::http_client`], bounded in time
//! (`timeout_ms`), in calls at once (`max_in_flight`), and cut short by a circuit breaker
//! while the endpoint is down. A call that gives no decision falls back to `on_failure`.
//! In cluster mode each node calls for its own connections; nothing crosses nodes.

mod breaker;
mod cache;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomd_protocol::ErrorCode;
use tokio::sync::Semaphore;

use crate::config::{Config, OnFailure, ProxyConfig};
use crate::error::ReplyError;
use crate::http_client::{Call as HttpCall, HttpError, Target};

pub(crate) use wire::Ask;

/// The request kinds an endpoint decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Connect,
    Subscribe,
    /// A stored or ephemeral publish, or an edit: whatever puts new content in a room.
    Publish,
}

impl Call {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Call::Connect => "connect",
            Call::Subscribe => "subscribe",
            Call::Publish => "publish",
        }
    }

    /// The codes an endpoint's deny may carry for this call (SPEC.md 6.2); any other is sent
    /// as `403`. They are the codes the request may get anyway, so a client needs no new case.
    fn allowed_codes(self) -> &'static [ErrorCode] {
        match self {
            Call::Connect => &[ErrorCode::Unauthorized, ErrorCode::Forbidden],
            Call::Subscribe => &[ErrorCode::Forbidden, ErrorCode::Limit],
            Call::Publish => &[
                ErrorCode::Forbidden,
                ErrorCode::BadRequest,
                ErrorCode::TooLarge,
                ErrorCode::Limit,
            ],
        }
    }
}

/// What an endpoint decided, or that it gave no decision.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// Go ahead; for a publish, with this payload instead of the client's.
    Allow { data: Option<Vec<u8>> },
    Deny {
        code: ErrorCode,
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// No decision: `outcome` names why in metrics (`error`, `timeout`, `breaker_open`,
    /// `busy`), `detail` in logs and the client's message.
    Failed {
        outcome: &'static str,
        detail: String,
    },
}

/// Why the endpoints cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy {name}: {error}")]
    Secret { name: String, error: String },
    #[error("proxy {name}: {error}")]
    Url { name: String, error: String },
}

/// One `[[proxy]]` endpoint.
pub(crate) struct Endpoint {
    config: ProxyConfig,
    target: Target,
    secret: Vec<u8>,
    breaker: breaker::Breaker,
    cache: cache::Cache,
    in_flight: Arc<Semaphore>,
    /// `limits.payload_bytes`: a replaced payload may not be larger than a client's may.
    payload_max: usize,
}

/// Every configured endpoint.
#[derive(Default)]
pub(crate) struct Proxies {
    endpoints: Vec<Arc<Endpoint>>,
    /// The smallest `max_in_flight_per_connection`: a connection with this many calls pending
    /// stops reading its socket.
    per_connection: usize,
}

impl Proxies {
    pub(crate) fn new(config: &Config) -> Result<Proxies, ProxyError> {
        let mut endpoints = Vec::new();
        for p in &config.proxy {
            let name = p.key().to_string();
            let secret = p.read_secret().map_err(|error| ProxyError::Secret {
                name: name.clone(),
                error,
            })?;
            let target = Target::new(&p.url).map_err(|e| ProxyError::Url {
                name: name.clone(),
                error: e.to_string(),
            })?;
            let timeout = Duration::from_millis(p.timeout_ms);
            endpoints.push(Arc::new(Endpoint {
                breaker: breaker::Breaker::new(
                    p.breaker_failures,
                    Duration::from_millis(p.breaker_open_ms),
                    timeout,
                ),
                cache: cache::Cache::new(Duration::from_millis(p.cache_ms), p.cache_entries),
                in_flight: Arc::new(Semaphore::new(p.max_in_flight)),
                config: p.clone(),
                target,
                secret,
                payload_max: config.limits.payload_bytes,
            }));
            crate::metrics::proxy_endpoint(p.key());
        }
        let per_connection = config
            .proxy
            .iter()
            .map(|p| p.max_in_flight_per_connection)
            .min()
            .unwrap_or(usize::MAX);
        Ok(Proxies {
            endpoints,
            per_connection,
        })
    }

    /// The endpoint that decides `call` (about `room`, for subscribe and publish), if any:
    /// the first that takes the call and covers the room.
    pub(crate) fn route(&self, call: Call, room: Option<&str>) -> Option<Arc<Endpoint>> {
        self.endpoints
            .iter()
            .find(|e| e.config.takes(call.name()) && room.is_none_or(|r| e.config.covers(r)))
            .cloned()
    }

    pub(crate) fn per_connection(&self) -> usize {
        self.per_connection
    }
}

impl Endpoint {
    /// Asks the endpoint (or its cache, when `cache_key` is given) about `ask`.
    pub(crate) async fn decide(&self, ask: &Ask, cache_key: Option<String>) -> Verdict {
        let call = ask.call;
        let name = self.config.key();
        let now = Instant::now();
        let cache_key = cache_key.filter(|_| self.cache.enabled());
        if let Some(hit) = cache_key.as_ref().and_then(|k| self.cache.get(k, now)) {
            crate::metrics::proxy_cache_hit(name, call.name());
            return hit;
        }
        let verdict = self.ask(ask).await;
        crate::metrics::proxy_call(name, call.name(), outcome(&verdict));
        if let (Some(key), Verdict::Allow { data: None } | Verdict::Deny { .. }) =
            (cache_key, &verdict)
        {
            self.cache.put(key, verdict.clone(), Instant::now());
        }
        verdict
    }

    async fn ask(&self, ask: &Ask) -> Verdict {
        // The bound first, so a call refused for it takes no probe from the breaker.
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return failed("busy", "too many calls in flight to the application");
        };
        if !self.breaker.admit(Instant::now()) {
            return failed("breaker_open", "the application's endpoint is failing");
        }
        let started = Instant::now();
        let verdict = match self.post(ask).await {
            Ok(body) => wire::read_answer(&body, ask.call, self.payload_max),
            Err(HttpError::Timeout(t)) => failed("timeout", format!("no answer in {t:?}")),
            Err(e) => failed("error", e.to_string()),
        };
        let ok = !matches!(verdict, Verdict::Failed { .. });
        let name = self.config.key();
        if ok {
            crate::metrics::proxy_latency(name, ask.call.name(), started.elapsed());
        } else if let Verdict::Failed { detail, .. } = &verdict {
            tracing::warn!(proxy = name, call = ask.call.name(), error = %detail, "proxy call failed");
        }
        if let Some(open) = self.breaker.record(ok, Instant::now()) {
            crate::metrics::proxy_breaker(name, open);
            tracing::warn!(proxy = name, open, "proxy circuit breaker changed");
        }
        verdict
    }

    async fn post(&self, ask: &Ask) -> Result<bytes::Bytes, HttpError> {
        let body = ask.to_json();
        let ts = wire::now_ms();
        let signature = crate::webhook::signature::header(&self.secret, ts, &body);
        let headers = [(crate::webhook::signature::HEADER, signature)];
        self.target
            .send(HttpCall {
                method: hyper::Method::POST,
                body: Some((bytes::Bytes::from(body), "application/json")),
                accept: Some("application/json"),
                headers: &headers,
                max_answer: self.config.max_answer_bytes,
                timeout: Duration::from_millis(self.config.timeout_ms),
            })
            .await
    }

    /// A request's outcome from `verdict`: go ahead (with the replacement payload, if any), or
    /// the error its client gets.
    pub(crate) fn settle(&self, verdict: Verdict) -> Result<Option<Vec<u8>>, ReplyError> {
        match verdict {
            Verdict::Allow { data } => Ok(data),
            Verdict::Deny {
                code,
                reason,
                retry_after_ms,
            } => Err(ReplyError {
                retry_after_ms,
                ..ReplyError::new(code, reason)
            }),
            Verdict::Failed { .. } if self.config.on_failure == OnFailure::Allow => Ok(None),
            Verdict::Failed { detail, .. } => Err(ReplyError::new(
                ErrorCode::Unavailable,
                format!("the application's check is unavailable: {detail}"),
            )),
        }
    }
}

fn failed(outcome: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Failed {
        outcome,
        detail: detail.into(),
    }
}

/// The metrics label of a verdict.
fn outcome(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow { data: None } => "allow",
        Verdict::Allow { data: Some(_) } => "replace",
        Verdict::Deny { .. } => "deny",
        Verdict::Failed { outcome, .. } => outcome,
    }
}
