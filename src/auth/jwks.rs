//! The JWKS at `auth.jwks_url`: fetched at startup, every `jwks_refresh_secs`, and when a token
//! names a key id the cached document lacks (the issuer rotated its keys).
//!
//! Fetches are bounded three ways. In rate: at most one per `jwks_min_refetch_secs`, whatever
//! asks for it, so clients sending random key ids cost the JWKS server nothing more. In
//! concurrency: one at a time; verifications that wait on an unknown key id share the fetch in
//! flight. In size and time: a response of at most [`MAX_JWKS_BYTES`], within
//! `jwks_timeout_ms`. A failed fetch keeps the keys already cached.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use hyper::Method;
use jsonwebtoken::Algorithm;
use jsonwebtoken::AlgorithmFamily;

use super::keys::{self, JwksError, Key, KeyError};
use crate::config::AuthConfig;
use crate::http_client::{Call, HttpError, Target};

/// The largest JWKS response read. Real ones are a few KiB (a handful of keys).
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The cached keys with a count of the fetches that produced them, so a verification that
/// waited for a fetch can tell whether one landed meanwhile.
#[derive(Clone, Default)]
pub(super) struct Snapshot {
    pub(super) generation: u64,
    pub(super) keys: Arc<[Key]>,
}

/// The remote key set and its fetcher.
pub(super) struct RemoteJwks {
    source: Target,
    current: RwLock<Snapshot>,
    /// When the last fetch began; held during a fetch, so fetches never overlap and waiters
    /// share the result.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
    refresh: Duration,
    timeout: Duration,
}

/// Why one fetch failed (logged; the cached keys stay).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

impl RemoteJwks {
    /// Sets up the fetcher and fetches once. A failed first fetch is logged and does not stop
    /// the server: it starts refusing tokens (fail closed) and fetches again every
    /// `jwks_min_refetch_secs` until one succeeds, so an identity provider that is down while
    /// roomd restarts delays authentication rather than taking the broker, its other key
    /// sources and its durable rooms down with it.
    pub(super) async fn start(url: &str, config: &AuthConfig) -> Result<Arc<RemoteJwks>, KeyError> {
        let source = Target::new(url).map_err(|e| match e {
            HttpError::TlsSetup(why) => KeyError::Tls(why),
            _ => KeyError::Url(url.to_string()),
        })?;
        let jwks = Arc::new(RemoteJwks {
            source,
            current: RwLock::new(Snapshot::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_interval: Duration::from_secs(config.jwks_min_refetch_secs),
            refresh: Duration::from_secs(config.jwks_refresh_secs),
            timeout: Duration::from_millis(config.jwks_timeout_ms),
        });
        *jwks.last_fetch.lock().await = Some(Instant::now());
        if let Err(e) = jwks.fetch().await {
            tracing::error!(
                url = %jwks.source.uri(),
                error = %e,
                retry_secs = config.jwks_min_refetch_secs,
                "cannot fetch the JWKS at startup: tokens are refused until a fetch succeeds"
            );
        }
        Ok(jwks)
    }

    /// The keys held now.
    pub(super) fn current(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the document may hold keys for `alg` (symmetric keys are never taken from a URL).
    pub(super) fn serves(alg: Algorithm) -> bool {
        alg.family() != AlgorithmFamily::Hmac
    }

    /// Fetches again, unless a fetch landed since the caller's snapshot `seen` or one began
    /// less than `jwks_min_refetch_secs` ago; returns the keys held afterwards.
    pub(super) async fn refetch(&self, seen: u64) -> Snapshot {
        let mut last = self.last_fetch.lock().await;
        let now = self.current();
        if now.generation != seen || last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return now;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(url = %self.source.uri(), error = %e, "JWKS fetch failed; the cached keys stay");
        }
        drop(last);
        self.current()
    }

    /// The periodic refresh, for the server to run as a background task: every
    /// `jwks_refresh_secs`, or every `jwks_min_refetch_secs` while no fetch has succeeded. It
    /// holds the key set weakly and ends once the server's authentication is dropped.
    pub(super) fn refresher(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send {
        let weak: Weak<RemoteJwks> = Arc::downgrade(self);
        async move {
            loop {
                let Some(wait) = weak.upgrade().map(|j| j.next_refresh()) else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let Some(jwks) = weak.upgrade() else {
                    return;
                };
                let seen = jwks.current().generation;
                jwks.refetch(seen).await;
            }
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Key>, FetchError> {
        let body = self
            .source
            .send(Call {
                method: Method::GET,
                body: None,
                accept: Some("application/json"),
                headers: &[],
                max_answer: MAX_JWKS_BYTES,
                timeout: self.timeout,
            })
            .await?;
        Ok(keys::parse_jwks(&body, false)?)
    }

    fn next_refresh(&self) -> Duration {
        if self.current().generation == 0 {
            self.min_interval
        } else {
            self.refresh
        }
    }

    /// One fetch; on success its keys replace the cached ones.
    async fn fetch(&self) -> Result<(), FetchError> {
        crate::metrics::jwks_fetch();
        let keys = self
            .fetch_keys()
            .await
            .inspect_err(|_| crate::metrics::jwks_fetch_failed())?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Snapshot {
            generation: current.generation + 1,
            keys: keys.into(),
        };
        tracing::info!(url = %self.source.uri(), keys = current.keys.len(), "JWKS fetched");
        Ok(())
    }
}
