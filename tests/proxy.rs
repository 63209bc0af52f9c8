//! Proxy hooks against the real binary and a real HTTP application: every decision (allow,
//! deny with code and reason, replaced payload) reaches the client as documented, requests keep
//! their order behind slow calls, and an application that is slow or down gets `on_failure`,
//! the circuit breaker and the cache; every call is signed.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{err_code, read_frame, Broker, Client};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use roomd_protocol::{ClientFrame, ServerFrame};
use serde_json::{json, Value as Json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "proxy-secret";

/// The test's application: decides by fixed rules (below) and records every call.
#[derive(Clone, Default)]
struct App {
    calls: Arc<Mutex<Vec<(String, Json)>>>,
    /// Answers 500 to everything while set.
    down: Arc<AtomicBool>,
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

impl App {
    async fn start() -> (App, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::default();
        let a = app.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(a.clone().serve(s));
            }
        });
        (app, addr)
    }

    /// The rules: what the application decides for each call.
    fn decide(&self, ask: &Json) -> (Json, Duration) {
        let none = Duration::ZERO;
        match ask["call"].as_str().unwrap() {
            "connect" => match ask["user"].as_str() {
                Some("mallory") => (json!({"allow": false, "reason": "banned"}), none),
                Some("eve") => (
                    json!({"allow": false, "code": 401, "reason": "sign in again"}),
                    none,
                ),
                _ => (json!({"allow": true}), none),
            },
            "subscribe" => match ask["room"].as_str().unwrap() {
                "chat:secret" => (
                    json!({"allow": false, "code": 403, "reason": "members only"}),
                    none,
                ),
                "chat:busy" => (
                    json!({"allow": false, "code": 429, "reason": "full", "retry_after_ms": 100}),
                    none,
                ),
                // Not a code a subscribe gets: sent as 403.
                "chat:teapot" => (json!({"allow": false, "code": 418, "reason": "tea"}), none),
                _ => (json!({"allow": true}), none),
            },
            _ => {
                let data = unb64(ask["data"].as_str().unwrap());
                let text = String::from_utf8(data).unwrap();
                if text == "bad" {
                    (
                        json!({"allow": false, "code": 406, "reason": "no bad words"}),
                        none,
                    )
                } else if text == "shout" {
                    (json!({"allow": true, "data": b64(b"SHOUT")}), none)
                } else if text == "slow" {
                    (json!({"allow": true}), Duration::from_secs(3))
                } else if let Some(n) = text.strip_prefix("n") {
                    // Earlier messages answered later: the order must not follow the answers.
                    let n: u64 = n.parse().unwrap();
                    (json!({"allow": true}), Duration::from_millis(200 - n * 10))
                } else {
                    (json!({"allow": true}), none)
                }
            }
        }
    }

    async fn serve(self, mut s: TcpStream) {
        let Some((head, body)) = read_request(&mut s).await else {
            return;
        };
        let signature = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("roomd-signature")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        assert!(verify(&signature, &body), "bad signature {signature}");
        let ask: Json = serde_json::from_slice(&body).unwrap();
        self.calls.lock().unwrap().push((signature, ask.clone()));
        let (status, answer, delay) = if self.down.load(Ordering::SeqCst) {
            (500, json!({}), Duration::ZERO)
        } else {
            let (answer, delay) = self.decide(&ask);
            (200, answer, delay)
        };
        tokio::time::sleep(delay).await;
        let body = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
    }

    fn calls_of(&self, call: &str) -> Vec<Json> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, a)| a.clone())
            .filter(|a| a["call"] == call)
            .collect()
    }
}

async fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    Some((head, buf[head_end..head_end + len].to_vec()))
}

/// The application's side of the contract (README "Proxy hooks"): HMAC-SHA256 over `t.body`.
fn verify(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature.split_once(",v1=") else {
        return false;
    };
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

fn proxy(addr: SocketAddr, extra: &str) -> String {
    format!("[[proxy]]\nurl = \"http://{addr}/decide\"\nsecret = \"{SECRET}\"\n{extra}\n")
}

/// The sum of the metric lines that contain every one of `parts`.
async fn metric(b: &Broker, parts: &[&str]) -> f64 {
    let (_, body) = b.http_get("/metrics").await;
    body.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn pub_frame(id: u32, room: &str, data: &[u8]) -> ClientFrame {
    ClientFrame::Pub {
        id,
        room: room.into(),
        data: data.to_vec(),
        mid: None,
    }
}

async fn publish(c: &mut Client, room: &str, data: &[u8]) -> ServerFrame {
    let id = c.id();
    c.request(pub_frame(id, room, data)).await
}

fn err_msg(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Err { msg, .. } => msg.clone(),
        other => panic!("expected err, got {other:?}"),
    }
}

#[tokio::test]
async fn allow_deny_and_replace_reach_the_client_as_documented() {
    let (app, addr) = App::start().await;
    let b = Broker::start(&proxy(
        addr,
        "calls = [\"subscribe\", \"publish\"]\nnamespaces = [\"chat\"]\ncache_ms = 60000",
    ));
    let mut reader = Client::connect_query(&b, "user=ann").await;
    let mut writer = Client::connect_query(&b, "user=bob").await;
    assert!(matches!(
        reader.sub("chat:r", None).await,
        ServerFrame::Subbed { .. }
    ));

    // Allowed, as is.
    let ack = publish(&mut writer, "chat:r", b"hello").await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    assert_eq!(reader.msg().await, (1, b"hello".to_vec()));

    // Denied with the application's code and reason; nothing stored.
    let denied = publish(&mut writer, "chat:r", b"bad").await;
    assert_eq!(err_code(&denied), 406);
    assert_eq!(err_msg(&denied), "no bad words");

    // Replaced: subscribers and the history see the application's payload.
    let ack = publish(&mut writer, "chat:r", b"shout").await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 2, .. }), "{ack:?}");
    assert_eq!(reader.msg().await, (2, b"SHOUT".to_vec()));
    let hist = writer.history_all("chat:r").await;
    let datas: Vec<Vec<u8>> = hist
        .iter()
        .map(|f| match f {
            ServerFrame::Msg { data, .. } => data.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(datas, vec![b"hello".to_vec(), b"SHOUT".to_vec()]);

    // What the application was asked, with the connection's identity, signed (App::serve
    // checks every signature).
    let pubs = app.calls_of("publish");
    assert_eq!(pubs.len(), 3);
    assert_eq!(pubs[0]["room"], "chat:r");
    assert_eq!(pubs[0]["user"], "bob");
    assert_eq!(pubs[0]["verified"], false);
    assert_eq!(pubs[0]["conn"], writer.conn.as_str());
    assert_eq!(unb64(pubs[0]["data"].as_str().unwrap()), b"hello");

    // Subscribe denies: the code a subscribe may get, else 403; retry_after_ms kept on 429.
    let secret = reader.sub("chat:secret", None).await;
    assert_eq!(
        (err_code(&secret), err_msg(&secret).as_str()),
        (403, "members only")
    );
    let busy = reader.sub("chat:busy", None).await;
    assert!(
        matches!(
            busy,
            ServerFrame::Err {
                code: 429,
                retry_after_ms: Some(100),
                ..
            }
        ),
        "{busy:?}"
    );
    assert_eq!(err_code(&reader.sub("chat:teapot", None).await), 403);
    // A refused subscription is not one: unsub says so.
    let id = reader.id();
    let unsub = reader
        .request(ClientFrame::Unsub {
            id,
            room: "chat:secret".into(),
        })
        .await;
    assert_eq!(err_code(&unsub), 404);

    // Outside the endpoint's namespaces nothing is asked.
    let before = app.calls.lock().unwrap().len();
    assert!(matches!(
        publish(&mut writer, "other:r", b"bad").await,
        ServerFrame::Ack { .. }
    ));
    assert_eq!(app.calls.lock().unwrap().len(), before);

    // The cache: a second subscribe of the same user and room within cache_ms asks nothing.
    let subs_before = app.calls_of("subscribe").len();
    let id = reader.id();
    let ok = reader
        .request(ClientFrame::Unsub {
            id,
            room: "chat:r".into(),
        })
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    assert!(matches!(
        reader.sub("chat:r", None).await,
        ServerFrame::Subbed { .. }
    ));
    assert_eq!(app.calls_of("subscribe").len(), subs_before);
    let secret = reader.sub("chat:secret", None).await;
    assert_eq!(err_code(&secret), 403, "a cached deny is still a deny");
    assert_eq!(app.calls_of("subscribe").len(), subs_before);
    assert!(metric(&b, &["roomd_proxy_cache_hits_total", "call=\"subscribe\""]).await >= 2.0);
    assert_eq!(
        metric(
            &b,
            &[
                "roomd_proxy_calls_total",
                "call=\"publish\"",
                "outcome=\"replace\""
            ]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_connections_publishes_keep_their_order_whatever_order_the_answers_come_in() {
    let (_app, addr) = App::start().await;
    let b = Broker::start(&proxy(addr, ""));
    let mut c = Client::connect(&b).await;
    assert!(matches!(c.sub("r", None).await, ServerFrame::Subbed { .. }));
    // n0 is answered last (200 ms), n19 first (10 ms); the pipeline holds
    // max_in_flight_per_connection (8) at once, the rest wait in the socket.
    let mut ids = Vec::new();
    for n in 0..20 {
        let id = c.id();
        ids.push(id);
        c.send(&pub_frame(id, "r", format!("n{n}").as_bytes()))
            .await;
    }
    for (n, id) in ids.iter().enumerate() {
        match c.reply_to(*id).await {
            ServerFrame::Ack { seq, .. } => assert_eq!(seq, n as u64 + 1),
            other => panic!("{other:?}"),
        }
    }
    let got: Vec<Vec<u8>> = c
        .history_all("r")
        .await
        .into_iter()
        .map(|f| match f {
            ServerFrame::Msg { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<Vec<u8>> = (0..20).map(|n| format!("n{n}").into_bytes()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_slow_application_gets_on_failure_deny_or_allow() {
    let (app, addr) = App::start().await;
    let config = format!(
        "{}{}",
        proxy(
            addr,
            "name = \"strict\"\nnamespaces = [\"strict\"]\ntimeout_ms = 300"
        ),
        proxy(
            addr,
            "name = \"lenient\"\nnamespaces = [\"lenient\"]\ntimeout_ms = 300\non_failure = \"allow\""
        ),
    );
    let b = Broker::start(&config);
    let mut c = Client::connect(&b).await;

    let started = Instant::now();
    let refused = publish(&mut c, "strict:r", b"slow").await;
    assert_eq!(err_code(&refused), 503, "{refused:?}");
    assert!(err_msg(&refused).contains("unavailable"), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounds it"
    );

    let ack = publish(&mut c, "lenient:r", b"slow").await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    let hist = c.history_all("lenient:r").await;
    assert!(matches!(&hist[0], ServerFrame::Msg { data, .. } if data == b"slow"));
    assert_eq!(app.calls_of("publish").len(), 2);
    assert_eq!(
        metric(
            &b,
            &[
                "roomd_proxy_calls_total",
                "proxy=\"strict\"",
                "outcome=\"timeout\""
            ]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn the_breaker_opens_after_n_failures_and_a_probe_closes_it() {
    let (app, addr) = App::start().await;
    let b = Broker::start(&proxy(
        addr,
        "name = \"app\"\nbreaker_failures = 3\nbreaker_open_ms = 1000",
    ));
    let mut c = Client::connect(&b).await;
    app.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(err_code(&publish(&mut c, "r", b"x").await), 503);
    }
    assert_eq!(app.calls_of("publish").len(), 3);
    assert_eq!(
        metric(&b, &["roomd_proxy_breaker_open", "proxy=\"app\""]).await,
        1.0
    );
    // Open: refused at once, the application not asked.
    let refused = publish(&mut c, "r", b"x").await;
    assert_eq!(err_code(&refused), 503);
    assert_eq!(app.calls_of("publish").len(), 3);
    // A new connection is refused too: err 503 then close 1011 (reconnect later).
    let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    let first = read_frame(&mut ws).await.unwrap();
    assert!(
        matches!(
            first,
            ServerFrame::Err {
                id: None,
                code: 503,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(close_of(&mut ws).await, Some(1011));

    // Back up; after breaker_open_ms the next call probes and closes it.
    app.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ack = publish(&mut c, "r", b"x").await;
    assert!(matches!(ack, ServerFrame::Ack { seq: 1, .. }), "{ack:?}");
    assert_eq!(
        metric(&b, &["roomd_proxy_breaker_open", "proxy=\"app\""]).await,
        0.0
    );
    assert!(matches!(
        publish(&mut c, "r", b"y").await,
        ServerFrame::Ack { seq: 2, .. }
    ));
    assert_eq!(
        metric(
            &b,
            &[
                "roomd_proxy_calls_total",
                "proxy=\"app\"",
                "outcome=\"breaker_open\""
            ]
        )
        .await,
        2.0,
        "the publish and the connect while open"
    );
}

async fn close_of(ws: &mut common::Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn connect_decisions_refuse_with_a_documented_close() {
    let (app, addr) = App::start().await;
    let b = Broker::start(&proxy(addr, "calls = [\"connect\"]"));
    let ada = Client::connect_query(&b, "user=ada&client=tab1").await;
    let asked = app.calls_of("connect");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["user"], "ada");
    assert_eq!(asked[0]["client"], "tab1");
    assert_eq!(asked[0]["conn"], ada.conn.as_str());
    assert_eq!(asked[0]["addr"], "127.0.0.1");

    for (user, code, close, reason) in [
        ("mallory", 403, 4403, "banned"),
        ("eve", 401, 4401, "sign in again"),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(&format!("user={user}")))
            .await
            .unwrap();
        let first = read_frame(&mut ws).await.unwrap();
        match first {
            ServerFrame::Err {
                id: None,
                code: c,
                msg,
                ..
            } => {
                assert_eq!((c, msg.as_str()), (code, reason));
            }
            other => panic!("{user}: {other:?}"),
        }
        assert_eq!(close_of(&mut ws).await, Some(close), "{user}");
    }
    // Subscribes and publishes are not this endpoint's.
    let mut ada = ada;
    assert!(matches!(
        publish(&mut ada, "r", b"bad").await,
        ServerFrame::Ack { .. }
    ));
    assert_eq!(app.calls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn calls_in_flight_are_bounded_per_connection_and_per_endpoint() {
    let (app, addr) = App::start().await;
    let b = Broker::start(&proxy(
        addr,
        "name = \"app\"\ncalls = [\"publish\"]\ntimeout_ms = 2000\nmax_in_flight = 3\nmax_in_flight_per_connection = 2",
    ));
    let mut a = Client::connect(&b).await;
    // Three slow publishes: two calls go out, the third waits in the socket (backpressure),
    // and so does the ping behind it.
    let ids: Vec<u32> = (0..3).map(|_| a.id()).collect();
    for id in &ids {
        a.send(&pub_frame(*id, "r", b"slow")).await;
    }
    let ping = a.id();
    a.send(&ClientFrame::Ping { id: ping }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.calls_of("publish").len(), 2, "the connection's bound");
    assert!(
        a.try_event(Duration::from_millis(10)).await.is_none(),
        "nothing answered yet"
    );

    // Another connection takes the endpoint's last slot; a third finds it full: 503 at once.
    let mut c = Client::connect(&b).await;
    let slow = c.id();
    c.send(&pub_frame(slow, "r", b"slow")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.calls_of("publish").len() < 3 {
        assert!(Instant::now() < deadline, "the third call never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut d = Client::connect(&b).await;
    let started = Instant::now();
    let busy = publish(&mut d, "r", b"x").await;
    assert_eq!(err_code(&busy), 503, "{busy:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "refused at once"
    );
    assert_eq!(app.calls_of("publish").len(), 3, "not asked");

    // The slow calls time out (on_failure deny); only then is the socket read again: the third
    // publish goes out and the ping (answered at once, not queued behind it) is read.
    let mut replies = Vec::new();
    while replies.len() < 4 {
        let f = read_frame(&mut a.ws).await.unwrap();
        replies.push((common::reply_id(&f).unwrap(), f));
    }
    assert_eq!((replies[0].0, err_code(&replies[0].1)), (ids[0], 503));
    assert_eq!((replies[1].0, err_code(&replies[1].1)), (ids[1], 503));
    let rest: std::collections::BTreeSet<u32> = replies[2..].iter().map(|r| r.0).collect();
    assert_eq!(rest, [ids[2], ping].into_iter().collect());
    assert_eq!(
        metric(
            &b,
            &[
                "roomd_proxy_calls_total",
                "proxy=\"app\"",
                "outcome=\"busy\""
            ]
        )
        .await,
        1.0
    );
}

/// Figures, not a check: `cargo test --release --test proxy -- --ignored --nocapture figures`.
/// One connection pipelines publishes to a room, without a proxy and through a local
/// application that allows everything at once.
#[tokio::test]
#[ignore = "prints figures"]
async fn figures() {
    const N: u32 = 2000;
    let (app, addr) = App::start().await;
    for (what, config) in [
        ("no proxy", String::new()),
        (
            "proxy (allow)",
            proxy(addr, "max_in_flight_per_connection = 8"),
        ),
        (
            "proxy (allow)",
            proxy(addr, "max_in_flight_per_connection = 64"),
        ),
    ] {
        let b = Broker::start(&config);
        let mut c = Client::connect(&b).await;
        let started = Instant::now();
        for i in 1..=N {
            c.send(&pub_frame(i, "r", b"a 20 byte payload...")).await;
        }
        let mut acked = 0;
        while acked < N {
            if let ServerFrame::Ack { .. } = read_frame(&mut c.ws).await.unwrap() {
                acked += 1;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let (_, body) = b.http_get("/metrics").await;
        let line = |suffix: &str| -> f64 {
            body.lines()
                .filter(|l| {
                    l.starts_with(&format!("roomd_proxy_call_seconds_{suffix}"))
                        && l.contains("publish")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (line("sum"), line("count"));
        let mean_ms = if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        };
        println!(
            "{what} {config_short}: {N} publishes acknowledged in {secs:.2} s = {:.0}/s; mean proxy call {mean_ms:.2} ms over {count} calls",
            f64::from(N) / secs,
            config_short = config.lines().find(|l| l.starts_with("max_in")).unwrap_or(""),
        );
    }
    drop(app);
}
