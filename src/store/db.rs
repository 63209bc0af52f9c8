//! The database handle shared by the writer, the applier thread and readers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redb::Database;

use super::apply::create_tables;
use super::error::StoreError;
use super::request::{CatchUpRequest, WriteReq};

/// The database shared by the writer thread and readers.
///
/// After an I/O error (a full disk, say) redb refuses every further operation until the file
/// is reopened, so the handle can be swapped: the writer reopens it once it has failed.
#[derive(Clone)]
pub(crate) struct Store {
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
    writer: OnceLock<tokio::sync::mpsc::Sender<WriteReq>>,
}

impl Store {
    /// Opens (or creates) `dir/roomd.redb`.
    ///
    /// A new file's directory entry is fsynced (redb does not do it): without that a freshly
    /// created database could vanish in a power cut even though its commits were fsynced.
    pub(crate) fn open(dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        create_dir_durable(dir)?;
        let path = dir.join("roomd.redb");
        let existed = path.exists();
        let started = std::time::Instant::now();
        let db = open_db(&path, cache_bytes)?;
        if !existed {
            File::open(dir)?.sync_all()?;
        }
        tracing::info!(path = %path.display(), existed, elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "database open");
        let store = Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            path,
            cache_bytes,
            catch_up: Arc::default(),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        create_tables(&*store.db()?, now_ms)?;
        Ok(store)
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub(crate) fn connect_writer(&self, tx: tokio::sync::mpsc::Sender<WriteReq>) {
        let _ = self.catch_up.writer.set(tx);
    }

    /// Set (under the write-ahead log's lock) before a group that redb has not received is
    /// acknowledged.
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
        let (req, wait) = CatchUpRequest::new();
        tx.blocking_send(WriteReq::CatchUp(req))
            .map_err(|_| StoreError::Closed)?;
        wait.wait()
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
}

fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    Ok(redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)?)
}

/// `mkdir -p`, fsyncing the parent of every directory it creates.
pub(super) fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
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
