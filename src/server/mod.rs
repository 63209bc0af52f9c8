//! The server: one port for WebSocket, HTTP routes and metrics, and the order it stops in.
//!
//! - [`http`]: the routes (`/ws`, `/metrics`, `/healthz`, the chat UI).
//! - [`upgrade`]: the WebSocket handshake, authentication and admission of a connection.
//! - [`shutdown`]: the shutdown order that keeps every acknowledged message.

mod admission;
mod http;
mod shutdown;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

use self::admission::{Admission, Admitted};
use crate::api::Api;
use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::{Config, EngineKind};
use crate::connections::Connections;
use crate::engine::Engine;
use crate::expiry::Expiries;
use crate::lifecycle::Lifecycle;
use crate::outbox::CloseReason;
use crate::room::Registry;
use crate::store::{Store, StoreError, WriterHandle};
use crate::tls::Tls;
use crate::webhook::Webhooks;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("opening the database did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("TLS is not configured: nothing to reload")]
    NoTls,
    #[error("{0}")]
    Auth(#[from] crate::auth::KeyError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("{0}")]
    Proxy(#[from] crate::proxy::ProxyError),
}

/// A running broker. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    tls: Option<Tls>,
    lifecycle: Lifecycle,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection task shares.
struct Shared {
    config: Arc<Config>,
    /// For readiness: storage is ready while the writer runs and its last write succeeded.
    writer: WriterHandle,
    /// For history reads and backups, which go to the database, not through a room.
    store: Store,
    registry: Arc<Registry>,
    lifecycle: Lifecycle,
    auth: Arc<Auth>,
    /// Token deadlines of open connections (SPEC.md 9.3); its task runs when auth is on.
    expiries: Arc<Expiries>,
    /// `Some` when the main port speaks TLS.
    tls: Option<Tls>,
    admission: Arc<Admission>,
    /// Every open WebSocket's outbox and user, for shutdown to refuse requests and close them
    /// and for the server API to disconnect a user. A connection registers under its lock
    /// after checking the phase (see [`shutdown`]).
    conns: Arc<Connections>,
    /// The server API (`/api/`), on the main port and the admin listener.
    api: Api,
    next_conn: AtomicU64,
    boot: u32,
    /// Where connections emit `connection.opened` and `connection.closed`.
    webhooks: Webhooks,
    /// The application's endpoints that decide connects, subscribes and publishes.
    proxies: Arc<crate::proxy::Proxies>,
}

impl Server {
    /// Opens the database, binds the listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        crate::metrics::install();
        // Before the database: a TLS mistake is reported without touching the data.
        let tls = Tls::from_config(&config.tls)?;
        let auth = Auth::new(&config.auth).await?;
        let proxies = Arc::new(crate::proxy::Proxies::new(&config)?);
        let config = Arc::new(config);
        let cfg = config.clone();
        let (store, writer) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&cfg.server.data_dir, cfg.storage.cache_bytes)?;
            let writer = WriterHandle::spawn(store.clone(), &cfg.storage)?;
            Ok::<_, StoreError>((store, writer))
        })
        .await??;
        let listener =
            listen(config.server.listen, config.server.listen_backlog).map_err(|source| {
                ServerError::Bind {
                    addr: config.server.listen,
                    source,
                }
            })?;
        let addr = listener.local_addr()?;
        let lifecycle = Lifecycle::default();
        let engine = match config.cluster.engine {
            EngineKind::Redis => {
                let default_id = format!("{}:{}", host_name(), addr.port());
                Engine::Redis(Cluster::connect(&config.cluster, default_id, &lifecycle).await?)
            }
            _ => Engine::Embedded(store.clone()),
        };
        let webhooks = Webhooks::start(&config, &store, &lifecycle).await?;
        let registry = Registry::new(
            engine.clone(),
            writer.clone(),
            config.clone(),
            lifecycle.background().clone(),
            webhooks.clone(),
        );
        let conns = Arc::<Connections>::default();
        let api = Api::new(
            config.clone(),
            registry.clone(),
            engine.clone(),
            conns.clone(),
            lifecycle.clone(),
        );
        let shared = Arc::new(Shared {
            api,
            auth: Arc::new(auth),
            expiries: Arc::default(),
            tls: tls.clone(),
            admission: Admission::new(
                config.server.max_connections,
                config.server.max_connections_per_ip,
            ),
            conns,
            next_conn: AtomicU64::new(1),
            boot: rand::random(),
            config: config.clone(),
            writer: writer.clone(),
            store: store.clone(),
            registry: registry.clone(),
            lifecycle: lifecycle.clone(),
            webhooks,
            proxies,
        });
        lifecycle.spawn_background(flush_periodically(
            writer.clone(),
            config.storage.flush_every(),
            lifecycle.clone(),
        ));
        if shared.auth.enabled() {
            lifecycle.spawn_background(shared.expiries.clone().run(lifecycle.clone()));
        }
        if let Some(refresh) = shared.auth.refresher() {
            let stop = lifecycle.clone();
            lifecycle.spawn_background(async move {
                tokio::select! {
                    () = refresh => {}
                    () = stop.stopping() => {}
                }
            });
        }
        if let Some(cluster) = engine.cluster() {
            let (conns, stop) = (shared.conns.clone(), lifecycle.clone());
            let watch = cluster.clone().watch(move || {
                for outbox in conns.outboxes() {
                    outbox.close(CloseReason::EngineUnavailable);
                }
            });
            lifecycle.spawn_background(async move {
                tokio::select! {
                    () = watch => {}
                    () = stop.stopping() => {}
                }
            });
        }
        // On Redis, a room's deadlines are met by the nodes that have it loaded.
        if engine.cluster().is_none() {
            lifecycle.spawn_background(crate::wake::timed_rooms(
                registry.clone(),
                store.clone(),
                lifecycle.clone(),
            ));
        }
        // On Redis, retention goes with each room's writes.
        if config.retention_anywhere() && engine.cluster().is_none() {
            lifecycle.spawn_background(crate::retention::sweep(
                registry,
                store.clone(),
                config.clone(),
                lifecycle.clone(),
            ));
        }
        if let Some(admin) = config.admin.listen {
            let admin = TcpListener::bind(admin)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: admin,
                    source,
                })?;
            tracing::info!(addr = %admin.local_addr()?, "admin listener");
            lifecycle.spawn_background(http::serve_admin(admin, shared.clone()));
        }
        let auth_on = shared.auth.enabled();
        let task = tokio::spawn(serve(listener, shared, writer));
        tracing::info!(%addr, tls = tls.is_some(), auth = auth_on, "roomd listening");
        Ok(Server {
            addr,
            tls,
            lifecycle,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when the main port speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Reads `[tls]`'s certificate and key files again (after a renewal); new handshakes get
    /// them, open connections keep theirs. On error the files in use stay in use.
    pub fn reload_tls(&self) -> Result<(), ServerError> {
        let tls = self.tls.as_ref().ok_or(ServerError::NoTls)?;
        tls.reload()?;
        crate::metrics::tls_reloaded();
        Ok(())
    }

    /// Graceful shutdown: returns once every acknowledged write is durable and every socket is
    /// closed (or the configured deadline passed).
    pub async fn shutdown(self) {
        self.lifecycle.request_stop();
        let _ = self.task.await;
    }
}

/// The main listener, with `server.listen_backlog` rather than the runtime's default (128):
/// after a restart every client reconnects at once, and a connection the queue cannot hold is
/// dropped by the kernel and retried by the client only after a second.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart can listen again while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The flush tick: relaxed mode's periodic fsync, and checkpoints when due.
async fn flush_periodically(writer: WriterHandle, every: Duration, lifecycle: Lifecycle) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => writer.flush().await,
            _ = lifecycle.stopping() => return,
        }
    }
}

/// Accepts until shutdown is requested, then runs the shutdown order.
async fn serve(listener: TcpListener, shared: Arc<Shared>, writer: WriterHandle) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => admit(&shared, stream, addr),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shared.lifecycle.stopping() => break,
        }
    }
    drop(listener);
    shutdown::run(&shared, &writer).await;
}

/// Serves an accepted connection under the connection limits.
fn admit(shared: &Arc<Shared>, stream: tokio::net::TcpStream, addr: SocketAddr) {
    let (slot, refusal) = match shared.admission.admit(addr.ip()) {
        Admitted::Slot(slot) => (Some(slot), None),
        Admitted::Refused(permit) => (None, Some(permit)),
        Admitted::Dropped => return,
    };
    let _ = stream.set_nodelay(true);
    let serve = serve_stream(stream, addr, shared.clone(), slot);
    shared.lifecycle.spawn_connection(async move {
        match refusal {
            None => serve.await,
            // One brief answer: the whole connection, TLS handshake and keep-alive included,
            // is bounded in time.
            Some(permit) => {
                let _ = tokio::time::timeout(admission::REFUSAL_LIFETIME, serve).await;
                drop(permit);
            }
        }
    });
}

/// The TLS handshake when the port speaks TLS (under the header timeout: a client that stalls
/// in it is held no longer than one that stalls in its request head), then HTTP.
async fn serve_stream(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<Arc<admission::Slot>>,
) {
    let Some(tls) = shared.tls.clone() else {
        return http::serve(stream, addr, shared, slot).await;
    };
    let limit = Duration::from_millis(shared.config.server.header_timeout_ms);
    match tokio::time::timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => http::serve(stream, addr, shared, slot).await,
        Ok(Err(e)) => {
            crate::metrics::tls_handshake_failed();
            tracing::debug!(%addr, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            crate::metrics::tls_handshake_failed();
            tracing::debug!(%addr, "TLS handshake timed out");
        }
    }
}

impl Shared {
    /// Ready to serve: running (not shutting down) and storage writable.
    fn ready(&self) -> bool {
        let engine = match self.registry.engine().cluster() {
            Some(c) => c.reachable(),
            None => self.writer.healthy(),
        };
        self.lifecycle.phase() == crate::lifecycle::Phase::Running && engine
    }
}

/// A short plain-text answer (errors and probes), for the routes and the upgrade.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// This machine's name, for a cluster node's default id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "roomd".into())
}
