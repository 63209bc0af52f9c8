//! A connection's protocol state: decodes requests, checks them against the limits, and routes
//! them to rooms. Rooms answer straight into the connection's outbox.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};

use roomd_protocol::{decode_client, ClientFrame, ErrorCode, ServerFrame};

use crate::auth::Auth;
use crate::capability::{Allow, Capability};
use crate::config::{Config, EngineKind};
use crate::engine::Engine;
use crate::error::ReplyError;
use crate::expiry::{Expiries, Ticket};
use crate::lifecycle::Lifecycle;
use crate::peer::Peer;
use crate::permissions::Access;
use crate::proxy::{Ask, Call, Proxies};
use crate::ratelimit::{ConnLimits, Cost};
use crate::request::Requests;
use crate::room::registry::{ShuttingDown, TrySend};
use crate::room::{Change, Command, Mutation, Registry};

/// A request the connection's task finishes by awaiting it ([`Session::complete`]).
pub(crate) enum Deferred {
    /// A request waiting for room in its room's inbox.
    Room(Blocked),
    /// A token refresh, which may wait for a JWKS fetch.
    Auth { id: u32, token: String },
}

/// A request waiting for room in its room's inbox.
pub(crate) struct Blocked {
    id: u32,
    room: String,
    cmd: Box<Command>,
}

/// A request back from the application's endpoint (or queued behind one that went there):
/// its command to send on, or the error its client gets.
pub(crate) struct Proxied {
    id: u32,
    room: String,
    result: Result<Command, ReplyError>,
}

/// A connection's requests waiting on the application's endpoint, in the order they were read.
type Pipeline = FuturesOrdered<Pin<Box<dyn Future<Output = Proxied> + Send>>>;

/// A connection's token: what checks a fresh one, and the deadlines of the current one.
pub(crate) struct Token {
    pub auth: Arc<Auth>,
    pub expiries: Arc<Expiries>,
    pub ticket: Option<Ticket>,
    /// `auth.refresh_window_secs` and `auth.leeway_secs`.
    pub window: Duration,
    pub leeway: Duration,
}

pub(crate) struct Session {
    pub peer: Arc<Peer>,
    registry: Arc<Registry>,
    /// History pages are read from the database directly, not through a room.
    engine: Engine,
    config: Arc<Config>,
    /// History reads run as background tasks that shutdown waits for.
    lifecycle: Lifecycle,
    /// Rooms this connection is subscribed to (for the limit and for cleanup on close), each
    /// with the id of the `sub` that made it.
    subs: HashMap<Arc<str>, u32>,
    /// Rooms this connection wrote a key with `ephemeral` in (SPEC.md 4.14): told, like
    /// `subs`, when it ends. At most `limits.subscriptions_per_connection`.
    owns_in: HashSet<Arc<str>>,
    /// This connection's rate limits; only this session touches them.
    rate: ConnLimits,
    /// What this connection may do in which room (its token's grants or the namespaces').
    access: Access,
    /// Set when the connection came with a verified token.
    token: Option<Token>,
    /// The application's endpoints (proxy hooks); empty when none is configured.
    proxies: Arc<Proxies>,
    /// Requests waiting on a proxy call, and those read after them: each reaches its room
    /// only after every earlier one did, so a connection's requests keep their order.
    pipeline: Pipeline,
}

impl Session {
    pub(crate) fn new(
        peer: Arc<Peer>,
        registry: Arc<Registry>,
        engine: Engine,
        config: Arc<Config>,
        lifecycle: Lifecycle,
    ) -> Session {
        Session {
            rate: ConnLimits::new(&config.rate).with_namespaces(&config.namespaces),
            peer,
            registry,
            engine,
            config,
            lifecycle,
            subs: HashMap::new(),
            owns_in: HashSet::new(),
            access: Access::default(),
            token: None,
            proxies: Arc::default(),
            pipeline: FuturesOrdered::new(),
        }
    }

    /// Sends the requests the application's endpoints decide through them (proxy hooks).
    pub(crate) fn with_proxies(mut self, proxies: Arc<Proxies>) -> Session {
        self.proxies = proxies;
        self
    }

    /// Whether requests wait on the application: the connection then also waits for
    /// [`Session::next_proxied`].
    pub(crate) fn proxy_pending(&self) -> bool {
        !self.pipeline.is_empty()
    }

    /// Whether the connection has as many requests waiting on the application as it may: it
    /// then stops reading its socket (backpressure) until one returns.
    pub(crate) fn proxy_full(&self) -> bool {
        self.pipeline.len() >= self.proxies.per_connection()
    }

    /// The oldest request waiting on the application, once it (and so every earlier one) is
    /// back. Pending forever when none waits.
    pub(crate) async fn next_proxied(&mut self) -> Box<Proxied> {
        match self.pipeline.next().await {
            Some(p) => Box::new(p),
            None => std::future::pending().await,
        }
    }

    /// Sends on a request the application decided: to its room, or its error to the client.
    pub(crate) fn on_proxied(&mut self, proxied: Proxied) -> Option<Deferred> {
        let Proxied { id, room, result } = proxied;
        match result.and_then(|cmd| self.deliver(id, room.clone(), cmd)) {
            Ok(deferred) => deferred,
            Err(e) => {
                // A subscription refused is not one: the connection forgets it.
                if self.subs.get(room.as_str()) == Some(&id) {
                    self.subs.remove(room.as_str());
                }
                self.peer.send_err(Some(id), e);
                None
            }
        }
    }

    /// The connection came with a verified token expiring at `exp`: watch it (SPEC.md 9.3).
    pub(crate) fn with_token(mut self, mut token: Token, exp: Option<u64>) -> Session {
        token.ticket = exp.map(|exp| {
            token
                .expiries
                .watch(&self.peer, exp, token.window, token.leeway)
        });
        self.token = Some(token);
        self
    }

    /// Sets what this connection may do (from its token, when it has one).
    pub(crate) fn with_access(mut self, access: Access) -> Session {
        self.access = access;
        self
    }

    /// Handles one binary frame. Errors are answered on the connection, which stays open.
    /// Returns a request whose room's inbox is full: the caller hands it to
    /// [`Session::send_when_room`], which waits (backpressure on this connection). The usual
    /// path does not wait at all, so it needs no future of its own.
    pub(crate) fn on_frame(&mut self, bytes: &[u8]) -> Option<Deferred> {
        match decode_client(bytes) {
            Err(e) => {
                self.peer
                    .send_err(e.id(), ReplyError::new(e.code(), e.to_string()));
                None
            }
            Ok(frame) => {
                let id = frame.id();
                match self.dispatch(frame) {
                    Ok(blocked) => blocked,
                    Err(e) => {
                        self.peer.send_err(Some(id), e);
                        None
                    }
                }
            }
        }
    }

    /// Finishes a deferred request: waits for room in a full inbox, or checks a fresh token.
    pub(crate) async fn complete(&mut self, deferred: Deferred) {
        match deferred {
            Deferred::Room(blocked) => self.send_when_room(blocked).await,
            Deferred::Auth { id, token } => match self.refresh(&token).await {
                Ok(()) => self.peer.send(&ServerFrame::Ok { id }),
                Err(e) => self.peer.send_err(Some(id), e),
            },
        }
    }

    /// Replaces the connection's token with a fresh one for the same user (SPEC.md 4.9): its
    /// permissions and expiry from now on.
    async fn refresh(&mut self, fresh: &str) -> Result<(), ReplyError> {
        let Some(token) = &mut self.token else {
            return Err(ReplyError::new(
                ErrorCode::BadRequest,
                "this connection has no token to refresh (the server checks none, or it connected without one)",
            ));
        };
        let identity = token
            .auth
            .verify(fresh)
            .await
            .map_err(|e| ReplyError::new(ErrorCode::Unauthorized, e.to_string()))?;
        if identity.user.as_deref() != self.peer.user.as_deref() {
            return Err(ReplyError::new(
                ErrorCode::Unauthorized,
                "the token is for another user than this connection's",
            ));
        }
        if let Some(old) = token.ticket.take() {
            token.expiries.forget(&old);
        }
        token.ticket = identity.expires_at.map(|exp| {
            token
                .expiries
                .watch(&self.peer, exp, token.window, token.leeway)
        });
        self.access = Access::new(self.peer.user.clone(), identity.rooms);
        Ok(())
    }

    /// Sends a request that found its room's inbox full, once there is room.
    async fn send_when_room(&mut self, blocked: Blocked) {
        let Blocked { id, room, cmd } = blocked;
        let subscribing = matches!(*cmd, Command::Subscribe { .. });
        if let Err(e) = self.registry.send_boxed(&room, cmd).await {
            let e = self.unsent(&room, subscribing, e);
            self.peer.send_err(Some(id), e);
        }
    }

    /// A request that could not reach its room: a subscription it was to make is undone.
    fn unsent(&mut self, room: &str, subscribing: bool, e: ShuttingDown) -> ReplyError {
        if subscribing {
            self.subs.remove(room);
        }
        ReplyError::new(ErrorCode::Unavailable, e.to_string())
    }

    /// The server is shutting down: answer 503 without acting, so the client retries elsewhere
    /// or after reconnecting.
    pub(crate) fn refuse(&self, bytes: &[u8]) {
        let id = match decode_client(bytes) {
            Ok(frame) => Some(frame.id()),
            Err(e) => e.id(),
        };
        self.peer.send_err(
            id,
            ReplyError::new(
                ErrorCode::Unavailable,
                "server shutting down; retry after reconnecting",
            ),
        );
    }

    /// A text frame: the protocol is binary MessagePack only.
    pub(crate) fn on_text(&self) {
        self.peer.send_err(
            None,
            ReplyError::new(ErrorCode::Malformed, "text frames are not part of the protocol; send one MessagePack map per binary frame"),
        );
    }

    /// Routes one request: per-connection checks here, the request's own checks and its room
    /// command in [`Requests`].
    fn dispatch(&mut self, frame: ClientFrame) -> Result<Option<Deferred>, ReplyError> {
        let id = frame.id();
        let req = Requests {
            limits: &self.config.limits,
            frame: self.config.websocket.max_frame_bytes,
            peer: &self.peer,
        };
        if let Some(room) = frame.room() {
            req.check_room(room)?;
            self.check_access(room, &frame)?;
        }
        let (room, cmd) = match frame {
            ClientFrame::Ping { id } => {
                self.peer.send(&ServerFrame::Pong { id });
                return Ok(None);
            }
            ClientFrame::Auth { id, token } => {
                // Before the signature check: a flood of `auth` frames costs a clock read each.
                self.rate.admit(Cost::Auth)?;
                return Ok(Some(Deferred::Auth { id, token }));
            }
            ClientFrame::Hist {
                id,
                room,
                after,
                before,
                limit,
            } => {
                let read = req.history(self.engine.clone(), id, room, after, before, limit)?;
                self.lifecycle.spawn_background(read);
                return Ok(None);
            }
            ClientFrame::Sub {
                id,
                room,
                since,
                state,
                presence,
                info,
            } => {
                forget_refused(&self.peer, &mut self.subs);
                self.check_sub(&room)?;
                let allow = self.access.allow(&self.config, &room);
                let cmd = req.subscribe(
                    id,
                    since,
                    state.unwrap_or(false),
                    presence.unwrap_or(false),
                    info,
                    (allow != Allow::ALL).then(|| allow.names()),
                )?;
                self.subs.insert(Arc::from(room.as_str()), id);
                (room, cmd)
            }
            ClientFrame::Unsub { id, room } => {
                forget_refused(&self.peer, &mut self.subs);
                if self.subs.remove(room.as_str()).is_none() {
                    return Err(ReplyError::new(
                        ErrorCode::NotSubscribed,
                        "not subscribed to this room",
                    ));
                }
                (room, req.unsubscribe(id))
            }
            other => req.command(other)?,
        };
        if let Command::Mutate { op, .. } = &cmd {
            if op.owner().is_some() {
                self.check_ephemeral(&room, op)?;
            }
        }
        if let Err(e) = self.rate.admit_in(&room, cmd.cost()) {
            if matches!(cmd, Command::Subscribe { .. }) {
                // Counted above; refused before the room saw it.
                self.subs.remove(room.as_str());
            }
            return Err(e);
        }
        self.forward(id, room, cmd)
    }

    /// Sends a checked command on: through the application's endpoint when one decides it;
    /// behind the connection's requests already waiting on it, if any (so requests reach their
    /// rooms in the order read); else straight to its room.
    fn forward(
        &mut self,
        id: u32,
        room: String,
        mut cmd: Command,
    ) -> Result<Option<Deferred>, ReplyError> {
        let Some((endpoint, ask, key)) = self.ask_for(&room, &cmd) else {
            if self.pipeline.is_empty() {
                return self.deliver(id, room, cmd);
            }
            let ready = Proxied {
                id,
                room,
                result: Ok(cmd),
            };
            self.pipeline.push_back(Box::pin(std::future::ready(ready)));
            return Ok(None);
        };
        // A task of its own, so the call goes on while this connection's task writes or waits;
        // aborted if the connection ends first.
        let call = tokio::spawn(async move {
            let verdict = endpoint.decide(&ask, key).await;
            endpoint.settle(verdict).map(|data| {
                if let Some(data) = data {
                    replace_payload(&mut cmd, data);
                }
                cmd
            })
        });
        let call = tokio_util::task::AbortOnDropHandle::new(call);
        self.pipeline.push_back(Box::pin(async move {
            let result = call.await.unwrap_or_else(|e| Err(ReplyError::from(e)));
            Proxied { id, room, result }
        }));
        Ok(None)
    }

    /// The proxy call `cmd` needs, if an endpoint decides it: the endpoint, the call's body,
    /// and its decision's cache key (subscribes only).
    fn ask_for(
        &self,
        room: &str,
        cmd: &Command,
    ) -> Option<(Arc<crate::proxy::Endpoint>, Ask, Option<String>)> {
        let call = match cmd {
            Command::Subscribe { .. } => Call::Subscribe,
            Command::Publish { .. }
            | Command::Signal { .. }
            | Command::Change {
                change: Change::Edit(_),
                ..
            } => Call::Publish,
            _ => return None,
        };
        let endpoint = self.proxies.route(call, Some(room))?;
        let verified = self.token.is_some();
        let mut ask = Ask::new(call, &self.peer.id, self.peer.user.as_deref(), verified);
        ask.room = Some(room.to_string());
        let mut key = None;
        match cmd {
            Command::Subscribe {
                since,
                state,
                presence,
                info,
                ..
            } => {
                (ask.since, ask.state) = (*since, *state);
                ask.presence = *presence || info.is_some();
                // Per user (or, without one, per connection) and room.
                let who = self.peer.user.as_deref().map_or_else(
                    || format!("conn\0{}", self.peer.id),
                    |u| format!("user\0{verified}\0{u}"),
                );
                key = Some(format!("subscribe\0{who}\0{room}"));
            }
            Command::Publish { data, mid, .. } => {
                ask = ask.with_data(data);
                ask.mid.clone_from(mid);
            }
            Command::Signal { data, .. } => {
                ask = ask.with_data(data);
                ask.ephemeral = true;
            }
            Command::Change {
                target,
                change: Change::Edit(data),
                ..
            } => {
                ask = ask.with_data(data);
                ask.edit = Some(*target);
            }
            _ => {}
        }
        Some((endpoint, ask, key))
    }

    /// Hands a command that passed every check to its room.
    fn deliver(
        &mut self,
        id: u32,
        room: String,
        cmd: Command,
    ) -> Result<Option<Deferred>, ReplyError> {
        if matches!(cmd, Command::Signal { .. }) && self.registry.sender(&room).is_none() {
            // A room that is not loaded has no subscriber to deliver to: loading it from disk
            // for nothing would make each signal to a new name cost a room load.
            self.peer.send(&ServerFrame::Ok { id });
            return Ok(None);
        }
        self.route(id, room, cmd)
    }

    /// Hands a command to its room without waiting; a full inbox gives it back to wait for.
    fn route(
        &mut self,
        id: u32,
        room: String,
        cmd: Command,
    ) -> Result<Option<Deferred>, ReplyError> {
        let subscribing = matches!(cmd, Command::Subscribe { .. });
        match self.registry.try_send(&room, cmd, &self.peer) {
            Ok(()) => Ok(None),
            Err(TrySend::Full(cmd)) => Ok(Some(Deferred::Room(Blocked { id, room, cmd }))),
            Err(TrySend::ShuttingDown(e)) => Err(self.unsent(&room, subscribing, e)),
            Err(TrySend::Limited(e)) => {
                if subscribing {
                    self.subs.remove(room.as_str());
                }
                Err(e)
            }
        }
    }

    /// Whether this connection may make this request in `room` (SPEC.md 9.2): 403 if not.
    fn check_access(&self, room: &str, frame: &ClientFrame) -> Result<(), ReplyError> {
        let (needed, presence) = needed(frame);
        if presence && self.config.namespace(room).is_some_and(|ns| !ns.presence) {
            return Err(ReplyError::new(
                ErrorCode::Forbidden,
                "presence is off in this room's namespace",
            ));
        }
        self.access
            .check(&self.config, room, needed)
            .map_err(|cap| {
                ReplyError::new(
                    ErrorCode::Forbidden,
                    format!("not allowed in this room: {}", cap.name()),
                )
            })
    }

    /// The connection's own limits on subscribing.
    fn check_sub(&self, room: &str) -> Result<(), ReplyError> {
        if self.subs.contains_key(room) {
            return Err(ReplyError::new(
                ErrorCode::AlreadySubscribed,
                "already subscribed to this room",
            ));
        }
        let max = self.config.limits.subscriptions_per_connection;
        if self.subs.len() >= max {
            return Err(ReplyError {
                max: Some(max as u64),
                ..ReplyError::new(
                    ErrorCode::Limit,
                    format!("connection has {max} subscriptions, the limit"),
                )
            });
        }
        Ok(())
    }

    /// An ephemeral write (SPEC.md 4.14): on Redis only with `ttl_ms` (a node that dies takes
    /// its connections' ends with it); the room is remembered, to be told when the
    /// connection ends, within the connection's room limit.
    fn check_ephemeral(&mut self, room: &str, op: &Mutation) -> Result<(), ReplyError> {
        let timed = matches!(
            op,
            Mutation::Put {
                ttl_ms: Some(_),
                ..
            } | Mutation::Cas {
                ttl_ms: Some(_),
                ..
            }
        );
        if self.config.cluster.engine == EngineKind::Redis && !timed {
            return Err(ReplyError::new(
                ErrorCode::BadRequest,
                "`ephemeral` needs `ttl_ms` in cluster mode",
            ));
        }
        if self.owns_in.contains(room) {
            return Ok(());
        }
        let max = self.config.limits.subscriptions_per_connection;
        if self.owns_in.len() >= max {
            return Err(ReplyError {
                max: Some(max as u64),
                ..ReplyError::new(
                    ErrorCode::Limit,
                    format!("connection has ephemeral keys in {max} rooms, the limit"),
                )
            });
        }
        self.owns_in.insert(Arc::from(room));
        Ok(())
    }

    /// The connection ended: leave every room, so presence and subscriber lists drop it.
    pub(crate) async fn close(self) {
        if let Some(Token {
            expiries,
            ticket: Some(ticket),
            ..
        }) = &self.token
        {
            expiries.forget(ticket);
        }
        let mut rooms: HashSet<Arc<str>> = self.owns_in;
        rooms.extend(self.subs.into_keys());
        for room in rooms {
            let _ = self
                .registry
                .send(
                    &room,
                    Command::Leave {
                        conn: self.peer.id.clone(),
                    },
                )
                .await;
        }
    }
}

/// Puts the application's replacement payload in a publish (or ephemeral publish, or edit).
fn replace_payload(cmd: &mut Command, new: Vec<u8>) {
    match cmd {
        Command::Publish { data, .. }
        | Command::Signal { data, .. }
        | Command::Change {
            change: Change::Edit(data),
            ..
        } => *data = new,
        _ => {}
    }
}

/// The capabilities a request needs, and whether it uses presence.
fn needed(frame: &ClientFrame) -> (Allow, bool) {
    use Capability::*;
    match frame {
        ClientFrame::Sub {
            state,
            presence,
            info,
            ..
        } => {
            let presence = *presence == Some(true) || info.is_some();
            let state = (*state == Some(true)).then_some(StateRead);
            let caps = [Some(Sub), state, presence.then_some(Presence)];
            (Allow::of(caps.into_iter().flatten()), presence)
        }
        ClientFrame::Pub { .. }
        | ClientFrame::Signal { .. }
        | ClientFrame::Edit { .. }
        | ClientFrame::Redact { .. } => (Allow::of([Pub]), false),
        ClientFrame::Hist { .. } => (Allow::of([Hist]), false),
        ClientFrame::Get { .. } | ClientFrame::List { .. } => (Allow::of([StateRead]), false),
        ClientFrame::Put { .. }
        | ClientFrame::Del { .. }
        | ClientFrame::Cas { .. }
        | ClientFrame::Incr { .. } => (Allow::of([StateWrite]), false),
        ClientFrame::Who { .. } => (Allow::of([Presence]), true),
        ClientFrame::Ping { .. } | ClientFrame::Unsub { .. } | ClientFrame::Auth { .. } => {
            (Allow::NONE, false)
        }
    }
}

/// Forgets the subscriptions rooms refused (presence full) after the connection counted them
/// (only that `sub`'s: a later one to the same room stays); only `sub` and `unsub` look at the
/// count, so only they take the peer's lock.
fn forget_refused(peer: &Peer, subs: &mut HashMap<Arc<str>, u32>) {
    for (room, id) in peer.take_refused() {
        if subs.get(&room) == Some(&id) {
            subs.remove(&room);
        }
    }
}

#[cfg(test)]
mod tests {
    //! A subscription the room ended (`unsubbed`) is forgotten by the connection: `unsub` gets
    //! 404 and a new `sub` is taken.

    use std::sync::Arc;
    use std::time::Duration;

    use roomd_protocol::{codec, ClientFrame, ErrorCode, ServerFrame};

    use super::Session;
    use crate::config::Config;
    use crate::lifecycle::Lifecycle;
    use crate::outbox::Outbox;
    use crate::peer::Peer;
    use crate::room::{Command, Registry};
    use crate::store::{Store, WriterHandle};

    /// The next frame queued for the connection, decoded.
    async fn next(outbox: &Outbox) -> ServerFrame {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = outbox.ready();
            let mut out = Vec::new();
            outbox.drain(&mut out);
            if let Some(f) = out.first() {
                assert_eq!(out.len(), 1, "one frame at a time");
                return codec::decode_server(crate::wire::payload(f)).unwrap();
            }
            tokio::time::timeout_at(deadline, ready)
                .await
                .expect("a frame within 10 s");
        }
    }

    #[tokio::test]
    async fn a_removed_subscription_is_forgotten_by_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config::default());
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let writer = WriterHandle::spawn(store.clone(), &config.storage).unwrap();
        let lifecycle = Lifecycle::default();
        let registry = Registry::new(
            crate::engine::Engine::Embedded(store.clone()),
            writer.clone(),
            config.clone(),
            lifecycle.background().clone(),
            crate::webhook::Webhooks::default(),
        );
        let outbox = Outbox::new(1000, 1 << 20);
        let peer = Arc::new(Peer {
            id: "c1".into(),
            user: Some("ann".into()),
            client: "c1".into(),
            outbox: outbox.clone(),
            refused: Default::default(),
            in_flight: Default::default(),
        });
        let mut session = Session::new(
            peer,
            registry.clone(),
            crate::engine::Engine::Embedded(store),
            config,
            lifecycle.clone(),
        );
        let sub = |id| {
            codec::encode(&ClientFrame::Sub {
                id,
                room: "r".into(),
                since: None,
                state: None,
                presence: None,
                info: None,
            })
        };
        let unsub = codec::encode(&ClientFrame::Unsub {
            id: 3,
            room: "r".into(),
        });

        assert!(session.on_frame(&sub(1)).is_none());
        assert!(matches!(
            next(&outbox).await,
            ServerFrame::Subbed { id: 1, .. }
        ));
        // Subscribed: a second `sub` is refused by the connection itself.
        assert!(session.on_frame(&sub(2)).is_none());
        assert!(matches!(
            next(&outbox).await,
            ServerFrame::Err {
                id: Some(2),
                code: 410,
                ..
            }
        ));

        let (reply, count) = tokio::sync::oneshot::channel();
        let remove = Command::RemoveUser {
            user: "ann".into(),
            reply,
        };
        registry.send("r", remove).await.unwrap();
        assert_eq!(count.await.unwrap(), 1);
        assert_eq!(
            next(&outbox).await,
            ServerFrame::Unsubbed { room: "r".into() }
        );

        assert!(session.on_frame(&unsub).is_none());
        let not_subscribed = ErrorCode::NotSubscribed.as_u16();
        assert!(
            matches!(next(&outbox).await, ServerFrame::Err { id: Some(3), code, .. } if code == not_subscribed)
        );
        assert!(session.on_frame(&sub(4)).is_none());
        assert!(matches!(
            next(&outbox).await,
            ServerFrame::Subbed { id: 4, .. }
        ));

        session.close().await;
        lifecycle.request_stop();
        registry.shutdown().await;
        writer.stop().await;
        lifecycle.background_done().await;
    }
}
