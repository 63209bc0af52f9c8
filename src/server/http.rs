//! The HTTP side of the one port: `/ws` (handed to [`super::upgrade`]), `/metrics`, `/healthz`
//! and the chat UI.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{upgrade, Shared};
use crate::lifecycle::Phase;

/// Serves one TCP connection's HTTP requests until it closes or upgrades.
pub(super) async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let io = TokioIo::new(stream);
    let shared_closing = shared.lifecycle.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, shared)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(16 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let closing = shared_closing.reached(Phase::Closing);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = closing => {
            // Keep-alive connections would otherwise hold shutdown until its deadline.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "http connection error");
    }
}

fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    match req.uri().path() {
        "/ws" => upgrade::upgrade(req, shared),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        path => match crate::ui::asset(path) {
            Some((body, mime)) => {
                let mut r = Response::new(Full::new(Bytes::from_static(body)));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                r
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
