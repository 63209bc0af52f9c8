//! roomd's own outgoing HTTP requests (the JWKS fetch, webhook deliveries): one HTTP/1.1
//! request per new connection, over rustls with the system's CA certificates for https.
//!
//! A connection per request keeps the client free of pooled state to bound or expire; both
//! users send rarely (a fetch every few minutes, a batch per delivery) to one endpoint each.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("TLS setup: {0}")]
    TlsSetup(String),
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
    #[error("the response is not complete or larger than {limit} bytes: {error}")]
    Body { limit: usize, error: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// An endpoint: its URL and, for https, its TLS client.
pub(crate) struct Target {
    uri: Uri,
    tls: Option<TlsConnector>,
}

/// One request to a [`Target`].
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// The body and its content type (`None`: no body).
    pub(crate) body: Option<(Bytes, &'static str)>,
    /// `Accept`, when the caller reads the answer. Without it the answer's body is read (up
    /// to `max_answer`) and dropped: only the status counts.
    pub(crate) accept: Option<&'static str>,
    pub(crate) headers: &'a [(&'static str, String)],
    /// The answer's body is read up to this many bytes; past it the request fails.
    pub(crate) max_answer: usize,
    /// The whole exchange, connecting included.
    pub(crate) timeout: Duration,
}

impl Target {
    pub(crate) fn new(url: &str) -> Result<Target, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(tls_connector()?),
            _ => None,
        };
        Ok(Target { uri, tls })
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Sends `call`; a 2xx answer's body, else [`HttpError::Status`].
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Bytes, HttpError> {
        let timeout = call.timeout;
        tokio::time::timeout(timeout, self.exchange(call))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }

    async fn exchange(&self, call: Call<'_>) -> Result<Bytes, HttpError> {
        let host = self.uri.host().unwrap_or_default();
        let port = (self.uri.port_u16()).unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        // `[::1]` in a URL, `::1` to connect and to name the TLS server.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(HttpError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::builder()
            .method(call.method)
            .uri(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                header::HOST,
                self.uri.authority().map_or(host, |a| a.as_str()),
            )
            .header(
                header::USER_AGENT,
                concat!("roomd/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "close");
        if let Some(accept) = call.accept {
            request = request.header(header::ACCEPT, accept);
        }
        let body = match call.body {
            Some((body, content_type)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                body
            }
            None => Bytes::new(),
        };
        for (name, value) in call.headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body))?;
        let (limit, read) = (call.max_answer, call.accept.is_some());
        match &self.tls {
            None => answer(TokioIo::new(tcp), request, limit, read).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                    .map_err(|_| HttpError::ServerName)?;
                let stream = tls.connect(name, tcp).await.map_err(HttpError::Tls)?;
                answer(TokioIo::new(stream), request, limit, read).await
            }
        }
    }
}

/// Sends `request` on `io` and reads the answer's body, at most `limit` bytes; returns it
/// when `read` (else an empty body).
async fn answer<I>(
    io: I,
    request: Request<Full<Bytes>>,
    limit: usize,
    read: bool,
) -> Result<Bytes, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let response = async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read even after an error status, so the server is not cut off mid-answer.
        let body = Limited::new(response.into_body(), limit).collect().await;
        if !status.is_success() {
            return Err(HttpError::Status(status));
        }
        if !read {
            return Ok(Bytes::new());
        }
        let body = body.map_err(|e| HttpError::Body {
            limit,
            error: e.to_string(),
        })?;
        Ok(body.to_bytes())
    };
    // The connection is driven here rather than in a task of its own, so nothing outlives the
    // caller's timeout. Once it ends, the body it read is already in the response's channel.
    tokio::pin!(response, conn);
    tokio::select! {
        body = &mut response => body,
        done = &mut conn => {
            done?;
            response.await
        }
    }
}

/// TLS for outgoing requests: the system's CA certificates, HTTP/1.1 by ALPN.
fn tls_connector() -> Result<TlsConnector, HttpError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(HttpError::TlsSetup(format!(
            "no CA certificates found on this system ({})",
            errors.join("; ")
        )));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
