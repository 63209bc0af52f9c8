//! The thread that zero-fills write-ahead log space ahead of the appends.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

/// The file grows in steps of this size, so most appends overwrite blocks it already has and
/// `fdatasync` has no file size to journal.
pub(super) const GROW: u64 = 1 << 20;
/// The page size the log is zero-filled in.
const PAGE: usize = 4096;

/// Zero-fills log space ahead of the appends, on its own thread. Growing the file by [`GROW`]
/// is 256 page writes and an fsync (the new length must be durable before records in it are
/// acknowledged by `fdatasync` alone): 6-13 ms here, which every publish waited for when the
/// writer thread did it at the moment a record no longer fit.
pub(super) struct Grower {
    pub jobs: std_mpsc::Sender<(Arc<File>, u64, u64)>,
    pub done: std_mpsc::Receiver<io::Result<()>>,
}

impl Grower {
    pub(super) fn spawn() -> io::Result<Grower> {
        let (jobs, rx) = std_mpsc::channel::<(Arc<File>, u64, u64)>();
        let (tx, done) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("roomd-wal-grow".into())
            .spawn(move || {
                for (file, from, to) in rx {
                    if tx.send(zero_fill(&file, from, to)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Grower { jobs, done })
    }
}

/// Writes zeros over `from..to` and makes the file's new length durable. One page per write:
/// the page cache then holds the log in small folios, and each record appended later dirties
/// one page rather than a large folio whose every block the filesystem walks on each write and
/// writeback.
pub(super) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = [0; PAGE];
    let mut at = from;
    while at < to {
        file.write_all_at(&zeros, at)?;
        at += PAGE as u64;
    }
    file.sync_all()
}
