//! Byte layout of stored log entries and state values.
//!
//! A log record keeps the event frame exactly as it is delivered, so replaying history costs
//! no re-encoding: `ts (u64 BE) | dedup key length (u8) | dedup key | frame`.
//! A state record is `version (u64 BE) | MessagePack value`.

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

pub(crate) fn encode_state(ver: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&ver.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_state(raw: &[u8]) -> Option<(u64, &[u8])> {
    let ver = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    Some((ver, &raw[8..]))
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
        let raw = encode_state(3, b"\x07");
        assert_eq!(decode_state(&raw), Some((3, &b"\x07"[..])));
    }
}
