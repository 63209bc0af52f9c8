//! No client can hold the server's sockets: slow or silent HTTP connections are closed, every
//! TCP connection counts against the connection limits from accept, over-limit connections get
//! a brief answer, and the WebSocket handshake and framing rules of RFC 6455 are enforced.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::Duration;

use common::{Broker, Client};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

async fn tcp(b: &Broker) -> TcpStream {
    TcpStream::connect(&b.addr).await.unwrap()
}

/// Reads until the server closes the socket; returns what it sent, or panics after `within`.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the socket open past {within:?}"
    );
    out
}

/// Sends a raw HTTP request and returns the response head (status line and headers).
async fn raw_request(b: &Broker, request: &str) -> String {
    let mut s = tcp(b).await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response head within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a response head: {out:?}");
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_request(method: &str, version: &str, key: &str, ws_version: &str) -> String {
    format!(
        "{method} /ws {version}\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {ws_version}\r\n\r\n"
    )
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn close_code_of(ws: &mut common::Ws) -> Option<u16> {
    loop {
        match futures_util::StreamExt::next(ws).await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_slow_request_head_is_closed_after_the_header_timeout() {
    let b = Broker::start("[server]\nheader_timeout_ms = 300\n");
    let mut s = tcp(&b).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_to_close(&mut s, Duration::from_secs(5)).await;
    // A silent socket too.
    let mut silent = tcp(&b).await;
    read_to_close(&mut silent, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let b = Broker::start("[server]\nheader_timeout_ms = 300\n");
    let mut s = tcp(&b).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn tcp_connections_count_against_max_connections_before_the_upgrade() {
    let b = Broker::start("[server]\nmax_connections = 3\n");
    let idle = [tcp(&b).await, tcp(&b).await, tcp(&b).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    // At the limit: a WebSocket is closed with 4002, /healthz still answers.
    let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    assert_eq!(close_code_of(&mut ws).await, Some(4002));
    assert_eq!(b.http_get("/healthz").await.0, 200);
    assert_eq!(b.http_get("/").await.0, 503);
    // The idle sockets go: new clients are served at once.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::connect(&b).await;
    c.sub("r", None).await;
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share() {
    let b = Broker::start("[server]\nmax_connections_per_ip = 2\n");
    let _idle = [tcp(&b).await, tcp(&b).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    assert_eq!(close_code_of(&mut ws).await, Some(4002));
    // Another address is not affected.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(b.addr.parse().unwrap()).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(b.ws_url(""), stream)
        .await
        .unwrap();
    let hello = common::read_frame(&mut ws).await;
    assert!(
        matches!(hello, Some(roomd_protocol::ServerFrame::Hello { .. })),
        "{hello:?}"
    );
}

#[tokio::test]
async fn handshakes_that_break_rfc_6455_are_refused() {
    let b = Broker::start("");
    let head = raw_request(&b, &upgrade_request("HEAD", "HTTP/1.1", KEY, "13")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let old = raw_request(&b, &upgrade_request("GET", "HTTP/1.0", KEY, "13")).await;
    assert!(
        old.starts_with("HTTP/1.0 400") || old.starts_with("HTTP/1.1 400"),
        "{old}"
    );
    let bad_key = raw_request(&b, &upgrade_request("GET", "HTTP/1.1", "abc", "13")).await;
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
    let v8 = raw_request(&b, &upgrade_request("GET", "HTTP/1.1", KEY, "8")).await;
    assert!(v8.starts_with("HTTP/1.1 426"), "{v8}");
    assert!(
        v8.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{v8}"
    );
    // The same request with a valid key and version is upgraded.
    let ok = raw_request(&b, &upgrade_request("GET", "HTTP/1.1", KEY, "13")).await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
}

#[tokio::test]
async fn a_text_frame_with_invalid_utf8_is_closed_with_1007() {
    let b = Broker::start("");
    let c = Client::connect(&b).await;
    let mut ws = c.ws;
    let mut frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([1, 2, 3, 4]);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code_of(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn fragments_past_the_frame_limit_get_1009_not_a_reset() {
    let b =
        Broker::start("[websocket]\nmax_frame_bytes = 70000\n[limits]\npayload_bytes = 65536\n");
    let c = Client::connect(&b).await;
    let mut ws = c.ws;
    // A client that keeps sending fragments of one message: the server must close with 1009
    // and the client must be able to read that, rather than see its connection reset.
    let sender = async {
        for i in 0..200 {
            let op = if i == 0 {
                OpCode::Data(Data::Binary)
            } else {
                OpCode::Data(Data::Continue)
            };
            let mut frame = Frame::message(vec![7u8; 16 * 1024], op, false);
            frame.header_mut().mask = Some([9, 8, 7, 6]);
            if ws.send(Message::Frame(frame)).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    assert_eq!(close_code_of(&mut ws).await, Some(1009));
}
