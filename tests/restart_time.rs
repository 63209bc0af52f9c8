//! Measurement, not a check: how long roomd takes to come back after `kill -9` with a large
//! database. Ignored by default; run it with
//!
//! ```sh
//! cargo test --release --test restart_time -- --ignored --nocapture
//! ```
//!
//! (`ROOMD_FILL=N` sets the number of messages, default 1,000,000.) It fills the database
//! through the real protocol (64 connections, 100 rooms, 100-byte payloads, default durable
//! mode), kills the broker mid-stream with SIGKILL, restarts it and prints the times.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Client};
use futures_util::{SinkExt, StreamExt};
use roomd_protocol::{codec, decode_server, ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that takes a while; run explicitly"]
async fn restart_after_kill_9_with_a_large_database() {
    let total: u64 = std::env::var("ROOMD_FILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut b = Broker::start("");
    let started = Instant::now();
    let conns = 64u64;
    let per_conn = total / conns;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let url = b.ws_url("");
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            common::read_frame(&mut ws).await;
            let room = format!("room-{}", c % 100);
            let window = 64u64;
            let (mut sent, mut acked) = (0u64, 0u64);
            while acked < per_conn {
                while sent < per_conn && sent - acked < window {
                    let frame = ClientFrame::Pub {
                        id: sent as u32,
                        room: room.clone(),
                        data: vec![b'x'; 100],
                        mid: None,
                    };
                    ws.feed(Message::Binary(codec::encode(&frame).into()))
                        .await
                        .unwrap();
                    sent += 1;
                }
                ws.flush().await.unwrap();
                match ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        if let Ok(ServerFrame::Ack { .. }) = decode_server(&bytes) {
                            acked += 1;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fill = started.elapsed();
    let size = std::fs::metadata(b.data_dir().join("roomd.redb"))
        .unwrap()
        .len();
    println!(
        "filled {} messages in {:.1} s ({:.0} acked publishes/s, 64 publishers, durable); database {:.0} MiB",
        per_conn * conns,
        fill.as_secs_f64(),
        (per_conn * conns) as f64 / fill.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    // Keep writing while the broker is killed, so it dies mid-commit.
    let url = b.ws_url("");
    let writer = tokio::spawn(async move {
        let mut c = Client::connect_url(&url).await;
        loop {
            let id = c.id();
            let frame = ClientFrame::Pub {
                id,
                room: "room-0".into(),
                data: vec![b'y'; 100],
                mid: None,
            };
            if c.ws
                .send(Message::Binary(codec::encode(&frame).into()))
                .await
                .is_err()
            {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(2), c.ws.next())
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.kill9();
    let _ = writer.await;
    let t = Instant::now();
    b.restart();
    let listening = t.elapsed();
    let mut c = Client::connect(&b).await;
    let r = c.sub("room-7", Some(0)).await;
    let first_reply = t.elapsed();
    let ServerFrame::Subbed { last, .. } = r else {
        panic!("{r:?}")
    };
    println!(
        "restart after kill -9: listening after {:.0} ms, first subscribe answered after {:.0} ms (room-7 has {last} messages)",
        listening.as_secs_f64() * 1000.0,
        first_reply.as_secs_f64() * 1000.0
    );
}
