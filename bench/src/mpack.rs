//! A small MessagePack scanner and encoder for the hot path.
//!
//! Deliveries are read in place: the scanner walks the top-level map of a server frame and
//! borrows the few fields the benchmark needs (`t`, `id`, `seq`, `code`, `data`), skipping the
//! rest without allocating. Publishes are encoded by hand into a reused buffer. Everything else
//! (hello, subbed, errors) is rare and goes through `roomd_protocol::decode_server`.

/// The fields of a server frame the benchmark looks at, borrowed from the frame bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub t: &'a [u8],
    pub id: Option<u64>,
    pub seq: Option<u64>,
    pub code: Option<u64>,
    pub data: Option<&'a [u8]>,
}

/// Scans one frame; `None` if it is not a well-formed map with string keys.
pub fn scan(buf: &[u8]) -> Option<Scanned<'_>> {
    let mut r = Reader { buf, pos: 0 };
    let len = r.map_len()?;
    let mut out = Scanned::default();
    for _ in 0..len {
        let key = r.str()?;
        match key {
            b"t" => out.t = r.str()?,
            b"id" => out.id = r.uint_or_nil()?,
            b"seq" => out.seq = r.uint_or_nil()?,
            b"code" => out.code = r.uint_or_nil()?,
            b"data" => out.data = Some(r.bin()?),
            _ => r.skip()?,
        }
    }
    Some(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(u64::from(b & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => u64::from(b & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    fn uint_or_nil(&mut self) -> Option<Option<u64>> {
        Some(match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xc0 => None,
            0xcc => Some(self.be(1)?),
            0xcd => Some(self.be(2)?),
            0xce => Some(self.be(4)?),
            0xcf => Some(self.be(8)?),
            _ => return None,
        })
    }

    /// Skips one value of any type, nested containers included, without recursion.
    fn skip(&mut self) -> Option<()> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let b = self.byte()?;
            let (skip_bytes, children): (u64, u64) = match b {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(b & 0x0f)),
                0x90..=0x9f => (0, u64::from(b & 0x0f)),
                0xa0..=0xbf => (u64::from(b & 0x1f), 0),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
                0xc1 => return None,
            };
            self.take(usize::try_from(skip_bytes).ok()?)?;
            pending = pending.checked_add(children)?;
        }
        Some(())
    }
}

/// Encodes `{t:"pub", id, room, data}` into `out` (cleared first).
pub fn encode_pub(out: &mut Vec<u8>, id: u32, room: &str, data: &[u8]) {
    use rmp::encode as e;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = e::write_map_len(out, 4);
    let _ = e::write_str(out, "t");
    let _ = e::write_str(out, "pub");
    let _ = e::write_str(out, "id");
    let _ = e::write_uint(out, u64::from(id));
    let _ = e::write_str(out, "room");
    let _ = e::write_str(out, room);
    let _ = e::write_str(out, "data");
    let _ = e::write_bin(out, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomd_protocol::{encode, ClientFrame, ServerFrame};

    #[test]
    fn scans_msg_and_skips_unknown_fields() {
        let frame = ServerFrame::Msg {
            room: "r".into(),
            seq: 70_000,
            ts: 1_700_000_000_000,
            from: "c1".into(),
            uid: Some("u".into()),
            data: vec![7; 300],
            deleted: None,
            edited: None,
            edits: None,
        };
        let bytes = encode(&frame);
        let s = scan(&bytes).unwrap();
        assert_eq!(s.t, b"msg");
        assert_eq!(s.seq, Some(70_000));
        assert_eq!(s.data.unwrap(), &[7u8; 300][..]);

        let err = ServerFrame::Err {
            id: Some(5),
            code: 503,
            msg: "busy".into(),
            ver: None,
            max: Some(1 << 40),
            retry_after_ms: None,
        };
        let bytes = encode(&err);
        let s = scan(&bytes).unwrap();
        assert_eq!((s.t, s.id, s.code), (&b"err"[..], Some(5), Some(503)));
    }

    #[test]
    fn skips_nested_values() {
        let frame = ServerFrame::Hello {
            v: 1,
            server: "roomd/0.1.0".into(),
            conn: "c".into(),
            node: None,
            user: None,
            ping: 20,
            limits: roomd_protocol::Limits {
                frame: 1,
                payload: 2,
                room: 3,
                key: 4,
                value: 5,
                info: 6,
                subs: 7,
                page: 8,
                keys: 9,
                mid: 10,
            },
        };
        assert_eq!(scan(&encode(&frame)).unwrap().t, b"hello");
        assert_eq!(scan(b"\x81\xa1t"), None);
    }

    #[test]
    fn hand_encoded_pub_decodes() {
        let mut out = Vec::new();
        encode_pub(&mut out, 42, "room-1", &[1, 2, 3]);
        assert_eq!(
            roomd_protocol::decode_client(&out).unwrap(),
            ClientFrame::Pub {
                id: 42,
                room: "room-1".into(),
                data: vec![1, 2, 3],
                mid: None
            }
        );
    }
}
