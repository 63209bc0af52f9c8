//! MessagePack encoding and decoding of frames.
//!
//! Client frames are read by a strict hand-written decoder ([`decode_client`]) rather than by
//! serde, whose internally tagged enums also read arrays as requests, bin as str, str as bytes
//! and non-string keys as field names. A client frame that cannot be read is classified so the
//! server can answer with the right code: not one MessagePack map with string keys (400), a `t`
//! that names no request (405), or a known request with missing, duplicate or ill-typed fields
//! (406). The request id is recovered whenever the frame is a map that holds one, so even a
//! rejected request gets a reply the client can match. Server frames are read with serde.

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
    // Deeply nested values (in `info`, state values, `hist` items) are refused rather than
    // recursed into.
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

/// Decodes one client frame, strictly (SPEC.md section 2): the input must be exactly one
/// MessagePack map whose keys are all strings, else [`DecodeError::Malformed`]; each field the
/// request kind reads must have exactly its documented type (a `str` field is not read from
/// bin nor `data` from str, integers are not read from floats), else
/// [`DecodeError::BadRequest`] with the request's id when it has a readable one. Keys the kind
/// does not read are skipped whatever their value; `nil` in an optional field means absent.
///
/// Cost: one pass over the frame's markers that records where each known field's value lies
/// (payloads are skipped by their length, not read), then a read of the fields the kind uses.
/// Nothing is allocated but the frame's own owned fields (`room`, `data`, ...); `info` and
/// `value` are decoded into a [`Value`](rmpv::Value) as before.
pub fn decode_client(bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    let fields = scan_request(bytes).map_err(|reason| DecodeError::Malformed { reason })?;
    // The id, read leniently so that even a refused request's reply carries it.
    let lenient_id = fields.0[F_ID]
        .and_then(|v| uint(v).ok())
        .and_then(|v| u32::try_from(v).ok());
    let bad = |reason: String| DecodeError::BadRequest {
        id: lenient_id,
        reason,
    };
    let r = Fields {
        raw: fields.0,
        dups: fields.1,
        bad: &bad,
    };
    r.once(F_T)?;
    let kind = match fields.0[F_T].map(str_field) {
        Some(Ok(kind)) => kind,
        _ => return Err(bad("missing string field `t`".into())),
    };
    let id = || r.req(F_ID, uint).and_then(|v| r.u32(F_ID, v));
    Ok(match kind {
        "sub" => ClientFrame::Sub {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            since: r.opt(F_SINCE, uint)?,
            state: r.opt(F_STATE, boolean)?,
            presence: r.opt(F_PRESENCE, boolean)?,
            info: r.opt(F_INFO, value)?,
        },
        "unsub" => ClientFrame::Unsub {
            id: id()?,
            room: r.req(F_ROOM, string)?,
        },
        "pub" => match (r.opt(F_EPHEMERAL, boolean)?, r.opt(F_MID, string)?) {
            (Some(true), Some(_)) => {
                return Err(bad(
                    "`mid` is for stored publishes; an ephemeral one is never de-duplicated".into(),
                ))
            }
            (Some(true), None) => ClientFrame::Signal {
                id: id()?,
                room: r.req(F_ROOM, string)?,
                data: r.req(F_DATA, bin)?,
                ephemeral: true,
            },
            (_, mid) => ClientFrame::Pub {
                id: id()?,
                room: r.req(F_ROOM, string)?,
                data: r.req(F_DATA, bin)?,
                mid,
            },
        },
        "edit" => ClientFrame::Edit {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            target: r.req(F_TARGET, uint)?,
            data: r.req(F_DATA, bin)?,
        },
        "redact" => ClientFrame::Redact {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            target: r.req(F_TARGET, uint)?,
        },
        "hist" => ClientFrame::Hist {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            after: r.opt(F_AFTER, uint)?,
            before: r.opt(F_BEFORE, uint)?,
            limit: r
                .opt(F_LIMIT, uint)?
                .map(|v| r.u32(F_LIMIT, v))
                .transpose()?,
        },
        "get" => ClientFrame::Get {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            key: r.req(F_KEY, string)?,
        },
        "list" => ClientFrame::List {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            prefix: r.opt(F_PREFIX, string)?,
            after: r.opt(F_AFTER, string)?,
            limit: r
                .opt(F_LIMIT, uint)?
                .map(|v| r.u32(F_LIMIT, v))
                .transpose()?,
        },
        "put" => ClientFrame::Put {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            key: r.req(F_KEY, string)?,
            value: r.req_value(F_VALUE)?,
            ttl_ms: r.opt(F_TTL_MS, uint)?,
            ephemeral: r.opt(F_EPHEMERAL, boolean)?.unwrap_or(false),
        },
        "del" => ClientFrame::Del {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            key: r.req(F_KEY, string)?,
        },
        "cas" => ClientFrame::Cas {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            key: r.req(F_KEY, string)?,
            ver: r.req(F_VER, uint)?,
            value: r.req_value(F_VALUE)?,
            ttl_ms: r.opt(F_TTL_MS, uint)?,
            ephemeral: r.opt(F_EPHEMERAL, boolean)?.unwrap_or(false),
        },
        "incr" => ClientFrame::Incr {
            id: id()?,
            room: r.req(F_ROOM, string)?,
            key: r.req(F_KEY, string)?,
            by: r.opt(F_BY, int)?,
        },
        "who" => ClientFrame::Who {
            id: id()?,
            room: r.req(F_ROOM, string)?,
        },
        "ping" => ClientFrame::Ping { id: id()? },
        "auth" => ClientFrame::Auth {
            id: id()?,
            token: r.req(F_TOKEN, string)?,
        },
        other => {
            return Err(DecodeError::UnknownRequest {
                id: lenient_id,
                kind: other.to_string(),
            })
        }
    })
}

/// The fields any request kind reads, by name; the index is the field's slot.
const FIELDS: [&str; 21] = [
    "t",
    "id",
    "room",
    "since",
    "state",
    "presence",
    "info",
    "data",
    "mid",
    "after",
    "before",
    "limit",
    "prefix",
    "key",
    "value",
    "ver",
    "by",
    "token",
    "ephemeral",
    "target",
    "ttl_ms",
];
const F_T: usize = 0;
const F_ID: usize = 1;
const F_ROOM: usize = 2;
const F_SINCE: usize = 3;
const F_STATE: usize = 4;
const F_PRESENCE: usize = 5;
const F_INFO: usize = 6;
const F_DATA: usize = 7;
const F_MID: usize = 8;
const F_AFTER: usize = 9;
const F_BEFORE: usize = 10;
const F_LIMIT: usize = 11;
const F_PREFIX: usize = 12;
const F_KEY: usize = 13;
const F_VALUE: usize = 14;
const F_VER: usize = 15;
const F_BY: usize = 16;
const F_TOKEN: usize = 17;
const F_EPHEMERAL: usize = 18;
const F_TARGET: usize = 19;
const F_TTL_MS: usize = 20;

/// Each known field's encoded value, and a bit per known field that appeared more than once
/// (refused only if the request kind reads that field).
type Scanned<'a> = ([Option<&'a [u8]>; FIELDS.len()], u32);

/// Checks that `bytes` is exactly one map with string keys and finds the known fields' values.
fn scan_request(bytes: &[u8]) -> Result<Scanned<'_>, String> {
    let mut rd = Reader { buf: bytes, pos: 0 };
    let marker = rd.peek().ok_or("empty frame")?;
    let len = rd
        .map_len()
        .ok_or_else(|| format!("expected a map with string keys, got {}", type_name(marker)))?;
    let mut raw = [None; FIELDS.len()];
    let mut dups = 0u32;
    for _ in 0..len {
        let key_marker = rd.peek().ok_or(TRUNCATED)?;
        let key = rd.str().ok_or_else(|| {
            if type_name(key_marker) == "str" {
                TRUNCATED.to_string()
            } else {
                format!("map key is {}; keys must be strings", type_name(key_marker))
            }
        })?;
        let key = std::str::from_utf8(key).map_err(|_| "map key is not valid UTF-8")?;
        let start = rd.pos;
        rd.skip()?;
        if let Some(slot) = FIELDS.iter().position(|f| *f == key) {
            if raw[slot].is_some() {
                dups |= 1 << slot;
            }
            raw[slot] = Some(&bytes[start..rd.pos]);
        }
    }
    if rd.pos != bytes.len() {
        return Err("trailing bytes after the first MessagePack value".into());
    }
    Ok((raw, dups))
}

const TRUNCATED: &str = "truncated MessagePack value";

/// Reads the known fields of a scanned request with their exact types.
struct Fields<'a, 'b> {
    raw: [Option<&'a [u8]>; FIELDS.len()],
    dups: u32,
    bad: &'b dyn Fn(String) -> DecodeError,
}

impl Fields<'_, '_> {
    /// A field the request reads must not appear twice: which one counts would be a guess.
    fn once(&self, slot: usize) -> Result<(), DecodeError> {
        if self.dups & (1 << slot) != 0 {
            return Err((self.bad)(format!("duplicate field `{}`", FIELDS[slot])));
        }
        Ok(())
    }

    /// An optional field: absent or nil is `None`.
    fn opt<T>(
        &self,
        slot: usize,
        read: impl FnOnce(&[u8]) -> Result<T, &'static str>,
    ) -> Result<Option<T>, DecodeError> {
        self.once(slot)?;
        match self.raw[slot] {
            None | Some([0xc0]) => Ok(None),
            Some(v) => read(v).map(Some).map_err(|e| self.wrong(slot, v, e)),
        }
    }

    fn req<T>(
        &self,
        slot: usize,
        read: impl FnOnce(&[u8]) -> Result<T, &'static str>,
    ) -> Result<T, DecodeError> {
        self.opt(slot, read)?
            .ok_or_else(|| (self.bad)(format!("missing field `{}`", FIELDS[slot])))
    }

    /// A value may be nil; only an absent one is missing.
    fn req_value(&self, slot: usize) -> Result<rmpv::Value, DecodeError> {
        self.once(slot)?;
        match self.raw[slot] {
            None => Err((self.bad)(format!("missing field `{}`", FIELDS[slot]))),
            Some(v) => value(v).map_err(|e| self.wrong(slot, v, e)),
        }
    }

    fn u32(&self, slot: usize, v: u64) -> Result<u32, DecodeError> {
        u32::try_from(v).map_err(|_| {
            (self.bad)(format!(
                "field `{}`: {v} is out of range (at most {})",
                FIELDS[slot],
                u32::MAX
            ))
        })
    }

    /// `expected` is a type name, or a phrase saying what is wrong.
    fn wrong(&self, slot: usize, v: &[u8], expected: &'static str) -> DecodeError {
        let field = FIELDS[slot];
        let got = type_name(v[0]);
        (self.bad)(match expected {
            "int" if got == "int" => format!("field `{field}`: integer out of range"),
            _ if expected.contains(' ') => format!("field `{field}`: {expected}"),
            _ => format!("field `{field}`: expected {expected}, got {got}"),
        })
    }
}

// Readers of one encoded value of an exact type; the error names the expected type.

fn uint(v: &[u8]) -> Result<u64, &'static str> {
    match int_of(v) {
        Some(Int::U(u)) => Ok(u),
        Some(Int::I(i)) => u64::try_from(i).map_err(|_| "int"),
        None => Err("int"),
    }
}

fn int(v: &[u8]) -> Result<i64, &'static str> {
    match int_of(v) {
        Some(Int::U(u)) => i64::try_from(u).map_err(|_| "int"),
        Some(Int::I(i)) => Ok(i),
        None => Err("int"),
    }
}

fn boolean(v: &[u8]) -> Result<bool, &'static str> {
    match v {
        [0xc2] => Ok(false),
        [0xc3] => Ok(true),
        _ => Err("bool"),
    }
}

fn str_field(v: &[u8]) -> Result<&str, &'static str> {
    let mut rd = Reader { buf: v, pos: 0 };
    let s = rd.str().ok_or("str")?;
    std::str::from_utf8(s).map_err(|_| "not valid UTF-8")
}

fn string(v: &[u8]) -> Result<String, &'static str> {
    str_field(v).map(str::to_owned)
}

fn bin(v: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut rd = Reader { buf: v, pos: 0 };
    let len = match rd.byte() {
        Some(0xc4) => rd.be(1),
        Some(0xc5) => rd.be(2),
        Some(0xc6) => rd.be(4),
        _ => None,
    };
    len.and_then(|n| rd.take(usize::try_from(n).ok()?))
        .map(<[u8]>::to_vec)
        .ok_or("bin")
}

/// Any MessagePack value (state values, presence info). Nesting is bounded here so decoding
/// cannot exhaust the stack; the accepted subset, with its tighter bound, is checked by
/// [`crate::value::check_value`] where the request is checked.
fn value(mut v: &[u8]) -> Result<rmpv::Value, &'static str> {
    // rmpv counts two steps per array or map level and one or two for a leaf: this admits
    // about twice MAX_VALUE_DEPTH levels, so every value deeper than the subset allows but not
    // absurdly deep is refused by the subset check, with its clearer message.
    let steps = 4 * crate::value::MAX_VALUE_DEPTH + 8;
    rmpv::decode::read_value_with_max_depth(&mut v, steps)
        .map_err(|_| "arrays and maps nest too deep")
}

enum Int {
    U(u64),
    I(i64),
}

fn int_of(v: &[u8]) -> Option<Int> {
    let mut rd = Reader { buf: v, pos: 0 };
    let b = rd.byte()?;
    Some(match b {
        0x00..=0x7f => Int::U(u64::from(b)),
        0xe0..=0xff => Int::I(i64::from(i8::from_be_bytes([b]))),
        0xcc => Int::U(rd.be(1)?),
        0xcd => Int::U(rd.be(2)?),
        0xce => Int::U(rd.be(4)?),
        0xcf => Int::U(rd.be(8)?),
        0xd0 => Int::I(i64::from(i8::from_be_bytes(rd.array()?))),
        0xd1 => Int::I(i64::from(i16::from_be_bytes(rd.array()?))),
        0xd2 => Int::I(i64::from(i32::from_be_bytes(rd.array()?))),
        0xd3 => Int::I(i64::from_be_bytes(rd.array()?)),
        _ => return None,
    })
}

/// What a value is, by its first byte, for error messages.
fn type_name(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "int",
        0x80..=0x8f | 0xde | 0xdf => "map",
        0x90..=0x9f | 0xdc | 0xdd => "array",
        0xa0..=0xbf | 0xd9..=0xdb => "str",
        0xc0 => "nil",
        0xc1 => "the never-used byte 0xc1",
        0xc2 | 0xc3 => "bool",
        0xc4..=0xc6 => "bin",
        0xc7..=0xc9 | 0xd4..=0xd8 => "ext",
        0xca | 0xcb => "float",
    }
}

/// A cursor over MessagePack bytes; every read is bounds-checked and `None` at the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A big-endian unsigned integer of `n` (at most 8) bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.peek()? {
            b @ 0x80..=0x8f => {
                self.pos += 1;
                Some(u64::from(b & 0x0f))
            }
            0xde => {
                self.pos += 1;
                self.be(2)
            }
            0xdf => {
                self.pos += 1;
                self.be(4)
            }
            _ => None,
        }
    }

    /// A str's bytes (not yet checked to be UTF-8); `None` if the value is not a str.
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.peek()? {
            b @ 0xa0..=0xbf => {
                self.pos += 1;
                u64::from(b & 0x1f)
            }
            0xd9 => {
                self.pos += 1;
                self.be(1)?
            }
            0xda => {
                self.pos += 1;
                self.be(2)?
            }
            0xdb => {
                self.pos += 1;
                self.be(4)?
            }
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }

    /// Skips one value of any type, nested containers included, without recursion: a count of
    /// values still to skip replaces the stack, so no nesting can exhaust it.
    fn skip(&mut self) -> Result<(), String> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let b = self.byte().ok_or(TRUNCATED)?;
            let (skip_bytes, children): (Option<u64>, u64) = match b {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (Some(0), 0),
                0x80..=0x8f => (Some(0), 2 * u64::from(b & 0x0f)),
                0x90..=0x9f => (Some(0), u64::from(b & 0x0f)),
                0xa0..=0xbf => (Some(u64::from(b & 0x1f)), 0),
                0xc4 | 0xd9 => (self.be(1), 0),
                0xc5 | 0xda => (self.be(2), 0),
                0xc6 | 0xdb => (self.be(4), 0),
                0xc7 => (self.be(1).map(|n| n + 1), 0),
                0xc8 => (self.be(2).map(|n| n + 1), 0),
                0xc9 => (self.be(4).map(|n| n + 1), 0),
                0xca => (Some(4), 0),
                0xcb => (Some(8), 0),
                0xcc | 0xd0 => (Some(1), 0),
                0xcd | 0xd1 => (Some(2), 0),
                0xce | 0xd2 => (Some(4), 0),
                0xcf | 0xd3 => (Some(8), 0),
                0xd4 => (Some(2), 0),
                0xd5 => (Some(3), 0),
                0xd6 => (Some(5), 0),
                0xd7 => (Some(9), 0),
                0xd8 => (Some(17), 0),
                0xdc => (Some(0), self.be(2).ok_or(TRUNCATED)?),
                0xdd => (Some(0), self.be(4).ok_or(TRUNCATED)?),
                0xde => (Some(0), 2 * self.be(2).ok_or(TRUNCATED)?),
                0xdf => (Some(0), 2 * self.be(4).ok_or(TRUNCATED)?),
                0xc1 => return Err("invalid MessagePack byte 0xc1".into()),
            };
            let n = skip_bytes
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(TRUNCATED)?;
            self.take(n).ok_or(TRUNCATED)?;
            pending += children;
            // Every value takes at least one byte: more pending values than bytes left means
            // a truncated (or hostile) length, refused before looping over it.
            if pending > (self.buf.len() - self.pos) as u64 {
                return Err(TRUNCATED.into());
            }
        }
        Ok(())
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
            deleted: None,
            edited: None,
            edits: None,
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

    fn bin(b: &[u8]) -> rmpv::Value {
        rmpv::Value::Binary(b.to_vec())
    }

    fn pub_frame(room: rmpv::Value, data: rmpv::Value) -> Vec<u8> {
        enc(&map(&[
            ("t", "pub".into()),
            ("id", 4.into()),
            ("room", room),
            ("data", data),
        ]))
    }

    #[test]
    fn arrays_are_not_requests() {
        let frame = rmpv::Value::Array(vec!["pub".into(), 8.into(), "r".into(), bin(b"x")]);
        let e = decode_client(&enc(&frame)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        assert_eq!(e.id(), None);
        assert!(e.to_string().contains("got array"), "{e}");
    }

    #[test]
    fn keys_must_be_strings() {
        let bin_keys = rmpv::Value::Map(vec![(bin(b"t"), "ping".into()), (bin(b"id"), 1.into())]);
        let e = decode_client(&enc(&bin_keys)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        assert!(e.to_string().contains("map key is bin"), "{e}");
        for key in [rmpv::Value::from(0), rmpv::Value::Nil, true.into()] {
            let frame = rmpv::Value::Map(vec![
                ("t".into(), "ping".into()),
                ("id".into(), 1.into()),
                (key, 1.into()),
            ]);
            let e = decode_client(&enc(&frame)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Malformed, "{e}");
        }
        // A str key of invalid UTF-8.
        let e = decode_client(&[0x81, 0xa1, 0xff, 0x01]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
    }

    #[test]
    fn str_and_bin_are_not_interchangeable() {
        let e = decode_client(&pub_frame("r".into(), "x".into())).unwrap_err();
        assert_eq!((e.code(), e.id()), (ErrorCode::BadRequest, Some(4)));
        assert!(
            e.to_string().contains("`data`: expected bin, got str"),
            "{e}"
        );
        let e = decode_client(&pub_frame(bin(b"r"), bin(b"x"))).unwrap_err();
        assert_eq!((e.code(), e.id()), (ErrorCode::BadRequest, Some(4)));
        assert!(
            e.to_string().contains("`room`: expected str, got bin"),
            "{e}"
        );
        let bytes_as_array = rmpv::Value::Array(vec![1.into(), 2.into()]);
        let e = decode_client(&pub_frame("r".into(), bytes_as_array)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        // A str of invalid UTF-8 in a string field.
        let mut bytes = enc(&map(&[
            ("t", "get".into()),
            ("id", 2.into()),
            ("key", "k".into()),
        ]));
        bytes[0] += 1;
        bytes.extend_from_slice(&[0xa4, b'r', b'o', b'o', b'm', 0xa1, 0xff]);
        let e = decode_client(&bytes).unwrap_err();
        assert_eq!((e.code(), e.id()), (ErrorCode::BadRequest, Some(2)));
        for (field, v) in [
            ("mid", bin(b"m")),
            ("key", bin(b"k")),
            ("prefix", bin(b"p")),
            ("id", "1".into()),
            ("since", 1.5.into()),
            ("since", (-1).into()),
            ("state", 1.into()),
            ("limit", (u64::from(u32::MAX) + 1).into()),
        ] {
            let kind = match field {
                "mid" => "pub",
                "key" => "get",
                "prefix" | "limit" => "list",
                _ => "sub",
            };
            let mut pairs = vec![
                ("t", rmpv::Value::from(kind)),
                ("id", 3.into()),
                ("room", "r".into()),
                ("data", bin(b"")),
                ("key", "k".into()),
            ];
            pairs.retain(|(k, _)| *k != field);
            pairs.push((field, v));
            let e = decode_client(&enc(&map(&pairs))).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{field}: {e}");
            assert!(e.to_string().contains(&format!("`{field}`")), "{e}");
        }
    }

    #[test]
    fn fields_a_kind_does_not_read_are_skipped_whatever_their_type() {
        let frame = map(&[
            ("t", "ping".into()),
            ("id", 5.into()),
            ("room", 1.into()),
            ("data", "not bin".into()),
            ("x", rmpv::Value::Ext(1, vec![0])),
            (
                "nested",
                rmpv::Value::Map(vec![(1.into(), rmpv::Value::Array(vec![]))]),
            ),
        ]);
        assert_eq!(
            decode_client(&enc(&frame)).unwrap(),
            ClientFrame::Ping { id: 5 }
        );
    }

    #[test]
    fn duplicate_fields_are_bad_requests() {
        let frame = rmpv::Value::Map(vec![
            ("t".into(), "ping".into()),
            ("id".into(), 6.into()),
            ("id".into(), 7.into()),
        ]);
        let e = decode_client(&enc(&frame)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert!(e.to_string().contains("duplicate field `id`"), "{e}");
        // A field the kind does not read may repeat, like any key it ignores.
        let frame = rmpv::Value::Map(vec![
            ("t".into(), "ping".into()),
            ("id".into(), 6.into()),
            ("room".into(), "a".into()),
            ("room".into(), "b".into()),
        ]);
        assert_eq!(
            decode_client(&enc(&frame)).unwrap(),
            ClientFrame::Ping { id: 6 }
        );
    }

    #[test]
    fn truncated_and_hostile_lengths_are_malformed() {
        let ok = encode(&ClientFrame::Pub {
            id: 1,
            room: "r".into(),
            data: vec![7; 40],
            mid: Some("m".into()),
        });
        for cut in 0..ok.len() {
            let e = decode_client(&ok[..cut]).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Malformed, "cut at {cut}: {e}");
        }
        // A map32 claiming 2^32-1 entries, an array32 value claiming as many elements.
        let e = decode_client(&[0xdf, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        let e = decode_client(&[0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Malformed);
        // Nesting far deeper than any stack allows, in a skipped field and in a value field.
        let mut deep = vec![0x82, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g', 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        assert_eq!(
            decode_client(&deep).unwrap_err().code(),
            ErrorCode::BadRequest
        );
        let mut deep = enc(&map(&[
            ("t", "put".into()),
            ("id", 1.into()),
            ("room", "r".into()),
            ("key", "k".into()),
        ]));
        deep[0] += 1;
        deep.extend_from_slice(&[0xa5, b'v', b'a', b'l', b'u', b'e']);
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        let e = decode_client(&deep).unwrap_err();
        assert_eq!((e.code(), e.id()), (ErrorCode::BadRequest, Some(1)), "{e}");
    }

    #[test]
    fn values_keep_nil_and_everything_else_as_sent() {
        let value = rmpv::Value::Map(vec![(true.into(), rmpv::Value::Ext(3, vec![1]))]);
        for v in [rmpv::Value::Nil, value] {
            let frame = map(&[
                ("t", "put".into()),
                ("id", 1.into()),
                ("room", "r".into()),
                ("key", "k".into()),
                ("value", v.clone()),
            ]);
            // The decoder reads any value; the accepted subset is the request's check.
            match decode_client(&enc(&frame)).unwrap() {
                ClientFrame::Put { value, .. } => assert_eq!(value, v),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Every frame the typed encoder writes decodes back to itself.
    #[test]
    fn every_kind_round_trips() {
        let v = || Some(rmpv::Value::from("x"));
        let frames = [
            ClientFrame::Sub {
                id: 1,
                room: "r".into(),
                since: Some(3),
                state: Some(true),
                presence: Some(false),
                info: v(),
            },
            ClientFrame::Unsub {
                id: 2,
                room: "r".into(),
            },
            ClientFrame::Pub {
                id: u32::MAX,
                room: "r".into(),
                data: vec![0; 300],
                mid: Some("m".into()),
            },
            ClientFrame::Hist {
                id: 4,
                room: "r".into(),
                after: Some(u64::MAX),
                before: Some(9),
                limit: Some(10),
            },
            ClientFrame::Get {
                id: 5,
                room: "r".into(),
                key: "k".into(),
            },
            ClientFrame::List {
                id: 6,
                room: "r".into(),
                prefix: Some("p".into()),
                after: Some("a".into()),
                limit: Some(1),
            },
            ClientFrame::Put {
                id: 7,
                room: "r".into(),
                key: "k".into(),
                value: 1.into(),
                ttl_ms: Some(1500),
                ephemeral: false,
            },
            ClientFrame::Del {
                id: 8,
                room: "r".into(),
                key: "k".into(),
            },
            ClientFrame::Cas {
                id: 9,
                room: "r".into(),
                key: "k".into(),
                ver: 2,
                value: rmpv::Value::Nil,
                ttl_ms: None,
                ephemeral: false,
            },
            ClientFrame::Incr {
                id: 10,
                room: "r".into(),
                key: "k".into(),
                by: Some(i64::MIN),
            },
            ClientFrame::Who {
                id: 11,
                room: "r".into(),
            },
            ClientFrame::Ping { id: 0 },
            ClientFrame::Auth {
                id: 12,
                token: "a.b.c".into(),
            },
        ];
        for f in frames {
            assert_eq!(decode_client(&encode(&f)).unwrap(), f);
        }
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
