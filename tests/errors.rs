//! Bad input: every error code of SPEC.md section 6 and every close code the server sends
//! comes out where the spec says, and the broker and other clients carry on.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::Duration;

use common::{err_code, hs256, Broker, Client};
use roomd_protocol::{codec, ClientFrame, ErrorCode, ServerFrame, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn raw_map(pairs: &[(&str, Value)]) -> Vec<u8> {
    let v = Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    out
}

/// Reads a raw client socket until the server's close frame; its code.
async fn close_code_of(ws: &mut common::Ws) -> Option<u16> {
    loop {
        match futures_util::StreamExt::next(ws).await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn next_err(c: &mut Client) -> ServerFrame {
    let f = c.event().await;
    assert!(matches!(f, ServerFrame::Err { .. }), "{f:?}");
    f
}

#[tokio::test]
async fn malformed_frames_get_400_and_the_connection_carries_on() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let mut other = Client::connect(&b).await;
    other.sub("r", None).await;
    // Not MessagePack, a MessagePack non-map, trailing bytes, and a text frame.
    c.send_raw(Message::Binary(vec![0xc1, 0xff, 0x00].into()))
        .await;
    assert!(matches!(
        next_err(&mut c).await,
        ServerFrame::Err {
            id: None,
            code: 400,
            ..
        }
    ));
    c.send_raw(Message::Binary(vec![0x93, 1, 2, 3].into()))
        .await;
    assert_eq!(err_code(&next_err(&mut c).await), 400);
    let mut trailing = codec::encode(&ClientFrame::Ping { id: 1 });
    trailing.push(0xc0);
    c.send_raw(Message::Binary(trailing.into())).await;
    assert_eq!(err_code(&next_err(&mut c).await), 400);
    c.send_raw(Message::Text("{\"t\":\"ping\"}".into())).await;
    assert_eq!(err_code(&next_err(&mut c).await), 400);
    // Still usable, and so is everyone else.
    assert_eq!(c.publish_seq("r", b"ok").await, 1);
    assert_eq!(other.msg().await, (1, b"ok".to_vec()));
    assert!(b.metric("roomd_errors_total{code=\"400\"").await >= 4.0);
}

#[tokio::test]
async fn unknown_kind_405_and_wrong_types_406_echo_the_id() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    c.send_raw(Message::Binary(
        raw_map(&[("t", "frobnicate".into()), ("id", 7.into())]).into(),
    ))
    .await;
    assert!(matches!(
        c.reply_to(7).await,
        ServerFrame::Err { code: 405, .. }
    ));
    c.send_raw(Message::Binary(
        raw_map(&[
            ("t", "pub".into()),
            ("id", 8.into()),
            ("room", 5.into()),
            ("data", "x".into()),
        ])
        .into(),
    ))
    .await;
    assert!(matches!(
        c.reply_to(8).await,
        ServerFrame::Err { code: 406, .. }
    ));
    c.send_raw(Message::Binary(
        raw_map(&[("t", "sub".into()), ("id", 9.into())]).into(),
    ))
    .await;
    assert!(matches!(
        c.reply_to(9).await,
        ServerFrame::Err { code: 406, .. }
    ));
    let id = c.id();
    let r = c
        .request(ClientFrame::Hist {
            id,
            room: "r".into(),
            after: None,
            before: None,
            limit: Some(0),
        })
        .await;
    assert_eq!(err_code(&r), 406);
    let id = c.id();
    let r = c
        .request(ClientFrame::Get {
            id,
            room: "r".into(),
            key: "".into(),
        })
        .await;
    assert_eq!(err_code(&r), 406);
    let id = c.id();
    let r = c
        .request(ClientFrame::Pub {
            id,
            room: "r".into(),
            data: vec![],
            mid: Some("".into()),
        })
        .await;
    assert_eq!(err_code(&r), 406);
}

#[tokio::test]
async fn bad_room_names_get_414() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    for room in ["", "has space", "ünï", &"x".repeat(129), "semi;colon"] {
        let id = c.id();
        let r = c
            .request(ClientFrame::Pub {
                id,
                room: room.into(),
                data: vec![1],
                mid: None,
            })
            .await;
        assert_eq!(err_code(&r), 414, "{room:?}");
    }
    let r = c.sub("ok.room-1/a:b@c~d_e", None).await;
    assert!(matches!(r, ServerFrame::Subbed { .. }));
}

#[tokio::test]
async fn subscription_errors_404_410_429_413() {
    let b = Broker::start("[limits]\nsubscriptions_per_connection = 2\ninfo_bytes = 20\n");
    let mut c = Client::connect(&b).await;
    let id = c.id();
    assert_eq!(
        err_code(
            &c.request(ClientFrame::Unsub {
                id,
                room: "a".into()
            })
            .await
        ),
        404
    );
    c.sub("a", None).await;
    assert_eq!(err_code(&c.sub("a", None).await), 410);
    c.sub("b", None).await;
    let r = c.sub("c", None).await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 429,
                max: Some(2),
                ..
            }
        ),
        "{r:?}"
    );
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let info = Value::from("a presence info that is far too long");
    let r = c
        .request(ClientFrame::Sub {
            id,
            room: "d".into(),
            since: None,
            state: None,
            presence: None,
            info: Some(info),
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(20),
                ..
            }
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn size_limits_give_413_with_the_limit() {
    let b = Broker::start(
        "[limits]\npayload_bytes = 100\nkey_bytes = 8\nvalue_bytes = 16\nmid_bytes = 4\n",
    );
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Pub {
            id,
            room: "r".into(),
            data: vec![0; 101],
            mid: None,
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(100),
                ..
            }
        ),
        "{r:?}"
    );
    let id = c.id();
    let r = c
        .request(ClientFrame::Pub {
            id,
            room: "r".into(),
            data: vec![0; 100],
            mid: Some("12345".into()),
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(4),
                ..
            }
        ),
        "{r:?}"
    );
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "r".into(),
            key: "123456789".into(),
            value: Value::Nil,
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(8),
                ..
            }
        ),
        "{r:?}"
    );
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "r".into(),
            key: "k".into(),
            value: Value::from("x".repeat(20)),
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(16),
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(c.publish_seq("r", &[0; 100]).await, 1);
}

#[tokio::test]
async fn state_errors_409_422_429() {
    let b = Broker::start("[limits]\nkeys_per_room = 2\n");
    let mut c = Client::connect(&b).await;
    for key in ["a", "b"] {
        let id = c.id();
        c.request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: key.into(),
            value: Value::from("v"),
        })
        .await;
    }
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: "c".into(),
            value: Value::from(1),
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 429,
                max: Some(2),
                ..
            }
        ),
        "{r:?}"
    );
    let id = c.id();
    let r = c
        .request(ClientFrame::Incr {
            id,
            room: "s".into(),
            key: "a".into(),
            by: None,
        })
        .await;
    assert_eq!(err_code(&r), 422);
    let id = c.id();
    let r = c
        .request(ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: "a".into(),
            ver: 7,
            value: Value::Nil,
        })
        .await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 409,
                ver: Some(1),
                ..
            }
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_carry_on() {
    let b = Broker::start("[limits]\npayload_bytes = 1000\n[websocket]\nmax_frame_bytes = 4096\n[outbox]\nmax_bytes = 65536\n");
    let mut c = Client::connect(&b).await;
    let mut other = Client::connect(&b).await;
    c.send_raw(Message::Binary(vec![0u8; 10_000].into())).await;
    assert_eq!(c.close_code().await, Some(1009));
    assert_eq!(other.publish_seq("r", b"fine").await, 1);
}

/// Opens a WebSocket by hand on a raw TCP stream (so nothing answers pings by itself); returns
/// the stream and the bytes read after the request.
async fn raw_ws(b: &Broker) -> (tokio::net::TcpStream, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"));
    assert!(String::from_utf8_lossy(&got).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    (s, got)
}

/// Reads until EOF (or `wait`) and returns the code of the server's close frame.
async fn raw_close_code(
    s: &mut tokio::net::TcpStream,
    mut all: Vec<u8>,
    wait: Duration,
) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    // Server frames are unmasked: 0x88, a length byte, then the code.
    let pos = all
        .windows(2)
        .position(|w| w[0] == 0x88 && w[1] >= 2 && w[1] < 126)?;
    Some(u16::from_be_bytes([all[pos + 2], all[pos + 3]]))
}

#[tokio::test]
async fn unmasked_client_frame_is_a_protocol_violation_1002() {
    let b = Broker::start("");
    let (mut s, got) = raw_ws(&b).await;
    // An unmasked binary frame (clients must mask).
    s.write_all(&[0x82, 0x01, 0x00]).await.unwrap();
    assert_eq!(
        raw_close_code(&mut s, got, Duration::from_secs(5)).await,
        Some(1002)
    );
}

#[tokio::test]
async fn heartbeat_timeout_closes_with_4001() {
    let b = Broker::start("[websocket]\nping_interval_secs = 1\n");
    // A raw socket that reads but never answers the server's pings.
    let (mut s, got) = raw_ws(&b).await;
    assert_eq!(
        raw_close_code(&mut s, got, Duration::from_secs(8)).await,
        Some(4001)
    );
}

#[tokio::test]
async fn connection_limit_closes_with_4002() {
    let b = Broker::start("[server]\nmax_connections = 1\n");
    let _first = Client::connect(&b).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    assert_eq!(close_code_of(&mut ws).await, Some(4002));
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn unsupported_subprotocol_is_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let b = Broker::start("");
    let mut req = b.ws_url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "roomd.v9".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    // No subprotocol at all means version 1.
    let (mut ws, resp) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    assert!(matches!(
        common::read_frame(&mut ws).await,
        Some(ServerFrame::Hello { v: 1, .. })
    ));
}

fn jwt(secret: &str, sub: &str, exp: u64) -> String {
    hs256(secret, &serde_json::json!({"sub": sub, "exp": exp}))
}

#[tokio::test]
async fn bad_or_missing_token_gets_401_then_close_4401() {
    let b = Broker::start("[auth]\njwt_secret = \"s3cret\"\n");
    let far = 4_000_000_000;
    for query in [
        String::new(),
        format!("token={}", jwt("wrong", "ada", far)),
        format!("token={}", jwt("s3cret", "ada", 1000)),
        "token=garbage".into(),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(&query))
            .await
            .unwrap();
        let f = common::read_frame(&mut ws).await.expect("err frame");
        assert!(
            matches!(
                f,
                ServerFrame::Err {
                    id: None,
                    code: 401,
                    ..
                }
            ),
            "{query}: {f:?}"
        );
        assert_eq!(close_code_of(&mut ws).await, Some(4401), "{query}");
    }
    // A good token connects, and its sub is the user id (a declared user is ignored).
    let mut c =
        Client::connect_query(&b, &format!("token={}&user=eve", jwt("s3cret", "ada", far))).await;
    assert!(matches!(&c.hello, ServerFrame::Hello { user: Some(u), .. } if u == "ada"));
    assert_eq!(c.publish_seq("r", b"x").await, 1);
}

#[tokio::test]
async fn requests_during_shutdown_get_503() {
    let mut b = Broker::start("[server]\nlame_duck_ms = 3000\n");
    let mut c = Client::connect(&b).await;
    assert_eq!(c.publish_seq("r", b"before").await, 1);
    let pid = b.pid();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.publish("r", b"during").await;
    assert!(matches!(r, ServerFrame::Err { code: 503, .. }), "{r:?}");
    assert_eq!(c.close_code().await, Some(1001));
    assert_eq!(b.terminate_wait(), Some(0));
}

#[test]
fn every_error_code_is_exercised_by_a_test() {
    // 507 is covered by tests/disk_full.rs, 403 by tests/permissions.rs, 423 by
    // tests/edits.rs; the others above.
    let here = include_str!("errors.rs");
    let disk = include_str!("disk_full.rs");
    let permissions = include_str!("permissions.rs");
    let edits = include_str!("edits.rs");
    for code in ErrorCode::ALL {
        let n = code.as_u16().to_string();
        assert!(
            [here, disk, permissions, edits]
                .iter()
                .any(|f| f.contains(&n)),
            "no test mentions error {n}"
        );
    }
}
