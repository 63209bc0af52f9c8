//! The HTTP side of the one port: `/ws` (handed to [`super::upgrade`]), `/metrics`, `/healthz`
//! and the chat UI.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::io::ReaderStream;

use super::admission::Slot;
use super::{text, upgrade, Shared};
use crate::lifecycle::Phase;

/// Serves one TCP connection's HTTP requests until it closes, upgrades, or stays silent past
/// the header timeout. Without a `slot` it is over a connection limit (see [`super::admission`]).
pub(super) async fn serve<S>(
    stream: S,
    addr: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<Arc<Slot>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let lifecycle = shared.lifecycle.clone();
    let header_timeout = Duration::from_millis(shared.config.server.header_timeout_ms);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Hyper runs this timer whenever it waits for a request head: on a new connection and
        // on an idle keep-alive one alike.
        .header_read_timeout(header_timeout)
        .max_buf_size(16 * 1024);
    let service = hyper::service::service_fn(move |req| {
        let (shared, slot) = (shared.clone(), slot.clone());
        async move { Ok::<_, Infallible>(respond(req, addr, shared, slot).await) }
    });
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = lifecycle.reached(Phase::Closing) => {
            // Keep-alive connections would otherwise hold shutdown until its deadline.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "http connection error");
    }
}

/// The server API's requests go to its router; everything else is routed here.
async fn respond(
    req: Request<Incoming>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<Arc<Slot>>,
) -> Response<axum::body::Body> {
    if !req.uri().path().starts_with("/api/") {
        return route(req, addr, shared, slot).map(axum::body::Body::new);
    }
    if slot.is_none() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at its connection limit\n",
        )
        .map(axum::body::Body::new);
    }
    shared.api.serve(req).await
}

fn route(
    req: Request<Incoming>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<Arc<Slot>>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
    }
    match req.uri().path() {
        "/ws" => upgrade::upgrade(req, addr, shared, slot),
        "/healthz" | "/readyz" | "/metrics" => operator_route(req.uri().path(), &shared),
        "/ui.json" => {
            let body = crate::ui::settings(shared.auth.enabled(), &shared.config.ui.token_url);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ if slot.is_none() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at its connection limit\n",
        ),
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

/// The routes for operators, on the main port and on the admin listener.
fn operator_route(path: &str, shared: &Shared) -> Response<Full<Bytes>> {
    match path {
        // The process is alive and answering.
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Worth sending traffic to: not shutting down, and storage takes writes.
        "/readyz" if shared.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A response body that may stream (a backup) or be whole (everything else).
type AdminBody = UnsyncBoxBody<Bytes, std::io::Error>;

async fn admin_route(
    req: Request<Incoming>,
    shared: &Shared,
    backups: &Arc<tokio::sync::Semaphore>,
) -> Response<AdminBody> {
    if req.uri().path().starts_with("/api/") {
        return shared
            .api
            .serve(req)
            .await
            .map(|b| b.map_err(std::io::Error::other).boxed_unsync());
    }
    if req.uri().path() == "/backup" && req.method() == Method::GET {
        if shared.registry.engine().cluster().is_some() {
            // The rooms are in Redis: back Redis up (its RDB or AOF files), not this node.
            return whole(text(
                StatusCode::CONFLICT,
                "cluster mode: the rooms are in Redis; back up Redis's files instead\n",
            ));
        }
        // One at a time: a backup reads the whole database.
        let Ok(_running) = backups.try_acquire() else {
            return whole(text(StatusCode::CONFLICT, "a backup is already running\n"));
        };
        return backup(shared).await;
    }
    whole(operator_route(req.uri().path(), shared))
}

fn whole(r: Response<Full<Bytes>>) -> Response<AdminBody> {
    r.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// `GET /backup`: a consistent copy of the database (see [`crate::store::backup`]), streamed.
/// It is made in the data directory, unlinked as soon as it is open, and streamed from the open
/// file, so nothing is left behind if the client goes away.
async fn backup(shared: &Shared) -> Response<AdminBody> {
    let store = shared.store.clone();
    let path = store
        .dir()
        .join(format!("backup-{:016x}.redb.tmp", rand::random::<u64>()));
    let target = path.clone();
    let made = tokio::task::spawn_blocking(move || store.backup_to(&target)).await;
    let stats = match made {
        Ok(Ok(stats)) => stats,
        Ok(Err(e)) => return backup_failed(&path, &e).await,
        Err(e) => return backup_failed(&path, &e).await,
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => return backup_failed(&path, &e).await,
    };
    let _ = tokio::fs::remove_file(&path).await;
    tracing::info!(
        rooms = stats.rooms,
        entries = stats.entries,
        keys = stats.keys,
        "backup made"
    );
    let frames = ReaderStream::new(file).map_ok(Frame::data);
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, n) in [
        ("x-roomd-rooms", stats.rooms),
        ("x-roomd-entries", stats.entries),
        ("x-roomd-keys", stats.keys),
    ] {
        h.insert(name, HeaderValue::from(n));
    }
    r
}

async fn backup_failed(
    path: &std::path::Path,
    e: &(dyn std::error::Error + Sync),
) -> Response<AdminBody> {
    tracing::error!(error = %e, "backup failed");
    let _ = tokio::fs::remove_file(path).await;
    whole(text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "backup failed; see the server's log\n",
    ))
}

/// Admin connections served at once; beyond it a connection is closed at once.
const ADMIN_CONNECTIONS: usize = 64;

/// The admin listener: operator routes only, until shutdown.
pub(super) async fn serve_admin(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    let backups = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shared.lifecycle.reached(Phase::Closing) => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        let backups = backups.clone();
        let lifecycle = shared.lifecycle.clone();
        shared.lifecycle.clone().spawn_connection(async move {
            let timeout = Duration::from_millis(shared.config.server.header_timeout_ms);
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (shared, backups) = (shared.clone(), backups.clone());
                async move { Ok::<_, Infallible>(admin_route(req, &shared, &backups).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = lifecycle.reached(Phase::Closing) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
}
