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

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use jsonwebtoken::AlgorithmFamily;
use tokio_rustls::TlsConnector;

use super::keys::{self, JwksError, Key, KeyError};
use crate::config::AuthConfig;

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
    source: Source,
    current: RwLock<Snapshot>,
    /// When the last fetch began; held during a fetch, so fetches never overlap and waiters
    /// share the result.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
    refresh: Duration,
    timeout: Duration,
}

/// Where the document is and how to reach it.
struct Source {
    uri: Uri,
    /// `Some` for https.
    tls: Option<TlsConnector>,
}

/// Why one fetch failed (logged; the cached keys stay).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("invalid host name for TLS")]
    ServerName,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("the response is not complete or larger than {MAX_JWKS_BYTES} bytes: {0}")]
    Body(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
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
        let uri: Uri = url.parse().map_err(|_| KeyError::Url(url.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(tls_connector()?),
            _ => None,
        };
        let jwks = Arc::new(RemoteJwks {
            source: Source { uri, tls },
            current: RwLock::new(Snapshot::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_interval: Duration::from_secs(config.jwks_min_refetch_secs),
            refresh: Duration::from_secs(config.jwks_refresh_secs),
            timeout: Duration::from_millis(config.jwks_timeout_ms),
        });
        *jwks.last_fetch.lock().await = Some(Instant::now());
        if let Err(e) = jwks.fetch().await {
            tracing::error!(
                url = %jwks.source.uri,
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
            tracing::warn!(url = %self.source.uri, error = %e, "JWKS fetch failed; the cached keys stay");
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
        let body = tokio::time::timeout(self.timeout, self.source.get())
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))??;
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
        tracing::info!(url = %self.source.uri, keys = current.keys.len(), "JWKS fetched");
        Ok(())
    }
}

impl Source {
    /// GET the document: one HTTP/1.1 request on a new connection.
    async fn get(&self) -> Result<Bytes, FetchError> {
        let host = self.uri.host().unwrap_or_default();
        let https = self.tls.is_some();
        let port = self.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `[::1]` in a URL, `::1` to connect and to name the TLS server.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(FetchError::Connect)?;
        let request = Request::get(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                header::HOST,
                self.uri.authority().map_or(host, |a| a.as_str()),
            )
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("roomd/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())?;
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                    .map_err(|_| FetchError::ServerName)?;
                let stream = tls.connect(name, tcp).await.map_err(FetchError::Tls)?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

/// Sends `request` on `io` and reads a 200 answer's body, at most [`MAX_JWKS_BYTES`].
async fn exchange<I>(io: I, request: Request<Empty<Bytes>>) -> Result<Bytes, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let response = async move {
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?;
        Ok(body.to_bytes())
    };
    // The connection is driven here rather than in a task of its own, so nothing outlives the
    // fetch's timeout. Once it ends, the body it read is already in the response's channel.
    tokio::pin!(response, conn);
    tokio::select! {
        body = &mut response => body,
        done = &mut conn => {
            done?;
            response.await
        }
    }
}

/// https with the system's CA certificates, for the JWKS and for webhooks (an identity provider inside a company usually
/// has its certificate from the company's own CA, installed there).
pub(crate) fn tls_connector() -> Result<TlsConnector, KeyError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(KeyError::Tls(format!(
            "no CA certificates found on this system ({})",
            errors.join("; ")
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KeyError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
