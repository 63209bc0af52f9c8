//! Resume: a subscriber that comes back with `since` gets exactly what it missed, then live
//! entries, with no gap and no duplicate at the switch, even while others publish.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame};
use std::time::Duration;

#[tokio::test]
async fn reconnect_with_since_gets_exactly_the_missed_messages_then_live() {
    let b = Broker::start("");
    let mut s = Client::connect(&b).await;
    s.sub("r", None).await;
    let mut p = Client::connect(&b).await;
    for i in 1..=5u8 {
        p.publish_seq("r", &[i]).await;
    }
    for i in 1..=5u64 {
        assert_eq!(s.msg().await.0, i);
    }
    drop(s);
    for i in 6..=12u8 {
        p.publish_seq("r", &[i]).await;
    }
    let mut s = Client::connect(&b).await;
    let ServerFrame::Subbed {
        last,
        first,
        complete,
        epoch,
        ..
    } = s.sub("r", Some(5)).await
    else {
        panic!()
    };
    assert_eq!((last, first, complete), (12, 6, true));
    assert!(epoch > 0 && epoch < (1 << 53));
    p.publish_seq("r", &[13]).await;
    for i in 6..=13u64 {
        assert_eq!(s.msg().await, (i, vec![i as u8]));
    }
    assert!(s.try_event(Duration::from_millis(200)).await.is_none());
}

/// A backlog far beyond the in-memory cache and the page size is replayed from disk in pages
/// while publishers keep going; the subscriber sees every seq exactly once, in order.
#[tokio::test]
async fn long_backlog_replay_under_concurrent_publishing_has_no_gap_and_no_duplicate() {
    let b = Broker::start(
        "[limits]\npage = 50\n[rooms]\ncache_entries = 20\n[outbox]\nmax_frames = 200\n",
    );
    let mut p = Client::connect(&b).await;
    let total_before = 1500u64;
    // Pipelined publishes, 100 in flight at a time (more would overflow the outbox with acks,
    // which is a slow consumer): acks arrive as group commits complete.
    for chunk in (0..total_before).collect::<Vec<_>>().chunks(100) {
        for i in chunk {
            let id = p.id();
            p.send(&ClientFrame::Pub {
                id,
                room: "big".into(),
                data: i.to_be_bytes().to_vec(),
                mid: None,
            })
            .await;
        }
        for _ in chunk {
            assert!(matches!(p.event().await, ServerFrame::Ack { .. }));
        }
    }
    // Others keep publishing while the subscriber replays.
    let addr = b.ws_url("");
    let publisher = tokio::spawn(async move {
        let mut p2 = Client::connect_url(&addr).await;
        for i in 0..300u64 {
            p2.publish_seq("big", &(total_before + i).to_be_bytes())
                .await;
        }
    });
    let mut s = Client::connect(&b).await;
    let ServerFrame::Subbed {
        first, complete, ..
    } = s.sub("big", Some(0)).await
    else {
        panic!()
    };
    assert_eq!((first, complete), (1, true));
    let mut expected = 1u64;
    while expected <= total_before + 300 {
        let (seq, data) = s.msg().await;
        assert_eq!(seq, expected, "gap or duplicate");
        assert_eq!(data, (seq - 1).to_be_bytes().to_vec());
        expected += 1;
    }
    publisher.await.unwrap();
    assert!(s.try_event(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn since_older_than_retained_history_says_so() {
    let b = Broker::start("[retention]\nmax_messages = 10\nsweep_interval_secs = 1\n");
    let mut p = Client::connect(&b).await;
    for i in 1..=30u8 {
        p.publish_seq("t", &[i]).await;
    }
    // Wait for the sweep to trim.
    let mut earliest = 0;
    for _ in 0..50 {
        let mut s = Client::connect(&b).await;
        if let ServerFrame::Subbed { earliest: e, .. } = s.sub("t", Some(0)).await {
            earliest = e;
        }
        if earliest > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(earliest, 21);
    let mut s = Client::connect(&b).await;
    let ServerFrame::Subbed {
        first,
        complete,
        last,
        ..
    } = s.sub("t", Some(3)).await
    else {
        panic!()
    };
    assert_eq!((first, complete, last), (21, false, 30));
    for i in 21..=30u64 {
        assert_eq!(s.msg().await.0, i);
    }
    // Within retained history a resume is complete.
    let mut s = Client::connect(&b).await;
    let ServerFrame::Subbed {
        first, complete, ..
    } = s.sub("t", Some(25)).await
    else {
        panic!()
    };
    assert_eq!((first, complete), (26, true));
}

#[tokio::test]
async fn repeated_mid_is_acknowledged_with_the_original_seq_across_reconnects() {
    let b = Broker::start("");
    let mut p = Client::connect_query(&b, "client=cli-1").await;
    let id = p.id();
    let r = p
        .request(ClientFrame::Pub {
            id,
            room: "d".into(),
            data: b"once".to_vec(),
            mid: Some("m1".into()),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Ack {
            id,
            seq: 1,
            dup: None
        }
    );
    drop(p);
    let mut p = Client::connect_query(&b, "client=cli-1").await;
    let id = p.id();
    let r = p
        .request(ClientFrame::Pub {
            id,
            room: "d".into(),
            data: b"once".to_vec(),
            mid: Some("m1".into()),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Ack {
            id,
            seq: 1,
            dup: Some(true)
        }
    );
    // Another client may use the same mid.
    let mut q = Client::connect_query(&b, "client=cli-2").await;
    let id = q.id();
    let r = q
        .request(ClientFrame::Pub {
            id,
            room: "d".into(),
            data: b"other".to_vec(),
            mid: Some("m1".into()),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Ack {
            id,
            seq: 2,
            dup: None
        }
    );
    // Two copies sent back to back (a retry racing the first): one stored, both acked.
    let (id1, id2) = (p.id(), p.id());
    p.send(&ClientFrame::Pub {
        id: id1,
        room: "d".into(),
        data: b"x".to_vec(),
        mid: Some("m2".into()),
    })
    .await;
    p.send(&ClientFrame::Pub {
        id: id2,
        room: "d".into(),
        data: b"x".to_vec(),
        mid: Some("m2".into()),
    })
    .await;
    let a1 = p.reply_to(id1).await;
    let a2 = p.reply_to(id2).await;
    let (ServerFrame::Ack { seq: s1, .. }, ServerFrame::Ack { seq: s2, .. }) = (a1, a2) else {
        panic!()
    };
    assert_eq!((s1, s2), (3, 3));
    let mut s = Client::connect(&b).await;
    s.sub("d", Some(0)).await;
    for i in 1..=3 {
        assert_eq!(s.msg().await.0, i);
    }
    assert!(s.try_event(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn retention_by_age_keeps_only_the_newest_entry_so_seqs_continue() {
    let b = Broker::start("[retention]\nmax_age_secs = 1\nsweep_interval_secs = 1\n");
    let mut p = Client::connect(&b).await;
    for i in 1..=5u8 {
        p.publish_seq("aged", &[i]).await;
    }
    let mut earliest = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = Client::connect(&b).await;
        if let ServerFrame::Subbed { earliest: e, .. } = s.sub("aged", Some(0)).await {
            earliest = e;
        }
        if earliest == 5 {
            break;
        }
    }
    assert_eq!(earliest, 5, "old entries were not trimmed");
    assert_eq!(p.publish_seq("aged", b"new").await, 6);
}
