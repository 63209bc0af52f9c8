//! The listener and its routes: `/ws`, `/metrics`, `/healthz` and the chat UI, on one port.
//!
//! Shutdown order matters for "no acknowledged message lost": stop accepting, stop reading
//! requests, let every room commit and acknowledge what it has, stop the writer (final
//! fsync), then close every socket with 1001 after its queued frames.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use roomd_protocol::{codec, ServerFrame};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::connection::{self, Timing};
use crate::outbox::{CloseReason, Outbox};
use crate::peer::{Peer, ReplyError};
use crate::room::Registry;
use crate::session::Session;
use crate::store::{Store, StoreError, WriterHandle};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running broker. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection task shares.
struct Shared {
    config: Arc<Config>,
    registry: Arc<Registry>,
    auth: Auth,
    permits: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Outbox>>,
    conns_done: Notify,
    /// The server is shutting down; set under the `conns` lock.
    draining: AtomicBool,
    next_conn: AtomicU64,
    boot: u32,
}

impl Server {
    /// Opens the database, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        crate::metrics::install();
        let config = Arc::new(config);
        let cfg = config.clone();
        let (store, writer) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&cfg.server.data_dir, cfg.storage.cache_bytes)?;
            let writer = WriterHandle::spawn(store.clone(), &cfg.storage)?;
            Ok::<_, StoreError>((store, writer))
        })
        .await
        .map_err(std::io::Error::other)??;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let registry = Registry::new(store, writer.clone(), config.clone());
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            auth: Auth::new(&config.auth.jwt_secret),
            permits: Arc::new(Semaphore::new(config.server.max_connections)),
            conns: Mutex::new(HashMap::new()),
            conns_done: Notify::new(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            boot: rand::random(),
            config: config.clone(),
            registry: registry.clone(),
        });
        tokio::spawn(flush_periodically(
            writer.clone(),
            config.storage.flush_every(),
            stop_rx.clone(),
        ));
        if config.retention.max_messages > 0 || config.retention.max_age_secs > 0 {
            tokio::spawn(crate::retention::sweep(registry.clone(), stop_rx.clone()));
        }
        let task = tokio::spawn(serve(listener, shared, writer, stop_rx));
        tracing::info!(%addr, "roomd listening");
        Ok(Server { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful shutdown: returns once every acknowledged write is durable and every socket is
    /// closed (or the configured deadline passed).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn flush_periodically(
    writer: WriterHandle,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => writer.flush().await,
            _ = stop.changed() => return,
        }
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    writer: WriterHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_http(stream, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    {
        let conns = shared.lock_conns();
        shared.draining.store(true, Ordering::Relaxed);
        for outbox in conns.values() {
            outbox.refuse_requests();
        }
    }
    // Lame duck: connections stay open answering 503 while load balancers move clients away.
    tokio::time::sleep(Duration::from_millis(shared.config.server.lame_duck_ms)).await;
    let deadline = Duration::from_millis(shared.config.server.shutdown_timeout_ms);
    let graceful = async {
        shared.registry.shutdown().await;
        writer.stop().await;
        let outboxes: Vec<Outbox> = shared.lock_conns().values().cloned().collect();
        for o in outboxes {
            o.close(CloseReason::GoingAway);
        }
        shared.wait_conns().await;
    };
    if tokio::time::timeout(deadline, graceful).await.is_err() {
        tracing::warn!("shutdown deadline passed; closing remaining connections");
        writer.stop().await;
    }
    tracing::info!("roomd stopped");
}

async fn serve_http(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let io = TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, shared)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(16 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = conn.await {
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
        "/ws" => upgrade(req, shared),
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Validates the WebSocket handshake, answers 101 and hands the upgraded socket to a task.
fn upgrade(mut req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let h = req.headers();
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let version_ok = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(accept_key), true, true) = (key, is_upgrade, version_ok) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)\n",
        );
    };
    let offered: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    let select = offered.iter().any(|p| p == roomd_protocol::SUBPROTOCOL);
    if !offered.is_empty() && !select {
        return text(
            StatusCode::BAD_REQUEST,
            "unsupported subprotocol: this server speaks roomd.v1\n",
        );
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let identity = shared.auth.identify(
        query.token.as_deref().or(bearer.as_deref()),
        query.user.as_deref(),
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        // The setup runs boxed and ends; the task then holds only the connection's own future.
        // The connection gets the socket itself when it can, rather than hyper's layers
        // between it and every read and write.
        let serve = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => {
                let io = parts.io.into_inner();
                Box::pin(accept(io, parts.read_buf, shared, identity, query.client)).await
            }
            Err(upgraded) => {
                let io = TokioIo::new(upgraded);
                Box::pin(accept(io, Bytes::new(), shared, identity, query.client)).await
            }
        };
        if let Some(serve) = serve {
            serve.await;
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hm = r.headers_mut();
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hm.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key).expect("base64 is a valid header"),
    );
    if select {
        hm.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(roomd_protocol::SUBPROTOCOL),
        );
    }
    r
}

/// The query parameters of `/ws` (SPEC.md section 2).
struct Query {
    token: Option<String>,
    user: Option<String>,
    client: Option<String>,
}

impl Query {
    fn parse(q: &str) -> Query {
        let mut out = Query {
            token: None,
            user: None,
            client: None,
        };
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = (!v.is_empty()).then(|| v.into_owned());
            match &*k {
                "token" => out.token = v,
                // Ids longer than 64 bytes are ignored rather than trusted.
                "user" => out.user = v.filter(|v| v.len() <= 64),
                "client" => out.client = v.filter(|v| v.len() <= 64),
                _ => {}
            }
        }
        out
    }
}

/// A connection's future, boxed so a connection's task holds only the state it needs while
/// idle (the setup's locals die with the setup).
type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Sets up a WebSocket connection (hello, limits, auth); returns the future that serves it.
/// `read` holds what the client sent after its handshake and the HTTP layer already read.
async fn accept<S>(
    io: S,
    read: Bytes,
    shared: Arc<Shared>,
    identity: Result<Option<String>, AuthError>,
    client: Option<String>,
) -> Option<ConnFuture>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws_cfg = &shared.config.websocket;
    let cfg = WebSocketConfig::default()
        .read_buffer_size(ws_cfg.read_buffer_bytes)
        .write_buffer_size(ws_cfg.write_buffer_bytes)
        .max_write_buffer_size(ws_cfg.write_buffer_bytes.max(ws_cfg.max_frame_bytes) * 4)
        .max_message_size(Some(ws_cfg.max_frame_bytes))
        .max_frame_size(Some(ws_cfg.max_frame_bytes));
    let ws = if read.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await
    } else {
        WebSocketStream::from_partially_read(io, read.to_vec(), Role::Server, Some(cfg)).await
    };
    let user = match identity {
        Ok(user) => user.map(Arc::from),
        Err(e) => {
            refuse(ws, e).await;
            return None;
        }
    };
    let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
        close_now(
            ws,
            roomd_protocol::CloseCode::AT_CAPACITY,
            "server at its connection limit",
        )
        .await;
        return None;
    };
    let n = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let id: Arc<str> = Arc::from(format!("{:08x}{:08x}", shared.boot, n));
    let outbox = Outbox::new(
        shared.config.outbox.max_frames,
        shared.config.outbox.max_bytes,
    );
    let peer = Arc::new(Peer {
        client: client.map_or_else(|| id.clone(), Arc::from),
        id: id.clone(),
        user,
        outbox: outbox.clone(),
    });
    peer.send(&ServerFrame::Hello {
        v: roomd_protocol::VERSION,
        server: format!("roomd/{}", env!("CARGO_PKG_VERSION")),
        conn: id.to_string(),
        user: peer.user.as_deref().map(str::to_string),
        ping: shared.config.websocket.ping_interval_secs,
        limits: shared.config.wire_limits(),
    });
    {
        let mut conns = shared.lock_conns();
        // Checked under the lock that the shutdown's walk over the connections takes: one that
        // registers after the walk refuses requests from the start.
        if shared.draining.load(Ordering::Relaxed) {
            outbox.refuse_requests();
        }
        conns.insert(n, outbox);
    }
    crate::metrics::connection_opened();
    tracing::debug!(conn = %id, user = ?peer.user, "connection opened");
    let session = Session::new(peer, shared.registry.clone(), shared.config.clone());
    let timing = Timing {
        ping: shared.config.ping_interval(),
        write_timeout: Duration::from_millis(shared.config.websocket.write_timeout_ms),
    };
    let guard = ConnGuard {
        shared,
        n,
        _permit: permit,
    };
    Some(Box::pin(connection::run(ws, session, timing, guard)))
}

/// Unregisters a connection when its task ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    n: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
        let mut conns = self.shared.lock_conns();
        conns.remove(&self.n);
        if conns.is_empty() {
            self.shared.conns_done.notify_waiters();
        }
    }
}

/// Authentication failed: an `err` 401 frame, then close 4401.
async fn refuse<S>(mut ws: WebSocketStream<S>, e: AuthError)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    let err = ReplyError::new(roomd_protocol::ErrorCode::Unauthorized, e.to_string());
    crate::metrics::error(err.code);
    let frame = codec::encode(&ServerFrame::Err {
        id: None,
        code: err.code.as_u16(),
        msg: err.msg,
        ver: None,
        max: None,
    });
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            Bytes::from(frame),
        ))
        .await;
    close_now(
        ws,
        roomd_protocol::CloseCode::UNAUTHORIZED,
        "authentication failed",
    )
    .await;
}

async fn close_now<S>(mut ws: WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let frame = CloseFrame {
        code: WsCloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(Some(frame))).await;
}

impl Shared {
    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Outbox>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn wait_conns(&self) {
        loop {
            let done = self.conns_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.lock_conns().is_empty() {
                return;
            }
            done.await;
        }
    }
}
