//! Durable publishes through roomd's server API: `POST /api/v1/rooms/{room}/messages` over one
//! HTTP/1.1 keep-alive connection per publisher, one request in flight, answered once the
//! message is durable. Measured beside the same publishes over WebSocket.

use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use crate::client::{DurableArgs, PubResult};
use crate::{clock, stats, track, BenchError};

/// The key the benchmark's roomd config gives the publishers (scope `publish`).
pub const KEY: &str = "roomd-bench-api-key-0123456789";

/// The `[[api.keys]]` entry for [`KEY`], for the generated roomd config.
pub const KEY_TOML: &str = "[[api.keys]]\nname = \"bench\"\nkey = \"roomd-bench-api-key-0123456789\"\nscopes = [\"publish\"]\n";

async fn connect(addr: SocketAddr, src: Ipv4Addr) -> Result<tokio::net::TcpStream, BenchError> {
    let sock = TcpSocket::new_v4().map_err(|e| BenchError::io("socket", e))?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| BenchError::io("bind source address", e))?;
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| BenchError::io("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("nodelay", e))?;
    Ok(stream)
}

pub async fn durable_publisher(
    addr: SocketAddr,
    args: DurableArgs,
) -> Result<PubResult, BenchError> {
    let opened = connect(addr, args.src).await;
    args.ready.wait().await;
    let (read, mut write) = opened?.into_split();
    let mut read = BufReader::new(read);
    let rooms: Vec<String> = (0..args.rooms).map(|r| format!("durable-{r}")).collect();
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut request = Vec::with_capacity(512);
    let mut line = String::new();
    let mut body = Vec::new();
    let mut r = PubResult::default();
    let end = std::time::Instant::now() + args.duration;
    while std::time::Instant::now() < end {
        let room = &rooms[args.room_index(r.sent)];
        let t0 = clock::now_ns();
        track::stamp(&mut payload, t0, args.index as u32, r.sent as u32);
        let json = format!(
            "{{\"data_b64\":\"{}\"}}",
            base64::engine::general_purpose::STANDARD.encode(&payload)
        );
        request.clear();
        request.extend_from_slice(
            format!(
                "POST /api/v1/rooms/{room}/messages HTTP/1.1\r\nHost: bench\r\n\
                 Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{json}",
                json.len()
            )
            .as_bytes(),
        );
        write
            .write_all(&request)
            .await
            .map_err(|e| BenchError::io("write request", e))?;
        r.sent += 1;
        // The status line, the headers (for the length), the body.
        line.clear();
        read.read_line(&mut line)
            .await
            .map_err(|e| BenchError::io("read status", e))?;
        let ok = line.starts_with("HTTP/1.1 200");
        let mut len = 0usize;
        loop {
            line.clear();
            read.read_line(&mut line)
                .await
                .map_err(|e| BenchError::io("read header", e))?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(len, 0);
        read.read_exact(&mut body)
            .await
            .map_err(|e| BenchError::io("read body", e))?;
        if ok {
            stats::record(clock::now_ns() - t0);
            r.accepted += 1;
        } else {
            r.errors += 1;
        }
    }
    Ok(r)
}
