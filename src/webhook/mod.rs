//! Webhooks: HTTP endpoints told what happens (connections, joins and leaves, rooms created,
//! emptied and unloaded, messages, state changes), signed, retried, and never lost once
//! written to the durable outbox (README "Webhooks").
//!
//! The path of an event: whoever sees it happen (a connection task, a room) calls
//! [`Webhooks::emit`], which never waits: a `try_send` into a bounded queue ([`QUEUE`]). The
//! outbox writer ([`outbox`]) drains that queue in groups, gives each event its id, and writes
//! one row per endpoint that wants it into redb in one durable transaction (group commit, as the
//! store's writer does for rooms). One delivery task per endpoint ([`delivery`]) reads the
//! oldest rows of its endpoint, POSTs them as one batch, and removes them once answered 2xx;
//! on failure it retries with jittered exponential backoff. Nothing here ever waits on an
//! endpoint while holding anything a room or a connection needs: a dead endpoint fills its own
//! outbox up to its bounds and then drops (counted, logged) its own new events.
//!
//! Messages are copied into the outbox like every other event rather than read from the rooms'
//! logs through a cursor per endpoint. A cursor would save the copy, but the log is ordered
//! only within a room (`(room id, seq)` keys), so it would be one cursor per endpoint and room,
//! as many as rooms ever written, each advanced by finding the rooms written since; retention
//! would trim entries an endpoint that is down has not read (a silent loss), and a deletion
//! would change what is delivered after the fact. A copy costs one row per message and
//! endpoint, within the endpoint's outbox bounds, and `namespaces` keeps it to the rooms the
//! backend asked for.
//!
//! In cluster mode each node runs its own outbox in its own redb and emits what it sees: its
//! connections, its subscribers' joins and leaves, the writes it accepted.
//!
//! - [`event`]: the event and its JSON; [`signature`]: the `roomd-signature` header;
//!   [`outbox`]: the writer task; [`delivery`]: the delivery task (one POST per batch, through
//!   [`crate::http_client`]).
//!
//! Room hooks: `room.emptied` fires when a room's last subscriber is gone. The reconnect grace
//! of presence v2 (issue #16) will delay that moment; it is decided in one place, the room's
//! `left` hook.

mod delivery;
pub(crate) mod event;
mod outbox;
pub(crate) mod signature;

use crate::http_client::Target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use event::{Event, Kind};

use crate::config::{Config, WebhookConfig};
use crate::lifecycle::Lifecycle;
use crate::store::{Store, StoreError};

/// Events emitted and not yet taken by the outbox writer, at most. The writer takes all of them
/// at each commit (a durable commit is a few ms), so this only fills when the disk stalls;
/// then new events are dropped (counted as `queue_full`) rather than rooms slowed down. At a
/// few hundred bytes an event, at most a few MiB.
pub(crate) const QUEUE: usize = 16_384;

/// Why webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("webhook outbox: {0}")]
    Store(#[from] StoreError),
    #[error("webhook outbox: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// An emitted event on its way to the outbox writer, with whoever waits for it to be durable.
pub(super) struct Queued {
    pub(super) ev: Event,
    /// Dropped by the writer once the event's append has returned (or the event was not
    /// written: its outbox full, the disk failing), which is what [`Durable`] waits for.
    pub(super) durable: Option<oneshot::Sender<()>>,
}

/// Resolves once an event emitted with [`Webhooks::emit_before_ack`] is in the outbox (or was
/// dropped, counted and logged, and will never be).
pub(crate) type Durable = oneshot::Receiver<()>;

/// One configured endpoint and what its outbox holds.
pub(crate) struct Endpoint {
    pub(crate) config: WebhookConfig,
    /// Its name in metrics, logs and the outbox's keys.
    pub(crate) key: String,
    secret: Vec<u8>,
    target: Target,
    /// (events, bytes) in its outbox: the writer adds under the bounds, delivery removes.
    held: Mutex<(u64, u64)>,
    /// Raised by the writer after a commit that added events for it.
    wake: Notify,
    /// Events dropped at its outbox's bound, for logging one line per thousand.
    drops: AtomicU64,
}

impl Endpoint {
    fn new(config: &WebhookConfig) -> Result<Endpoint, WebhookError> {
        let fail = |reason: String| WebhookError::Endpoint {
            endpoint: config.key().to_string(),
            reason,
        };
        Ok(Endpoint {
            key: config.key().to_string(),
            secret: config.read_secret().map_err(fail)?,
            target: Target::new(&config.url).map_err(|e| fail(e.to_string()))?,
            config: config.clone(),
            held: Mutex::new((0, 0)),
            wake: Notify::new(),
            drops: AtomicU64::new(0),
        })
    }

    fn wants(&self, ev: &Event) -> bool {
        self.config.wants(ev.kind.as_str())
            && (ev.kind != Kind::MessagePublished
                || ev
                    .room
                    .as_deref()
                    .is_some_and(|r| self.config.wants_room(r)))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an event of `bytes` into the outbox if it stays within the bounds.
    fn reserve(&self, bytes: u64) -> bool {
        let mut held = self.held();
        let (events, total) = *held;
        if events + 1 > self.config.outbox_events || total + bytes > self.config.outbox_bytes {
            return false;
        }
        *held = (events + 1, total + bytes);
        true
    }

    /// Counts events out of the outbox (delivered, or never written).
    fn release(&self, events: u64, bytes: u64) {
        let (e, b) = {
            let mut held = self.held();
            held.0 = held.0.saturating_sub(events);
            held.1 = held.1.saturating_sub(bytes);
            *held
        };
        crate::metrics::webhook_outbox(&self.key, e, b);
    }
}

/// The handle rooms and connections emit through; cheap to clone. The default is off.
#[derive(Clone, Default)]
pub(crate) struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Queued>,
    endpoints: Arc<[Arc<Endpoint>]>,
    /// When (ms since the Unix epoch) a full queue was last logged: at most once a second.
    last_drop_log: AtomicU64,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Webhooks {
    /// Starts the outbox writer and one delivery task per endpoint; off without
    /// `[[webhooks]]`. Rows of endpoints no longer configured are removed.
    pub(crate) async fn start(
        config: &Config,
        store: &Store,
        lifecycle: &Lifecycle,
    ) -> Result<Webhooks, WebhookError> {
        if config.webhooks.is_empty() {
            return Ok(Webhooks::default());
        }
        let endpoints: Vec<Arc<Endpoint>> = config
            .webhooks
            .iter()
            .map(|c| Endpoint::new(c).map(Arc::new))
            .collect::<Result<_, _>>()?;
        crate::metrics::webhook_endpoints(endpoints.iter().map(|e| e.key.as_str()));
        let endpoints: Arc<[Arc<Endpoint>]> = endpoints.into();
        let (numbering, forgotten) = {
            let (store, endpoints) = (store.clone(), endpoints.clone());
            tokio::task::spawn_blocking(move || outbox::open(&store, &endpoints)).await??
        };
        if forgotten > 0 {
            tracing::warn!(
                events = forgotten,
                "webhook outbox: dropped the events held for endpoints no longer configured"
            );
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(outbox::run(
            rx,
            store.clone(),
            endpoints.clone(),
            numbering,
            stop.clone(),
        ));
        for ep in endpoints.iter() {
            lifecycle.spawn_background(delivery::run(ep.clone(), store.clone(), lifecycle.clone()));
        }
        tracing::info!(endpoints = endpoints.len(), "webhooks on");
        Ok(Webhooks {
            inner: Some(Arc::new(Inner {
                tx,
                endpoints,
                last_drop_log: AtomicU64::new(0),
                stop,
                writer: Mutex::new(Some(writer)),
            })),
        })
    }

    /// Whether some endpoint wants events of `kind` (in `room`, for messages): lets a caller
    /// skip building an event nobody wants.
    pub(crate) fn wants(&self, kind: Kind, room: &str) -> bool {
        self.inner.as_ref().is_some_and(|i| {
            i.endpoints.iter().any(|e| {
                e.config.wants(kind.as_str())
                    && (kind != Kind::MessagePublished || e.config.wants_room(room))
            })
        })
    }

    /// Hands `ev` to the outbox writer without waiting; past [`QUEUE`] it is dropped.
    pub(crate) fn emit(&self, ev: Event) {
        self.queue(ev, None);
    }

    /// As [`Webhooks::emit`], for an event about a write the caller has yet to acknowledge:
    /// the returned [`Durable`] resolves once the event is in the outbox, and the ack waits for
    /// it, so a crash after an ack cannot lose the write's event (the write itself was durable
    /// before). `None`: no endpoint wants it, or it was dropped; nothing to wait for.
    pub(crate) fn emit_before_ack(&self, ev: Event) -> Option<Durable> {
        let (tx, rx) = oneshot::channel();
        self.queue(ev, Some(tx)).then_some(rx)
    }

    /// Whether `ev` was queued.
    fn queue(&self, ev: Event, durable: Option<oneshot::Sender<()>>) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        if !inner.endpoints.iter().any(|e| e.wants(&ev)) {
            return false;
        }
        match inner.tx.try_send(Queued { ev, durable }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(q)) => {
                inner.dropped(&q.ev);
                false
            }
            // Only after shutdown stopped the writer.
            Err(mpsc::error::TrySendError::Closed(q)) => {
                tracing::debug!(
                    kind = q.ev.kind.as_str(),
                    "webhook event after shutdown: not sent"
                );
                false
            }
        }
    }

    /// Shutdown: the writer commits what is queued and stops. Bounded by the queue's size.
    pub(crate) async fn stop(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.stop.cancel();
        let writer = inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }
}

impl Inner {
    fn dropped(&self, ev: &Event) {
        for e in self.endpoints.iter().filter(|e| e.wants(ev)) {
            crate::metrics::webhook_dropped(&e.key, "queue_full", 1);
        }
        let now = ev.ts;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now >= last + 1000
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                queue = QUEUE,
                "webhook events dropped: the queue into the outbox is full (is the disk stalled?)"
            );
        }
    }
}
