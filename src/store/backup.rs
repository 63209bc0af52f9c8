//! Online backup: a consistent copy of a running server's database, and its restore.
//!
//! The copy is logical: every acknowledged write is first applied to redb ([`Store::catch_up`]),
//! then one read transaction, a snapshot no later commit can change, is copied table by table
//! into a new database file, committed durably. Writers are never paused: rooms go on
//! committing while the copy is made; what they commit after the snapshot is simply not in it.
//! Everything acknowledged before the backup began is.
//!
//! The copy holds no write-ahead log: its `meta` table says which log group it ends with, and a
//! server started on it begins a new log cycle from there.

use std::fs::File;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::db::create_dir_durable;
use super::error::StoreError;
use super::tables::{ENTRIES, META, MIDS, ROOMS, STATE};
use super::Store;

/// The database file in a data directory.
const DB_FILE: &str = "roomd.redb";

impl Store {
    /// Writes a consistent copy of the database to `dest` (a new file), fsynced with its
    /// directory. Blocking.
    pub(crate) fn backup_to(&self, dest: &Path) -> Result<BackupStats, StoreError> {
        self.catch_up()?;
        let src = self.db()?;
        let read = src.begin_read()?;
        let out = redb::Database::create(dest)?;
        let mut stats = BackupStats::default();
        let mut txn = out.begin_write()?;
        txn.set_quick_repair(true);
        stats.rooms = copy(&read, &txn, ROOMS)?;
        stats.entries = copy(&read, &txn, ENTRIES)?;
        stats.keys = copy(&read, &txn, STATE)?;
        copy(&read, &txn, MIDS)?;
        copy(&read, &txn, META)?;
        txn.commit()?;
        drop(out);
        File::open(dest)?.sync_all()?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(stats)
    }
}

/// What a backup holds.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BackupStats {
    pub(crate) rooms: u64,
    pub(crate) entries: u64,
    pub(crate) keys: u64,
}

fn copy<K, V>(
    read: &redb::ReadTransaction,
    write: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
    for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
{
    let from = read.open_table(table)?;
    let mut to = write.open_table(table)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Installs the backup `src` as the database of the data directory `dir`, which must not hold
/// one. The backup is checked to open as a roomd database first. Blocking.
pub(crate) fn restore(src: &Path, dir: &Path) -> Result<BackupStats, StoreError> {
    let dest = dir.join(DB_FILE);
    if dest.exists() {
        return Err(StoreError::RestoreTarget {
            path: dest.display().to_string(),
        });
    }
    let stats = {
        let db = redb::Database::open(src)?;
        let read = db.begin_read()?;
        BackupStats {
            rooms: read.open_table(ROOMS)?.len()?,
            entries: read.open_table(ENTRIES)?.len()?,
            keys: read.open_table(STATE)?.len()?,
        }
    };
    create_dir_durable(dir)?;
    let partial = dir.join("roomd.redb.restoring");
    std::fs::copy(src, &partial)?;
    File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, &dest)?;
    File::open(dir)?.sync_all()?;
    Ok(stats)
}
