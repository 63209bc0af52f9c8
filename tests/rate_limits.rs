//! A request over one of its connection's or its user's rate limits (`[rate]`) is answered 429
//! with `retry_after_ms` and not acted on: nothing is stored and no room is loaded.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};

/// Sends every frame before reading any reply, then returns the replies by request id.
async fn pipelined(c: &mut Client, frames: Vec<ClientFrame>) -> HashMap<u32, ServerFrame> {
    let ids: Vec<u32> = frames.iter().map(ClientFrame::id).collect();
    for f in &frames {
        c.send(f).await;
    }
    let mut out = HashMap::new();
    while !ids.iter().all(|id| out.contains_key(id)) {
        let f = common::read_frame(&mut c.ws)
            .await
            .expect("connection closed while waiting for replies");
        if let Some(id) = common::reply_id(&f) {
            out.insert(id, f);
        }
    }
    out
}

fn publish(c: &mut Client, room: &str, data: Vec<u8>) -> ClientFrame {
    ClientFrame::Pub {
        id: c.id(),
        room: room.into(),
        data,
        mid: None,
    }
}

/// The 429 of a rate limit: its `retry_after_ms`, or a panic.
fn retry_after(f: &ServerFrame) -> u64 {
    match f {
        ServerFrame::Err {
            code: 429,
            retry_after_ms: Some(ms),
            ..
        } => *ms,
        other => panic!("expected 429 with retry_after_ms, got {other:?}"),
    }
}

/// Every stored entry's data, oldest first.
async fn history(c: &mut Client, room: &str) -> Vec<Vec<u8>> {
    let id = c.id();
    match c
        .request(ClientFrame::Hist {
            id,
            room: room.into(),
            after: None,
            before: None,
            limit: None,
        })
        .await
    {
        ServerFrame::Hist { items, .. } => items
            .into_iter()
            .map(|f| match f {
                ServerFrame::Msg { data, .. } => data,
                other => panic!("expected msg, got {other:?}"),
            })
            .collect(),
        other => panic!("expected hist, got {other:?}"),
    }
}

#[tokio::test]
async fn publishes_over_the_rate_get_429_and_are_not_stored() {
    // One per second after a burst of 5: ten sent at once, five pass.
    let b = Broker::start("[rate]\npublishes_per_sec = 1\npublishes_burst = 5\n");
    let mut c = Client::connect(&b).await;
    let frames: Vec<_> = (0..10u8).map(|i| publish(&mut c, "r", vec![i])).collect();
    let replies = pipelined(&mut c, frames).await;
    let mut acked = Vec::new();
    for (id, f) in &replies {
        match f {
            ServerFrame::Ack { .. } => acked.push(*id),
            f => assert!((1..=1000).contains(&retry_after(f)), "{f:?}"),
        }
    }
    assert_eq!(acked.len(), 5, "{replies:?}");
    // Exactly the acknowledged publishes are stored (ids 1..=10 carried data 0..=9).
    acked.sort_unstable();
    let stored: Vec<Vec<u8>> = acked.iter().map(|id| vec![(id - 1) as u8]).collect();
    assert_eq!(history(&mut c, "r").await, stored);
    // Still over (at most one per second came back meanwhile); after the wait named, a
    // publish passes again.
    let frames: Vec<_> = (0..10)
        .map(|_| publish(&mut c, "r", b"late".to_vec()))
        .collect();
    let replies = pipelined(&mut c, frames).await;
    let wait = replies
        .values()
        .filter(|f| !matches!(f, ServerFrame::Ack { .. }))
        .map(retry_after)
        .max()
        .expect("some of them refused");
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(matches!(
        c.publish("r", b"later").await,
        ServerFrame::Ack { .. }
    ));
    // Another connection has its own budget.
    let mut other = Client::connect(&b).await;
    assert!(matches!(
        other.publish("r", b"x").await,
        ServerFrame::Ack { .. }
    ));
}

#[tokio::test]
async fn published_bytes_over_the_rate_get_429_and_are_not_stored() {
    let b = Broker::start("[limits]\npayload_bytes = 1000\n[rate]\npublish_bytes_per_sec = 1000\n");
    let mut c = Client::connect(&b).await;
    let (first, second) = (
        publish(&mut c, "r", vec![1; 600]),
        publish(&mut c, "r", vec![2; 600]),
    );
    let (first_id, second_id) = (first.id(), second.id());
    let replies = pipelined(&mut c, vec![first, second]).await;
    assert!(
        matches!(replies[&first_id], ServerFrame::Ack { .. }),
        "{replies:?}"
    );
    let wait = retry_after(&replies[&second_id]);
    assert!((1..=200).contains(&wait), "{replies:?}");
    // Small publishes still fit in what is left.
    assert!(matches!(
        c.publish("r", &[3; 10]).await,
        ServerFrame::Ack { .. }
    ));
    assert_eq!(history(&mut c, "r").await, vec![vec![1; 600], vec![3; 10]]);
}

#[tokio::test]
async fn state_writes_over_the_rate_get_429_and_change_nothing() {
    let b = Broker::start("[rate]\nstate_writes_per_sec = 1\nstate_writes_burst = 3\n");
    let mut c = Client::connect(&b).await;
    let (put, incr, cas, del) = (c.id(), c.id(), c.id(), c.id());
    let replies = pipelined(
        &mut c,
        vec![
            ClientFrame::Put {
                ttl_ms: None,
                ephemeral: false,
                id: put,
                room: "s".into(),
                key: "a".into(),
                value: Value::from("x"),
            },
            ClientFrame::Incr {
                id: incr,
                room: "s".into(),
                key: "n".into(),
                by: None,
            },
            ClientFrame::Cas {
                ttl_ms: None,
                ephemeral: false,
                id: cas,
                room: "s".into(),
                key: "b".into(),
                ver: 0,
                value: Value::from(1),
            },
            ClientFrame::Del {
                id: del,
                room: "s".into(),
                key: "a".into(),
            },
        ],
    )
    .await;
    for id in [put, incr, cas] {
        assert!(
            matches!(replies[&id], ServerFrame::Done { .. }),
            "{replies:?}"
        );
    }
    assert!((1..=1000).contains(&retry_after(&replies[&del])));
    // Reads are not limited, and the refused del deleted nothing.
    let id = c.id();
    let r = c
        .request(ClientFrame::Get {
            id,
            room: "s".into(),
            key: "a".into(),
        })
        .await;
    assert!(
        matches!(&r, ServerFrame::Val { value: Some(v), ver: 1, .. } if *v == Value::from("x")),
        "{r:?}"
    );
    // Publishes have their own limits (off here).
    assert!(matches!(
        c.publish("s", b"m").await,
        ServerFrame::Ack { .. }
    ));
}

#[tokio::test]
async fn a_user_loading_rooms_beyond_the_rate_gets_429_and_the_room_is_not_created() {
    let b = Broker::start("[rate]\nrooms_per_minute = 2\nrooms_burst = 2\n");
    let mut ada = Client::connect_query(&b, "user=ada").await;
    assert!(matches!(
        ada.sub("r1", None).await,
        ServerFrame::Subbed { .. }
    ));
    assert!(matches!(
        ada.publish("r2", b"x").await,
        ServerFrame::Ack { .. }
    ));
    let f = ada.publish("r3", b"y").await;
    // One room per 30 s.
    assert!((1..=30_000).contains(&retry_after(&f)), "{f:?}");
    // Per user, not per connection; a sub refused this way leaves no subscription behind.
    let mut ada2 = Client::connect_query(&b, "user=ada").await;
    retry_after(&ada2.sub("r3", None).await);
    let id = ada2.id();
    let r = ada2
        .request(ClientFrame::Unsub {
            id,
            room: "r3".into(),
        })
        .await;
    assert_eq!(common::err_code(&r), 404);
    // A room already loaded costs nothing.
    assert!(matches!(
        ada2.publish("r1", b"z").await,
        ServerFrame::Ack { .. }
    ));
    // r3 was neither stored nor loaded: hist reads the disk without loading a room.
    assert!(history(&mut ada, "r3").await.is_empty());
    assert_eq!(b.metric("roomd_rooms_active").await, 2.0);
    // Another user, and a connection without a user, have their own budgets.
    let mut bob = Client::connect_query(&b, "user=bob").await;
    assert!(matches!(
        bob.publish("r3", b"b").await,
        ServerFrame::Ack { .. }
    ));
    let mut anon = Client::connect(&b).await;
    assert!(matches!(
        anon.publish("r4", b"a").await,
        ServerFrame::Ack { .. }
    ));
    assert_eq!(b.metric("roomd_rooms_active").await, 4.0);
}

#[tokio::test]
async fn per_connection_limits_are_off_by_default() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    // 2000 publishes of 4 KiB (8 MiB) and 2000 state writes as fast as one connection sends.
    let frames: Vec<_> = (0..2000)
        .map(|_| publish(&mut c, "r", vec![7; 4096]))
        .collect();
    let replies = pipelined(&mut c, frames).await;
    assert!(replies
        .values()
        .all(|f| matches!(f, ServerFrame::Ack { .. })));
    let frames: Vec<_> = (0..2000)
        .map(|_| ClientFrame::Incr {
            id: c.id(),
            room: "r".into(),
            key: "n".into(),
            by: None,
        })
        .collect();
    let replies = pipelined(&mut c, frames).await;
    assert!(replies
        .values()
        .all(|f| matches!(f, ServerFrame::Done { .. })));
}

#[tokio::test]
async fn the_default_room_load_burst_covers_a_full_subscription_allowance() {
    // On by default (600 a minute, burst 1024): one connection may still load as many rooms
    // at once as it may subscribe to.
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let frames: Vec<_> = (0..1024)
        .map(|i| ClientFrame::Sub {
            id: c.id(),
            room: format!("room-{i}"),
            since: None,
            state: None,
            presence: None,
            info: None,
        })
        .collect();
    let replies = pipelined(&mut c, frames).await;
    assert!(replies
        .values()
        .all(|f| matches!(f, ServerFrame::Subbed { .. })));
    // Beyond it, new rooms come at 10 a second.
    let frames: Vec<_> = (0..200)
        .map(|i| publish(&mut c, &format!("more-{i}"), vec![1]))
        .collect();
    let replies = pipelined(&mut c, frames).await;
    let refused: Vec<u64> = replies
        .values()
        .filter(|f| !matches!(f, ServerFrame::Ack { .. }))
        .map(retry_after)
        .collect();
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|ms| (1..=100).contains(ms)),
        "{refused:?}"
    );
}
