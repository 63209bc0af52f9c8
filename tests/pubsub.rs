//! Publish/subscribe across clients: per-room order, isolation between rooms, presence, history.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};
use std::time::Duration;

#[tokio::test]
async fn publish_reaches_every_subscriber_in_order_and_rooms_are_isolated() {
    let b = Broker::start("");
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&b).await;
        let ServerFrame::Subbed {
            last,
            first,
            complete,
            ..
        } = c.sub("alpha", None).await
        else {
            panic!()
        };
        assert_eq!((last, first, complete), (0, 1, true));
        subs.push(c);
    }
    let mut other = Client::connect(&b).await;
    other.sub("beta", None).await;

    // Two publishers interleave; every subscriber sees one order with dense seqs.
    let mut p1 = Client::connect(&b).await;
    let mut p2 = Client::connect(&b).await;
    let mut acked = Vec::new();
    for i in 0..20u8 {
        let p = if i % 2 == 0 { &mut p1 } else { &mut p2 };
        acked.push((p.publish_seq("alpha", &[i]).await, vec![i]));
    }
    acked.sort();
    assert_eq!(
        acked.iter().map(|a| a.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    for c in &mut subs {
        for expected in &acked {
            assert_eq!(&c.msg().await, expected);
        }
    }
    // beta saw nothing of alpha; its own log starts at 1.
    assert!(other.try_event(Duration::from_millis(200)).await.is_none());
    assert_eq!(p1.publish_seq("beta", b"b").await, 1);
    assert_eq!(other.msg().await, (1, b"b".to_vec()));
}

#[tokio::test]
async fn delivered_message_carries_room_time_and_publisher() {
    let b = Broker::start("");
    let mut s = Client::connect(&b).await;
    s.sub("r", None).await;
    let mut p = Client::connect_query(&b, "user=ada").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    p.publish_seq("r", b"hi").await;
    match s.event().await {
        ServerFrame::Msg {
            room,
            seq,
            ts,
            from,
            uid,
            data,
            deleted,
            edited,
            edits,
        } => {
            assert_eq!((room.as_str(), seq, data.as_slice()), ("r", 1, &b"hi"[..]));
            assert_eq!((deleted, edited, edits), (None, None, None));
            assert_eq!(from, p.conn);
            assert_eq!(uid.as_deref(), Some("ada"));
            assert!(ts >= before && ts < before + 10_000);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let b = Broker::start("");
    let mut s = Client::connect(&b).await;
    s.sub("r", None).await;
    let id = s.id();
    assert_eq!(
        s.request(ClientFrame::Unsub {
            id,
            room: "r".into()
        })
        .await,
        ServerFrame::Ok { id }
    );
    let mut p = Client::connect(&b).await;
    p.publish_seq("r", b"x").await;
    assert!(s.try_event(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn presence_join_leave_and_who() {
    let b = Broker::start("");
    let info = |name: &str| Value::Map(vec![(Value::from("name"), Value::from(name))]);
    let mut watcher = Client::connect_query(&b, "user=w").await;
    let id = watcher.id();
    let r = watcher
        .request(ClientFrame::Sub {
            id,
            room: "p".into(),
            since: None,
            state: None,
            presence: Some(true),
            info: Some(info("Wat")),
        })
        .await;
    let ServerFrame::Subbed {
        presence: Some(members),
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].conn, watcher.conn);

    let mut ada = Client::connect_query(&b, "user=ada").await;
    let id = ada.id();
    ada.request(ClientFrame::Sub {
        id,
        room: "p".into(),
        since: None,
        state: None,
        presence: None,
        info: Some(info("Ada")),
    })
    .await;
    match watcher.event().await {
        // A v1 room: no `conns` (SPEC.md 4.12).
        ServerFrame::Join {
            room,
            conn,
            user,
            info: i,
            conns: None,
        } => {
            assert_eq!(
                (room.as_str(), conn.as_str(), user.as_deref()),
                ("p", ada.conn.as_str(), Some("ada"))
            );
            assert_eq!(i, Some(info("Ada")));
        }
        other => panic!("{other:?}"),
    }
    let id = watcher.id();
    let ServerFrame::Who { members, .. } = watcher
        .request(ClientFrame::Who {
            id,
            room: "p".into(),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(members.len(), 2);

    // A dropped connection leaves.
    let ada_conn = ada.conn.clone();
    drop(ada);
    match watcher.event().await {
        ServerFrame::Leave { conn, user, .. } => {
            assert_eq!((conn, user.as_deref()), (ada_conn, Some("ada")))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn history_pages_backward_and_forward() {
    let b = Broker::start("[limits]\npage = 10\n[outbox]\nmax_frames = 64\n");
    let mut p = Client::connect(&b).await;
    for i in 1..=25u8 {
        p.publish_seq("h", &[i]).await;
    }
    let seqs = |f: &ServerFrame| match f {
        ServerFrame::Hist { items, more, .. } => (
            items.iter().map(|i| i.seq().unwrap()).collect::<Vec<_>>(),
            *more,
        ),
        other => panic!("{other:?}"),
    };
    let id = p.id();
    let newest = p
        .request(ClientFrame::Hist {
            id,
            room: "h".into(),
            after: None,
            before: None,
            limit: Some(5),
        })
        .await;
    assert_eq!(seqs(&newest), ((21..=25).collect(), true));
    let id = p.id();
    let older = p
        .request(ClientFrame::Hist {
            id,
            room: "h".into(),
            after: None,
            before: Some(21),
            limit: None,
        })
        .await;
    assert_eq!(seqs(&older), ((11..=20).collect(), true));
    let id = p.id();
    let oldest = p
        .request(ClientFrame::Hist {
            id,
            room: "h".into(),
            after: None,
            before: Some(3),
            limit: None,
        })
        .await;
    assert_eq!(seqs(&oldest), (vec![1, 2], false));
    let id = p.id();
    let fwd = p
        .request(ClientFrame::Hist {
            id,
            room: "h".into(),
            after: Some(20),
            before: None,
            limit: Some(100),
        })
        .await;
    assert_eq!(seqs(&fwd), ((21..=25).collect(), false));
    let id = p.id();
    let ServerFrame::Hist { items, .. } = p
        .request(ClientFrame::Hist {
            id,
            room: "h".into(),
            after: Some(0),
            before: None,
            limit: Some(1),
        })
        .await
    else {
        panic!()
    };
    assert!(matches!(&items[0], ServerFrame::Msg { data, seq: 1, .. } if data == &vec![1u8]));
    let id = p.id();
    let none = p
        .request(ClientFrame::Hist {
            id,
            room: "nothing-here".into(),
            after: None,
            before: None,
            limit: None,
        })
        .await;
    assert_eq!(seqs(&none), (vec![], false));
}

#[tokio::test]
async fn ping_pong_and_hello_limits() {
    let b = Broker::start("[limits]\npayload_bytes = 1000\n");
    let mut c = Client::connect(&b).await;
    let ServerFrame::Hello {
        v, limits, ping, ..
    } = &c.hello
    else {
        panic!()
    };
    assert_eq!((*v, limits.payload, *ping), (1, 1000, 20));
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Ping { id }).await,
        ServerFrame::Pong { id }
    );
}

/// With a room inbox of one request, requests that find it full wait on their connection (the
/// connection reads nothing more meanwhile) and go in order: every publish is acknowledged
/// and delivered, each connection's in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_a_full_room_inbox_in_order() {
    let b = Broker::start("[rooms]\ninbox = 1\n");
    let mut sub = Client::connect(&b).await;
    sub.sub("busy", None).await;
    let (pubs, each) = (8u8, 100u8);
    let mut tasks = Vec::new();
    for p in 0..pubs {
        let url = b.ws_url("");
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect_url(&url).await;
            // All sent before any ack is read: the inbox is full most of the time.
            for i in 0..each {
                let id = c.id();
                c.send(&ClientFrame::Pub {
                    id,
                    room: "busy".into(),
                    data: vec![p, i],
                    mid: None,
                })
                .await;
            }
            let mut seqs = Vec::new();
            for _ in 0..each {
                match c.event().await {
                    ServerFrame::Ack { seq, .. } => seqs.push(seq),
                    other => panic!("{other:?}"),
                }
            }
            seqs
        }));
    }
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    let mut next = vec![0u8; pubs as usize];
    for seq in 1..=u64::from(pubs) * u64::from(each) {
        let (s, data) = sub.msg().await;
        assert_eq!(s, seq);
        assert_eq!(
            data[1], next[data[0] as usize],
            "publisher {}'s order",
            data[0]
        );
        next[data[0] as usize] += 1;
    }
}
