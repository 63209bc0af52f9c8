//! The write-ahead log.
//!
//! Committing every group to redb durably costs two fsyncs (quick repair's two-phase commit)
//! and rewrites one B-tree leaf per room it touches. Instead, each group is appended to this log
//! (sequential bytes, usually into blocks the file already has) and acknowledged: in durable mode
//! after one `fdatasync`, in relaxed mode once written (fsynced on the flush timer). The groups
//! reach redb later, many at once, in a non-durable transaction; a periodic *checkpoint* makes
//! redb durable (one quick-repair commit covering every group since the last one), so a room's
//! leaf is written once per apply instead of once per group. After a crash, redb comes back at
//! its last checkpoint and the groups logged since then are applied again, in order.
//!
//! Two files, `roomd.wal.0` and `roomd.wal.1`, take turns. A checkpoint takes tens of
//! milliseconds; rather than stall every publish for that long, it switches the log to the other
//! file and commits on its own thread while groups go on being appended there. The file left is
//! reused only by the next switch, after that checkpoint has committed, so nothing recovery may
//! need is overwritten. A *cycle* is the run of records in one file between two switches.
//!
//! Layout: records back to back from offset 0, each `len u32 | crc32 u32 | commit u64 | body`
//! (little-endian; `len` covers `commit` and `body`, the CRC covers the cycle's salt, `commit`
//! and `body`). Commits are numbered consecutively; the number of the last one applied is stored
//! in redb (`meta.wal_commit`) in the same transaction, so recovery knows where to start. A
//! switch or rewind does not clear the file: a scan stops at the first record that is torn,
//! fails its CRC, or does not carry the next number, which is exactly where the newest writes
//! end. Each cycle has its own salt, so a record left from an earlier cycle never passes for a
//! new one, even where its number is used again. A checkpoint records in redb the file and salt
//! of the cycle that follows it (`meta.wal_file`, `meta.wal_salt`); that salt is derived from the
//! previous one ([`next_salt`]), so if the checkpoint never commits, recovery still finds the
//! records of the new cycle: it reads the recorded cycle and goes on in the other file. After a
//! recovery the log starts over with a random salt.
//!
//! Split as raft-engine splits its pipe log: `format` (records, checksum, encoding),
//! `files` (open, append, switch, scan), `grower` (the zero-fill thread) and `legacy` (adoption
//! of the single-file layout of pre-release data directories).

mod files;
pub(crate) mod format;
mod grower;
mod legacy;
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests;

pub(crate) use files::Wal;
pub(crate) use format::next_salt;
