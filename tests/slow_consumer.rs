//! A subscriber that falls behind past its outbound bound is disconnected with 4000, and
//! resuming with `since` loses nothing. Publishers and other subscribers are unaffected.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{Broker, Client};
use roomd_protocol::ServerFrame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_closed_with_4000_and_resumes_losslessly() {
    let b = Broker::start("[limits]\npayload_bytes = 4096\npage = 16\n[websocket]\nmax_frame_bytes = 8192\nwrite_timeout_ms = 120000\n[outbox]\nmax_frames = 256\nmax_bytes = 524288\n");
    let mut slow = Client::connect(&b).await;
    slow.sub("flood", None).await;
    let mut fast = Client::connect(&b).await;
    fast.sub("flood", None).await;
    // The slow client reads nothing while ~24 MB are published (far beyond socket buffers).
    let total = 6_000u64;
    let publisher = spawn_publisher(&b, "flood", total);
    // The fast subscriber keeps up and sees everything in order.
    for seq in 1..=total {
        let (s, data) = fast.msg().await;
        assert_eq!((s, &data[..8]), (seq, &(seq - 1).to_be_bytes()[..]));
    }
    publisher.await.unwrap();
    // The slow one got some prefix, then the close.
    let (last_seen, code) = read_until_closed(&mut slow).await;
    assert_eq!(code, Some(4000));
    assert!(last_seen < total, "the slow consumer was never slow");
    assert!(b.metric("roomd_slow_consumers_total").await >= 1.0);
    // Resume from the last seq seen: exactly the rest.
    let mut again = Client::connect(&b).await;
    let r = again.sub("flood", Some(last_seen)).await;
    assert!(
        matches!(r, ServerFrame::Subbed { complete: true, last, .. } if last == total),
        "{r:?}"
    );
    for seq in last_seen + 1..=total {
        assert_eq!(again.msg().await.0, seq);
    }
}

/// A subscriber that stops reading while its queue is still under the bound: once a write to
/// it makes no progress for `websocket.write_timeout_ms`, the connection is dropped (a frame may
/// be half written, so no close frame can follow), counted as a slow consumer, and nobody else
/// is held up. What it did receive is whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_writes_drop_the_connection_after_the_write_timeout() {
    let b = Broker::start("[limits]\npayload_bytes = 4096\n[websocket]\nmax_frame_bytes = 8192\nwrite_timeout_ms = 300\n[outbox]\nmax_frames = 100000\nmax_bytes = 67108864\n");
    let mut stuck = Client::connect(&b).await;
    stuck.sub("pile", None).await;
    let mut fast = Client::connect(&b).await;
    fast.sub("pile", None).await;
    // ~16 MB: more than the two socket buffers on loopback hold.
    let total = 4_000u64;
    let publisher = spawn_publisher(&b, "pile", total);
    for seq in 1..=total {
        assert_eq!(fast.msg().await.0, seq);
    }
    let mut p = publisher.await.unwrap();
    // The write has been stuck for longer than the timeout by now.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.metric("roomd_slow_consumers_total").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck write was never given up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Dropped: the stream ends without a closing handshake.
    let (last_seen, code) = read_until_closed(&mut stuck).await;
    assert_eq!(code, None, "a close frame after a stuck write");
    assert!(last_seen < total, "the subscriber was never stuck");
    // Everyone else goes on.
    assert!(
        matches!(p.publish("pile", b"after").await, ServerFrame::Ack { seq, .. } if seq == total + 1)
    );
    assert_eq!(fast.msg().await, (total + 1, b"after".to_vec()));
}

/// Publishes `total` messages of 4,000 bytes to `room` from a new connection, 32 in flight at a
/// time; the first 8 bytes of each hold its index. Returns the publisher's client.
fn spawn_publisher(b: &Broker, room: &'static str, total: u64) -> tokio::task::JoinHandle<Client> {
    let url = b.ws_url("");
    tokio::spawn(async move {
        let mut p = Client::connect_url(&url).await;
        for chunk in (0..total).collect::<Vec<_>>().chunks(32) {
            for i in chunk {
                let mut data = vec![0u8; 4000];
                data[..8].copy_from_slice(&i.to_be_bytes());
                let id = p.id();
                p.send(&roomd_protocol::ClientFrame::Pub {
                    id,
                    room: room.into(),
                    data,
                    mid: None,
                })
                .await;
            }
            for _ in chunk {
                assert!(matches!(p.event().await, ServerFrame::Ack { .. }));
            }
        }
        p
    })
}

/// Reads everything a subscriber that had stopped reading was sent, checking that the messages
/// are whole and in order, to the end of the connection. Returns the last seq received and the
/// close code, if the server sent a close frame.
async fn read_until_closed(c: &mut Client) -> (u64, Option<u16>) {
    use tokio_tungstenite::tungstenite::Message;
    let mut last_seen = 0;
    loop {
        match futures_util::StreamExt::next(&mut c.ws).await {
            Some(Ok(Message::Binary(bytes))) => {
                if let ServerFrame::Msg { seq, data, .. } =
                    roomd_protocol::decode_server(&bytes).unwrap()
                {
                    assert_eq!(seq, last_seen + 1);
                    assert_eq!(&data[..8], &(seq - 1).to_be_bytes()[..]);
                    last_seen = seq;
                }
            }
            Some(Ok(Message::Close(f))) => return (last_seen, f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (last_seen, None),
        }
    }
}
