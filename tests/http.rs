//! The HTTP side of the one port, the command line, and embedding the broker as a library.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{Broker, Client};
use roomd::{Config, Server};
use roomd_protocol::ServerFrame;

#[tokio::test]
async fn healthz_metrics_and_ui_are_served() {
    let b = Broker::start("");
    assert_eq!(b.http_get("/healthz").await, (200, "ok\n".to_string()));
    let (status, page) = b.http_get("/").await;
    assert_eq!(status, 200);
    assert!(page.to_lowercase().contains("<!doctype html>"));
    assert_eq!(b.http_get("/nope").await.0, 404);
    // Traffic, then the metrics the issue names are all exported.
    let mut s = Client::connect(&b).await;
    s.sub("m", None).await;
    let mut p = Client::connect(&b).await;
    p.publish_seq("m", b"x").await;
    s.msg().await;
    let (status, text) = b.http_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "roomd_connections ",
        "roomd_connections_total",
        "roomd_rooms_active",
        "roomd_messages_published_total",
        "roomd_messages_delivered_total",
        "roomd_bytes_in_total",
        "roomd_bytes_out_total",
        "roomd_publish_ack_seconds_bucket",
        "roomd_commit_seconds_bucket",
        "roomd_commit_batch_entries_bucket",
    ] {
        assert!(text.contains(name), "metric {name} missing from:\n{text}");
    }
    assert!(b.metric("roomd_messages_published_total").await >= 1.0);
    assert!(b.metric("roomd_connections ").await >= 2.0);
}

#[test]
fn help_and_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("roomd "));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--data-dir"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn bad_config_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[storage]\ndurability = \"sometimes\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("durability"));
}

#[test]
fn shipped_config_parses_and_equals_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/roomd.toml");
    let c = Config::from_file(std::path::Path::new(path)).unwrap();
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

#[tokio::test]
async fn the_broker_embeds_as_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.data_dir = dir.path().join("data");
    let server = Server::start(config).await.unwrap();
    let addr = server.local_addr();
    let mut c = Client::connect_url(&format!("ws://{addr}/ws")).await;
    assert!(matches!(
        c.sub("lib", None).await,
        ServerFrame::Subbed { .. }
    ));
    assert_eq!(c.publish_seq("lib", b"embedded").await, 1);
    server.shutdown().await;
    assert!(std::path::Path::new(&dir.path().join("data/roomd.redb")).exists());
}

/// A client may send its first frames right behind the handshake, before it reads the `101`:
/// those bytes reach the HTTP layer's buffer, not the socket, and must still be read as frames.
#[tokio::test]
async fn frames_sent_with_the_handshake_are_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Broker::start("");
    let url = b.ws_url("");
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    let body = roomd_protocol::codec::encode(&roomd_protocol::ClientFrame::Ping { id: 7 });
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    bytes.extend_from_slice(&[0x82, 0x80 | body.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(body.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    assert!(matches!(
        common::read_frame(&mut ws).await,
        Some(ServerFrame::Hello { .. })
    ));
    assert_eq!(
        common::read_frame(&mut ws).await,
        Some(ServerFrame::Pong { id: 7 })
    );
}

/// The listen queue's length, as `ss` reads it off the listening socket (its Send-Q).
fn listen_backlog(addr: &str) -> u32 {
    let port = addr.rsplit(':').next().unwrap();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {addr}"));
    // State Recv-Q Send-Q Local Peer
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn the_listen_queue_is_as_configured() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let b = Broker::start("");
    // The default, 4096, within the kernel's cap (the runtime's own default would be 128).
    assert_eq!(listen_backlog(&b.addr), 4096.min(somaxconn));
    let b = Broker::start("[server]\nlisten_backlog = 333\n");
    assert_eq!(listen_backlog(&b.addr), 333.min(somaxconn));
}
