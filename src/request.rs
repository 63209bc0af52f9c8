//! Each request kind as one method: it checks the request against the configured limits and
//! produces the command its room runs. The WebSocket session calls these, and any other front
//! door (the server API) calls the same ones, so a request is checked, ordered and answered the
//! same way whichever way it came in. Replies go to the requesting [`Peer`]'s outbox.

use std::sync::Arc;
use std::time::Instant;

use roomd_protocol::{check_value, codec, validate_room_name, ClientFrame, ErrorCode, Value};

use crate::config::LimitsConfig;
use crate::engine::Engine;
use crate::error::ReplyError;
use crate::peer::{LargeReply, Peer};
use crate::room::{Change, Command, Mutation};

/// Builds the commands of one requester.
pub(crate) struct Requests<'a> {
    pub limits: &'a LimitsConfig,
    /// `limits.frame` (websocket.max_frame_bytes): no reply is larger.
    pub frame: usize,
    pub peer: &'a Arc<Peer>,
}

impl Requests<'_> {
    /// Every request that names a room checks the name first.
    pub(crate) fn check_room(&self, room: &str) -> Result<(), ReplyError> {
        validate_room_name(room, self.limits.room_name_bytes)
            .map_err(|e| ReplyError::new(ErrorCode::BadRoom, e.to_string()))
    }

    /// The room and command of a request that needs no per-connection state (the session
    /// itself handles `ping`, `auth`, `hist`, `sub` and `unsub`).
    pub(crate) fn command(&self, frame: ClientFrame) -> Result<(String, Command), ReplyError> {
        Ok(match frame {
            ClientFrame::Pub {
                id,
                room,
                data,
                mid,
            } => (room, self.publish(id, data, mid)?),
            ClientFrame::Signal { id, room, data, .. } => (room, self.signal(id, data)?),
            ClientFrame::Edit {
                id,
                room,
                target,
                data,
            } => (room, self.change(id, target, Change::Edit(data), true)?),
            ClientFrame::Redact { id, room, target } => {
                (room, self.change(id, target, Change::Delete, true)?)
            }
            ClientFrame::Get { id, room, key } => (room, self.get(id, key)?),
            ClientFrame::List {
                id,
                room,
                prefix,
                after,
                limit,
            } => (room, self.list(id, prefix, after, limit)?),
            ClientFrame::Put {
                id,
                room,
                key,
                value,
                ttl_ms,
                ephemeral,
            } => (room, self.put(id, key, value, (ttl_ms, ephemeral))?),
            ClientFrame::Del { id, room, key } => (room, self.del(id, key)?),
            ClientFrame::Cas {
                id,
                room,
                key,
                ver,
                value,
                ttl_ms,
                ephemeral,
            } => (room, self.cas(id, key, ver, value, (ttl_ms, ephemeral))?),
            ClientFrame::Incr { id, room, key, by } => (room, self.incr(id, key, by)?),
            ClientFrame::Who { id, room } => (room, self.who(id)),
            ClientFrame::Ping { .. }
            | ClientFrame::Auth { .. }
            | ClientFrame::Hist { .. }
            | ClientFrame::Sub { .. }
            | ClientFrame::Unsub { .. } => {
                return Err(ReplyError::new(
                    ErrorCode::UnknownRequest,
                    "this request is not routed to a room",
                ))
            }
        })
    }

    pub(crate) fn subscribe(
        &self,
        id: u32,
        since: Option<u64>,
        state: bool,
        presence: bool,
        info: Option<Value>,
        allow: Option<Vec<String>>,
    ) -> Result<Command, ReplyError> {
        if let Some(v) = &info {
            check_subset("info", v)?;
        }
        // Encoded once: the room keeps these bytes and sends them as they are.
        let info = info.map(|v| bytes::Bytes::from(encoded(&v)));
        if let Some(info) = &info {
            let len = info.len();
            if len > self.limits.info_bytes {
                return Err(ReplyError::too_large("info", len, self.limits.info_bytes));
            }
        }
        Ok(Command::Subscribe {
            peer: self.peer.clone(),
            id,
            since,
            state,
            presence,
            info,
            allow,
        })
    }

    pub(crate) fn unsubscribe(&self, id: u32) -> Command {
        Command::Unsubscribe {
            peer: self.peer.clone(),
            id,
        }
    }

    pub(crate) fn publish(
        &self,
        id: u32,
        data: Vec<u8>,
        mid: Option<String>,
    ) -> Result<Command, ReplyError> {
        self.check_publish(data.len(), mid.as_deref())?;
        Ok(Command::Publish {
            peer: self.peer.clone(),
            id,
            data,
            mid,
            received: Instant::now(),
        })
    }

    /// An ephemeral publish (SPEC.md 4.10): the same payload limit as a publish.
    pub(crate) fn signal(&self, id: u32, data: Vec<u8>) -> Result<Command, ReplyError> {
        self.check_publish(data.len(), None)?;
        Ok(Command::Signal {
            peer: self.peer.clone(),
            id,
            data,
        })
    }

    /// Deleting or editing message `target` (SPEC.md 5.6, 5.8); `author_only` for a WebSocket
    /// request, which may change only its own user's messages. An edit's payload has a
    /// publish's limit.
    pub(crate) fn change(
        &self,
        id: u32,
        target: u64,
        change: Change,
        author_only: bool,
    ) -> Result<Command, ReplyError> {
        self.check_publish(change.payload_len(), None)?;
        Ok(Command::Change {
            peer: self.peer.clone(),
            id,
            target,
            change,
            author_only,
        })
    }

    /// A publish's own checks: the payload's size and the `mid`.
    pub(crate) fn check_publish(&self, len: usize, mid: Option<&str>) -> Result<(), ReplyError> {
        let l = self.limits;
        if len > l.payload_bytes {
            return Err(ReplyError::too_large("data", len, l.payload_bytes));
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

    pub(crate) fn get(&self, id: u32, key: String) -> Result<Command, ReplyError> {
        self.check_key(&key)?;
        Ok(Command::Get {
            peer: self.peer.clone(),
            id,
            key,
        })
    }

    pub(crate) fn list(
        &self,
        id: u32,
        prefix: Option<String>,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Command, ReplyError> {
        // Both are compared with keys, so no longer than a key can be.
        let max = self.limits.key_bytes;
        for (field, s) in [("prefix", &prefix), ("after", &after)] {
            match s {
                Some(s) if s.len() > max => return Err(ReplyError::too_large(field, s.len(), max)),
                _ => {}
            }
        }
        Ok(Command::List {
            peer: self.peer.clone(),
            id,
            prefix: prefix.unwrap_or_default(),
            after,
            limit: self.page_limit(limit)?,
            large: LargeReply::new(self.peer),
        })
    }

    pub(crate) fn put(
        &self,
        id: u32,
        key: String,
        value: Value,
        (ttl_ms, ephemeral): (Option<u64>, bool),
    ) -> Result<Command, ReplyError> {
        self.check_key(&key)?;
        let encoded = self.check_value(&value)?;
        self.check_ttl(ttl_ms)?;
        Ok(self.mutate(
            id,
            Mutation::Put {
                key,
                value,
                encoded,
                ttl_ms,
                owner: self.owner(ephemeral),
            },
        ))
    }

    pub(crate) fn del(&self, id: u32, key: String) -> Result<Command, ReplyError> {
        self.check_key(&key)?;
        Ok(self.mutate(id, Mutation::Del { key }))
    }

    pub(crate) fn cas(
        &self,
        id: u32,
        key: String,
        ver: u64,
        value: Value,
        (ttl_ms, ephemeral): (Option<u64>, bool),
    ) -> Result<Command, ReplyError> {
        self.check_key(&key)?;
        let encoded = self.check_value(&value)?;
        self.check_ttl(ttl_ms)?;
        Ok(self.mutate(
            id,
            Mutation::Cas {
                key,
                ver,
                value,
                encoded,
                ttl_ms,
                owner: self.owner(ephemeral),
            },
        ))
    }

    pub(crate) fn incr(
        &self,
        id: u32,
        key: String,
        by: Option<i64>,
    ) -> Result<Command, ReplyError> {
        self.check_key(&key)?;
        let by = by.unwrap_or(1);
        Ok(self.mutate(id, Mutation::Incr { key, by }))
    }

    pub(crate) fn who(&self, id: u32) -> Command {
        Command::Who {
            peer: self.peer.clone(),
            id,
        }
    }

    /// A history page is read from disk on the blocking pool, off the requester's task, so a
    /// slow read delays only its own reply. Returns the read for the caller to run. The page
    /// is cut so the whole reply fits in `limits.frame` (SPEC.md 4.4), and the read stops
    /// there: it never holds more than one frame's worth of entries.
    pub(crate) fn history(
        &self,
        engine: Engine,
        id: u32,
        room: String,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, ReplyError> {
        let limit = self.page_limit(limit)?;
        let peer = self.peer.clone();
        let large = LargeReply::new(&peer);
        // What the reply holds besides its items; the item count's header grows from 1 byte
        // (empty) to at most 5.
        let empty: &[&[u8]] = &[];
        let overhead = codec::encode_hist_raw(id, &room, empty, true).len() + 4;
        let budget = self.frame.saturating_sub(overhead);
        Ok(async move {
            let read = engine
                .history(room.clone(), after, before, limit, budget)
                .await;
            let page = match read {
                Ok(page) => page,
                Err(e) => return peer.send_err(Some(id), &e),
            };
            let (frames, more) = page;
            let bytes = codec::encode_hist_raw(id, &room, &frames, more);
            drop(frames);
            peer.send_reply(crate::wire::wrap(&bytes));
            drop(large);
        })
    }

    /// The owner of a key written with `ephemeral` (SPEC.md 4.14): the writing connection.
    fn owner(&self, ephemeral: bool) -> Option<Arc<str>> {
        ephemeral.then(|| self.peer.id.clone())
    }

    fn mutate(&self, id: u32, op: Mutation) -> Command {
        Command::Mutate {
            peer: self.peer.clone(),
            id,
            op,
        }
    }

    /// A key's lifetime is within `limits.ttl_min_ms ..= limits.ttl_max_ms` (SPEC.md 4.13).
    fn check_ttl(&self, ttl_ms: Option<u64>) -> Result<(), ReplyError> {
        let (min, max) = (self.limits.ttl_min_ms, self.limits.ttl_max_ms);
        match ttl_ms {
            Some(t) if t < min || t > max => Err(ReplyError::new(
                ErrorCode::BadRequest,
                format!("ttl_ms {t} is outside {min}..={max}"),
            )),
            _ => Ok(()),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), ReplyError> {
        let max = self.limits.key_bytes;
        match key.len() {
            0 => Err(ReplyError::new(
                ErrorCode::BadRequest,
                "key must not be empty",
            )),
            n if n > max => Err(ReplyError::too_large("key", n, max)),
            _ => Ok(()),
        }
    }

    /// Returns the value's encoding, which the room stores as it is.
    fn check_value(&self, value: &Value) -> Result<Vec<u8>, ReplyError> {
        check_subset("value", value)?;
        let encoded = encoded(value);
        let max = self.limits.value_bytes;
        if encoded.len() > max {
            return Err(ReplyError::too_large("value", encoded.len(), max));
        }
        Ok(encoded)
    }

    fn page_limit(&self, limit: Option<u32>) -> Result<usize, ReplyError> {
        page_limit(self.limits, limit)
    }
}

/// A request's `limit` on a page: at least 1, at most `limits.page` (the default).
pub(crate) fn page_limit(limits: &LimitsConfig, limit: Option<u32>) -> Result<usize, ReplyError> {
    match limit {
        Some(0) => Err(ReplyError::new(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        )),
        Some(n) => Ok((n as usize).min(limits.page)),
        None => Ok(limits.page),
    }
}

/// State values and presence info reach every client of the room, so they must be in the
/// subset every client can decode (SPEC.md section 4.5): one walk over the value, no allocation.
fn check_subset(field: &str, v: &Value) -> Result<(), ReplyError> {
    check_value(v).map_err(|e| {
        ReplyError::new(
            ErrorCode::BadRequest,
            format!("`{field}` is outside the accepted MessagePack subset: {e}"),
        )
    })
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut buf, v);
    buf
}
