//! One delivery: an HTTP/1.1 POST on a new connection, answered 2xx or failed.
//!
//! A new connection per delivery keeps nothing open to a dead endpoint between retries and
//! needs no pool; deliveries are batched, so the handshake is paid once per batch.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;

/// The most of an answer's body read (and thrown away): receivers answer a few bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a delivery failed (logged, counted; the events stay in the outbox).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
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
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// An endpoint's address and, for https, its TLS client.
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) tls: Option<TlsConnector>,
}

impl Target {
    pub(crate) fn new(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|_| format!("invalid URL {url}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(crate::auth::tls_connector().map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(Target { uri, tls })
    }

    /// POSTs `body` with `headers`, all of it within `timeout`.
    pub(crate) async fn post(
        &self,
        body: Bytes,
        headers: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<(), PostError> {
        tokio::time::timeout(timeout, self.send(body, headers))
            .await
            .map_err(|_| PostError::Timeout(timeout))?
    }

    async fn send(&self, body: Bytes, headers: &[(&'static str, String)]) -> Result<(), PostError> {
        let host = self.uri.host().unwrap_or_default();
        let https = self.tls.is_some();
        let port = self.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(PostError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::post(self.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                header::HOST,
                self.uri.authority().map_or(host, |a| a.as_str()),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("roomd/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONNECTION, "close");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body))?;
        match &self.tls {
            None => exchange(TokioIo::new(tcp), request).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(bare.to_string())
                    .map_err(|_| PostError::ServerName)?;
                let stream = tls.connect(name, tcp).await.map_err(PostError::Tls)?;
                exchange(TokioIo::new(stream), request).await
            }
        }
    }
}

/// Sends `request` on `io`: a 2xx answer is a delivery.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> Result<(), PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let answer = async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read so the receiver is not cut off mid-answer; its content does not matter.
        let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Status(status))
        }
    };
    // Driven here rather than in a task of its own, so nothing outlives the timeout.
    tokio::pin!(answer, conn);
    tokio::select! {
        res = &mut answer => res,
        done = &mut conn => {
            done?;
            answer.await
        }
    }
}
