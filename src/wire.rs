//! Outbound frames as complete WebSocket frames.
//!
//! Server frames are not masked, so a broadcast's WebSocket frame is the same bytes for every
//! subscriber: it is built once (header and MessagePack body in one allocation) and every
//! outbox holds a reference to it. The socket task writes queued frames with vectored writes,
//! bypassing the WebSocket library's per-frame copy; reads still go through the library.

use std::cell::RefCell;

use bytes::Bytes;
use roomd_protocol::{codec, ServerFrame};

/// Room for the longest header: opcode byte, 127 and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

thread_local! {
    /// Where frames are encoded before they are copied out at their exact size.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Frames encoded larger than this do not keep the scratch buffer at their size.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Encodes a frame straight into a WebSocket binary frame.
pub(crate) fn encode(frame: &ServerFrame) -> Bytes {
    SCRATCH.with_borrow_mut(|body| {
        body.clear();
        codec::encode_into(frame, body);
        let out = wrap(body);
        if body.capacity() > SCRATCH_KEEP {
            *body = Vec::new();
        }
        out
    })
}

/// Wraps an encoded MessagePack frame (as stored in the log) in a WebSocket frame: one
/// allocation of exactly its size (a `Bytes` made from a full `Vec` needs no separate reference
/// count until it is shared).
pub(crate) fn wrap(payload: &[u8]) -> Bytes {
    let (header, len) = header(payload.len());
    let mut frame = Vec::with_capacity(len + payload.len());
    frame.extend_from_slice(&header[..len]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Frames built into one allocation: a replay page's entries, each a slice of the page's
/// buffer. Wrapping each entry on its own costs an allocation and a free per message, which at
/// a million messages a second is much of a catch-up's CPU; here a page costs one.
#[derive(Default)]
pub(crate) struct PageFrames {
    buf: Vec<u8>,
    /// (seq, end of its frame in `buf`)
    ends: Vec<(u64, usize)>,
    payload_bytes: usize,
}

impl PageFrames {
    pub(crate) fn with_capacity(entries: usize) -> PageFrames {
        PageFrames {
            buf: Vec::new(),
            ends: Vec::with_capacity(entries),
            payload_bytes: 0,
        }
    }

    /// Appends the WebSocket frame around an encoded MessagePack frame (as stored in the log).
    pub(crate) fn push(&mut self, seq: u64, payload: &[u8]) {
        let (header, len) = header(payload.len());
        self.buf.extend_from_slice(&header[..len]);
        self.buf.extend_from_slice(payload);
        self.ends.push((seq, self.buf.len()));
        self.payload_bytes += payload.len();
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The MessagePack bytes pushed so far (the frames less their headers).
    pub(crate) fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    pub(crate) fn finish(self) -> Page {
        Page {
            buf: Bytes::from(self.buf),
            ends: self.ends,
        }
    }
}

/// A replay page: its entries' WebSocket frames back to back in one buffer, so any run of
/// them is one slice, queued as one item and written as one (#19: a frame per item made a
/// catch-up of small messages write 64 frames, a few KiB, per `writev`).
#[derive(Debug, Default)]
pub(crate) struct Page {
    buf: Bytes,
    /// (seq, end of its frame in `buf`), ascending.
    ends: Vec<(u64, usize)>,
}

impl Page {
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The frames of the entries with `lo <= seq <= hi` as one slice, with how many they are
    /// and the last one's seq; `None` if there are none.
    pub(crate) fn span(&self, lo: u64, hi: u64) -> Option<(Bytes, usize, u64)> {
        let first = self.ends.partition_point(|(seq, _)| *seq < lo);
        let end = self.ends.partition_point(|(seq, _)| *seq <= hi);
        if first >= end {
            return None;
        }
        let start = first.checked_sub(1).map_or(0, |i| self.ends[i].1);
        let (last, stop) = self.ends[end - 1];
        Some((self.buf.slice(start..stop), end - first, last))
    }

    /// Each entry as (seq, its own frame).
    #[cfg(test)]
    pub(crate) fn frames(&self) -> Vec<(u64, Bytes)> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&(seq, end)| {
                let frame = self.buf.slice(start..end);
                start = end;
                (seq, frame)
            })
            .collect()
    }
}

/// The MessagePack body of a frame built here.
pub(crate) fn payload(frame: &[u8]) -> &[u8] {
    &frame[header_len(frame)..]
}

/// The header of an unmasked final binary frame with a body of `len` bytes, and its length.
fn header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    // FIN, binary opcode.
    h[0] = 0x82;
    let used = match len {
        0..=125 => {
            h[1] = u8::try_from(len).unwrap_or(125);
            2
        }
        126..=0xffff => {
            h[1] = 126;
            h[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            4
        }
        _ => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (h, used)
}

/// The bodies of the WebSocket frames in `item` (an outbox item holds one frame, or several
/// back to back: a commit group's, a replay page).
#[cfg(feature = "fuzzing")]
pub(crate) fn bodies(mut item: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while item.len() >= 2 {
        let header = header_len(item);
        let len = match item[1] & 0x7f {
            126 => usize::from(u16::from_be_bytes([item[2], item[3]])),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&item[2..10]);
                usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX)
            }
            short => usize::from(short),
        };
        let end = header.saturating_add(len).min(item.len());
        out.push(&item[header..end]);
        item = &item[end..];
    }
    out
}

fn header_len(frame: &[u8]) -> usize {
    match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_each_length_class() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 200_000] {
            let body = vec![7u8; len];
            let f = wrap(&body);
            assert_eq!(f[0], 0x82);
            assert_eq!(payload(&f), &body[..], "len {len}");
            let expected_header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(f.len(), expected_header + len);
        }
    }

    /// A page's frames are the same bytes `wrap` makes, one per entry, in order, and a span
    /// is a run of them.
    #[test]
    fn page_frames_are_wrapped_entries() {
        let bodies: Vec<Vec<u8>> = [(0usize, 0u8), (3, 3), (125, 125), (126, 126), (70_000, 7)]
            .iter()
            .map(|&(n, b)| vec![b; n])
            .collect();
        let mut page = PageFrames::with_capacity(bodies.len());
        for (seq, b) in bodies.iter().enumerate() {
            page.push(u64::try_from(seq).unwrap() + 10, b);
        }
        assert_eq!(page.len(), 5);
        assert_eq!(page.payload_bytes(), 70_254);
        let page = page.finish();
        let frames = page.frames();
        for ((seq, frame), (i, body)) in frames.iter().zip(bodies.iter().enumerate()) {
            assert_eq!(*seq, u64::try_from(i).unwrap() + 10);
            assert_eq!(frame, &wrap(body));
        }
        // A span is the frames of its seqs back to back.
        let (span, n, last) = page.span(11, 13).unwrap();
        assert_eq!((n, last), (3, 13));
        assert_eq!(
            &span[..],
            &[&wrap(&bodies[1])[..], &wrap(&bodies[2]), &wrap(&bodies[3])].concat()[..]
        );
        let (all, n, last) = page.span(0, u64::MAX).unwrap();
        assert_eq!(
            (all.len(), n, last),
            (frames.iter().map(|f| f.1.len()).sum(), 5, 14)
        );
        assert!(page.span(15, 20).is_none());
        assert!(page.span(12, 11).is_none());
    }

    #[test]
    fn encode_matches_the_codec() {
        let frame = ServerFrame::Pong { id: 9 };
        let f = encode(&frame);
        assert_eq!(payload(&f), codec::encode(&frame).as_slice());
        assert_eq!(f[1] as usize, f.len() - 2);
    }
}
