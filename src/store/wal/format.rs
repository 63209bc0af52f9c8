//! The byte layout of a write-ahead log record, its checksum, and the encoding of a group.
//!
//! A record is `len u32 | crc32 u32 | commit u64 | body` (little-endian; `len` covers `commit`
//! and `body`, the CRC covers the cycle's salt, `commit` and `body`). The body is one group:
//! `count u32`, then per room write its room (tag `0` id, `1` a new room from logs written
//! before `2`, `2` a new room with its id), entries, state changes, then a flags byte (bit 0: a
//! trim follows, bit 1: redactions follow; logs written before redactions have only bit 0) and
//! those.

use std::sync::Arc;

use crate::store::model::{LoggedRoom, RecoveredRoom, RoomWrite, Trim};

pub(super) const HEADER: usize = 16;

/// The salt of the cycle that follows one with `salt` in the other file. Derived, not drawn, so
/// recovery finds the records of a cycle whose checkpoint never committed (and so never
/// recorded anything about it).
pub(crate) fn next_salt(salt: u64) -> u64 {
    // splitmix64: a bijection, so successive cycles' salts do not repeat.
    let mut z = salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn checksum(salt: u64, covered: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(covered);
    h.finalize()
}

/// Encodes one group as record number `commit` of the cycle with `salt` into `buf`. A record
/// states its length in 32 bits: a larger group is refused here rather than logged with a
/// length that would end the log's scan at recovery.
pub(super) fn encode_record<'a, R: EncodeRoom + 'a>(
    buf: &mut Vec<u8>,
    salt: u64,
    commit: u64,
    writes: impl ExactSizeIterator<Item = &'a RoomWrite<R>>,
) -> std::io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&commit.to_le_bytes());
    encode_group(writes, buf);
    let covered = u32::try_from(buf.len() - 8).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a write group over 4 GiB cannot be logged",
        )
    })?;
    let crc = checksum(salt, &buf[8..]);
    buf[..4].copy_from_slice(&covered.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// `(commit, body, next offset)` of an intact record at `at`.
pub(super) fn record_at(raw: &[u8], at: usize, salt: u64) -> Option<(u64, &[u8], usize)> {
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

/// A room reference as a record holds it.
pub(crate) trait EncodeRoom {
    fn encode(&self, out: &mut Vec<u8>);
}

impl EncodeRoom for LoggedRoom {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LoggedRoom::Id(id) => {
                out.push(0);
                out.extend_from_slice(&id.to_le_bytes());
            }
            LoggedRoom::Created { id, name, epoch } => {
                out.push(2);
                out.extend_from_slice(&id.to_le_bytes());
                put_bytes(out, name.as_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
        }
    }
}

impl EncodeRoom for RecoveredRoom {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            RecoveredRoom::Logged(room) => room.encode(out),
            RecoveredRoom::LegacyNew { name, epoch } => {
                out.push(1);
                put_bytes(out, name.as_bytes());
                out.extend_from_slice(&epoch.to_le_bytes());
            }
        }
    }
}

fn encode_group<'a, R: EncodeRoom + 'a>(
    writes: impl ExactSizeIterator<Item = &'a RoomWrite<R>>,
    out: &mut Vec<u8>,
) {
    put_u32(out, writes.len());
    for w in writes {
        w.room.encode(out);
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
        let flags = u8::from(w.trim.is_some()) | (u8::from(!w.redactions.is_empty()) << 1);
        out.push(flags);
        if let Some(t) = w.trim {
            out.extend_from_slice(&t.before_seq.to_le_bytes());
            out.extend_from_slice(&t.older_than_ms.map_or(u64::MAX, |v| v).to_le_bytes());
            out.extend_from_slice(&t.head.to_le_bytes());
        }
        if !w.redactions.is_empty() {
            put_u32(out, w.redactions.len());
            for (seq, frame) in &w.redactions {
                out.extend_from_slice(&seq.to_le_bytes());
                put_bytes(out, frame);
            }
        }
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "a count or length inside a record is below the record's own length, which encode_record checks fits in 32 bits"
)]
fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// Reads what [`encode_group`] wrote; `None` if it is not well formed.
pub(super) fn decode_group(body: &[u8]) -> Option<Vec<RoomWrite<RecoveredRoom>>> {
    let mut r = Reader(body);
    let n = r.u32()?;
    let mut writes = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        let room = match r.u8()? {
            0 => RecoveredRoom::Logged(LoggedRoom::Id(r.u64()?)),
            1 => {
                let name: Arc<str> = std::str::from_utf8(r.bytes()?).ok()?.into();
                RecoveredRoom::LegacyNew {
                    name,
                    epoch: r.u64()?,
                }
            }
            2 => {
                let id = r.u64()?;
                let name: Arc<str> = std::str::from_utf8(r.bytes()?).ok()?.into();
                RecoveredRoom::Logged(LoggedRoom::Created {
                    id,
                    name,
                    epoch: r.u64()?,
                })
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
        let flags = r.u8()?;
        if flags > 3 {
            return None;
        }
        let trim = if flags & 1 == 1 {
            Some(Trim {
                before_seq: r.u64()?,
                older_than_ms: Some(r.u64()?).filter(|v| *v != u64::MAX),
                head: r.u64()?,
            })
        } else {
            None
        };
        let redactions = if flags & 2 == 2 {
            (0..r.u32()?)
                .map(|_| Some((r.u64()?, r.bytes()?.to_vec())))
                .collect::<Option<Vec<_>>>()?
        } else {
            Vec::new()
        };
        writes.push(RoomWrite {
            room,
            entries,
            state,
            redactions,
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
