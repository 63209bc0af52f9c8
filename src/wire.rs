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
const MAX_HEADER: usize = 10;

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

    #[test]
    fn encode_matches_the_codec() {
        let frame = ServerFrame::Pong { id: 9 };
        let f = encode(&frame);
        assert_eq!(payload(&f), codec::encode(&frame).as_slice());
        assert_eq!(f[1] as usize, f.len() - 2);
    }
}
