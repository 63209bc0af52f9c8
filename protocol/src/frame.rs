//! Every frame of protocol version 1 (SPEC.md sections 3 to 6) as a Rust type.
//!
//! Field declaration order is the canonical key order of the encoding, which the test vectors
//! pin byte for byte; receivers accept keys in any order and ignore unknown ones.

use rmpv::Value;
use serde::{Deserialize, Serialize};

/// A frame sent by a client. Every request carries a client-chosen `id` echoed by its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum ClientFrame {
    #[serde(rename = "sub")]
    Sub {
        id: u32,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Value>,
    },
    #[serde(rename = "unsub")]
    Unsub { id: u32, room: String },
    #[serde(rename = "pub")]
    Pub {
        id: u32,
        room: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mid: Option<String>,
    },
    /// A `pub` with `ephemeral: true` (SPEC.md 4.10): delivered live to the room's other
    /// subscribers as `signal`, never stored and given no seq. `ephemeral` is always `true`
    /// here; a `pub` without it (or with `false`) is [`ClientFrame::Pub`]. Only the strict
    /// decoder ([`crate::decode_client`]) reads it; serde reads every `pub` as `Pub`.
    #[serde(rename = "pub", skip_deserializing)]
    Signal {
        id: u32,
        room: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        ephemeral: bool,
    },
    /// Replace the content of the message `target` (SPEC.md 5.8): only its author may.
    #[serde(rename = "edit")]
    Edit {
        id: u32,
        room: String,
        target: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Delete the message `target` (SPEC.md 5.6): only its author may.
    #[serde(rename = "redact")]
    Redact { id: u32, room: String, target: u64 },
    #[serde(rename = "hist")]
    Hist {
        id: u32,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "get")]
    Get { id: u32, room: String, key: String },
    #[serde(rename = "list")]
    List {
        id: u32,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "put")]
    Put {
        id: u32,
        room: String,
        key: String,
        value: Value,
        /// The key expires this many milliseconds after the write (SPEC.md 4.13).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        /// The key belongs to the writing connection and goes when it does (SPEC.md 4.14).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    #[serde(rename = "del")]
    Del { id: u32, room: String, key: String },
    #[serde(rename = "cas")]
    Cas {
        id: u32,
        room: String,
        key: String,
        ver: u64,
        value: Value,
        /// As `put`'s (SPEC.md 4.13).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        /// As `put`'s (SPEC.md 4.14).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ephemeral: bool,
    },
    #[serde(rename = "incr")]
    Incr {
        id: u32,
        room: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<i64>,
    },
    #[serde(rename = "who")]
    Who { id: u32, room: String },
    #[serde(rename = "ping")]
    Ping { id: u32 },
    /// A fresh token for this connection, before its current one expires (SPEC.md 9.3).
    #[serde(rename = "auth")]
    Auth { id: u32, token: String },
}

impl ClientFrame {
    /// The request kinds, as they appear in `t`.
    pub const KINDS: [&'static str; 15] = [
        "sub", "unsub", "pub", "hist", "get", "list", "put", "del", "cas", "incr", "who", "ping",
        "auth", "edit", "redact",
    ];

    pub fn id(&self) -> u32 {
        match self {
            ClientFrame::Sub { id, .. }
            | ClientFrame::Unsub { id, .. }
            | ClientFrame::Pub { id, .. }
            | ClientFrame::Signal { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Redact { id, .. }
            | ClientFrame::Hist { id, .. }
            | ClientFrame::Get { id, .. }
            | ClientFrame::List { id, .. }
            | ClientFrame::Put { id, .. }
            | ClientFrame::Del { id, .. }
            | ClientFrame::Cas { id, .. }
            | ClientFrame::Incr { id, .. }
            | ClientFrame::Who { id, .. }
            | ClientFrame::Ping { id }
            | ClientFrame::Auth { id, .. } => *id,
        }
    }

    /// The room the request is about, if any.
    pub fn room(&self) -> Option<&str> {
        match self {
            ClientFrame::Sub { room, .. }
            | ClientFrame::Unsub { room, .. }
            | ClientFrame::Pub { room, .. }
            | ClientFrame::Signal { room, .. }
            | ClientFrame::Edit { room, .. }
            | ClientFrame::Redact { room, .. }
            | ClientFrame::Hist { room, .. }
            | ClientFrame::Get { room, .. }
            | ClientFrame::List { room, .. }
            | ClientFrame::Put { room, .. }
            | ClientFrame::Del { room, .. }
            | ClientFrame::Cas { room, .. }
            | ClientFrame::Incr { room, .. }
            | ClientFrame::Who { room, .. } => Some(room),
            ClientFrame::Ping { .. } | ClientFrame::Auth { .. } => None,
        }
    }
}

/// The limits announced in `hello` (SPEC.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub frame: u32,
    pub payload: u32,
    pub room: u32,
    pub key: u32,
    pub value: u32,
    pub info: u32,
    pub subs: u32,
    pub page: u32,
    pub keys: u32,
    pub mid: u32,
}

/// One key of a room's state, as in `subbed.state` and `vals.items`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateItem {
    pub key: String,
    pub value: Value,
    pub ver: u64,
    /// When the key expires (Unix ms), if it was written with `ttl_ms` (SPEC.md 4.13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// One connection present in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub conn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// In a namespace with `presence_mode = "users"` (SPEC.md 4.12): the member is one user's
    /// entry, and this many of the user's connections are present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns: Option<u32>,
}

/// A frame sent by the server: replies (with the request's `id`) and events (without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum ServerFrame {
    #[serde(rename = "hello")]
    Hello {
        v: u32,
        server: String,
        conn: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        ping: u32,
        limits: Limits,
        /// The node that serves the connection, in cluster mode (SPEC.md 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    #[serde(rename = "subbed")]
    Subbed {
        id: u32,
        room: String,
        epoch: u64,
        last: u64,
        first: u64,
        earliest: u64,
        complete: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Vec<StateItem>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<Vec<Member>>,
        /// The snapshot continues in `snap` frames with this `id` (SPEC.md 4.1); absent: false.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
        /// What this connection may do in the room, when not everything (SPEC.md 9.2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allow: Option<Vec<String>>,
    },
    /// A continuation of a `subbed` or `who` reply whose snapshot did not fit in one frame.
    #[serde(rename = "snap")]
    Snap {
        id: u32,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Vec<StateItem>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<Vec<Member>>,
        more: bool,
    },
    #[serde(rename = "ok")]
    Ok { id: u32 },
    /// The connection's token expires at `exp` (Unix seconds): send `auth` with a fresh one
    /// before then, or the connection is closed with 4003 (SPEC.md 9.3).
    #[serde(rename = "expiring")]
    Expiring { exp: u64 },
    #[serde(rename = "ack")]
    Ack {
        id: u32,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dup: Option<bool>,
    },
    #[serde(rename = "hist")]
    Hist {
        id: u32,
        room: String,
        items: Vec<ServerFrame>,
        more: bool,
    },
    #[serde(rename = "val")]
    Val {
        id: u32,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        ver: u64,
        /// When the key expires (Unix ms), if it was written with `ttl_ms` (SPEC.md 4.13).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    #[serde(rename = "vals")]
    Vals {
        id: u32,
        items: Vec<StateItem>,
        more: bool,
    },
    #[serde(rename = "done")]
    Done {
        id: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        ver: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    #[serde(rename = "who")]
    Who {
        id: u32,
        room: String,
        members: Vec<Member>,
        /// The list continues in `snap` frames with this `id`; absent: false.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    #[serde(rename = "pong")]
    Pong { id: u32 },
    #[serde(rename = "err")]
    Err {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
        code: u16,
        msg: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ver: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
        /// `429` from a rate limit: milliseconds until the same request would be admitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    #[serde(rename = "msg")]
    Msg {
        room: String,
        seq: u64,
        ts: u64,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The message was deleted by the log entry with this seq (a `del`, SPEC.md 5.6): its
        /// `data` is empty and the payload is gone from the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deleted: Option<u64>,
        /// The message was edited; this is the seq of its latest edit (SPEC.md 5.8), and
        /// `data` is the edited content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edited: Option<u64>,
        /// This entry is an edit of the message with this seq (SPEC.md 5.8): `data` is that
        /// message's new content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edits: Option<u64>,
    },
    /// An ephemeral publish (SPEC.md 5.9): no seq, never stored or replayed.
    #[serde(rename = "signal")]
    Signal {
        room: String,
        ts: u64,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A log entry that deleted the message `target` (SPEC.md 5.6). It has its own seq, so a
    /// room's seqs stay dense; the message itself is kept as a stub with `deleted: seq`.
    #[serde(rename = "del")]
    Del {
        room: String,
        seq: u64,
        ts: u64,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        target: u64,
    },
    #[serde(rename = "state")]
    State {
        room: String,
        seq: u64,
        ts: u64,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        key: String,
        ver: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        /// When the key expires (Unix ms), if it was written with `ttl_ms` (SPEC.md 4.13).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
    },
    #[serde(rename = "join")]
    Join {
        room: String,
        conn: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Value>,
        /// `presence_mode = "users"` (SPEC.md 4.12): the user's connections now present; a
        /// `join` for an entry already present updates its count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conns: Option<u32>,
    },
    #[serde(rename = "leave")]
    Leave {
        room: String,
        conn: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// `presence_mode = "counts"` (SPEC.md 4.12): how many are present, sent instead of
    /// `join`/`leave`, at most once per the namespace's `count_interval_ms`.
    #[serde(rename = "count")]
    Count {
        room: String,
        /// Entries: users, plus connections without a user.
        members: u64,
        /// Connections visible in presence.
        conns: u64,
    },
    /// The server ended this connection's subscription to `room` (the application removed the
    /// user, SPEC.md 5.7): an event, not a reply, and not to be undone by resubscribing.
    #[serde(rename = "unsubbed")]
    Unsubbed { room: String },
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

impl ServerFrame {
    /// The seq of a log event (`msg`, `state` or `del`).
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerFrame::Msg { seq, .. }
            | ServerFrame::State { seq, .. }
            | ServerFrame::Del { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}
