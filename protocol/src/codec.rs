//! MessagePack encoding and decoding of frames.
//!
//! A client frame that cannot be read is classified so the server can answer with the right
//! code: not one MessagePack map (400), a `t` that names no request (405), or a known request
//! with missing or ill-typed fields (406). The request id is recovered whenever the frame is a
//! map that holds one, so even a rejected request gets a reply the client can match.

use serde::{Deserialize, Serialize};

use crate::frame::{ClientFrame, ServerFrame};
use crate::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not one MessagePack map: {reason}")]
    Malformed { reason: String },
    #[error("unknown request kind {kind:?}")]
    UnknownRequest { id: Option<u32>, kind: String },
    #[error("bad request: {reason}")]
    BadRequest { id: Option<u32>, reason: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed { .. } => ErrorCode::Malformed,
            DecodeError::UnknownRequest { .. } => ErrorCode::UnknownRequest,
            DecodeError::BadRequest { .. } => ErrorCode::BadRequest,
        }
    }

    /// The id of the request, when the frame was readable far enough to hold one.
    pub fn id(&self) -> Option<u32> {
        match self {
            DecodeError::Malformed { .. } => None,
            DecodeError::UnknownRequest { id, .. } | DecodeError::BadRequest { id, .. } => *id,
        }
    }
}

/// Encodes any frame as a MessagePack map with string keys.
pub fn encode<T: Serialize + ?Sized>(frame: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(frame, &mut out);
    out
}

/// Encodes into `out`, appending.
#[allow(
    clippy::expect_used,
    reason = "writing into a Vec cannot fail and every frame type is plain data: a failure is a bug in this crate"
)]
pub fn encode_into<T: Serialize + ?Sized>(frame: &T, out: &mut Vec<u8>) {
    let mut ser = rmp_serde::Serializer::new(out).with_struct_map();
    // Writing into a Vec cannot fail and every frame type is plain data.
    frame
        .serialize(&mut ser)
        .expect("frame types always encode");
}

/// Encodes a `hist` reply around already-encoded event frames (as stored), without decoding
/// them. Produces the same bytes as encoding [`ServerFrame::Hist`] with those events.
pub fn encode_hist_raw(id: u32, room: &str, items: &[impl AsRef<[u8]>], more: bool) -> Vec<u8> {
    let len: usize = items.iter().map(|i| i.as_ref().len()).sum();
    let mut out = Vec::with_capacity(32 + room.len() + len);
    let w = &mut out;
    // Writes into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(w, 5);
    let _ = rmp::encode::write_str(w, "t");
    let _ = rmp::encode::write_str(w, "hist");
    let _ = rmp::encode::write_str(w, "id");
    let _ = rmp::encode::write_uint(w, u64::from(id));
    let _ = rmp::encode::write_str(w, "room");
    let _ = rmp::encode::write_str(w, room);
    let _ = rmp::encode::write_str(w, "items");
    // A page holds at most `limits.page` items; a count past u32 would saturate, not wrap.
    let _ = rmp::encode::write_array_len(w, u32::try_from(items.len()).unwrap_or(u32::MAX));
    for item in items {
        out.extend_from_slice(item.as_ref());
    }
    let _ = rmp::encode::write_str(&mut out, "more");
    let _ = rmp::encode::write_bool(&mut out, more);
    out
}

/// Decodes one client frame; the whole input must be exactly one MessagePack value.
pub fn decode_client(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    match decode_exact::<ClientFrame>(bytes) {
        Ok(frame) => Ok(frame),
        Err(err) => Err(classify(bytes, err)),
    }
}

/// Decodes one server frame (used by Rust clients, tests and the benchmark).
pub fn decode_server(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    decode_exact::<ServerFrame>(bytes).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })
}

/// Decodes exactly one value from `bytes`. The deserializer borrows from the input, so the
/// keys and strings that serde buffers to find an internally tagged frame's `t` are not copied.
fn decode_exact<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // Deeply nested values (in `info` or state values) are refused rather than recursed into.
    de.set_max_depth(64);
    let value = T::deserialize(&mut de)?;
    // A borrowing deserializer does not tell its position: anything but the end of the input
    // where a next value would start means trailing bytes.
    match serde::de::IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(value)
        }
        _ => Err(rmp_serde::decode::Error::Syntax(
            "trailing bytes after the first MessagePack value".into(),
        )),
    }
}

/// The two fields every request has, read leniently to decide the error code.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    t: Option<rmpv::Value>,
    #[serde(default)]
    id: Option<rmpv::Value>,
}

fn classify(bytes: &[u8], err: rmp_serde::decode::Error) -> DecodeError {
    let head: Head = match decode_exact(bytes) {
        Ok(head) => head,
        Err(_) => {
            let reason = match rmpv::decode::read_value(&mut &bytes[..]) {
                Ok(_) => "expected a map with string keys".to_string(),
                Err(e) => e.to_string(),
            };
            let reason = if reason.is_empty() {
                err.to_string()
            } else {
                reason
            };
            return DecodeError::Malformed { reason };
        }
    };
    let id = head
        .id
        .as_ref()
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok());
    match head.t.as_ref().and_then(|t| t.as_str()) {
        None => DecodeError::BadRequest {
            id,
            reason: "missing string field `t`".into(),
        },
        Some(kind) if !ClientFrame::KINDS.contains(&kind) => DecodeError::UnknownRequest {
            id,
            kind: kind.to_string(),
        },
        Some(_) => DecodeError::BadRequest {
            id,
            reason: err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn map(pairs: &[(&str, rmpv::Value)]) -> rmpv::Value {
        rmpv::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (rmpv::Value::from(*k), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn raw_hist_matches_typed_hist() {
        let msg = ServerFrame::Msg {
            room: "r".into(),
            seq: 3,
            ts: 9,
            from: "c".into(),
            uid: None,
            data: vec![1, 2],
        };
        let typed = encode(&ServerFrame::Hist {
            id: 300,
            room: "r".into(),
            items: vec![msg.clone(), msg.clone()],
            more: true,
        });
        let raw = encode_hist_raw(300, "r", &[encode(&msg), encode(&msg)], true);
        assert_eq!(raw, typed);
    }

    #[test]
    fn garbage_is_malformed() {
        let e = decode_client(b"\xc1\xc1").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        let e = decode_client(b"").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        let e = decode_client(&enc(&rmpv::Value::from(5))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&ClientFrame::Ping { id: 1 });
        bytes.push(0xc0);
        assert_eq!(
            decode_client(&bytes).unwrap_err().code(),
            ErrorCode::Malformed
        );
    }

    #[test]
    fn unknown_kind_keeps_id() {
        let e = decode_client(&enc(&map(&[("t", "nope".into()), ("id", 7.into())]))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownRequest);
        assert_eq!(e.id(), Some(7));
    }

    #[test]
    fn wrong_types_are_bad_requests_with_id() {
        let frame = map(&[("t", "pub".into()), ("id", 9.into()), ("room", 3.into())]);
        let e = decode_client(&enc(&frame)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.id(), Some(9));
        let frame = map(&[("t", "sub".into()), ("id", 9.into())]);
        assert_eq!(
            decode_client(&enc(&frame)).unwrap_err().code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn nil_optional_is_absent_and_unknown_keys_ignored() {
        let frame = map(&[
            ("t", "sub".into()),
            ("id", 1.into()),
            ("room", "a".into()),
            ("since", rmpv::Value::Nil),
            ("future", "x".into()),
        ]);
        assert_eq!(
            decode_client(&enc(&frame)).unwrap(),
            ClientFrame::Sub {
                id: 1,
                room: "a".into(),
                since: None,
                state: None,
                presence: None,
                info: None
            }
        );
    }
}
