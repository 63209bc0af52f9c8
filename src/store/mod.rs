//! Durable storage of every room's message log and state in one redb database.
//!
//! Modules, each importing only those listed before it (none imports one that imports it back):
//! - [`error`]: the error type, [`StoreError`].
//! - `tables`: the redb tables and `META` counters.
//! - [`record`]: the byte layout of message log entries and state values.
//! - [`model`]: the write model, what rooms submit and are told back ([`RoomWrite`], ...).
//! - `request`: what the writer thread is asked to do, including a reader's catch-up request.
//! - `apply`: every write to redb's tables.
//! - `db`: [`Store`], the shared database handle.
//! - [`reader`]: blocking reads (room load, history pages, replay) run on tokio's blocking pool.
//! - [`wal`]: the write-ahead log every group is appended to before it is acknowledged (in
//!   durable mode with one `fdatasync`); redb receives the groups later, in bulk, from
//!   `applier`'s thread.
//! - `applier`: the thread that writes logged groups into redb.
//! - [`webhooks`]: the rows of the webhook outbox, in transactions of their own.
//! - [`writer`]: the single writer thread; it groups every batch that arrives while a commit is
//!   in flight into the next transaction (group commit), across rooms and connections.
//!
//! "Log" alone means the write-ahead log here; a room's stored messages are its *entries*
//! (table `tables::ENTRIES`).

mod applier;
mod apply;
pub(crate) mod backup;
mod db;
pub(crate) mod error;
pub(crate) mod model;
pub(crate) mod reader;
pub(crate) mod record;
mod request;
pub(crate) mod tables;
pub(crate) mod wal;
pub(crate) mod webhooks;
pub(crate) mod writer;

pub(crate) use db::Store;
pub(crate) use error::StoreError;
pub(crate) use model::{CommitResult, RoomBatch, RoomRef, RoomWrite, Trim};
pub(crate) use writer::WriterHandle;
