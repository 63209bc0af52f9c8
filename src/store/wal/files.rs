//! The two log files: open, append, switch, rewind and scan.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::format::{decode_group, encode_record, next_salt, record_at, EncodeRoom, HEADER};
use super::grower::{zero_fill, Grower, GROW};
use super::legacy::adopt_single_file_log;
use crate::store::error::StoreError;
use crate::store::model::{RecoveredRoom, RoomWrite};

pub(crate) struct Wal {
    /// `roomd.wal.0` and `roomd.wal.1`; shared so fsyncs can run without holding the log.
    pub(super) files: [Arc<File>; 2],
    /// Each file's length: zero-filled space up to here is already allocated.
    pub(super) lens: [u64; 2],
    /// The file records go to.
    pub(super) active: usize,
    /// Where the next record goes.
    pub(super) offset: u64,
    /// The current cycle's salt, mixed into every record's CRC.
    pub(super) salt: u64,
    pub(super) buf: Vec<u8>,
    pub(super) grower: Grower,
    /// The zero-fill the grower is doing: (file, its length once done).
    pub(super) growing: Option<(usize, u64)>,
    /// The grower's last zero-fill failed (a full disk, say): no more are asked for until one
    /// done on the spot succeeds, rather than one failing per append.
    pub(super) ahead_failed: bool,
}

/// A record found by [`Wal::scan`].
pub(crate) struct ScannedGroup {
    pub commit: u64,
    pub writes: Vec<RoomWrite<RecoveredRoom>>,
}

impl Wal {
    /// Opens (or creates, with a durable directory entry) `dir/roomd.wal.0` and `.1`.
    pub(crate) fn open(dir: &Path) -> io::Result<Wal> {
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
    pub(crate) fn size(&self) -> u64 {
        self.offset
    }

    /// The file records go to, and the salt of its cycle.
    pub(crate) fn position(&self) -> (usize, u64) {
        (self.active, self.salt)
    }

    /// The groups logged after `applied`, for recovery: the run of consecutive, intact records
    /// of the cycle `salt` at the start of `file`, continued by the run at the start of the other
    /// file when a checkpoint had switched files but not committed.
    pub(crate) fn scan(
        &self,
        file: usize,
        salt: u64,
        applied: u64,
    ) -> Result<Vec<ScannedGroup>, StoreError> {
        let mut out = self.scan_file(file, salt)?;
        let next = out.last().map_or(applied + 1, |l| l.commit + 1);
        let more = self.scan_file(1 - file, next_salt(salt))?;
        if more.first().is_some_and(|l| l.commit == next) {
            out.extend(more);
        }
        Ok(out)
    }

    /// The run of consecutive, intact records of the cycle with this salt at the start of a file.
    fn scan_file(&self, file: usize, salt: u64) -> Result<Vec<ScannedGroup>, StoreError> {
        let len = usize::try_from(self.lens[file]).map_err(io::Error::other)?;
        let mut raw = vec![0; len];
        self.files[file].read_exact_at(&mut raw, 0)?;
        let mut out: Vec<ScannedGroup> = Vec::new();
        let mut at = 0;
        while let Some((commit, body, next)) = record_at(&raw, at, salt) {
            if out.last().is_some_and(|prev| prev.commit + 1 != commit) {
                break;
            }
            let Some(writes) = decode_group(body) else {
                return Err(StoreError::CorruptRecord { commit });
            };
            out.push(ScannedGroup { commit, writes });
            at = next;
        }
        Ok(out)
    }

    /// Appends one group as commit number `commit`; with `sync`, waits until it is on disk.
    pub(crate) fn append<'a, R: EncodeRoom + 'a>(
        &mut self,
        commit: u64,
        writes: impl ExactSizeIterator<Item = &'a RoomWrite<R>>,
        sync: bool,
    ) -> io::Result<()> {
        self.encode(commit, writes)?;
        let end = self.offset + self.buf.len() as u64;
        if let Err(e) = self.grow_to(end) {
            self.invalidate_tail();
            return Err(e);
        }
        self.write_encoded(sync)
    }

    /// Appends one group (without fsync) if it fits in the space the file already has; `false`
    /// (nothing written) if the file would have to grow first.
    pub(crate) fn append_in_place<'a, R: EncodeRoom + 'a>(
        &mut self,
        commit: u64,
        writes: impl ExactSizeIterator<Item = &'a RoomWrite<R>>,
    ) -> io::Result<bool> {
        self.encode(commit, writes)?;
        if self.offset + self.buf.len() as u64 > self.lens[self.active] {
            return Ok(false);
        }
        self.write_encoded(false).map(|()| true)
    }

    fn encode<'a, R: EncodeRoom + 'a>(
        &mut self,
        commit: u64,
        writes: impl ExactSizeIterator<Item = &'a RoomWrite<R>>,
    ) -> io::Result<()> {
        encode_record(&mut self.buf, self.salt, commit, writes)
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
    pub(crate) fn file(&self) -> Arc<File> {
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
    pub(crate) fn undo_last(&mut self, start: u64) {
        self.offset = start;
        self.invalidate_tail();
    }

    /// Starts a new cycle with `salt` at the start of `file`, once everything logged is durable
    /// in redb (after recovery).
    pub(crate) fn rewind(&mut self, file: usize, salt: u64) {
        self.active = file;
        self.offset = 0;
        self.salt = salt;
    }

    /// Starts a cycle with `salt` in `file` and empties both files, after recovery has made
    /// everything logged durable in redb. Truncating drops the files' cached pages too: the
    /// recovery scan read them into large page-cache folios, and appending into those costs far
    /// more than into the single pages the log is regrown in (see `grow_to`). Best effort: a
    /// file that cannot be truncated keeps its old records, which carry other salts.
    pub(crate) fn reset(&mut self, file: usize, salt: u64) {
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
    pub(crate) fn switch(&mut self) -> Arc<File> {
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
    pub(super) fn settle_grow(&mut self, wait: bool) {
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
