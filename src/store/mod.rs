//! Durable storage of every room's log and state in one redb database.
//!
//! - [`writer`]: the single writer thread; it groups every batch that arrives while a commit is
//!   in flight into the next transaction (group commit), across rooms and connections.
//! - [`reader`]: blocking reads (room load, history pages, replay) run on tokio's blocking pool.
//! - [`record`]: the byte layout of log entries and state values.
//! - [`wal`]: the write-ahead log every group is appended to before it is acknowledged (in
//!   durable mode with one `fdatasync`); redb receives the groups later, in bulk, from
//!   [`applier`]'s thread.
//!
//! Layout: log keys are `(room id, seq)`, so one room's entries are adjacent and a commit
//! touches few pages per room; state keys are `(room id, key)`.

mod applier;
pub mod reader;
pub mod record;
pub mod wal;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redb::{Database, TableDefinition};

pub use writer::{CommitInfo, CommitResult, RoomBatch, RoomRef, RoomWrite, Trim, WriterHandle};

/// Room name → (room id, epoch).
pub(crate) const ROOMS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("rooms");
/// (room id, seq) → log record (see [`record`]).
pub(crate) const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
/// (room id, key) → state record (see [`record`]).
pub(crate) const STATE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("state");
/// Small named counters, e.g. the next room id.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const NEXT_ROOM_ID: &str = "next_room_id";
/// The number of the last write-ahead log group applied (see [`wal`]).
pub(crate) const WAL_COMMIT: &str = "wal_commit";
/// The salt of the write-ahead log's current cycle (see [`wal`]).
pub(crate) const WAL_SALT: &str = "wal_salt";
/// Which of the two write-ahead log files the current cycle is in, 0 or 1 (see [`wal`]).
pub(crate) const WAL_FILE: &str = "wal_file";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage is unavailable (reopening after an I/O error, or shut down)")]
    Closed,
}

impl StoreError {
    pub(crate) fn redb(e: impl Into<redb::Error>) -> StoreError {
        StoreError::Redb(e.into())
    }
}

/// The database shared by the writer thread and readers.
///
/// After an I/O error (a full disk, say) redb refuses every further operation until the file
/// is reopened, so the handle can be swapped: the writer reopens it once it has failed.
#[derive(Clone)]
pub struct Store {
    db: Arc<RwLock<Option<Arc<Database>>>>,
    path: PathBuf,
    cache_bytes: usize,
    catch_up: Arc<CatchUp>,
}

/// How a reader gets the writer to apply groups that are logged (and acknowledged) but not yet
/// in redb.
#[derive(Default)]
struct CatchUp {
    pending: AtomicBool,
    writer: OnceLock<tokio::sync::mpsc::Sender<writer::WriteReq>>,
}

impl Store {
    /// Opens (or creates) `dir/roomd.redb`.
    ///
    /// A new file's directory entry is fsynced (redb does not do it): without that a freshly
    /// created database could vanish in a power cut even though its commits were fsynced.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        create_dir_durable(dir)?;
        let path = dir.join("roomd.redb");
        let existed = path.exists();
        let started = std::time::Instant::now();
        let db = open_db(&path, cache_bytes)?;
        if !existed {
            File::open(dir)?.sync_all()?;
        }
        tracing::info!(path = %path.display(), existed, elapsed_ms = started.elapsed().as_millis() as u64, "database open");
        let store = Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            path,
            cache_bytes,
            catch_up: Arc::default(),
        };
        store.create_tables()?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub(crate) fn connect_writer(&self, tx: tokio::sync::mpsc::Sender<writer::WriteReq>) {
        let _ = self.catch_up.writer.set(tx);
    }

    /// Set (under the log's lock) before a group that redb has not received is acknowledged.
    pub(crate) fn set_pending(&self, pending: bool) {
        self.catch_up.pending.store(pending, Ordering::Release);
    }

    /// Makes every acknowledged write visible to the next read: if some are only in the
    /// write-ahead log, asks the writer to apply them and waits. Blocking; every reader calls
    /// it first, so a read sees everything acknowledged before it started.
    pub(crate) fn catch_up(&self) -> Result<(), StoreError> {
        if !self.catch_up.pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(tx) = self.catch_up.writer.get() else {
            return Ok(());
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        tx.blocking_send(writer::WriteReq::Sync(done))
            .map_err(|_| StoreError::Closed)?;
        match wait.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(std::io::Error::other(e.to_string()))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// The open database, or an error while it is being reopened.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or(StoreError::Closed)
    }

    /// Closes and reopens the database after an I/O error. Readers holding the old handle
    /// finish first (redb allows one open handle per file), so this retries for a while.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
        let mut last = StoreError::Closed;
        for _ in 0..200 {
            match open_db(&self.path, self.cache_bytes) {
                Ok(db) => {
                    *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                    tracing::info!("database reopened after an I/O error");
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(last)
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write().map_err(StoreError::redb)?;
        txn.set_quick_repair(true);
        {
            txn.open_table(ROOMS).map_err(StoreError::redb)?;
            txn.open_table(LOG).map_err(StoreError::redb)?;
            txn.open_table(STATE).map_err(StoreError::redb)?;
            txn.open_table(META).map_err(StoreError::redb)?;
        }
        txn.commit().map_err(StoreError::redb)?;
        Ok(())
    }
}

fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(StoreError::redb)
}

/// `mkdir -p`, fsyncing the parent of every directory it creates.
fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    std::fs::create_dir(dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}
