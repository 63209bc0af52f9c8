//! Rooms: each one a single-owner task that orders its log and state.
//!
//! - [`registry`]: name → handle; loads rooms on first use and tracks them until they stop.
//! - [`env`](mod@env): what every room needs from the server (store, writer, limits), built once.
//! - [`actor`]: the room task: its run loop, command dispatch, idle unload.
//! - [`batch`]: pending writes and the next batch formed from them (seqs, encoding, retention).
//! - [`commit`]: the batch handed to the writer, and what its commit releases (fan-out, acks,
//!   state).
//! - [`subscribers`]: subscribe, the replay-to-live switch, catch-up from the cache, presence.
//! - [`presence`]: presence v2: the reconnect grace, the per-user view, counts-only rooms.
//! - [`dedup`]: the window of recently stored `mid`s.
//! - [`deadlines`]: the moments a room acts by itself (key expiries), on one timer.
//! - [`ephemeral`]: keys that go with their connection; [`owners`]: which connection owns
//!   which.
//! - [`hooks`]: the room's events for `[[webhooks]]`, one call each from where they happen.
//! - [`state`]: the key/value state and its atomic operations.
//! - [`redact`]: deleting or editing a message: its `del` or edit entry and the rewrite of the
//!   message it changes.
//! - [`cluster`]: on Redis, the batch's round trip, other nodes' entries, fills and reloads.
//! - [`replay`]: the task that pages a subscriber through history from disk.
//! - [`snapshot`]: `subbed` and `who` split into frames that fit `limits.frame`, and the task
//!   that queues the rest of a large snapshot at its reader's pace.

pub(crate) mod actor;
mod batch;
mod cluster;
mod commit;
mod deadlines;
mod dedup;
pub(crate) mod env;
mod ephemeral;
mod hooks;
pub(crate) mod model;
mod owners;
mod presence;
mod redact;
pub(crate) mod registry;
pub(crate) mod replay;
mod snapshot;
pub(crate) mod state;
mod subscribers;
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use roomd_protocol::Value;

use crate::ratelimit::Cost;
use tokio::sync::oneshot;

use crate::peer::{LargeReply, Peer};
use crate::store::StoreError;

pub(crate) use env::{RoomEnv, RoomLimits};
pub(crate) use registry::Registry;

/// A state mutation request, validated by the connection.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Put {
        key: String,
        value: Value,
        encoded: Vec<u8>,
        /// The key expires this long after the batch's time (SPEC.md 4.13).
        ttl_ms: Option<u64>,
        /// `ephemeral`: the connection the key belongs to (SPEC.md 4.14).
        owner: Option<Arc<str>>,
    },
    Del {
        key: String,
    },
    Cas {
        key: String,
        ver: u64,
        value: Value,
        encoded: Vec<u8>,
        ttl_ms: Option<u64>,
        owner: Option<Arc<str>>,
    },
    Incr {
        key: String,
        by: i64,
    },
    /// The room's own: delete the key if its deadline has passed (SPEC.md 4.13).
    Expire {
        key: String,
    },
    /// The room's own: delete the key if it still belongs to `owner`, whose connection is
    /// gone (SPEC.md 4.14).
    Release {
        key: String,
        owner: Arc<str>,
    },
}

impl Mutation {
    /// The connection a write makes the key belong to (`ephemeral`, SPEC.md 4.14).
    pub(crate) fn owner(&self) -> Option<&Arc<str>> {
        match self {
            Mutation::Put { owner, .. } | Mutation::Cas { owner, .. } => owner.as_ref(),
            _ => None,
        }
    }
}

/// A room's numbers as of the moment it answered [`Command::Info`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomInfo {
    pub epoch: u64,
    /// The oldest retained seq (`last + 1` when the log is empty).
    pub first: u64,
    /// The last durable seq (0: empty log).
    pub last: u64,
    pub subscribers: usize,
    /// Subscribers that are visible in presence.
    pub members: usize,
    pub keys: usize,
}

/// A room inbox carries boxed commands: a channel allocates its slots in blocks of 32, and a
/// loaded room must stay cheap (one idle room per connection is a common shape).
pub(crate) type Inbox = tokio::sync::mpsc::Receiver<Box<Command>>;
pub(crate) type InboxSender = tokio::sync::mpsc::Sender<Box<Command>>;

impl Command {
    /// What the command costs against its connection's rate limits.
    pub(crate) fn cost(&self) -> Cost {
        match self {
            Command::Publish { data, .. } => Cost::Publish { bytes: data.len() },
            Command::Mutate { .. } => Cost::StateWrite,
            // An entry in the log like a publish, with the edit's payload if any.
            Command::Change { change, .. } => Cost::Publish {
                bytes: change.payload_len(),
            },
            // Delivered like a publish, so limited like one (SPEC.md 4.10).
            Command::Signal { data, .. } => Cost::Publish { bytes: data.len() },
            // Sent to every presence subscriber (SPEC.md 4.12).
            Command::Subscribe { info: Some(_), .. } => Cost::Presence,
            _ => Cost::Free,
        }
    }
}

/// What a change request does to its target message.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Delete it: a `del` entry, the message kept as a stub without payload.
    Delete,
    /// Replace its content: an edit entry carrying the new payload.
    Edit(Vec<u8>),
}

impl Change {
    /// The bytes the change publishes (rate limits count them as a publish's).
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            Change::Delete => 0,
            Change::Edit(data) => data.len(),
        }
    }
}

/// A request to change a message, as it waits for its target to be read or for an earlier
/// change of the same message to finish.
#[derive(Clone)]
pub(crate) struct ChangeRequest {
    pub peer: Arc<Peer>,
    pub id: u32,
    pub change: Change,
    pub author_only: bool,
}

/// A change's target as stored: its frame and, when it was edited, the frame of its latest
/// edit entry (which the change supersedes).
#[derive(Clone)]
pub(crate) struct Targeted {
    pub target: Bytes,
    pub latest_edit: Option<Bytes>,
}

/// Commands a room's inbox accepts. Replies go straight to the peer's outbox.
pub(crate) enum Command {
    Subscribe {
        peer: Arc<Peer>,
        id: u32,
        since: Option<u64>,
        state: bool,
        presence: bool,
        /// Presence info, encoded.
        info: Option<Bytes>,
        /// What the connection may do in the room, for `subbed`; `None`: everything.
        allow: Option<Vec<String>>,
    },
    Unsubscribe {
        peer: Arc<Peer>,
        id: u32,
    },
    /// The connection ended: drop its subscription and presence without a reply.
    Leave {
        conn: Arc<str>,
    },
    Publish {
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        mid: Option<String>,
        received: Instant,
    },
    Mutate {
        peer: Arc<Peer>,
        id: u32,
        op: Mutation,
    },
    /// Delete or edit the message with seq `target` (SPEC.md 5.6, 5.8): replies `ack` with the
    /// new entry's seq once durable (a deletion of a deleted message: `dup: true` with the
    /// earlier `del`'s), `406` if `target` is not a stored message of the room, `423` if
    /// `author_only` and the requester's user is not the message's.
    Change {
        peer: Arc<Peer>,
        id: u32,
        target: u64,
        change: Change,
        /// A WebSocket request: only the message's author may. The server API may change any.
        author_only: bool,
    },
    /// The stored frames a change needs, read on the blocking pool (`None`: not stored).
    ChangeRead {
        req: ChangeRequest,
        target: u64,
        read: Result<Option<Targeted>, Arc<StoreError>>,
    },
    /// An ephemeral publish (SPEC.md 4.10): sent to the live subscribers but the sender's, at
    /// once; never stored. Replies `ok`.
    Signal {
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
    },
    /// End every subscription held by a connection of `user`, as `unsub` would, telling each
    /// connection with `unsubbed` (SPEC.md 5.7); replies how many were ended.
    RemoveUser {
        user: Arc<str>,
        reply: oneshot::Sender<usize>,
    },
    Get {
        peer: Arc<Peer>,
        id: u32,
        key: String,
    },
    List {
        peer: Arc<Peer>,
        id: u32,
        prefix: String,
        after: Option<String>,
        limit: usize,
        /// Counts the request as one with a large reply until the command is dropped.
        large: LargeReply,
    },
    Who {
        peer: Arc<Peer>,
        id: u32,
    },
    /// The room's numbers, for the server API's room info.
    Info {
        reply: oneshot::Sender<RoomInfo>,
    },
    /// A page read from disk by a subscriber's replay task; the reply says where to continue
    /// (`None`: the subscriber is live, or gone).
    ReplayPage {
        conn: Arc<str>,
        token: u64,
        frames: crate::wire::Page,
        next: oneshot::Sender<Option<u64>>,
    },
    /// A subscriber's snapshot task queued the last `snap` frame: replay from the snapshot's
    /// head on.
    SnapshotSent {
        conn: Arc<str>,
        token: u64,
    },
    /// Cluster: what the node's feed brought (entries stored by a node, or a probe).
    Feed(crate::cluster::feed::FeedEvent),
    /// Cluster: the entries a fill read from Redis.
    Filled(Result<crate::cluster::Range, StoreError>),
    /// Cluster: the room loaded again after its epoch changed.
    Reloaded(Result<crate::store::reader::RoomSnapshot, StoreError>),
    /// Apply retention now.
    Trim,
    /// Finish pending writes, then stop.
    Shutdown,
}
