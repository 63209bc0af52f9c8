//! Outbound frames as complete WebSocket frames.
//!
//! Server frames are not masked, so a broadcast's WebSocket frame is the same bytes for every
//! subscriber: it is built once (header and MessagePack body in one allocation) and every
//! outbox holds a reference to it. The socket task writes queued frames with vectored writes,
//! bypassing the WebSocket library's per-frame copy; reads still go through the library.

use bytes::Bytes;
use roomd_protocol::{codec, ServerFrame};

/// Room for the longest header: opcode byte, 127 and a 64-bit length.
const MAX_HEADER: usize = 10;

/// Encodes a frame straight into a WebSocket binary frame.
pub fn encode(frame: &ServerFrame) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    buf.resize(MAX_HEADER, 0);
    codec::encode_into(frame, &mut buf);
    finish(buf)
}

/// Wraps an encoded MessagePack frame (as stored in the log) in a WebSocket frame.
pub fn wrap(payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_HEADER + payload.len());
    buf.resize(MAX_HEADER, 0);
    buf.extend_from_slice(payload);
    finish(buf)
}

/// The MessagePack body of a frame built here.
pub fn payload(frame: &[u8]) -> &[u8] {
    &frame[header_len(frame)..]
}

/// Writes the header in front of the body that starts at `MAX_HEADER`.
fn finish(mut buf: Vec<u8>) -> Bytes {
    let len = buf.len() - MAX_HEADER;
    let start = match len {
        0..=125 => {
            buf[MAX_HEADER - 1] = len as u8;
            MAX_HEADER - 2
        }
        126..=0xffff => {
            buf[MAX_HEADER - 3] = 126;
            buf[MAX_HEADER - 2..MAX_HEADER].copy_from_slice(&(len as u16).to_be_bytes());
            MAX_HEADER - 4
        }
        _ => {
            buf[1] = 127;
            buf[2..MAX_HEADER].copy_from_slice(&(len as u64).to_be_bytes());
            0
        }
    };
    // FIN, binary opcode.
    buf[start] = 0x82;
    Bytes::from(buf).slice(start..)
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
