//! The fuzzers' entry point (cargo feature `fuzzing`, off by default; see `fuzz/`): a whole
//! session over a real room registry on a temporary store with its real writer thread.
//!
//! [`SessionHarness::feed`] hands one binary frame to the session exactly as the connection
//! task would ([`Session::on_frame`], then [`Session::complete`] for a full inbox), runs the runtime
//! until the request is answered, and returns every frame queued on the connection meanwhile
//! as MessagePack bodies. Not part of the embedding API.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomd_protocol::ServerFrame;

use crate::config::{Config, Durability};
use crate::lifecycle::Lifecycle;
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::room::Registry;
use crate::session::Session;
use crate::store::{Store, WriterHandle};

/// How long [`SessionHarness::feed`] waits for the reply to a request before it gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One server on a temporary data directory, and one connection to it at a time.
pub struct SessionHarness {
    rt: tokio::runtime::Runtime,
    registry: Arc<Registry>,
    store: Store,
    writer: WriterHandle,
    lifecycle: Lifecycle,
    config: Arc<Config>,
    session: Option<Session>,
    outbox: Outbox,
    conns: u64,
    /// Removed when the harness is dropped, after the writer has stopped.
    dir: Option<tempfile::TempDir>,
}

/// What one [`SessionHarness::feed`] produced.
pub struct Fed {
    /// Every frame queued on the connection, as MessagePack bodies (WebSocket header removed).
    pub frames: Vec<Vec<u8>>,
    /// The request was answered (a frame with its id, or any reply to a frame that did not
    /// decode), or the connection was closed. `false`: no answer within [`REPLY_TIMEOUT`].
    pub answered: bool,
    /// The server closed the connection (slow consumer); the next feed opens a new one.
    pub closed: bool,
}

impl SessionHarness {
    /// A server with the default configuration on a fresh temporary directory, and one open
    /// connection (its `hello` is the first frame of the first [`SessionHarness::feed`]).
    pub fn new() -> io::Result<SessionHarness> {
        SessionHarness::with_config(Config::default())
    }

    /// As [`SessionHarness::new`] with `config` (its data directory is replaced by a temporary
    /// one; relaxed durability keeps fuzzing off the disk's flush path).
    pub fn with_config(mut config: Config) -> io::Result<SessionHarness> {
        let dir = tempfile::Builder::new().prefix("roomd-fuzz").tempdir()?;
        config.server.data_dir = dir.path().to_path_buf();
        config.storage.durability = Durability::Relaxed;
        let config = Arc::new(config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store =
            Store::open(dir.path(), config.storage.cache_bytes).map_err(io::Error::other)?;
        let writer =
            WriterHandle::spawn(store.clone(), &config.storage).map_err(io::Error::other)?;
        let lifecycle = Lifecycle::default();
        let registry = rt.block_on(async {
            Registry::new(
                crate::engine::Engine::Embedded(store.clone()),
                writer.clone(),
                config.clone(),
                lifecycle.background().clone(),
                crate::webhook::Webhooks::default(),
            )
        });
        let tick = writer.clone();
        let every = config.storage.flush_every().max(Duration::from_millis(1));
        let stop = lifecycle.clone();
        rt.spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = interval.tick() => tick.flush().await,
                    _ = stop.stopping() => return,
                }
            }
        });
        let outbox = Outbox::new(config.outbox.max_frames, config.outbox.max_bytes);
        let mut harness = SessionHarness {
            rt,
            registry,
            store,
            writer,
            lifecycle,
            config,
            session: None,
            outbox,
            conns: 0,
            dir: Some(dir),
        };
        harness.connect();
        Ok(harness)
    }

    /// Closes the current connection (it leaves every room it subscribed to) and opens a new
    /// one, whose `hello` is queued.
    pub fn reconnect(&mut self) {
        if let Some(session) = self.session.take() {
            self.rt.block_on(session.close());
        }
        self.connect();
    }

    fn connect(&mut self) {
        self.conns += 1;
        let id: Arc<str> = Arc::from(format!("fuzz-{}", self.conns));
        self.outbox = Outbox::new(self.config.outbox.max_frames, self.config.outbox.max_bytes);
        let peer = Arc::new(Peer {
            client: id.clone(),
            user: Some(Arc::from("fuzzer")),
            id: id.clone(),
            outbox: self.outbox.clone(),
            refused: Default::default(),
            in_flight: Default::default(),
        });
        peer.send(&ServerFrame::Hello {
            v: roomd_protocol::VERSION,
            server: format!("roomd/{}", env!("CARGO_PKG_VERSION")),
            conn: id.to_string(),
            user: peer.user.as_deref().map(str::to_string),
            ping: self.config.websocket.ping_interval_secs,
            limits: self.config.wire_limits(),
            node: None,
        });
        self.session = Some(Session::new(
            peer,
            self.registry.clone(),
            crate::engine::Engine::Embedded(self.store.clone()),
            self.config.clone(),
            self.lifecycle.clone(),
        ));
    }

    /// Handles one binary frame as the connection task would and waits for its answer.
    pub fn feed(&mut self, frame: &[u8]) -> Fed {
        if self.session.is_none() || self.outbox.is_closed() {
            self.reconnect();
        }
        let expect = roomd_protocol::decode_client(frame).ok().map(|f| f.id());
        let Some(session) = self.session.as_mut() else {
            return Fed {
                frames: Vec::new(),
                answered: false,
                closed: true,
            };
        };
        let outbox = self.outbox.clone();
        self.rt.block_on(async move {
            let mut queued = Vec::new();
            let mut closed = outbox.drain(&mut queued).is_some();
            let mut frames: Vec<Vec<u8>> = queued.iter().flat_map(bodies).collect();
            let mut answered = false;
            if let Some(deferred) = session.on_frame(frame) {
                session.complete(deferred).await;
            }
            let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
            loop {
                // A push between the drain and the wait leaves a permit: no wake-up is lost.
                let ready = outbox.ready();
                tokio::pin!(ready);
                let mut out = Vec::new();
                closed |= outbox.drain(&mut out).is_some();
                for b in out.iter().flat_map(bodies) {
                    answered |= match expect {
                        None => true,
                        Some(id) => replies_to(&b, id),
                    };
                    frames.push(b);
                }
                if answered || closed {
                    break;
                }
                if tokio::time::timeout_at(deadline, ready).await.is_err() {
                    break;
                }
            }
            // Let what the request set off elsewhere (broadcasts to this connection) arrive.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let mut out = Vec::new();
            closed |= outbox.drain(&mut out).is_some();
            frames.extend(out.iter().flat_map(bodies));
            Fed {
                frames,
                answered: answered || closed,
                closed,
            }
        })
    }
}

/// The MessagePack bodies of a queued outbox item's WebSocket frames.
fn bodies(item: &Bytes) -> Vec<Vec<u8>> {
    crate::wire::bodies(item)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Whether `body` is a reply carrying request id `id`.
fn replies_to(body: &[u8], id: u32) -> bool {
    let Ok(frame) = roomd_protocol::decode_server(body) else {
        return false;
    };
    match frame {
        ServerFrame::Subbed { id: i, .. }
        | ServerFrame::Ok { id: i }
        | ServerFrame::Ack { id: i, .. }
        | ServerFrame::Hist { id: i, .. }
        | ServerFrame::Val { id: i, .. }
        | ServerFrame::Vals { id: i, .. }
        | ServerFrame::Done { id: i, .. }
        | ServerFrame::Who { id: i, .. }
        | ServerFrame::Pong { id: i } => i == id,
        ServerFrame::Err { id: i, .. } => i == Some(id),
        ServerFrame::Hello { .. }
        | ServerFrame::Msg { .. }
        | ServerFrame::State { .. }
        | ServerFrame::Join { .. }
        | ServerFrame::Leave { .. }
        | ServerFrame::Count { .. }
        | ServerFrame::Del { .. }
        | ServerFrame::Signal { .. }
        // Ends a subscription on the server's initiative: no request asked for it.
        | ServerFrame::Unsubbed { .. }
        | ServerFrame::Expiring { .. }
        // A continuation of the `subbed` or `who` that was the reply.
        | ServerFrame::Snap { .. } => false,
    }
}

impl Drop for SessionHarness {
    /// Stops as the server does: the connection leaves its rooms, every room commits, the writer
    /// stops; then the temporary directory is removed.
    fn drop(&mut self) {
        let session = self.session.take();
        let registry = self.registry.clone();
        let writer = self.writer.clone();
        let lifecycle = self.lifecycle.clone();
        self.rt.block_on(async move {
            if let Some(session) = session {
                session.close().await;
            }
            lifecycle.request_stop();
            registry.shutdown().await;
            writer.stop().await;
            lifecycle.background_done().await;
        });
        drop(self.dir.take());
    }
}
