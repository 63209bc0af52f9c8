//! A connection's protocol state: decodes requests, checks them against the limits, and routes
//! them to rooms. Rooms answer straight into the connection's outbox.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use roomd_protocol::{
    codec, decode_client, validate_room_name, ClientFrame, ErrorCode, ServerFrame, Value,
};

use crate::config::Config;
use crate::peer::{Peer, ReplyError};
use crate::room::registry::{ShuttingDown, TrySend};
use crate::room::{Command, Mutation, Registry};

/// A request waiting for room in its room's inbox.
pub struct Blocked {
    id: u32,
    room: String,
    cmd: Box<Command>,
}

pub struct Session {
    pub peer: Arc<Peer>,
    registry: Arc<Registry>,
    config: Arc<Config>,
    /// Rooms this connection is subscribed to (for the limit and for cleanup on close).
    subs: HashSet<Arc<str>>,
}

impl Session {
    pub fn new(peer: Arc<Peer>, registry: Arc<Registry>, config: Arc<Config>) -> Session {
        Session {
            peer,
            registry,
            config,
            subs: HashSet::new(),
        }
    }

    /// Handles one binary frame. Errors are answered on the connection, which stays open.
    /// Returns a request whose room's inbox is full: the caller hands it to
    /// [`Session::send_when_room`], which waits (backpressure on this connection). The usual
    /// path does not wait at all, so it needs no future of its own.
    pub fn on_frame(&mut self, bytes: &[u8]) -> Option<Blocked> {
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

    /// Sends a request that found its room's inbox full, once there is room.
    pub async fn send_when_room(&mut self, blocked: Blocked) {
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
    pub fn refuse(&self, bytes: &[u8]) {
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
    pub fn on_text(&self) {
        self.peer.send_err(
            None,
            ReplyError::new(ErrorCode::Malformed, "text frames are not part of the protocol; send one MessagePack map per binary frame"),
        );
    }

    fn dispatch(&mut self, frame: ClientFrame) -> Result<Option<Blocked>, ReplyError> {
        let id = frame.id();
        if let Some(room) = frame.room() {
            validate_room_name(room, self.config.limits.room_name_bytes)
                .map_err(|e| ReplyError::new(ErrorCode::BadRoom, e.to_string()))?;
        }
        let peer = self.peer.clone();
        let (room, cmd) = match frame {
            ClientFrame::Ping { id } => {
                peer.send(&ServerFrame::Pong { id });
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
                self.check_sub(&room, info.as_ref())?;
                let cmd = Command::Subscribe {
                    peer,
                    id,
                    since,
                    state: state.unwrap_or(false),
                    presence: presence.unwrap_or(false),
                    info,
                };
                (room, cmd)
            }
            ClientFrame::Unsub { id, room } => {
                if !self.subs.remove(room.as_str()) {
                    return Err(ReplyError::new(
                        ErrorCode::NotSubscribed,
                        "not subscribed to this room",
                    ));
                }
                (room, Command::Unsubscribe { peer, id })
            }
            ClientFrame::Pub {
                id,
                room,
                data,
                mid,
            } => {
                self.check_pub(&data, mid.as_deref())?;
                let cmd = Command::Publish {
                    peer,
                    id,
                    data,
                    mid,
                    received: Instant::now(),
                };
                (room, cmd)
            }
            ClientFrame::Hist {
                id,
                room,
                after,
                before,
                limit,
            } => {
                let limit = self.page_limit(limit)?;
                self.history(id, room, after, before, limit);
                return Ok(None);
            }
            ClientFrame::Get { id, room, key } => {
                self.check_key(&key)?;
                (room, Command::Get { peer, id, key })
            }
            ClientFrame::List {
                id,
                room,
                prefix,
                after,
                limit,
            } => {
                let limit = self.page_limit(limit)?;
                let prefix = prefix.unwrap_or_default();
                (
                    room,
                    Command::List {
                        peer,
                        id,
                        prefix,
                        after,
                        limit,
                    },
                )
            }
            ClientFrame::Put {
                id,
                room,
                key,
                value,
            } => {
                self.check_key(&key)?;
                let encoded = self.encode_value(&value)?;
                (
                    room,
                    Command::Mutate {
                        peer,
                        id,
                        op: Mutation::Put {
                            key,
                            value,
                            encoded,
                        },
                    },
                )
            }
            ClientFrame::Del { id, room, key } => {
                self.check_key(&key)?;
                (
                    room,
                    Command::Mutate {
                        peer,
                        id,
                        op: Mutation::Del { key },
                    },
                )
            }
            ClientFrame::Cas {
                id,
                room,
                key,
                ver,
                value,
            } => {
                self.check_key(&key)?;
                let encoded = self.encode_value(&value)?;
                (
                    room,
                    Command::Mutate {
                        peer,
                        id,
                        op: Mutation::Cas {
                            key,
                            ver,
                            value,
                            encoded,
                        },
                    },
                )
            }
            ClientFrame::Incr { id, room, key, by } => {
                self.check_key(&key)?;
                (
                    room,
                    Command::Mutate {
                        peer,
                        id,
                        op: Mutation::Incr {
                            key,
                            by: by.unwrap_or(1),
                        },
                    },
                )
            }
            ClientFrame::Who { id, room } => (room, Command::Who { peer, id }),
        };
        let subscribing = matches!(cmd, Command::Subscribe { .. });
        match self.registry.try_send(&room, cmd) {
            Ok(()) => Ok(None),
            Err(TrySend::Full(cmd)) => Ok(Some(Blocked { id, room, cmd })),
            Err(TrySend::ShuttingDown(e)) => Err(self.unsent(&room, subscribing, e)),
        }
    }

    fn check_sub(&mut self, room: &str, info: Option<&Value>) -> Result<(), ReplyError> {
        if self.subs.contains(room) {
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
        if let Some(info) = info {
            let len = encoded_len(info);
            if len > self.config.limits.info_bytes {
                return Err(ReplyError::too_large(
                    "info",
                    len,
                    self.config.limits.info_bytes,
                ));
            }
        }
        self.subs.insert(Arc::from(room));
        Ok(())
    }

    fn check_pub(&self, data: &[u8], mid: Option<&str>) -> Result<(), ReplyError> {
        let l = &self.config.limits;
        if data.len() > l.payload_bytes {
            return Err(ReplyError::too_large("data", data.len(), l.payload_bytes));
        }
        match mid {
            Some("") => Err(ReplyError::new(
                ErrorCode::BadRequest,
                "mid must not be empty",
            )),
            Some(m) if m.len() > l.mid_bytes => {
                Err(ReplyError::too_large("mid", m.len(), l.mid_bytes))
            }
            _ => Ok(()),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), ReplyError> {
        let max = self.config.limits.key_bytes;
        match key.len() {
            0 => Err(ReplyError::new(
                ErrorCode::BadRequest,
                "key must not be empty",
            )),
            n if n > max => Err(ReplyError::too_large("key", n, max)),
            _ => Ok(()),
        }
    }

    fn encode_value(&self, value: &Value) -> Result<Vec<u8>, ReplyError> {
        let mut encoded = Vec::new();
        rmpv::encode::write_value(&mut encoded, value).expect("write to Vec");
        let max = self.config.limits.value_bytes;
        if encoded.len() > max {
            return Err(ReplyError::too_large("value", encoded.len(), max));
        }
        Ok(encoded)
    }

    fn page_limit(&self, limit: Option<u32>) -> Result<usize, ReplyError> {
        let page = self.config.limits.page;
        match limit {
            Some(0) => Err(ReplyError::new(
                ErrorCode::BadRequest,
                "limit must be at least 1",
            )),
            Some(n) => Ok((n as usize).min(page)),
            None => Ok(page),
        }
    }

    /// History is read from disk off the connection's task, so a slow read delays only its
    /// own reply.
    fn history(
        &self,
        id: u32,
        room: String,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) {
        let (store, peer) = (self.registry.store.clone(), self.peer.clone());
        tokio::spawn(async move {
            let name = room.clone();
            let read =
                tokio::task::spawn_blocking(move || store.history(&name, after, before, limit))
                    .await;
            match read {
                Ok(Ok((frames, more))) => {
                    let bytes = codec::encode_hist_raw(id, &room, &frames, more);
                    let _ = peer.outbox.push(crate::wire::wrap(&bytes));
                }
                Ok(Err(e)) => {
                    peer.send_err(Some(id), ReplyError::new(ErrorCode::Storage, e.to_string()))
                }
                Err(e) => {
                    peer.send_err(Some(id), ReplyError::new(ErrorCode::Storage, e.to_string()))
                }
            }
        });
    }

    /// The connection ended: leave every room, so presence and subscriber lists drop it.
    pub async fn close(self) {
        for room in self.subs {
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

fn encoded_len(v: &Value) -> usize {
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, v).expect("write to Vec");
    buf.len()
}
