//! The NATS text protocol, enough of it for the benchmark: CONNECT, SUB, PUB, PING/PONG out;
//! INFO, MSG, PING, PONG, +OK, -ERR in. Over websocket the byte stream is cut into binary
//! frames at arbitrary points, so the parser keeps a partial command between frames; a frame
//! that holds only whole commands (the usual case) is parsed in place, without copying.

/// One command from the server, borrowed from the bytes it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Msg {
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// A message with headers (`HMSG`; JetStream's flow-control requests and heartbeats):
    /// `headers` is the header block, `payload` what follows it.
    HMsg {
        reply: Option<&'a [u8]>,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
    Info,
}

#[derive(Default)]
pub struct Parser {
    partial: Vec<u8>,
}

impl Parser {
    /// Feeds one frame's bytes, calling `f` for every complete command.
    pub fn feed<F: FnMut(Event<'_>)>(&mut self, data: &[u8], mut f: F) -> Result<(), String> {
        if self.partial.is_empty() {
            let used = parse_all(data, &mut f)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = parse_all(&self.partial, &mut f)?;
            self.partial.drain(..used);
        }
        Ok(())
    }
}

/// Parses every complete command; returns how many bytes were consumed.
fn parse_all<F: FnMut(Event<'_>)>(data: &[u8], f: &mut F) -> Result<usize, String> {
    let mut pos = 0;
    while let Some((event, used)) = parse_one(&data[pos..])? {
        f(event);
        pos += used;
    }
    Ok(pos)
}

fn find_crlf(d: &[u8]) -> Option<usize> {
    d.windows(2).position(|w| w == b"\r\n")
}

fn parse_one(d: &[u8]) -> Result<Option<(Event<'_>, usize)>, String> {
    let Some(eol) = find_crlf(d) else {
        return Ok(None);
    };
    let line = &d[..eol];
    let after = eol + 2;
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        let parts: Vec<&[u8]> = rest
            .split(|b| *b == b' ')
            .filter(|p| !p.is_empty())
            .collect();
        let (sid, reply, size) = match parts.as_slice() {
            [_subject, sid, size] => (*sid, None, *size),
            [_subject, sid, reply, size] => (*sid, Some(*reply), *size),
            _ => return Err(format!("bad MSG line {:?}", String::from_utf8_lossy(line))),
        };
        let size: usize = std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad MSG size".to_string())?;
        if d.len() < after + size + 2 {
            return Ok(None);
        }
        let payload = &d[after..after + size];
        return Ok(Some((
            Event::Msg {
                sid,
                reply,
                payload,
            },
            after + size + 2,
        )));
    }
    if let Some(rest) = line.strip_prefix(b"HMSG ") {
        return parse_hmsg(d, line, rest, after);
    }
    let event = match line {
        b"PING" => Event::Ping,
        b"PONG" => Event::Pong,
        b"+OK" => Event::Ok,
        l if l.starts_with(b"-ERR") => Event::Err(&l[4..]),
        l if l.starts_with(b"INFO") => Event::Info,
        l => {
            return Err(format!(
                "unexpected NATS command {:?}",
                String::from_utf8_lossy(l)
            ))
        }
    };
    Ok(Some((event, after)))
}

/// `HMSG subject sid [reply] header-len total-len`, then the headers and the payload.
fn parse_hmsg<'a>(
    d: &'a [u8],
    line: &[u8],
    rest: &'a [u8],
    after: usize,
) -> Result<Option<(Event<'a>, usize)>, String> {
    let parts: Vec<&[u8]> = rest
        .split(|b| *b == b' ')
        .filter(|p| !p.is_empty())
        .collect();
    let (reply, hlen, total) = match parts.as_slice() {
        [_subject, _sid, hlen, total] => (None, *hlen, *total),
        [_subject, _sid, reply, hlen, total] => (Some(*reply), *hlen, *total),
        _ => return Err(format!("bad HMSG line {:?}", String::from_utf8_lossy(line))),
    };
    let num = |b: &[u8]| -> Result<usize, String> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad HMSG size".to_string())
    };
    let (hlen, total) = (num(hlen)?, num(total)?);
    if hlen > total {
        return Err("HMSG header longer than the message".into());
    }
    if d.len() < after + total + 2 {
        return Ok(None);
    }
    let event = Event::HMsg {
        reply,
        headers: &d[after..after + hlen],
        payload: &d[after + hlen..after + total],
    };
    Ok(Some((event, after + total + 2)))
}

/// Appends `PUB subject [reply] len\r\npayload\r\n`.
pub fn put_pub(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    if let Some(r) = reply {
        out.extend_from_slice(r.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The CONNECT line (no verbose +OKs, no headers) followed by a PING.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false,\"no_responders\":false,\"name\":\"roomd-bench\",\"lang\":\"rust\",\"version\":\"0.1.0\"}\r\nPING\r\n";

/// CONNECT with headers on (JetStream's flow control and heartbeats come as `HMSG`).
pub const CONNECT_HEADERS: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":true,\"no_responders\":false,\"name\":\"roomd-bench\",\"lang\":\"rust\",\"version\":\"0.1.0\"}\r\nPING\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_across_frame_boundaries() {
        let stream = b"INFO {}\r\nMSG a.b 1 5\r\nhello\r\nPING\r\nMSG x 2 _INBOX.1 2\r\nok\r\nHMSG d 1 $JS.FC.x 12 12\r\nNATS/1.0\r\n\r\n\r\n";
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut seen = Vec::new();
            let mut record = |e: Event<'_>| {
                seen.push(match e {
                    Event::Msg {
                        sid,
                        reply,
                        payload,
                    } => format!(
                        "msg {} {:?} {}",
                        String::from_utf8_lossy(sid),
                        reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                        String::from_utf8_lossy(payload)
                    ),
                    Event::HMsg {
                        reply,
                        headers,
                        payload,
                    } => format!(
                        "hmsg {:?} {} {}",
                        reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                        headers.len(),
                        payload.len()
                    ),
                    other => format!("{other:?}"),
                })
            };
            p.feed(&stream[..cut], &mut record).unwrap();
            p.feed(&stream[cut..], &mut record).unwrap();
            assert_eq!(
                seen,
                [
                    "Info",
                    "msg 1 None hello",
                    "Ping",
                    "msg 2 Some(\"_INBOX.1\") ok",
                    "hmsg Some(\"$JS.FC.x\") 12 0"
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn encodes_pub() {
        let mut out = Vec::new();
        put_pub(&mut out, "s", Some("r"), b"xy");
        assert_eq!(out, b"PUB s r 2\r\nxy\r\n");
    }
}
