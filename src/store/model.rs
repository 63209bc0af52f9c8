//! The write model: what a room submits, what the write-ahead log holds, and what a room is told
//! back. Below every other store module: it imports none of them but the error type.
//!
//! A room's reference changes type as the write moves on, so no stage can hold a room in a form
//! that stage does not expect:
//! - [`RoomRef`]: as a room submits it, by id or as a new room (name and epoch);
//! - [`LoggedRoom`]: as the writer logs it, always with an id (a new room's is given out by the
//!   writer before the group is logged);
//! - [`RecoveredRoom`]: as recovery decodes it, which also covers the id-less `New` records of
//!   logs written before rooms got their ids in the writer.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::StoreError;

/// Which room a batch belongs to, as a room submits it. A room gets its id with its first write.
#[derive(Debug, Clone)]
pub(crate) enum RoomRef {
    Id(u64),
    /// A room's first write.
    New {
        name: Arc<str>,
        epoch: u64,
    },
}

/// Which room a logged write belongs to.
#[derive(Debug, Clone)]
pub(crate) enum LoggedRoom {
    Id(u64),
    /// A room's first write with the id the writer gave it: the room is created in redb when
    /// the group is applied, so creating one costs no redb transaction on the writer thread.
    Created {
        id: u64,
        name: Arc<str>,
        epoch: u64,
    },
}

impl LoggedRoom {
    pub(crate) fn id(&self) -> u64 {
        match self {
            LoggedRoom::Id(id) | LoggedRoom::Created { id, .. } => *id,
        }
    }
}

/// Which room a write read back from the write-ahead log belongs to.
#[derive(Debug, Clone)]
pub(crate) enum RecoveredRoom {
    Logged(LoggedRoom),
    /// A room's first write as logs written before [`LoggedRoom::Created`] existed hold it:
    /// recovery draws its id from redb (`meta.next_room_id`), as the writer then did.
    LegacyNew {
        name: Arc<str>,
        epoch: u64,
    },
}

/// Retention applied to one room inside its batch's transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trim {
    /// Delete entries with seq below this.
    pub before_seq: u64,
    /// And entries older than this (ms since the Unix epoch), if set.
    pub older_than_ms: Option<u64>,
    /// The room's last seq. That entry is always kept: it carries the numbering across
    /// restarts, so seqs continue instead of restarting at 1.
    pub head: u64,
}

/// Everything one room writes in one group; `R` is the stage's room reference.
#[derive(Debug)]
pub(crate) struct RoomWrite<R = RoomRef> {
    pub room: R,
    /// (seq, message log entry)
    pub entries: Vec<(u64, Vec<u8>)>,
    /// (key, new state record or `None` to delete)
    pub state: Vec<(String, Option<Vec<u8>>)>,
    /// (seq, new event frame) of earlier entries rewritten in place: a deleted message's stub
    /// (SPEC.md 5.6). Applied after `entries`, in log order; the stored record keeps its `ts`
    /// and dedup key (so a retried `pub` of a deleted message is still a duplicate), and an
    /// entry that is gone (trimmed) stays gone, so applying it again at recovery changes nothing.
    pub redactions: Vec<(u64, Vec<u8>)>,
    pub trim: Option<Trim>,
}

/// A write as the writer logs it.
pub(crate) type LoggedWrite = RoomWrite<LoggedRoom>;

impl<R> RoomWrite<R> {
    /// The same write with its room referred to as `room`.
    pub(crate) fn with_room<S>(self, room: S) -> RoomWrite<S> {
        RoomWrite {
            room,
            entries: self.entries,
            state: self.state,
            redactions: self.redactions,
            trim: self.trim,
        }
    }

    /// Roughly what the write holds in memory while it waits for redb.
    pub(crate) fn mem_bytes(&self) -> usize {
        let entries: usize = self.entries.iter().map(|(_, r)| r.len() + 32).sum();
        let state: usize = self
            .state
            .iter()
            .map(|(k, r)| k.len() + r.as_ref().map_or(0, Vec::len) + 48)
            .sum();
        let redactions: usize = self.redactions.iter().map(|(_, f)| f.len() + 32).sum();
        entries + state + redactions + 64
    }
}

/// A room's write and where to report its outcome.
pub(crate) struct RoomBatch {
    pub write: RoomWrite,
    pub done: oneshot::Sender<CommitResult>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitInfo {
    pub room_id: u64,
    /// The room's first retained seq after a trim.
    pub earliest: Option<u64>,
}

/// The outcome of a room's batch.
pub(crate) type CommitResult = Result<CommitInfo, Arc<StoreError>>;
