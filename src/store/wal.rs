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

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use super::writer::{RoomRef, RoomWrite, Trim};

const HEADER: usize = 16;
/// The file grows in steps of this size, so most appends overwrite blocks it already has and
/// `fdatasync` has no file size to journal.
const GROW: u64 = 1 << 20;
/// The page size the log is zero-filled in.
const PAGE: usize = 4096;

pub struct Wal {
    /// `roomd.wal.0` and `roomd.wal.1`; shared so fsyncs can run without holding the log.
    files: [Arc<File>; 2],
    /// Each file's length: zero-filled space up to here is already allocated.
    lens: [u64; 2],
    /// The file records go to.
    active: usize,
    /// Where the next record goes.
    offset: u64,
    /// The current cycle's salt, mixed into every record's CRC.
    salt: u64,
    buf: Vec<u8>,
    grower: Grower,
    /// The zero-fill the grower is doing: (file, its length once done).
    growing: Option<(usize, u64)>,
    /// The grower's last zero-fill failed (a full disk, say): no more are asked for until one
    /// done on the spot succeeds, rather than one failing per append.
    ahead_failed: bool,
}

/// Zero-fills log space ahead of the appends, on its own thread. Growing the file by [`GROW`]
/// is 256 page writes and an fsync (the new length must be durable before records in it are
/// acknowledged by `fdatasync` alone): 6-13 ms here, which every publish waited for when the
/// writer thread did it at the moment a record no longer fit.
struct Grower {
    jobs: std_mpsc::Sender<(Arc<File>, u64, u64)>,
    done: std_mpsc::Receiver<io::Result<()>>,
}

impl Grower {
    fn spawn() -> io::Result<Grower> {
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
fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = [0; PAGE];
    let mut at = from;
    while at < to {
        file.write_all_at(&zeros, at)?;
        at += PAGE as u64;
    }
    file.sync_all()
}

/// A record found by [`Wal::scan`].
pub struct Logged {
    pub commit: u64,
    pub writes: Vec<RoomWrite>,
}

/// The salt of the cycle that follows one with `salt` in the other file. Derived, not drawn, so
/// recovery finds the records of a cycle whose checkpoint never committed (and so never
/// recorded anything about it).
pub fn next_salt(salt: u64) -> u64 {
    // splitmix64: a bijection, so successive cycles' salts do not repeat.
    let mut z = salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Wal {
    /// Opens (or creates, with a durable directory entry) `dir/roomd.wal.0` and `.1`.
    pub fn open(dir: &Path) -> io::Result<Wal> {
        adopt_single_file_log(dir)?;
        let mut created = false;
        let mut open = |i: usize| -> io::Result<File> {
            let path = dir.join(format!("roomd.wal.{i}"));
            let new = !path.exists();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            if new {
                file.sync_all()?;
                created = true;
            }
            Ok(file)
        };
        let files = [open(0)?, open(1)?];
        if created {
            File::open(dir)?.sync_all()?;
        }
        let lens = [files[0].metadata()?.len(), files[1].metadata()?.len()];
        Ok(Wal {
            files: files.map(Arc::new),
            lens,
            active: 0,
            offset: 0,
            salt: 0,
            buf: Vec::new(),
            grower: Grower::spawn()?,
            growing: None,
            ahead_failed: false,
        })
    }

    /// Bytes logged since the last rewind or switch.
    pub fn size(&self) -> u64 {
        self.offset
    }

    /// The file records go to, and the salt of its cycle.
    pub fn position(&self) -> (usize, u64) {
        (self.active, self.salt)
    }

    /// The groups logged after `applied`, for recovery: the run of consecutive, intact records
    /// of the cycle `salt` at the start of `file`, continued by the run at the start of the other
    /// file when a checkpoint had switched files but not committed.
    pub fn scan(&self, file: usize, salt: u64, applied: u64) -> io::Result<Vec<Logged>> {
        let mut out = self.scan_file(file, salt)?;
        let next = out.last().map_or(applied + 1, |l| l.commit + 1);
        let more = self.scan_file(1 - file, next_salt(salt))?;
        if more.first().is_some_and(|l| l.commit == next) {
            out.extend(more);
        }
        Ok(out)
    }

    /// The run of consecutive, intact records of the cycle with this salt at the start of a file.
    fn scan_file(&self, file: usize, salt: u64) -> io::Result<Vec<Logged>> {
        let mut raw = vec![0; self.lens[file] as usize];
        self.files[file].read_exact_at(&mut raw, 0)?;
        let mut out: Vec<Logged> = Vec::new();
        let mut at = 0;
        while let Some((commit, body, next)) = record_at(&raw, at, salt) {
            if out.last().is_some_and(|prev| prev.commit + 1 != commit) {
                break;
            }
            let Some(writes) = decode_group(body) else {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("write-ahead log record {commit} passes its CRC but does not decode"),
                ));
            };
            out.push(Logged { commit, writes });
            at = next;
        }
        Ok(out)
    }

    /// Appends one group as commit number `commit`; with `sync`, waits until it is on disk.
    pub fn append<'a>(
        &mut self,
        commit: u64,
        writes: impl ExactSizeIterator<Item = &'a RoomWrite>,
        sync: bool,
    ) -> io::Result<()> {
        self.encode(commit, writes);
        let end = self.offset + self.buf.len() as u64;
        if let Err(e) = self.grow_to(end) {
            self.invalidate_tail();
            return Err(e);
        }
        self.write_encoded(sync)
    }

    /// Appends one group (without fsync) if it fits in the space the file already has; `false`
    /// (nothing written) if the file would have to grow first.
    pub fn append_in_place<'a>(
        &mut self,
        commit: u64,
        writes: impl ExactSizeIterator<Item = &'a RoomWrite>,
    ) -> io::Result<bool> {
        self.encode(commit, writes);
        if self.offset + self.buf.len() as u64 > self.lens[self.active] {
            return Ok(false);
        }
        self.write_encoded(false).map(|()| true)
    }

    fn encode<'a>(&mut self, commit: u64, writes: impl ExactSizeIterator<Item = &'a RoomWrite>) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.extend_from_slice(&commit.to_le_bytes());
        encode_group(writes, &mut self.buf);
        let covered = (self.buf.len() - 8) as u32;
        let crc = checksum(self.salt, &self.buf[8..]);
        self.buf[..4].copy_from_slice(&covered.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Writes the record in `buf` at the end of the log.
    fn write_encoded(&mut self, sync: bool) -> io::Result<()> {
        let end = self.offset + self.buf.len() as u64;
        let file = &self.files[self.active];
        let res = file.write_all_at(&self.buf, self.offset).and_then(|()| {
            if sync {
                file.sync_data()?;
            }
            Ok(())
        });
        match res {
            Ok(()) => {
                self.offset = end;
                self.grow_ahead();
                Ok(())
            }
            Err(e) => {
                self.invalidate_tail();
                Err(e)
            }
        }
    }

    /// The file records go to, for relaxed mode's periodic fsync.
    pub fn file(&self) -> Arc<File> {
        self.files[self.active].clone()
    }

    /// Makes a record written at the current offset unreadable (best effort): it was not
    /// acknowledged, so recovery must not apply it.
    fn invalidate_tail(&mut self) {
        let file = &self.files[self.active];
        if self.offset + HEADER as u64 <= self.lens[self.active] {
            let _ = file.write_all_at(&[0; HEADER], self.offset);
            let _ = file.sync_data();
        }
    }

    /// Forgets the last appended record (its group could not be applied).
    pub fn undo_last(&mut self, start: u64) {
        self.offset = start;
        self.invalidate_tail();
    }

    /// Starts a new cycle with `salt` at the start of `file`, once everything logged is durable
    /// in redb (after recovery).
    pub fn rewind(&mut self, file: usize, salt: u64) {
        self.active = file;
        self.offset = 0;
        self.salt = salt;
    }

    /// Starts a cycle with `salt` in `file` and empties both files, after recovery has made
    /// everything logged durable in redb. Truncating drops the files' cached pages too: the
    /// recovery scan read them into large page-cache folios, and appending into those costs far
    /// more than into the single pages the log is regrown in (see `grow_to`). Best effort: a
    /// file that cannot be truncated keeps its old records, which carry other salts.
    pub fn reset(&mut self, file: usize, salt: u64) {
        self.settle_grow(true);
        self.ahead_failed = false;
        self.rewind(file, salt);
        for (f, len) in self.files.iter().zip(self.lens.iter_mut()) {
            if f.set_len(0).is_ok() {
                *len = 0;
            }
        }
        self.grow_ahead();
    }

    /// Starts the next cycle at the start of the other file (its salt follows from this one's),
    /// while a checkpoint makes everything logged so far durable in redb: records go on being
    /// appended meanwhile, and none that recovery may still need is overwritten. Returns the
    /// file left.
    pub fn switch(&mut self) -> Arc<File> {
        let left = self.files[self.active].clone();
        let next = next_salt(self.salt);
        self.rewind(1 - self.active, next);
        self.grow_ahead();
        left
    }

    /// Makes room up to `end` in the active file: waits for the grower if it is at work (it may
    /// be filling this very space), and zero-fills the rest here if that was not enough.
    fn grow_to(&mut self, end: u64) -> io::Result<()> {
        if end <= self.lens[self.active] {
            return Ok(());
        }
        self.settle_grow(true);
        let (file, len) = (&self.files[self.active], self.lens[self.active]);
        if end <= len {
            return Ok(());
        }
        let new_len = end.div_ceil(GROW) * GROW;
        zero_fill(file, len, new_len)?;
        self.lens[self.active] = new_len;
        self.ahead_failed = false;
        Ok(())
    }

    /// Asks the grower for the active file's next [`GROW`] once less than half of it is left,
    /// so appends find the space ready; otherwise for the other file's first [`GROW`], so the
    /// first appends after a switch do too. Never waits.
    fn grow_ahead(&mut self) {
        self.settle_grow(false);
        if self.growing.is_some() || self.ahead_failed {
            return;
        }
        let (active, other) = (self.active, 1 - self.active);
        let len = self.lens[active];
        let (file, from, to) = if len - self.offset.min(len) < GROW / 2 {
            (active, len, (len / GROW + 1) * GROW)
        } else if self.lens[other] < GROW {
            (other, self.lens[other], GROW)
        } else {
            return;
        };
        let job = (self.files[file].clone(), from, to);
        if self.grower.jobs.send(job).is_ok() {
            self.growing = Some((file, to));
        }
    }

    /// Takes the grower's result, if it is done (`wait`: waits for it). A failed zero-fill only
    /// leaves the space to be filled by [`Wal::grow_to`], which reports its error to the group
    /// that needed it.
    fn settle_grow(&mut self, wait: bool) {
        let Some((file, to)) = self.growing else {
            return;
        };
        let res = match wait {
            true => self.grower.done.recv().ok(),
            false => self.grower.done.try_recv().ok(),
        };
        match res {
            None if !wait => {}
            None => self.growing = None,
            Some(res) => {
                self.growing = None;
                match res {
                    Ok(()) => self.lens[file] = self.lens[file].max(to),
                    Err(e) => {
                        tracing::warn!(error = %e, "growing the write-ahead log ahead failed; it grows as appends need space until that works");
                        self.ahead_failed = true;
                    }
                }
            }
        }
    }
}

/// Data directories written before the log had two files hold one `roomd.wal`, with the same
/// records, in what is now file 0 (the database names no file, which reads as 0). After a crash
/// it holds acknowledged groups not yet in redb, so it becomes `roomd.wal.0` rather than being
/// ignored.
fn adopt_single_file_log(dir: &Path) -> io::Result<()> {
    let old = dir.join("roomd.wal");
    let new = dir.join("roomd.wal.0");
    if old.exists() && !new.exists() {
        std::fs::rename(&old, &new)?;
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `(commit, body, next offset)` of an intact record at `at`.
fn checksum(salt: u64, covered: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(covered);
    h.finalize()
}

fn record_at(raw: &[u8], at: usize, salt: u64) -> Option<(u64, &[u8], usize)> {
    let head = raw.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let commit = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if len < 8 || commit == 0 {
        return None;
    }
    let end = at.checked_add(8 + len)?;
    let covered = raw.get(at + 8..end)?;
    (checksum(salt, covered) == crc).then(|| (commit, &covered[8..], end))
}

fn encode_group<'a>(writes: impl ExactSizeIterator<Item = &'a RoomWrite>, out: &mut Vec<u8>) {
    put_u32(out, writes.len());
    for w in writes {
        match &w.room {
            RoomRef::Id(id) => {
                out.push(0);
                out.extend_from_slice(&id.to_le_bytes());
            }
            RoomRef::New { name, epoch } => {
                out.push(1);
                put_bytes(out, name.as_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
            RoomRef::Created { id, name, epoch } => {
                out.push(2);
                out.extend_from_slice(&id.to_le_bytes());
                put_bytes(out, name.as_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
        }
        put_u32(out, w.entries.len());
        for (seq, rec) in &w.entries {
            out.extend_from_slice(&seq.to_le_bytes());
            put_bytes(out, rec);
        }
        put_u32(out, w.state.len());
        for (key, rec) in &w.state {
            put_bytes(out, key.as_bytes());
            match rec {
                Some(rec) => {
                    out.push(1);
                    put_bytes(out, rec);
                }
                None => out.push(0),
            }
        }
        match w.trim {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.before_seq.to_le_bytes());
                out.extend_from_slice(&t.older_than_ms.map_or(u64::MAX, |v| v).to_le_bytes());
                out.extend_from_slice(&t.head.to_le_bytes());
            }
            None => out.push(0),
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// Reads what [`encode_group`] wrote; `None` if it is not well formed.
fn decode_group(body: &[u8]) -> Option<Vec<RoomWrite>> {
    let mut r = Reader(body);
    let n = r.u32()?;
    let mut writes = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        let room = match r.u8()? {
            0 => RoomRef::Id(r.u64()?),
            1 => {
                let name: Arc<str> = std::str::from_utf8(r.bytes()?).ok()?.into();
                RoomRef::New {
                    name,
                    epoch: r.u64()?,
                }
            }
            2 => {
                let id = r.u64()?;
                let name: Arc<str> = std::str::from_utf8(r.bytes()?).ok()?.into();
                RoomRef::Created {
                    id,
                    name,
                    epoch: r.u64()?,
                }
            }
            _ => return None,
        };
        let entries = (0..r.u32()?)
            .map(|_| Some((r.u64()?, r.bytes()?.to_vec())))
            .collect::<Option<Vec<_>>>()?;
        let state = (0..r.u32()?)
            .map(|_| {
                let key = std::str::from_utf8(r.bytes()?).ok()?.to_string();
                let rec = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes()?.to_vec()),
                    _ => return None,
                };
                Some((key, rec))
            })
            .collect::<Option<Vec<_>>>()?;
        let trim = match r.u8()? {
            0 => None,
            1 => Some(Trim {
                before_seq: r.u64()?,
                older_than_ms: Some(r.u64()?).filter(|v| *v != u64::MAX),
                head: r.u64()?,
            }),
            _ => return None,
        };
        writes.push(RoomWrite {
            room,
            entries,
            state,
            trim,
        });
    }
    r.0.is_empty().then_some(writes)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: u64, seqs: std::ops::Range<u64>) -> RoomWrite {
        RoomWrite {
            room: RoomRef::Id(id),
            entries: seqs.map(|s| (s, vec![s as u8; 10])).collect(),
            state: vec![("k".into(), Some(vec![1, 2])), ("gone".into(), None)],
            trim: Some(Trim {
                before_seq: 2,
                older_than_ms: None,
                head: 9,
            }),
        }
    }

    #[test]
    fn a_scan_returns_the_run_of_appended_records_and_stops_at_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        for c in 1..=5 {
            wal.append(c, [write(c, 0..c)].iter(), true).unwrap();
        }
        let new_room = RoomWrite {
            room: RoomRef::New {
                name: "lobby".into(),
                epoch: 7,
            },
            entries: vec![],
            state: vec![],
            trim: None,
        };
        let created = RoomWrite {
            room: RoomRef::Created {
                id: 42,
                name: "hall".into(),
                epoch: 9,
            },
            entries: vec![(1, b"first".to_vec())],
            state: vec![],
            trim: None,
        };
        wal.append(6, [write(1, 0..1), new_room, created].iter(), true)
            .unwrap();
        let all = Wal::open(dir.path()).unwrap().scan(0, 0, 0).unwrap();
        assert_eq!(
            all.iter().map(|l| l.commit).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(all[2].writes[0].entries.len(), 3);
        assert_eq!(all[2].writes[0].state[1], ("gone".to_string(), None));
        assert!(
            matches!(&all[5].writes[1].room, RoomRef::New { name, epoch: 7 } if &**name == "lobby")
        );
        assert!(
            matches!(&all[5].writes[2].room, RoomRef::Created { id: 42, name, epoch: 9 } if &**name == "hall")
        );
        assert_eq!(all[5].writes[2].entries, [(1, b"first".to_vec())]);

        // After a rewind, new records overwrite the old ones; the scan ends where they end.
        wal.rewind(0, 7);
        wal.append(7, [write(2, 0..1)].iter(), true).unwrap();
        let after = Wal::open(dir.path()).unwrap().scan(0, 7, 0).unwrap();
        assert_eq!(after.iter().map(|l| l.commit).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn a_torn_or_invalidated_record_ends_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.append(1, [write(1, 0..3)].iter(), true).unwrap();
        let second = wal.size();
        wal.append(2, [write(1, 3..6)].iter(), true).unwrap();
        // Flip one byte of the second record's body.
        wal.files[0].write_all_at(&[0xff], second + 30).unwrap();
        let got = Wal::open(dir.path()).unwrap().scan(0, 0, 0).unwrap();
        assert_eq!(got.len(), 1);

        wal.undo_last(0);
        assert!(Wal::open(dir.path())
            .unwrap()
            .scan(0, 0, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_record_of_an_earlier_cycle_never_continues_a_new_run() {
        // Cycle 1 logs groups 5, 6, 7 (say, unsynced, in relaxed mode); a power loss keeps only
        // group 5, so after recovery the numbers 6 and 7 are used again. Same-sized records put
        // the old group 6 right where the new run ends.
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.rewind(0, 1);
        for c in 5..=7 {
            wal.append(c, [write(1, 0..2)].iter(), true).unwrap();
        }
        wal.rewind(0, 2);
        wal.append(5, [write(1, 0..2)].iter(), true).unwrap();
        let got = Wal::open(dir.path()).unwrap().scan(0, 2, 0).unwrap();
        assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [5]);
        // With one salt for both cycles the stale records would pass.
        let mut same = Wal::open(dir.path()).unwrap();
        same.rewind(0, 1);
        same.append(5, [write(1, 0..2)].iter(), true).unwrap();
        let stale = Wal::open(dir.path()).unwrap().scan(0, 1, 0).unwrap();
        assert_eq!(
            stale.iter().map(|l| l.commit).collect::<Vec<_>>(),
            [5, 6, 7]
        );
    }

    #[test]
    fn a_scan_follows_a_switch_whose_checkpoint_did_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        // Cycle 1 (salt 5, file 0) logs 1..=3, then a checkpoint switches to file 1.
        wal.rewind(0, 5);
        for c in 1..=3 {
            wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
        }
        wal.switch();
        assert_eq!(wal.position(), (1, next_salt(5)));
        for c in 4..=5 {
            wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
        }
        let commits = |file, salt, applied| -> Vec<u64> {
            let wal = Wal::open(dir.path()).unwrap();
            let got = wal.scan(file, salt, applied).unwrap();
            got.iter().map(|l| l.commit).collect()
        };
        // The checkpoint did not commit: redb still points at cycle 1.
        assert_eq!(commits(0, 5, 0), [1, 2, 3, 4, 5]);
        // It committed: redb holds 1..=3 and points at file 1.
        assert_eq!(commits(1, next_salt(5), 3), [4, 5]);

        // The next switch goes back to file 0, whose old records belong to another cycle.
        wal.switch();
        wal.append(6, [write(1, 0..1)].iter(), true).unwrap();
        assert_eq!(commits(1, next_salt(5), 3), [4, 5, 6]);
        assert_eq!(commits(0, next_salt(next_salt(5)), 5), [6]);
        // Nothing follows in the other file: a stale run there is not taken for a continuation.
        wal.rewind(1, 9);
        assert!(commits(1, 9, 6).is_empty());
        assert_eq!(commits(0, next_salt(next_salt(5)), 5), [6]);
    }

    #[test]
    fn a_log_from_before_the_two_files_is_read_as_file_0() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.rewind(0, 3);
        for c in 1..=2 {
            wal.append(c, [write(1, 0..1)].iter(), true).unwrap();
        }
        drop(wal);
        std::fs::remove_file(dir.path().join("roomd.wal.1")).unwrap();
        std::fs::rename(dir.path().join("roomd.wal.0"), dir.path().join("roomd.wal")).unwrap();
        let wal = Wal::open(dir.path()).unwrap();
        let got = wal.scan(0, 3, 0).unwrap();
        assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2]);
        assert!(!dir.path().join("roomd.wal").exists());
    }

    /// A log started afresh (cycle salt 5 in file 0), once the grower has filled its first step.
    fn grown_log(dir: &Path) -> Wal {
        let mut wal = Wal::open(dir).unwrap();
        wal.reset(0, 5);
        wal.settle_grow(true);
        wal
    }

    /// One room's write of a single entry of `len` bytes.
    fn sized(seq: u64, len: usize) -> RoomWrite {
        RoomWrite {
            room: RoomRef::Id(1),
            entries: vec![(seq, vec![7; len])],
            state: Vec::new(),
            trim: None,
        }
    }

    #[test]
    fn space_is_grown_ahead_of_the_appends_in_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = grown_log(dir.path());
        assert_eq!(wal.lens[0], GROW, "the active file is grown after a reset");
        wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
        wal.settle_grow(true);
        assert_eq!(wal.lens[1], GROW, "then the other one, for the next switch");
        // Past half of the first step, appends find the next one zero-filled for them.
        let big = sized(2, GROW as usize / 2);
        assert!(wal.append_in_place(2, std::iter::once(&big)).unwrap());
        wal.settle_grow(true);
        assert_eq!(wal.lens[0], 2 * GROW);
        let len = std::fs::metadata(dir.path().join("roomd.wal.0"))
            .unwrap()
            .len();
        assert_eq!(len, 2 * GROW);
        let got = wal.scan(0, 5, 0).unwrap();
        assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_failed_zero_fill_ahead_is_not_asked_again_until_one_on_the_spot_works() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = grown_log(dir.path());
        // The other file can no longer be written (as on a full disk): its zero-fill fails.
        wal.files[1] = Arc::new(File::open(dir.path().join("roomd.wal.1")).unwrap());
        wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
        wal.settle_grow(true);
        assert!(wal.ahead_failed);
        wal.append(2, [write(1, 0..1)].iter(), true).unwrap();
        assert!(wal.growing.is_none(), "asked again after a failure");
        // A record that does not fit makes the active file grow on the spot; that works, so
        // growing ahead resumes.
        wal.append(3, std::iter::once(&sized(3, GROW as usize)), true)
            .unwrap();
        assert!(
            wal.growing.is_some(),
            "not asked again after growing on the spot"
        );
        let got = wal.scan(0, 5, 0).unwrap();
        assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_reset_empties_both_files_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        wal.rewind(0, 5);
        wal.append(1, [write(1, 0..1)].iter(), true).unwrap();
        wal.switch();
        wal.append(2, [write(1, 0..1)].iter(), true).unwrap();
        wal.reset(1, 9);
        // Emptied (the grower may already be zero-filling them again).
        for i in 0..2 {
            let bytes = std::fs::read(dir.path().join(format!("roomd.wal.{i}"))).unwrap();
            assert!(
                bytes.iter().all(|&b| b == 0),
                "file {i} still holds records"
            );
        }
        assert_eq!(wal.position(), (1, 9));
        wal.append(3, [write(1, 0..1)].iter(), true).unwrap();
        let got = Wal::open(dir.path()).unwrap().scan(1, 9, 2).unwrap();
        assert_eq!(got.iter().map(|l| l.commit).collect::<Vec<_>>(), [3]);
    }
}
