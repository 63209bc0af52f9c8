//! A minimal WebSocket client, written for the load generator's hot path.
//!
//! A general-purpose client allocates an owned buffer per message; a subscriber of a fan-out
//! receives hundreds of thousands of small messages per second per core, so here frames are
//! parsed in place in one read buffer per connection and handed out as borrowed slices. The
//! opening handshake uses tungstenite's key helpers; client frames are masked with a zero key
//! (allowed by RFC 6455, and free).
//!
//! Connections are made from chosen loopback source addresses: ten thousand connections from
//! one address to one server port would need ten thousand ephemeral ports from one range, plus
//! the TIME_WAIT ones of the previous run; spreading them over 127.0.0.1..127.0.0.N keeps every
//! run within bounds.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::BenchError;

/// How many loopback source addresses connections are spread over.
const SOURCES: u32 = 32;

/// The source address for the `i`-th connection of a run.
pub fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES) as u8)
}

/// Where to connect and how.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub subprotocol: Option<&'static str>,
    /// Initial read buffer per connection: small for idle connections, larger for busy ones.
    pub read_buffer: usize,
}

/// One received frame, borrowed from the connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A binary or text frame, or a continuation of one (NATS treats them all as a byte stream).
    Data(&'a [u8]),
    /// The peer closed, with its close code if it sent one.
    Close(Option<u16>),
}

/// The receiving half.
pub struct Reader {
    io: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A ping arrived whose pong has not been sent yet (payload kept for the reply).
    pending_pong: Option<Vec<u8>>,
}

/// The sending half: frames are appended to a buffer and written with `flush`.
pub struct Writer {
    io: OwnedWriteHalf,
    out: Vec<u8>,
}

/// A connection: both halves.
pub struct Ws {
    pub reader: Reader,
    pub writer: Writer,
}

fn proto(msg: impl Into<String>) -> BenchError {
    BenchError::Protocol(msg.into())
}

pub async fn connect(target: &Target, src: Ipv4Addr) -> Result<Ws, BenchError> {
    let sock = TcpSocket::new_v4().map_err(|e| BenchError::io("socket", e))?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| BenchError::io("bind source address", e))?;
    let stream = sock
        .connect(target.addr)
        .await
        .map_err(|e| BenchError::io("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("nodelay", e))?;
    let (r, w) = stream.into_split();
    let mut ws = Ws {
        reader: Reader {
            io: r,
            buf: vec![0; target.read_buffer.max(512)],
            start: 0,
            end: 0,
            pending_pong: None,
        },
        writer: Writer {
            io: w,
            out: Vec::new(),
        },
    };
    let key = generate_key();
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path, target.addr
    );
    if let Some(p) = target.subprotocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req.push_str("\r\n");
    ws.writer.out.extend_from_slice(req.as_bytes());
    ws.writer.flush().await?;
    let head = ws.reader.read_http_head().await?;
    let status_ok = head.starts_with("HTTP/1.1 101");
    let accept = derive_accept_key(key.as_bytes());
    let accepted = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
        })
    });
    if !status_ok || !accepted {
        let first = head.lines().next().unwrap_or("").to_string();
        return Err(proto(format!("websocket upgrade refused: {first}")));
    }
    Ok(ws)
}

impl Reader {
    /// Reads the HTTP response head; bytes after it stay buffered as frames.
    async fn read_http_head(&mut self) -> Result<String, BenchError> {
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..i]).into_owned();
                self.start += i + 4;
                return Ok(head);
            }
            if self.end - self.start > 16 * 1024 {
                return Err(proto("HTTP response head too long"));
            }
            self.fill(1).await?;
        }
    }

    /// Makes room for at least `need` unread bytes and reads once.
    async fn fill(&mut self, need: usize) -> Result<(), BenchError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() || self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need || self.end == self.buf.len() {
                let len = need.max(self.buf.len() * 2);
                self.buf.resize(len, 0);
            }
        }
        let n = self
            .io
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| BenchError::io("read", e))?;
        if n == 0 {
            return Err(proto("connection closed without a close frame"));
        }
        self.end += n;
        Ok(())
    }

    /// The next data or close frame; pings are remembered for [`Ws::next`] to answer.
    /// Cancel safe: a read that completes is recorded before anything else can happen.
    pub async fn next(&mut self) -> Result<Frame<'_>, BenchError> {
        loop {
            let data = &self.buf[self.start..self.end];
            let Some((opcode, header, len)) = parse_header(data)? else {
                let need = parse_len(data).unwrap_or(14);
                self.fill(need).await?;
                continue;
            };
            let from = self.start + header;
            let to = from + len;
            self.start = to;
            match opcode {
                0x0..=0x2 => return Ok(Frame::Data(&self.buf[from..to])),
                0x8 => {
                    let code = (len >= 2)
                        .then(|| u16::from_be_bytes([self.buf[from], self.buf[from + 1]]));
                    return Ok(Frame::Close(code));
                }
                0x9 => self.pending_pong = Some(self.buf[from..to].to_vec()),
                _ => {} // pong or reserved: ignore
            }
        }
    }
}

/// The length of the whole frame at the start of `d`, once its header is complete.
fn parse_len(d: &[u8]) -> Option<usize> {
    if d.len() < 2 {
        return None;
    }
    let (header, len) = match d[1] & 0x7f {
        126 if d.len() >= 4 => (4, u16::from_be_bytes([d[2], d[3]]) as usize),
        127 if d.len() >= 10 => (10, u64::from_be_bytes(d[2..10].try_into().ok()?) as usize),
        126 | 127 => return None,
        n => (2, n as usize),
    };
    Some(header + len)
}

/// `(opcode, header length, payload length)` of a complete frame at the start of `d`.
fn parse_header(d: &[u8]) -> Result<Option<(u8, usize, usize)>, BenchError> {
    let Some(total) = parse_len(d) else {
        return Ok(None);
    };
    if d[1] & 0x80 != 0 {
        return Err(proto("server frames must not be masked"));
    }
    if d.len() < total {
        return Ok(None);
    }
    let header = match d[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Ok(Some((d[0] & 0x0f, header, total - header)))
}

impl Writer {
    fn put_frame(&mut self, opcode: u8, payload: &[u8]) {
        let out = &mut self.out;
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // Mask key 0: the payload goes out as is.
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
    }

    /// Queues one binary message; nothing is sent before [`Writer::flush`].
    pub fn feed(&mut self, payload: &[u8]) {
        self.put_frame(0x2, payload);
    }

    /// Writes everything queued, in as few syscalls as the kernel allows.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.io.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|e| BenchError::io("write", e))
    }

    pub async fn send(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        self.feed(payload);
        self.flush().await
    }

    /// Sends a close frame (normal closure) and shuts the socket down.
    pub async fn close(&mut self) {
        self.put_frame(0x8, &1000u16.to_be_bytes());
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

impl Ws {
    /// Answers a ping that arrived during the last [`Reader::next`], if any.
    pub async fn answer_ping(&mut self) -> Result<(), BenchError> {
        if let Some(p) = self.reader.pending_pong.take() {
            self.writer.put_frame(0xA, &p);
            self.writer.flush().await?;
        }
        Ok(())
    }

    pub async fn close(mut self) {
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(parse_header(&[0x82, 3, 1, 2]).unwrap(), None);
        assert_eq!(parse_header(&[0x82, 3, 1, 2, 3]).unwrap(), Some((2, 2, 3)));
        let mut long = vec![0x82, 126, 1, 0];
        long.resize(4 + 256, 7);
        assert_eq!(parse_header(&long).unwrap(), Some((2, 4, 256)));
        assert_eq!(parse_len(&[0x82, 127, 0, 0]), None);
        assert!(parse_header(&[0x82, 0x81, 0, 0, 0, 0, 1]).is_err());
    }
}
