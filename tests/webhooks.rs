//! Webhooks against the real binary and a real HTTP receiver: every event type arrives signed
//! with its fields, filtered as configured, retried until answered 2xx, never lost once due
//! (dead endpoint, `kill -9` of roomd), bounded per endpoint, and never in the way of rooms.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Client};
use hmac::{Hmac, Mac};
use roomd_protocol::{ClientFrame, ServerFrame, Value};
use serde_json::Value as Json;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec-test";

/// One request the receiver read, and the status it answered.
#[derive(Clone, Debug)]
struct Delivery {
    signature: String,
    body: Vec<u8>,
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Vec<Delivery>,
    /// Statuses to answer, in order; then 200.
    statuses: VecDeque<u16>,
    /// How long to wait before answering.
    delay: Duration,
}

/// A tiny HTTP/1.1 server: reads one request per connection, records it, answers.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
        };
        let state = r.state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(s, state.clone()));
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// Every event of every delivery answered 200, in arrival order (repeats included).
    fn events(&self) -> Vec<Json> {
        self.deliveries()
            .iter()
            .filter(|d| d.status == 200)
            .flat_map(|d| {
                let v: Json = serde_json::from_slice(&d.body).unwrap();
                v["events"].as_array().unwrap().clone()
            })
            .collect()
    }

    /// Waits until `pred` holds for the delivered events.
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let evs = self.events();
            if pred(&evs) {
                return evs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {evs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(mut s: TcpStream, state: Arc<Mutex<ReceiverState>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
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
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let signature = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("roomd-signature")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (status, delay) = {
        let mut st = state.lock().unwrap();
        (st.statuses.pop_front().unwrap_or(200), st.delay)
    };
    tokio::time::sleep(delay).await;
    state.lock().unwrap().deliveries.push(Delivery {
        signature,
        body: buf[head_end..head_end + len].to_vec(),
        status,
    });
    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    let _ = s.write_all(answer.as_bytes()).await;
}

/// The receiver's side of the contract (README "Webhooks"): HMAC-SHA256 over `t.body`.
fn verify(d: &Delivery) -> bool {
    let Some((t, v1)) = d.signature.split_once(",v1=") else {
        return false;
    };
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&d.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let age = now_ms().abs_diff(t.parse().unwrap());
    want == v1 && age < 60_000
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hook(url: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nretry_base_ms = 50\nretry_max_ms = 200\n{extra}\n"
    )
}

fn of_type<'a>(evs: &'a [Json], kind: &str) -> Vec<&'a Json> {
    evs.iter().filter(|e| e["type"] == kind).collect()
}

fn published_seqs(evs: &[Json]) -> BTreeSet<u64> {
    of_type(evs, "message.published")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

async fn put(c: &mut Client, room: &str, key: &str, value: Value) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Put {
        ttl_ms: None,
        ephemeral: false,
        id,
        room: room.into(),
        key: key.into(),
        value,
    })
    .await
}

/// A port with nothing listening (connection refused), free to listen on later.
async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn every_event_type_arrives_signed_with_its_fields() {
    let rx = Receiver::start().await;
    let b = Broker::start(&format!(
        "[rooms]\nidle_unload_secs = 1\n{}",
        hook(&rx.url(), "")
    ));
    let mut c = Client::connect_query(&b, "user=ann").await;
    let conn = c.conn.clone();
    assert!(matches!(
        c.sub("chat:a", None).await,
        ServerFrame::Subbed { .. }
    ));
    let seq = c.publish_seq("chat:a", b"hello").await;
    assert!(matches!(
        put(&mut c, "chat:a", "topic", Value::from("rust")).await,
        ServerFrame::Done { .. }
    ));
    drop(c);
    let evs = rx
        .wait_for("room.unloaded and connection.closed", |e| {
            !of_type(e, "room.unloaded").is_empty() && !of_type(e, "connection.closed").is_empty()
        })
        .await;
    for d in rx.deliveries() {
        assert!(verify(&d), "bad signature {:?}", d.signature);
    }
    let one = |kind: &str| -> Json {
        let found = of_type(&evs, kind);
        assert_eq!(found.len(), 1, "{kind}: {evs:#?}");
        found[0].clone()
    };
    let opened = one("connection.opened");
    assert_eq!(opened["conn"], conn.as_str());
    assert_eq!(opened["user"], "ann");
    let joined = one("room.joined");
    assert_eq!(
        (joined["room"].as_str(), joined["user"].as_str()),
        (Some("chat:a"), Some("ann"))
    );
    assert_eq!(joined["conn"], conn.as_str());
    let created = one("room.created");
    assert_eq!(created["room"], "chat:a");
    let msg = one("message.published");
    assert_eq!(msg["seq"], seq);
    assert_eq!(msg["data"], "aGVsbG8=");
    assert_eq!(msg["user"], "ann");
    let state = one("state.changed");
    assert_eq!(state["key"], "topic");
    assert_eq!(state["value"], "rust");
    assert_eq!(state["ver"], 1);
    assert_eq!(state["deleted"], false);
    let left = one("room.left");
    assert_eq!(
        (left["room"].as_str(), left["user"].as_str()),
        (Some("chat:a"), Some("ann"))
    );
    assert_eq!(one("room.emptied")["room"], "chat:a");
    assert_eq!(one("room.unloaded")["room"], "chat:a");
    assert_eq!(one("connection.closed")["conn"], conn.as_str());
    // Every event has a distinct id, a type, a time.
    let ids: BTreeSet<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), evs.len());
    assert!(evs
        .iter()
        .all(|e| e["ts"].as_u64().unwrap() > 1_600_000_000_000));
    // In the order they happened.
    let pos = |kind: &str| evs.iter().position(|e| e["type"] == kind).unwrap();
    assert!(pos("connection.opened") < pos("room.joined"));
    assert!(pos("room.joined") < pos("message.published"));
    assert!(pos("room.left") < pos("room.emptied"));
    assert!(pos("room.emptied") < pos("room.unloaded"));
}

#[tokio::test]
async fn endpoints_get_only_the_types_and_namespaces_they_asked_for() {
    let chat = Receiver::start().await;
    let state = Receiver::start().await;
    let b = Broker::start(&format!(
        "{}{}",
        hook(
            &chat.url(),
            "name = \"chat\"\nevents = [\"message.published\"]\nnamespaces = [\"chat\"]"
        ),
        hook(
            &state.url(),
            "name = \"state\"\nevents = [\"state.changed\"]"
        ),
    ));
    let mut c = Client::connect(&b).await;
    c.publish_seq("news:x", b"n").await;
    let chat_seq = c.publish_seq("chat:x", b"c").await;
    put(&mut c, "news:x", "k", Value::from(1)).await;
    c.publish_seq("plain", b"p").await;
    let evs = chat.wait_for("the chat message", |e| !e.is_empty()).await;
    state.wait_for("the state change", |e| !e.is_empty()).await;
    // Whatever else would have come has had time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs_now = chat.events();
    assert_eq!(evs_now.len(), 1, "{evs_now:#?}");
    assert_eq!(evs[0]["room"], "chat:x");
    assert_eq!(evs[0]["seq"], chat_seq);
    let st = state.events();
    assert_eq!(st.len(), 1, "{st:#?}");
    assert_eq!(
        (st[0]["type"].as_str(), st[0]["room"].as_str()),
        (Some("state.changed"), Some("news:x"))
    );
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_ids_after_a_backoff() {
    let rx = Receiver::start().await;
    rx.state.lock().unwrap().statuses = [500, 503].into();
    let b = Broker::start(&hook(&rx.url(), "events = [\"message.published\"]"));
    let mut c = Client::connect(&b).await;
    let seq = c.publish_seq("r", b"x").await;
    rx.wait_for("the message", |e| !e.is_empty()).await;
    let ds = rx.deliveries();
    assert_eq!(
        ds.iter().map(|d| d.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    // The same batch each time: same ids, same seq.
    let ids: Vec<Json> = ds
        .iter()
        .map(|d| serde_json::from_slice::<Json>(&d.body).unwrap()["events"][0]["id"].clone())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(rx.events()[0]["seq"], seq);
    assert!(ds.iter().all(verify));
    assert!(b.metric("roomd_webhook_failed_total").await >= 2.0);
    assert!(b.metric("roomd_webhook_retried_total").await >= 2.0);
    assert!(b.metric("roomd_webhook_delivered_total").await >= 1.0);
}

#[tokio::test]
async fn a_dead_endpoint_that_comes_back_gets_everything_that_was_due() {
    let addr = dead_port().await;
    let b = Broker::start(&hook(
        &format!("http://{addr}/hook"),
        "events = [\"message.published\"]\nbatch_events = 7",
    ));
    let mut c = Client::connect(&b).await;
    let mut seqs = BTreeSet::new();
    for i in 0..50u32 {
        seqs.insert(c.publish_seq("r", &i.to_be_bytes()).await);
    }
    // Refused for a while: several failed attempts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.metric("roomd_webhook_failed_total").await < 3.0 {
        assert!(Instant::now() < deadline, "no failed deliveries counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rx = Receiver::start_on(addr).await;
    let evs = rx
        .wait_for("all 50 messages", |e| published_seqs(e) == seqs)
        .await;
    // Batched: at most batch_events per delivery.
    assert!(rx
        .deliveries()
        .iter()
        .all(
            |d| serde_json::from_slice::<Json>(&d.body).unwrap()["events"]
                .as_array()
                .unwrap()
                .len()
                <= 7
        ));
    assert!(rx.deliveries().len() >= 50 / 7);
    assert_eq!(evs.len(), 50);
}

#[tokio::test]
async fn events_of_acknowledged_writes_arrive_after_a_kill_9_right_after_the_ack() {
    let addr = dead_port().await;
    let mut b = Broker::start(&hook(
        &format!("http://{addr}/hook"),
        "events = [\"message.published\", \"state.changed\"]",
    ));
    let mut c = Client::connect(&b).await;
    let mut seqs = BTreeSet::new();
    for i in 0..40u32 {
        seqs.insert(c.publish_seq("r", &i.to_be_bytes()).await);
    }
    // The last answer, then kill -9 at once: an acknowledged write's event was made durable
    // before its ack, so nothing may be missing after the restart.
    let ServerFrame::Done {
        seq: Some(put_seq), ..
    } = put(&mut c, "r", "k", Value::from(1)).await
    else {
        panic!("put not done")
    };
    b.kill9();
    drop(c);
    let rx = Receiver::start_on(addr).await;
    b.restart();
    rx.wait_for("the state change acknowledged just before the crash", |e| {
        of_type(e, "state.changed")
            .iter()
            .any(|ev| ev["seq"].as_u64() == Some(put_seq))
    })
    .await;
    let evs = rx
        .wait_for("the 40 messages from before the crash", |e| {
            published_seqs(e) == seqs
        })
        .await;
    let evs: Vec<Json> = of_type(&evs, "message.published")
        .into_iter()
        .cloned()
        .collect();
    // Ids dedupe whatever came twice; each message has one id.
    let by_id: BTreeSet<(&str, u64)> = evs
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(by_id.len(), 40, "{by_id:?}");
    // The outbox's own durable commits beside the write-ahead log left the room whole.
    let mut c = Client::connect(&b).await;
    assert_eq!(
        c.history_all("r").await.len(),
        41,
        "40 messages and the put"
    );
    // New events after the restart get new ids.
    let seq = c.publish_seq("r", b"after").await;
    let evs = rx
        .wait_for("the message after the restart", |e| {
            published_seqs(e).contains(&seq)
        })
        .await;
    let ids: BTreeSet<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        42,
        "40 messages, the put, the message after: one id each"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_writes_the_events_of_the_connections_it_closes() {
    let addr = dead_port().await;
    let mut b = Broker::start(&hook(
        &format!("http://{addr}/hook"),
        "events = [\"connection.closed\"]",
    ));
    let c = Client::connect(&b).await;
    let conn = c.conn.clone();
    assert_eq!(b.terminate(), Some(0));
    drop(c);
    let rx = Receiver::start_on(addr).await;
    b.restart();
    let evs = rx
        .wait_for("the connection closed by the shutdown", |e| !e.is_empty())
        .await;
    assert_eq!(evs[0]["type"], "connection.closed");
    assert_eq!(evs[0]["conn"], conn.as_str());
}

#[tokio::test]
async fn a_dead_endpoint_holds_at_most_its_bound_and_the_rest_is_counted_as_dropped() {
    let addr = dead_port().await;
    let other = dead_port().await;
    let b = Broker::start(&format!(
        "{}{}",
        hook(
            &format!("http://{addr}/hook"),
            "name = \"count\"\nevents = [\"message.published\"]\noutbox_events = 10\noutbox_bytes = 1000000",
        ),
        hook(
            &format!("http://{other}/hook"),
            "name = \"bytes\"\nevents = [\"message.published\"]\noutbox_bytes = 2000",
        ),
    ));
    let mut c = Client::connect(&b).await;
    for i in 0..100u32 {
        c.publish_seq("r", &i.to_be_bytes()).await;
    }
    let metric = |name: &str, endpoint: &str| format!("{name}{{endpoint=\"{endpoint}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .metric(&metric("roomd_webhook_dropped_total", "count"))
        .await
        < 90.0
    {
        assert!(Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.metric(&metric("roomd_webhook_dropped_total", "count"))
            .await,
        90.0
    );
    assert_eq!(
        b.metric(&metric("roomd_webhook_outbox_events", "count"))
            .await,
        10.0
    );
    // Bounded by bytes: what it holds stays under 2000 bytes, the rest is dropped.
    let held = b
        .metric(&metric("roomd_webhook_outbox_bytes", "bytes"))
        .await;
    let events = b
        .metric(&metric("roomd_webhook_outbox_events", "bytes"))
        .await;
    let dropped = b
        .metric(&metric("roomd_webhook_dropped_total", "bytes"))
        .await;
    assert!(held <= 2000.0 && held > 1000.0, "{held}");
    assert_eq!(events + dropped, 100.0);
    // The first ten (those that were due) arrive once the endpoint is back.
    let rx = Receiver::start_on(addr).await;
    let evs = rx.wait_for("ten messages", |e| e.len() >= 10).await;
    assert_eq!(published_seqs(&evs), (1..=10).collect());
    // Removed from the outbox once answered (just after the answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .metric(&metric("roomd_webhook_outbox_events", "count"))
        .await
        > 0.0
    {
        assert!(Instant::now() < deadline, "delivered events still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_publishes() {
    let rx = Receiver::start().await;
    rx.state.lock().unwrap().delay = Duration::from_secs(5);
    let b = Broker::start(&hook(
        &rx.url(),
        "events = [\"message.published\"]\ntimeout_ms = 20000\nbatch_events = 1",
    ));
    let mut c = Client::connect(&b).await;
    for i in 0..200u32 {
        c.publish_seq("r", &i.to_be_bytes()).await;
    }
    // Every publish was acknowledged while the endpoint still sat on its first request.
    assert!(rx.deliveries().is_empty());
    let evs = rx.wait_for("the first message", |e| !e.is_empty()).await;
    assert_eq!(evs[0]["seq"], 1);
}

#[tokio::test]
async fn a_webhook_with_an_unknown_event_type_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomd.toml");
    std::fs::write(
        &path,
        hook("http://127.0.0.1:9/x", "events = [\"room.exploded\"]"),
    )
    .unwrap();
    let out = common::run_to_exit(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown event type \"room.exploded\""),
        "{err}"
    );
}

/// Figures, not a check: publishes pipelined 500 at a time, with no webhook and with every
/// message sent to a local endpoint; prints publish rates and how long the deliveries took.
/// `cargo test --release --test webhooks -- --ignored --nocapture figures`
#[tokio::test]
#[ignore]
async fn figures() {
    const N: u32 = 5000;
    for webhooks in [false, true] {
        let rx = Receiver::start().await;
        let cfg = if webhooks {
            hook(&rx.url(), "events = [\"message.published\"]")
        } else {
            String::new()
        };
        let b = Broker::start(&cfg);
        let mut c = Client::connect(&b).await;
        let started = Instant::now();
        for chunk in 0..N / 500 {
            let ids: Vec<u32> = (0..500).map(|_| c.id()).collect();
            for (i, id) in ids.iter().enumerate() {
                c.send(&ClientFrame::Pub {
                    id: *id,
                    room: "r".into(),
                    data: (chunk * 500 + i as u32).to_be_bytes().to_vec(),
                    mid: None,
                })
                .await;
            }
            for id in ids {
                assert!(matches!(c.reply_to(id).await, ServerFrame::Ack { .. }));
            }
        }
        let published = started.elapsed();
        let rate = f64::from(N) / published.as_secs_f64();
        if !webhooks {
            println!("no webhooks: {N} publishes in {published:?} ({rate:.0}/s)");
            continue;
        }
        rx.wait_for("every message", |e| e.len() >= N as usize)
            .await;
        let all = started.elapsed();
        let posts = rx.deliveries().len();
        println!(
            "message.published to one endpoint: {N} publishes in {published:?} ({rate:.0}/s); \
             all {N} events delivered {all:?} after the first publish, in {posts} POSTs \
             ({:.1} events per POST)",
            f64::from(N) / posts as f64
        );
    }
}

#[tokio::test]
async fn room_left_and_emptied_wait_for_the_reconnect_grace() {
    let rx = Receiver::start().await;
    let b = Broker::start(&format!(
        "[rooms]\npresence_grace_ms = 1000\n{}",
        hook(&rx.url(), "")
    ));
    // A drop and a resume within the grace: the old subscription leaves as resumed, and the
    // room never empties.
    let mut c = Client::connect_query(&b, "user=ann").await;
    let first = c.conn.clone();
    c.sub("chat:a", None).await;
    drop(c);
    rx.wait_for("connection.closed", |e| {
        !of_type(e, "connection.closed").is_empty()
    })
    .await;
    let mut c = Client::connect_query(&b, "user=ann").await;
    c.sub("chat:a", None).await;
    let evs = rx
        .wait_for("the resumed room.left", |e| {
            !of_type(e, "room.left").is_empty()
        })
        .await;
    let left = of_type(&evs, "room.left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["conn"], first.as_str());
    assert_eq!(left[0]["resumed"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        of_type(&rx.events(), "room.emptied").is_empty(),
        "{:#?}",
        rx.events()
    );
    // A drop without a resume: room.left and room.emptied once the grace is over.
    let second = c.conn.clone();
    drop(c);
    let evs = rx
        .wait_for("room.emptied", |e| !of_type(e, "room.emptied").is_empty())
        .await;
    let ts = |e: &Json| e["ts"].as_u64().unwrap();
    let closed = of_type(&evs, "connection.closed")
        .into_iter()
        .find(|e| e["conn"] == second.as_str())
        .map(ts)
        .unwrap();
    let left = of_type(&evs, "room.left")
        .into_iter()
        .find(|e| e["conn"] == second.as_str())
        .unwrap();
    assert_eq!(left["resumed"], false);
    let emptied = ts(of_type(&evs, "room.emptied")[0]);
    assert!(
        ts(left) >= closed + 900,
        "left {} ms after the close",
        ts(left) - closed
    );
    assert!(emptied >= ts(left));
}

#[tokio::test]
async fn a_graceful_shutdown_ends_departures_held_for_the_grace() {
    let addr = dead_port().await;
    let mut b = Broker::start(&format!(
        "[rooms]\npresence_grace_ms = 60000\n{}",
        hook(&format!("http://{addr}/hook"), "events = [\"room.left\"]")
    ));
    let mut c = Client::connect_query(&b, "user=ann").await;
    let conn = c.conn.clone();
    c.sub("chat:a", None).await;
    // Dropped before the shutdown: held for a grace that would outlast it.
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.terminate(), Some(0));
    let rx = Receiver::start_on(addr).await;
    b.restart();
    let evs = rx
        .wait_for("the held departure's room.left", |e| !e.is_empty())
        .await;
    assert_eq!(evs[0]["type"], "room.left");
    assert_eq!(evs[0]["conn"], conn.as_str());
    assert_eq!(evs[0]["resumed"], false);
}

/// A key's expiry (SPEC.md 4.13) is a `state.changed` event from `conn: "expiry"`.
#[tokio::test]
async fn an_expired_key_is_a_state_changed_event_from_expiry() {
    let rx = Receiver::start().await;
    let b = Broker::start(&hook(&rx.url(), "events = [\"state.changed\"]"));
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: Some(200),
            ephemeral: false,
            id,
            room: "ttl".into(),
            key: "k".into(),
            value: Value::from(1),
        })
        .await;
    assert!(matches!(r, ServerFrame::Done { .. }), "{r:?}");
    let evs = rx
        .wait_for("the expiry's state.changed", |e| {
            of_type(e, "state.changed").len() >= 2
        })
        .await;
    let changed = of_type(&evs, "state.changed");
    let expiry = changed[1];
    assert_eq!(
        (
            expiry["conn"].as_str(),
            expiry["key"].as_str(),
            expiry["ver"].as_u64(),
            expiry["deleted"].as_bool(),
            expiry["expired"].as_bool()
        ),
        (Some("expiry"), Some("k"), Some(0), Some(true), Some(true)),
        "{expiry:#}"
    );
    assert_eq!(expiry["seq"].as_u64(), Some(2));
    assert!(expiry.get("user").is_none_or(Json::is_null));
}

/// An ephemeral key's deletion with its connection (SPEC.md 4.14) is a `state.changed` event
/// from `conn: "ephemeral"`.
#[tokio::test]
async fn an_ephemeral_key_gone_with_its_connection_is_a_state_changed_event() {
    let rx = Receiver::start().await;
    let b = Broker::start(&hook(&rx.url(), "events = [\"state.changed\"]"));
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: true,
            id,
            room: "eph".into(),
            key: "k".into(),
            value: Value::from(1),
        })
        .await;
    assert!(matches!(r, ServerFrame::Done { .. }), "{r:?}");
    drop(c);
    let evs = rx
        .wait_for("the release's state.changed", |e| {
            of_type(e, "state.changed").len() >= 2
        })
        .await;
    let released = of_type(&evs, "state.changed")[1];
    assert_eq!(
        (
            released["conn"].as_str(),
            released["key"].as_str(),
            released["seq"].as_u64(),
            released["deleted"].as_bool(),
            released["released"].as_bool()
        ),
        (
            Some("ephemeral"),
            Some("k"),
            Some(2),
            Some(true),
            Some(true)
        ),
        "{released:#}"
    );
    assert!(released.get("user").is_none_or(Json::is_null));
}
