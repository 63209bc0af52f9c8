//! Ephemeral publishes (SPEC.md 4.10, 5.9) reach the live subscribers but the sender at once,
//! take no seq, are never stored or replayed, and are checked, rate-limited and bounded like a
//! publish.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::Duration;

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame};

fn signal(id: u32, room: &str, data: &[u8]) -> ClientFrame {
    ClientFrame::Signal {
        id,
        room: room.into(),
        data: data.to_vec(),
        ephemeral: true,
    }
}

async fn send_signal(c: &mut Client, room: &str, data: &[u8]) -> ServerFrame {
    let id = c.id();
    c.request(signal(id, room, data)).await
}

/// The seqs of a room's whole log, read with `hist`.
async fn logged(c: &mut Client, room: &str) -> Vec<u64> {
    let id = c.id();
    match c
        .request(ClientFrame::Hist {
            id,
            room: room.into(),
            after: Some(0),
            before: None,
            limit: None,
        })
        .await
    {
        ServerFrame::Hist { items, .. } => items.iter().filter_map(ServerFrame::seq).collect(),
        other => panic!("expected hist, got {other:?}"),
    }
}

#[tokio::test]
async fn a_signal_reaches_the_other_live_subscribers_and_nothing_else() {
    let b = Broker::start("");
    let mut ada = Client::connect_query(&b, "user=ada").await;
    let mut bob = Client::connect_query(&b, "user=bob").await;
    ada.sub("room", None).await;
    bob.sub("room", None).await;
    assert_eq!(ada.publish_seq("room", b"one").await, 1);
    assert_eq!(bob.msg().await, (1, b"one".to_vec()));
    assert_eq!(ada.msg().await, (1, b"one".to_vec()));

    let reply = send_signal(&mut ada, "room", b"typing").await;
    assert_eq!(
        reply,
        ServerFrame::Ok {
            id: reply_id(&reply)
        }
    );
    match bob.event().await {
        ServerFrame::Signal {
            room,
            from,
            uid,
            data,
            ts,
        } => {
            assert_eq!((room.as_str(), data.as_slice()), ("room", &b"typing"[..]));
            assert_eq!((from, uid.as_deref()), (ada.conn.clone(), Some("ada")));
            assert!(ts > 1_600_000_000_000);
        }
        other => panic!("expected signal, got {other:?}"),
    }
    // Not to its sender.
    assert_eq!(ada.try_event(Duration::from_millis(300)).await, None);

    // It took no seq: the next publish is 2, and the log holds 1 and 2 only.
    assert_eq!(bob.publish_seq("room", b"two").await, 2);
    assert_eq!(bob.msg().await, (2, b"two".to_vec()));
    assert_eq!(logged(&mut bob, "room").await, [1, 2]);
    // A resuming subscriber gets the log, not the signal.
    let mut late = Client::connect(&b).await;
    late.sub("room", Some(0)).await;
    assert_eq!(late.msg().await, (1, b"one".to_vec()));
    assert_eq!(late.msg().await, (2, b"two".to_vec()));
    assert_eq!(late.try_event(Duration::from_millis(300)).await, None);

    // A connection not subscribed to the room may send one; a subscriber of another room
    // does not get it.
    let mut other = Client::connect(&b).await;
    other.sub("elsewhere", None).await;
    let mut outsider = Client::connect(&b).await;
    assert!(matches!(
        send_signal(&mut outsider, "room", b"hi").await,
        ServerFrame::Ok { .. }
    ));
    assert!(matches!(bob.event().await, ServerFrame::Signal { data, .. } if data == b"hi"));
    assert!(matches!(late.event().await, ServerFrame::Signal { data, .. } if data == b"hi"));
    assert_eq!(other.try_event(Duration::from_millis(300)).await, None);
}

fn reply_id(f: &ServerFrame) -> u32 {
    common::reply_id(f).expect("a reply")
}

#[tokio::test]
async fn a_signal_is_checked_like_a_publish() {
    let b = Broker::start(
        "[limits]\npayload_bytes = 1000\n[namespaces.ro]\nanonymous = [\"sub\", \"hist\"]\n",
    );
    let mut c = Client::connect(&b).await;
    // `mid` is for stored publishes only.
    let id = c.id();
    let with_mid = roomd_protocol::Value::Map(vec![
        ("t".into(), "pub".into()),
        ("id".into(), id.into()),
        ("room".into(), "r".into()),
        ("data".into(), roomd_protocol::Value::Binary(vec![1])),
        ("mid".into(), "m1".into()),
        ("ephemeral".into(), true.into()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &with_mid).unwrap();
    c.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
        bytes.into(),
    ))
    .await;
    let r = c.reply_to(id).await;
    assert_eq!(err_code(&r), 406, "{r:?}");
    // `ephemeral` must be a bool.
    let id = c.id();
    let wrong = roomd_protocol::Value::Map(vec![
        ("t".into(), "pub".into()),
        ("id".into(), id.into()),
        ("room".into(), "r".into()),
        ("data".into(), roomd_protocol::Value::Binary(vec![1])),
        ("ephemeral".into(), 1.into()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &wrong).unwrap();
    c.send_raw(tokio_tungstenite::tungstenite::Message::Binary(
        bytes.into(),
    ))
    .await;
    assert_eq!(err_code(&c.reply_to(id).await), 406);
    // The payload limit, the room grammar and the `pub` capability.
    let r = send_signal(&mut c, "r", &[0; 1001]).await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(1000),
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(err_code(&send_signal(&mut c, "bad room", b"x").await), 414);
    assert_eq!(err_code(&send_signal(&mut c, "ro:x", b"x").await), 403);
    // A signal to a room nobody has loaded is answered and loads nothing.
    let before = b.metric("roomd_rooms_active").await;
    assert!(matches!(
        send_signal(&mut c, "nobody-here", b"x").await,
        ServerFrame::Ok { .. }
    ));
    assert_eq!(b.metric("roomd_rooms_active").await, before);
}

#[tokio::test]
async fn signals_count_against_the_publish_rate() {
    // One per second after a burst of 3: of six sent at once, three pass; a stored publish
    // then finds the same bucket empty.
    let b = Broker::start("[rate]\npublishes_per_sec = 1\npublishes_burst = 3\n");
    let mut c = Client::connect(&b).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(match send_signal(&mut c, "r", b"x").await {
            ServerFrame::Ok { .. } => 0,
            ServerFrame::Err {
                code,
                retry_after_ms,
                ..
            } => {
                assert!(retry_after_ms.is_some_and(|ms| (1..=1000).contains(&ms)));
                code
            }
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 3, "{codes:?}");
    assert!(codes[3..].iter().all(|c| *c == 429), "{codes:?}");
    assert_eq!(err_code(&c.publish("r", b"stored").await), 429);
}

/// A subscriber that reads nothing while signals pour in is closed as a slow consumer, like
/// one that falls behind the log; the others get every signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_signals_is_a_slow_consumer() {
    let b = Broker::start(
        "[limits]\npayload_bytes = 4096\npage = 16\n[websocket]\nmax_frame_bytes = 8192\nwrite_timeout_ms = 120000\n[outbox]\nmax_frames = 64\nmax_bytes = 262144\n",
    );
    let mut slow = Client::connect(&b).await;
    slow.sub("flood", None).await;
    let mut fast = Client::connect(&b).await;
    fast.sub("flood", None).await;
    let mut sender = Client::connect(&b).await;
    // About 24 MB, far beyond what socket buffers absorb, in rounds the fast subscriber reads.
    let total = 6_000u32;
    for round in 0..total / 32 {
        let mut last = 0;
        for i in round * 32..(round + 1) * 32 {
            let mut data = vec![0u8; 4000];
            data[..4].copy_from_slice(&i.to_be_bytes());
            last = sender.id();
            sender.send(&signal(last, "flood", &data)).await;
        }
        assert!(matches!(
            sender.reply_to(last).await,
            ServerFrame::Ok { .. }
        ));
        for i in round * 32..(round + 1) * 32 {
            match fast.event().await {
                ServerFrame::Signal { data, .. } => assert_eq!(&data[..4], &i.to_be_bytes()),
                other => panic!("expected signal {i}, got {other:?}"),
            }
        }
    }
    assert_eq!(slow.close_code().await, Some(4000));
    assert!(b.metric("roomd_slow_consumers_total").await >= 1.0);
}
