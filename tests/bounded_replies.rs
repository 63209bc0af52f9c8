//! Every reply fits in `limits.frame`, and one connection's pending work is bounded: `hist` and
//! `list` replies stop at the frame limit (saying `more`), replay pages are bounded in bytes,
//! and a connection with `limits.requests_in_flight` unanswered requests is not read further.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::Duration;

use common::{Broker, Client, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use roomd_protocol::{decode_server, ClientFrame, ServerFrame, Value};
use tokio_tungstenite::tungstenite::Message;

/// The frame limit the client is told in hello.
fn frame_limit(c: &Client) -> usize {
    match &c.hello {
        ServerFrame::Hello { limits, .. } => limits.frame as usize,
        other => panic!("hello expected, got {other:?}"),
    }
}

/// Reads the reply to `id` (`u32::MAX`: any reply) like a client that honours `limits.frame`:
/// every message the server sends on the way must fit in it.
async fn reply_within(c: &mut Client, id: u32, limit: usize) -> ServerFrame {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, c.ws.next())
            .await
            .expect("timed out waiting for a reply")
            .unwrap_or_else(|| panic!("closed while waiting for reply {id}"))
            .unwrap_or_else(|e| panic!("read error while waiting for reply {id}: {e}"));
        let Message::Binary(bytes) = msg else {
            assert!(
                !msg.is_close(),
                "closed while waiting for reply {id}: {msg:?}"
            );
            continue;
        };
        assert!(
            bytes.len() <= limit,
            "a {} byte message, over limits.frame = {limit}",
            bytes.len()
        );
        let f = decode_server(&bytes).unwrap();
        if common::reply_id(&f).is_some_and(|r| r == id || id == u32::MAX) {
            return f;
        }
    }
}

/// Publishes `n` entries of `size` bytes (each starting with its index), pipelined.
async fn fill(c: &mut Client, room: &str, n: u32, size: usize) {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = c.id();
        let mut data = vec![(i % 251) as u8; size];
        data[..4].copy_from_slice(&i.to_be_bytes());
        c.send(&ClientFrame::Pub {
            id,
            room: room.into(),
            data,
            mid: None,
        })
        .await;
        ids.push(id);
    }
    for id in ids {
        let r = c.reply_to(id).await;
        assert!(matches!(r, ServerFrame::Ack { .. }), "{r:?}");
    }
}

fn hist_page(f: ServerFrame) -> (Vec<u64>, bool) {
    match f {
        ServerFrame::Hist { items, more, .. } => (
            items
                .iter()
                .map(|e| match e {
                    ServerFrame::Msg { seq, data, .. } => {
                        assert_eq!(
                            &data[..4],
                            &(*seq as u32 - 1).to_be_bytes(),
                            "entry {seq} has another's data"
                        );
                        *seq
                    }
                    other => panic!("msg expected, got {other:?}"),
                })
                .collect(),
            more,
        ),
        other => panic!("hist expected, got {other:?}"),
    }
}

const SMALL_FRAME: &str = "[limits]\npayload_bytes = 8192\nvalue_bytes = 4096\n\
    [websocket]\nmax_frame_bytes = 32768\n[outbox]\nmax_bytes = 65536\n";

/// 64 entries of 8000 bytes (512 KB) with a 32 KiB frame limit: paging forward and backward
/// returns every entry exactly once, in pages that each fit in the limit, each stopping at the
/// byte budget with `more: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hist_replies_fit_in_the_frame_limit_and_page_on() {
    let b = Broker::start(SMALL_FRAME);
    let mut c = Client::connect(&b).await;
    let limit = frame_limit(&c);
    assert_eq!(limit, 32768);
    fill(&mut c, "big", 64, 8000).await;

    // Forward, from the start.
    let (mut seen, mut after, mut pages) = (Vec::new(), 0, 0);
    loop {
        let id = c.id();
        c.send(&ClientFrame::Hist {
            id,
            room: "big".into(),
            after: Some(after),
            before: None,
            limit: None,
        })
        .await;
        let (seqs, more) = hist_page(reply_within(&mut c, id, limit).await);
        pages += 1;
        assert!(!seqs.is_empty(), "an empty page with more");
        // The page stopped for its bytes: one more entry would not have fitted.
        if more {
            assert!(seqs.len() >= 3 && seqs.len() * 8000 + 8000 > limit - 64);
        }
        after = *seqs.last().unwrap();
        seen.extend(seqs);
        if !more {
            break;
        }
    }
    assert_eq!(seen, (1..=64).collect::<Vec<_>>());
    assert!(pages >= 16, "{pages} pages for 512 KB in 32 KiB frames");

    // Backward, from the newest.
    let (mut seen, mut before) = (Vec::new(), None);
    loop {
        let id = c.id();
        c.send(&ClientFrame::Hist {
            id,
            room: "big".into(),
            after: None,
            before,
            limit: None,
        })
        .await;
        let (seqs, more) = hist_page(reply_within(&mut c, id, limit).await);
        assert!(!seqs.is_empty());
        before = Some(seqs[0]);
        let mut older = seqs;
        older.extend(seen);
        seen = older;
        if !more {
            break;
        }
    }
    assert_eq!(seen, (1..=64).collect::<Vec<_>>());

    // `limit` still caps a page below the byte budget.
    let id = c.id();
    c.send(&ClientFrame::Hist {
        id,
        room: "big".into(),
        after: Some(10),
        before: None,
        limit: Some(2),
    })
    .await;
    assert_eq!(
        hist_page(reply_within(&mut c, id, limit).await),
        (vec![11, 12], true)
    );
}

/// A client whose WebSocket library enforces `limits.frame` (as browsers' and most libraries'
/// size options do) can read a room of large entries without being closed with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_enforcing_the_frame_limit_reads_large_history() {
    let b = Broker::start(SMALL_FRAME);
    let mut c = Client::connect(&b).await;
    fill(&mut c, "big", 40, 8000).await;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(32768))
        .max_frame_size(Some(32768));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        b.ws_url(""),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "roomd.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .unwrap();
    assert!(matches!(
        common::read_frame(&mut ws).await,
        Some(ServerFrame::Hello { .. })
    ));
    let hist = ClientFrame::Hist {
        id: 1,
        room: "big".into(),
        after: None,
        before: None,
        limit: None,
    };
    ws.send(Message::Binary(roomd_protocol::codec::encode(&hist).into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .unwrap()
        .expect("connection open")
        .expect("the reply fits in the client's limit");
    let Message::Binary(bytes) = reply else {
        panic!("{reply:?}")
    };
    let (seqs, more) = hist_page(decode_server(&bytes).unwrap());
    assert!(more && !seqs.is_empty() && *seqs.last().unwrap() == 40);
}

/// 40 keys of ~3000-byte values (120 KB) with a 32 KiB frame limit: `list` pages through all of
/// them with `after` = last key, every reply within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_replies_fit_in_the_frame_limit_and_page_on() {
    let b = Broker::start(SMALL_FRAME);
    let mut c = Client::connect(&b).await;
    let limit = frame_limit(&c);
    let mut ids = Vec::new();
    for k in 0..40u32 {
        let id = c.id();
        c.send(&ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "kv".into(),
            key: format!("k:{k:03}"),
            value: Value::Binary(vec![k as u8; 3000]),
        })
        .await;
        ids.push(id);
    }
    for id in ids {
        let r = c.reply_to(id).await;
        assert!(matches!(r, ServerFrame::Done { .. }), "{r:?}");
    }
    let (mut keys, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let id = c.id();
        c.send(&ClientFrame::List {
            id,
            room: "kv".into(),
            prefix: Some("k:".into()),
            after: after.clone(),
            limit: None,
        })
        .await;
        let ServerFrame::Vals { items, more, .. } = reply_within(&mut c, id, limit).await else {
            panic!("vals expected")
        };
        pages += 1;
        assert!(!items.is_empty());
        for it in &items {
            let k: u32 = it.key[2..].parse().unwrap();
            assert_eq!(it.value, Value::Binary(vec![k as u8; 3000]));
        }
        after = Some(items.last().unwrap().key.clone());
        keys.extend(items.into_iter().map(|i| i.key));
        if !more {
            break;
        }
    }
    assert_eq!(
        keys,
        (0..40u32).map(|k| format!("k:{k:03}")).collect::<Vec<_>>()
    );
    assert!(pages >= 4, "{pages} pages for 120 KB in 32 KiB frames");
}

/// A subscriber resuming through large entries on disk gets every one, in order, exactly once,
/// although each replay page now holds only a few of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_large_entries_in_byte_bounded_pages_is_complete() {
    let b = Broker::start(&format!("{SMALL_FRAME}[rooms]\ncache_entries = 4\n"));
    let mut c = Client::connect(&b).await;
    fill(&mut c, "big", 64, 8000).await;
    let mut s = Client::connect(&b).await;
    let limit = frame_limit(&s);
    let id = s.id();
    s.send(&ClientFrame::Sub {
        id,
        room: "big".into(),
        since: Some(0),
        state: None,
        presence: None,
        info: None,
    })
    .await;
    let r = reply_within(&mut s, id, limit).await;
    assert!(matches!(r, ServerFrame::Subbed { last: 64, .. }), "{r:?}");
    for seq in 1..=64u64 {
        let (got, data) = s.msg().await;
        assert_eq!(
            (got, &data[..4]),
            (seq, &(seq as u32 - 1).to_be_bytes()[..])
        );
    }
    fill(&mut c, "big", 1, 10).await;
    assert_eq!(s.msg().await.0, 65);
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/pid/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The flood, scaled down: 64 entries of 60 KiB and 100 `hist` requests of a few bytes
/// each on one connection, with the default limits. Unbounded, every request read its own
/// 3.8 MB page at once; now each reply fits in the 1 MiB frame, and at most 2 requests with
/// such large replies are in flight (`outbox.max_bytes / (2 × limits.frame)`), so a client that
/// reads its replies is not closed as a slow consumer (4000) by its own pipelined reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hist_flood_on_one_connection_stays_bounded_in_memory() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let limit = frame_limit(&c);
    let t = std::time::Instant::now();
    fill(&mut c, "flood", 64, 60 * 1024).await;
    eprintln!("filled in {:?}", t.elapsed());
    let before = peak_rss(b.pid());
    let mut ids = Vec::new();
    for _ in 0..100 {
        let id = c.id();
        c.send(&ClientFrame::Hist {
            id,
            room: "flood".into(),
            after: None,
            before: None,
            limit: None,
        })
        .await;
        ids.push(id);
    }
    // Replies to reads come in any order: each one is taken as it arrives, until all are in
    // or the connection closes; memory is checked first, then what was read.
    let (mut answered, mut sizes, mut pages) =
        (std::collections::HashSet::new(), Vec::new(), Vec::new());
    while answered.len() < ids.len() {
        let msg = tokio::time::timeout(TIMEOUT, c.ws.next()).await.unwrap();
        let Some(Ok(Message::Binary(bytes))) = msg else {
            eprintln!("connection ended: {msg:?}");
            break;
        };
        sizes.push(bytes.len());
        let f = decode_server(&bytes).unwrap();
        let id = common::reply_id(&f).unwrap();
        pages.push(hist_page(f));
        assert!(ids.contains(&id) && answered.insert(id));
    }
    eprintln!("answered in {:?}", t.elapsed());
    let grew = peak_rss(b.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} KiB", grew >> 10);
    assert!(
        grew < 64 << 20,
        "peak RSS grew by {} MiB under the flood",
        grew >> 20
    );
    assert_eq!(answered.len(), 100, "not every hist was answered");
    assert!(sizes.iter().all(|&n| n <= limit), "{sizes:?}");
    for (seqs, more) in pages {
        assert!(more && *seqs.last().unwrap() == 64, "{seqs:?}");
    }
}

/// At `limits.requests_in_flight` unanswered requests the connection is not read: a `ping`
/// behind them is not answered until they are. The requests here are `get`s of a room that is
/// loading, held up by a checkpoint (a read first waits for logged groups to reach the
/// database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_its_in_flight_bound_is_not_read_further() {
    let b = Broker::start_env(
        tempfile::tempdir().unwrap(),
        "[limits]\nrequests_in_flight = 4\n[storage]\ncheckpoint_interval_ms = 100\n\
         flush_interval_ms = 20\ncheckpoint_bytes = 1073741824\n",
        &[("ROOMD_TEST_CHECKPOINT_HOLD_MS", "3000")],
    );
    let mut c = Client::connect(&b).await;
    // Creating the room is a redb write: the next tick starts a checkpoint, held for 3 s.
    assert_eq!(c.publish_seq("held", b"first").await, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Logged, not yet in redb: reads (and so room loads) now wait for the checkpoint.
    assert_eq!(c.publish_seq("held", b"second").await, 2);
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = c.id();
        c.send(&ClientFrame::Get {
            id,
            room: "cold".into(),
            key: "k".into(),
        })
        .await;
        ids.push(id);
    }
    let ping = c.id();
    c.send(&ClientFrame::Ping { id: ping }).await;
    let mut order = Vec::new();
    for _ in 0..5 {
        let f = common::read_frame(&mut c.ws).await.expect("reply");
        order.push((common::reply_id(&f).unwrap(), started.elapsed()));
    }
    let (first, at) = order[0];
    assert_ne!(first, ping, "the ping was read past 4 requests in flight");
    assert!(
        at > Duration::from_millis(1000),
        "the reads were not held: {order:?}"
    );
    assert_eq!(order.iter().filter(|(id, _)| ids.contains(id)).count(), 4);
    assert!(order.iter().any(|(id, _)| *id == ping));
}

/// 20 subscribers resume at once through 256 entries of 60 KiB (15 MB) on disk and read
/// nothing. Each replay page is now at most `limits.frame` (256 KiB) of entries, not 256 of
/// them: memory grows by about what their outboxes hold, not by 20 pages of 15 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_subscribers_read_byte_bounded_replay_pages() {
    let b = Broker::start(
        "[rooms]\ncache_entries = 4\n[websocket]\nmax_frame_bytes = 262144\n\
         [outbox]\nmax_bytes = 524288\n",
    );
    let mut c = Client::connect(&b).await;
    fill(&mut c, "deep", 256, 60 * 1024).await;
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(Client::connect(&b).await);
    }
    let before = peak_rss(b.pid());
    for s in &mut subs {
        let id = s.id();
        s.send(&ClientFrame::Sub {
            id,
            room: "deep".into(),
            since: Some(0),
            state: None,
            presence: None,
            info: None,
        })
        .await;
    }
    // Every replay has filled its subscriber's outbox (and the socket) and is waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grew = peak_rss(b.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} KiB", grew >> 10);
    // Per subscriber: a drained batch and a refilled outbox (512 KiB each at most) and a page
    // in flight (256 KiB), with the allocator's slack: well under 150 MiB for 20 (unbounded
    // pages of 15 MB each took about 340 MiB).
    assert!(
        grew < 150 << 20,
        "peak RSS grew by {} MiB while 20 subscribers resumed",
        grew >> 20
    );
    // And each still gets everything, in order.
    let s = &mut subs[0];
    let r = s.reply_to(1).await;
    assert!(matches!(r, ServerFrame::Subbed { last: 256, .. }), "{r:?}");
    for seq in 1..=256u64 {
        let (got, data) = s.msg().await;
        assert_eq!(
            (got, &data[..4]),
            (seq, &(seq as u32 - 1).to_be_bytes()[..])
        );
    }
}

/// The measurement, for the report rather than CI: a room of 256 entries of 64 KiB,
/// then 100 `hist` requests on one connection, and (on a fresh broker) 10 connections × 30.
/// Prints the broker's resident memory (VmRSS sampled every 5 ms, and VmHWM).
///
/// `ROOMD_BIN=/path/to/roomd cargo test --release --test bounded_replies flood_rss -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
async fn flood_rss() {
    let bin = std::env::var("ROOMD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_roomd").into());
    for (conns, each) in [(1usize, 100usize), (10, 30)] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("roomd.toml");
        std::fs::write(&config, "").unwrap();
        let mut child = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap()
            .to_string();
        let url = format!("ws://{addr}/ws?");
        let pid = child.id();
        let mut c = Client::connect_url(&url).await;
        fill(&mut c, "flood", 256, 64 * 1024).await;
        let rss = |field: &str| -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >> 10
        };
        let base = rss("VmRSS:");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                        if let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:")) {
                            let kb: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
                            peak = peak.max(kb >> 10);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect_url(&url).await;
                for _ in 0..each {
                    let id = c.id();
                    c.send(&ClientFrame::Hist {
                        id,
                        room: "flood".into(),
                        after: None,
                        before: None,
                        limit: None,
                    })
                    .await;
                }
                let (mut answered, mut largest, mut end) = (0, 0, String::new());
                while answered < each {
                    match tokio::time::timeout(Duration::from_secs(60), c.ws.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) => {
                            answered += 1;
                            largest = largest.max(b.len());
                        }
                        Ok(Some(Ok(Message::Close(f)))) => {
                            end = format!("{f:?}");
                            break;
                        }
                        Ok(Some(Ok(_))) => {}
                        other => {
                            end = format!("{other:?}");
                            break;
                        }
                    }
                }
                (answered, largest, end)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        let answered: usize = results.iter().map(|r| r.0).sum();
        let largest = results.iter().map(|r| r.1).max().unwrap_or(0);
        let ends: Vec<_> = results
            .iter()
            .filter(|r| !r.2.is_empty())
            .map(|r| &r.2)
            .collect();
        eprintln!(
            "{conns} conn × {each} hist: RSS before {base} MiB, peak sampled {peak} MiB, \
             VmHWM {} MiB, after {} MiB; {answered} answered in {took:?}, largest reply {largest} \
             bytes; ended early: {} {:?}",
            rss("VmHWM:"),
            rss("VmRSS:"),
            ends.len(),
            ends.first()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
