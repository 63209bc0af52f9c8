//! Byte layout of stored log entries and state values.
//!
//! A log record keeps the event frame exactly as it is delivered, so replaying history costs
//! no re-encoding: `ts (u64 BE) | dedup key length (u8) | dedup key | frame`.
//! A state record is `version (u64 BE) | MessagePack value`, or, for a key written with a
//! lifetime (SPEC.md 4.13), `version | EXPIRES | deadline (Unix ms, u64 BE) | MessagePack value`:
//! the top bit of the version word says a deadline follows. The next bit marks a key written
//! with `ephemeral` (SPEC.md 4.14): it belongs to a connection, and no connection outlives the
//! process, so a loaded one is an orphan to delete. Versions count writes of one key and never
//! come near 2^62, so records written before these flags existed read unchanged.

/// Builds a log record around an encoded event frame.
pub(crate) fn encode_log(ts: u64, dedup: Option<&str>, frame: &[u8]) -> Vec<u8> {
    let dedup = dedup.unwrap_or("");
    debug_assert!(dedup.len() <= u8::MAX as usize);
    let mut out = Vec::with_capacity(9 + dedup.len() + frame.len());
    out.extend_from_slice(&ts.to_be_bytes());
    // The key is a client id (at most 64 bytes) and a `mid` (at most 128): it fits the length
    // byte. Were it ever longer it would be cut, consistently, rather than corrupt the record.
    let len = u8::try_from(dedup.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&dedup.as_bytes()[..usize::from(len)]);
    out.extend_from_slice(frame);
    out
}

/// A decoded view of a log record.
pub(crate) struct LogRecord<'a> {
    pub ts: u64,
    pub dedup: Option<&'a str>,
    pub frame: &'a [u8],
}

pub(crate) fn decode_log(raw: &[u8]) -> Option<LogRecord<'_>> {
    let ts = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    let len = *raw.get(8)? as usize;
    let dedup = std::str::from_utf8(raw.get(9..9 + len)?).ok()?;
    let frame = raw.get(9 + len..)?;
    Some(LogRecord {
        ts,
        dedup: (!dedup.is_empty()).then_some(dedup),
        frame,
    })
}

/// A `MIDS` row: `ts (u64 BE) | dedup key`.
pub(crate) fn encode_mid(ts: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn decode_mid(raw: &[u8]) -> Option<(u64, &str)> {
    let ts = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    Some((ts, std::str::from_utf8(&raw[8..]).ok()?))
}

/// The top bit of a state record's version word: a deadline follows it.
const EXPIRES: u64 = 1 << 63;
/// The next bit: the key was written with `ephemeral` (SPEC.md 4.14).
const EPHEMERAL: u64 = 1 << 62;

/// A decoded view of a state record.
#[derive(Debug, PartialEq)]
pub(crate) struct StateRecord<'a> {
    pub ver: u64,
    /// When the key expires (Unix ms).
    pub exp: Option<u64>,
    /// Written with `ephemeral` (SPEC.md 4.14).
    pub ephemeral: bool,
    pub value: &'a [u8],
}

pub(crate) fn encode_state(ver: u64, exp: Option<u64>, ephemeral: bool, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    let ver = if ephemeral { ver | EPHEMERAL } else { ver };
    match exp {
        Some(exp) => {
            out.extend_from_slice(&(ver | EXPIRES).to_be_bytes());
            out.extend_from_slice(&exp.to_be_bytes());
        }
        None => out.extend_from_slice(&ver.to_be_bytes()),
    }
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_state(raw: &[u8]) -> Option<StateRecord<'_>> {
    let word = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    let ver = word & !(EXPIRES | EPHEMERAL);
    let ephemeral = word & EPHEMERAL != 0;
    if word & EXPIRES == 0 {
        return Some(StateRecord {
            ver,
            exp: None,
            ephemeral,
            value: &raw[8..],
        });
    }
    let exp = u64::from_be_bytes(raw.get(8..16)?.try_into().ok()?);
    Some(StateRecord {
        ver,
        exp: Some(exp),
        ephemeral,
        value: &raw[16..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trip() {
        let raw = encode_log(42, Some("c1\0m7"), b"\x81\xa1t\xa3msg");
        let r = decode_log(&raw).unwrap();
        assert_eq!(
            (r.ts, r.dedup, r.frame),
            (42, Some("c1\0m7"), &b"\x81\xa1t\xa3msg"[..])
        );
        let raw = encode_log(1, None, b"x");
        assert_eq!(decode_log(&raw).unwrap().dedup, None);
        assert!(decode_log(&raw[..5]).is_none());
    }

    #[test]
    fn state_round_trip() {
        // The layout of records written before deadlines existed.
        let old = [0, 0, 0, 0, 0, 0, 0, 3, 7];
        assert_eq!(encode_state(3, None, false, b"\x07"), old);
        let plain = StateRecord {
            ver: 3,
            exp: None,
            ephemeral: false,
            value: &b"\x07"[..],
        };
        assert_eq!(decode_state(&old), Some(plain));
        let raw = encode_state(3, Some(1_700_000_000_000), false, b"\x07");
        let timed = StateRecord {
            ver: 3,
            exp: Some(1_700_000_000_000),
            ephemeral: false,
            value: &b"\x07"[..],
        };
        assert_eq!(decode_state(&raw), Some(timed));
        assert!(decode_state(&raw[..12]).is_none());
        for exp in [None, Some(9)] {
            let raw = encode_state(5, exp, true, b"\x07");
            let owned = decode_state(&raw).unwrap();
            assert_eq!((owned.ver, owned.exp, owned.ephemeral), (5, exp, true));
        }
    }
}
