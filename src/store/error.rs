//! The store's error type. Every redb error converts into it, so `?` works on redb calls.

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage is unavailable (reopening after an I/O error, or shut down)")]
    Closed,
    /// Recovery found the write-ahead log does not continue where redb ends: groups between
    /// the two are lost, so nothing is applied.
    #[error(
        "write-ahead log starts at group {first} but the database holds groups up to {applied}"
    )]
    LogGap { first: u64, applied: u64 },
    /// A write-ahead log record whose CRC is right but whose body is not well formed.
    #[error("write-ahead log record {commit} passes its CRC but does not decode")]
    CorruptRecord { commit: u64 },
    /// The writer could not bring redb up to date with the write-ahead log for a reader.
    #[error("catching up with the write-ahead log: {0}")]
    CatchUp(#[source] Arc<StoreError>),
    /// `roomd restore` refuses to overwrite an existing database.
    #[error("{path} exists: restore into an empty data directory")]
    RestoreTarget { path: String },
    /// Cluster: Redis did not answer in time, or refused; the request may be retried.
    #[error("cluster engine: {0}")]
    Engine(String),
    /// Cluster: another node wrote to the room first; the write is formed again after this
    /// node has read what it missed.
    #[error("another node wrote to the room first (its last seq is {head})")]
    Behind { head: u64 },
    /// Cluster: the room's epoch changed (Redis lost acknowledged writes and the loss fence
    /// rotated it, here or on another node): the room reloads.
    #[error("the room's epoch changed to {epoch}")]
    EpochChanged { epoch: u64 },
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// redb's per-operation error types, each into [`StoreError::Redb`].
macro_rules! from_redb {
    ($($t:ident),* $(,)?) => {$(
        impl From<redb::$t> for StoreError {
            fn from(e: redb::$t) -> StoreError {
                StoreError::Redb(e.into())
            }
        }
    )*};
}

from_redb!(
    DatabaseError,
    TransactionError,
    TableError,
    StorageError,
    CommitError,
    SetDurabilityError,
);
