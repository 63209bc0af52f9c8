//! A room's data: the [`Room`] its task owns and the types its fields hold.
//!
//! Below every file that implements a concern of the room (`actor`, `batch`, `commit`,
//! `subscribers`): each of them adds methods to [`Room`] and imports this module, and none of
//! them imports another for a type, so the room's imports run one way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::deadlines::Deadlines;
use super::dedup::Dedup;
use super::env::RoomRules;
use super::owners::Owners;
use super::snapshot::Present;
use super::state::{Effect, RoomState};
use super::{ChangeRequest, InboxSender, Mutation, RoomEnv};
use crate::cluster::Cluster;
use crate::peer::Peer;

/// One room's everything, owned by its task. The fields are shared with the sibling modules
/// that implement the room's concerns.
pub(super) struct Room {
    pub(super) name: Arc<str>,
    pub(super) env: Arc<RoomEnv>,
    /// The room's own inbox, for the replay tasks it starts.
    pub(super) tx: InboxSender,
    pub(super) id: Option<u64>,
    pub(super) epoch: u64,
    /// Last durable seq.
    pub(super) head: u64,
    /// First retained seq.
    pub(super) earliest: u64,
    pub(super) state: RoomState,
    /// When the room must act by itself: its keys' expiries.
    pub(super) deadlines: Deadlines,
    /// Which connections own which keys written with `ephemeral` (SPEC.md 4.14).
    pub(super) owners: Owners,
    /// The newest durable frames, for cheap catch-up of subscribers that are slightly behind.
    pub(super) cache: VecDeque<(u64, Bytes)>,
    /// Boxed: most rooms never see a `mid`, and a loaded room should stay small.
    pub(super) dedup: Box<Dedup>,
    pub(super) subs: HashMap<Arc<str>, Sub>,
    /// Its namespace's subscriber cap and retention.
    pub(super) rules: RoomRules,
    pub(super) members: HashMap<Arc<str>, Present>,
    /// What `members` counts against `rooms.presence_bytes`.
    pub(super) presence_bytes: usize,
    pub(super) pending: Vec<Pending>,
    /// Messages whose deletion or edit is under way (target read from disk, pending or in
    /// flight), with the later requests to change the same message, decided in order once it
    /// is done.
    pub(super) redacting: HashMap<u64, Vec<ChangeRequest>>,
    pub(super) in_flight: Vec<Written>,
    pub(super) trim_wanted: bool,
    /// Subscribers being paged through history; retention waits for them.
    pub(super) replays: usize,
    pub(super) next_token: u64,
    pub(super) shutting_down: bool,
    /// On Redis: the room's cluster side.
    pub(super) linked: Option<Box<Linked>>,
    /// Subscriptions of dropped connections held for the reconnect grace, oldest first: the
    /// grace is one length, so this is also the order of their deadlines (one timer serves
    /// them all). At most `rooms.presence_grace_max`.
    pub(super) held: VecDeque<Held>,
    /// Members present per user id (local, held and remote): a user's entry in
    /// `presence_mode = "users"` comes and goes with its first and last connection.
    pub(super) user_conns: HashMap<Arc<str>, u32>,
    /// `presence_mode = "counts"`: when the owed `count` goes out (`None`: none owed), and
    /// when the last one went.
    pub(super) count_due: Option<Instant>,
    pub(super) count_sent: Option<Instant>,
}

/// A dropped connection's subscription whose departure waits for the reconnect grace (SPEC.md
/// 4.12): its member, if any, stays in `members` (and in the cluster's presence) until then.
pub(super) struct Held {
    pub(super) conn: Arc<str>,
    pub(super) user: Arc<str>,
    /// It asked for presence (for the webhook's `room.left`).
    pub(super) presence: bool,
    pub(super) deadline: Instant,
}

pub(super) struct Sub {
    pub(super) peer: Arc<Peer>,
    /// The `sub` request's id: the connection tells this subscription from a later one by it
    /// when the room ends it ([`Peer::refuse_sub`]).
    pub(super) id: u32,
    /// Receives live broadcasts; otherwise a replay is in progress.
    pub(super) live: bool,
    /// Next seq this subscriber must receive while replaying.
    pub(super) next: u64,
    pub(super) presence: bool,
    /// Tells this subscription's replay pages from a previous one's.
    pub(super) token: u64,
    /// While its snapshot's `snap` frames are queued: the presence events held back until the
    /// snapshot is complete (the snapshot's list is as of its head).
    pub(super) held: Option<Vec<Bytes>>,
    /// Stops the snapshot task when the subscription ends before its snapshot is out.
    pub(super) snapshot: Option<CancellationToken>,
}

/// A request waiting to be written (cloned only on Redis, to be formed again after a
/// conflict).
#[derive(Clone)]
pub(super) enum Pending {
    Publish {
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        dedup: Option<String>,
        received: Instant,
    },
    Mutate {
        peer: Arc<Peer>,
        id: u32,
        op: Mutation,
    },
    /// Deleting or editing a message (SPEC.md 5.6, 5.8).
    Change { req: ChangeRequest, stub: Stub },
    /// The room's own: a key's deadline came (SPEC.md 4.13). Written only if the key still
    /// has a deadline that has passed when the batch is formed.
    Expire { key: String },
    /// The room's own: the connection `owner` is gone for good (SPEC.md 4.14). Written only
    /// if the key still belongs to it when the batch is formed.
    Release { key: String, owner: Arc<str> },
}

/// What a changed message keeps: its seq, time and author (SPEC.md 5.6), and its latest edit
/// entry, which the change supersedes (5.8).
#[derive(Clone)]
pub(super) struct Stub {
    pub(super) target: u64,
    pub(super) ts: u64,
    pub(super) from: String,
    pub(super) uid: Option<String>,
    pub(super) latest_edit: Option<EditStub>,
}

/// An edit entry as its stub keeps it: its seq, time and author; its payload goes.
#[derive(Clone)]
pub(super) struct EditStub {
    pub(super) seq: u64,
    pub(super) ts: u64,
    pub(super) from: String,
    pub(super) uid: Option<String>,
}

/// An entry of the batch in flight, with who to answer once it is durable.
pub(super) struct Written {
    pub(super) seq: u64,
    pub(super) frame: Bytes,
    pub(super) reply: Reply,
}

/// Who is answered for an entry once its batch is durable, and how.
pub(super) enum Reply {
    /// A publish: `ack` with the entry's seq.
    Ack {
        peer: Arc<Peer>,
        id: u32,
        dedup: Option<String>,
        received: Instant,
    },
    /// A state mutation: `done`, and the effect is applied to the committed state.
    Mutated {
        peer: Arc<Peer>,
        id: u32,
        effect: Effect,
    },
    /// A key's expiry: nobody to answer; the effect is applied to the committed state.
    Expired { effect: Effect },
    /// An ephemeral key's deletion after its connection ended, as [`Reply::Expired`]; `owner`
    /// to try again after a failed commit.
    Released { effect: Effect, owner: Arc<str> },
    /// A deletion or edit: `ack` with the new entry's seq, and the rewritten frames (the
    /// target's, its superseded edit's; WebSocket frames) replace theirs in the cache.
    Changed {
        peer: Arc<Peer>,
        id: u32,
        target: u64,
        rewrites: Vec<(u64, Bytes)>,
    },
}

/// Feed entries a room holds while its batch is in flight, in bytes; past it they are dropped
/// and read again by a fill.
pub(super) const HELD_MAX_BYTES: usize = 4 << 20;

/// A room's cluster side.
pub(super) struct Linked {
    pub(super) cluster: Arc<Cluster>,
    /// Copies of the requests in the batch in flight, formed again if another node wrote first.
    pub(super) retry: Vec<Pending>,
    /// Feed entries that arrived while a batch was in flight.
    pub(super) held: Vec<(u64, Vec<u8>)>,
    pub(super) held_bytes: usize,
    /// A fill is under way.
    pub(super) filling: bool,
    /// The highest seq known to exist (seen on the feed or in a reply).
    pub(super) known: u64,
    /// A reload after an epoch change is under way: nothing is written meanwhile.
    pub(super) reloading: bool,
    /// Members held by other nodes, with the instance that holds each.
    pub(super) remote: HashMap<Arc<str>, (Arc<str>, Present)>,
    /// Messages another node changed while a change of them was under way here (reading,
    /// pending or in flight): that change is decided again before it is written.
    pub(super) stale_changes: HashSet<u64>,
}

impl Linked {
    pub(super) fn new(cluster: Arc<Cluster>) -> Box<Linked> {
        Box::new(Linked {
            cluster,
            retry: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            filling: false,
            known: 0,
            reloading: false,
            remote: HashMap::new(),
            stale_changes: HashSet::new(),
        })
    }
}

/// The `from` of a key's expiry entry (SPEC.md 4.13): no connection id (16 hex digits) or
/// server API name (`api:NAME`) can be it.
pub(crate) const EXPIRY_FROM: &str = "expiry";

/// The `from` of an ephemeral key's deletion after its connection ended (SPEC.md 4.14); like
/// [`EXPIRY_FROM`], no connection or server API name.
pub(crate) const RELEASE_FROM: &str = "ephemeral";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
