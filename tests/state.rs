//! Room state: atomic operations under concurrency, conflicts, ordering with messages, and
//! snapshots consistent with the seq a subscription starts from.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};

fn put(id: u32, key: &str, value: Value) -> ClientFrame {
    ClientFrame::Put {
        ttl_ms: None,
        ephemeral: false,
        id,
        room: "s".into(),
        key: key.into(),
        value,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incr_from_many_clients_sums_exactly() {
    let b = Broker::start("");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = b.ws_url("");
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect_url(&url).await;
            for _ in 0..50 {
                let id = c.id();
                let r = c
                    .request(ClientFrame::Incr {
                        id,
                        room: "s".into(),
                        key: "n".into(),
                        by: Some(3),
                    })
                    .await;
                assert!(matches!(r, ServerFrame::Done { seq: Some(_), .. }), "{r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Get {
            id,
            room: "s".into(),
            key: "n".into(),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Val {
            exp: None,
            id,
            key: "n".into(),
            value: Some(Value::from(16 * 50 * 3)),
            ver: 800
        }
    );
}

#[tokio::test]
async fn cas_put_get_del_list_and_conflicts() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: "owner".into(),
            ver: 0,
            value: Value::from("ada"),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Done {
            id,
            seq: Some(1),
            ver: 1,
            value: None
        }
    );
    // A second create-if-absent conflicts and reports the current version.
    let id = c.id();
    let r = c
        .request(ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: "owner".into(),
            ver: 0,
            value: Value::from("eve"),
        })
        .await;
    assert_eq!(err_code(&r), 409);
    assert!(matches!(r, ServerFrame::Err { ver: Some(1), .. }));
    let id = c.id();
    let r = c
        .request(ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "s".into(),
            key: "owner".into(),
            ver: 1,
            value: Value::from("bob"),
        })
        .await;
    assert_eq!(
        r,
        ServerFrame::Done {
            id,
            seq: Some(2),
            ver: 2,
            value: None
        }
    );
    let id = c.id();
    c.request(put(id, "user:1", Value::from(true))).await;
    let id = c.id();
    c.request(put(
        id,
        "user:2",
        Value::Map(vec![(Value::from("n"), Value::from(1.5))]),
    ))
    .await;
    let id = c.id();
    let ServerFrame::Vals { items, more, .. } = c
        .request(ClientFrame::List {
            id,
            room: "s".into(),
            prefix: Some("user:".into()),
            after: None,
            limit: Some(1),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        (items.len(), items[0].key.as_str(), more),
        (1, "user:1", true)
    );
    let id = c.id();
    let ServerFrame::Vals { items, more, .. } = c
        .request(ClientFrame::List {
            id,
            room: "s".into(),
            prefix: Some("user:".into()),
            after: Some("user:1".into()),
            limit: None,
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        (items.len(), items[0].key.as_str(), more),
        (1, "user:2", false)
    );
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Del {
            id,
            room: "s".into(),
            key: "owner".into()
        })
        .await,
        ServerFrame::Done {
            id,
            seq: Some(5),
            ver: 0,
            value: None
        }
    );
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Del {
            id,
            room: "s".into(),
            key: "owner".into()
        })
        .await,
        ServerFrame::Done {
            id,
            seq: None,
            ver: 0,
            value: None
        }
    );
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Get {
            id,
            room: "s".into(),
            key: "owner".into()
        })
        .await,
        ServerFrame::Val {
            exp: None,
            id,
            key: "owner".into(),
            value: None,
            ver: 0
        }
    );
    // incr on a non-integer value.
    let id = c.id();
    let r = c
        .request(ClientFrame::Incr {
            id,
            room: "s".into(),
            key: "user:1".into(),
            by: None,
        })
        .await;
    assert_eq!(err_code(&r), 422);
}

#[tokio::test]
async fn mutations_are_ordered_with_messages_and_delivered_as_state_events() {
    let b = Broker::start("");
    let mut s = Client::connect(&b).await;
    s.sub("s", None).await;
    let mut c = Client::connect(&b).await;
    c.publish_seq("s", b"m1").await;
    let id = c.id();
    c.request(put(id, "k", Value::from(7))).await;
    c.publish_seq("s", b"m2").await;
    let id = c.id();
    c.request(ClientFrame::Del {
        id,
        room: "s".into(),
        key: "k".into(),
    })
    .await;
    assert!(matches!(s.event().await, ServerFrame::Msg { seq: 1, .. }));
    match s.event().await {
        ServerFrame::State {
            seq,
            key,
            ver,
            value,
            from,
            ..
        } => {
            assert_eq!(
                (seq, key.as_str(), ver, value),
                (2, "k", 1, Some(Value::from(7)))
            );
            assert_eq!(from, c.conn);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.event().await, ServerFrame::Msg { seq: 3, .. }));
    assert!(matches!(
        s.event().await,
        ServerFrame::State {
            seq: 4,
            ver: 0,
            value: None,
            ..
        }
    ));
}

#[tokio::test]
async fn snapshot_is_consistent_with_the_seq_the_subscription_starts_from() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    for i in 0..5 {
        let id = c.id();
        c.request(ClientFrame::Incr {
            id,
            room: "s".into(),
            key: "n".into(),
            by: Some(i),
        })
        .await;
    }
    let mut s = Client::connect(&b).await;
    let id = s.id();
    let r = s
        .request(ClientFrame::Sub {
            id,
            room: "s".into(),
            since: None,
            state: Some(true),
            presence: None,
            info: None,
        })
        .await;
    let ServerFrame::Subbed {
        last,
        state: Some(state),
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        (last, state[0].ver, &state[0].value),
        (5, 5, &Value::from(10))
    );
    let id = c.id();
    c.request(ClientFrame::Incr {
        id,
        room: "s".into(),
        key: "n".into(),
        by: Some(1),
    })
    .await;
    assert!(matches!(
        s.event().await,
        ServerFrame::State { seq: 6, ver: 6, .. }
    ));
}

#[tokio::test]
async fn state_survives_idle_unload_and_reload() {
    let b = Broker::start("[rooms]\nidle_unload_secs = 1\n");
    let mut c = Client::connect(&b).await;
    let id = c.id();
    c.request(put(id, "k", Value::from("v"))).await;
    c.publish_seq("s", b"x").await;
    assert!(b.metric("roomd_rooms_active").await >= 1.0);
    let mut unloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if b.metric("roomd_rooms_active").await == 0.0 {
            unloaded = true;
            break;
        }
    }
    assert!(unloaded, "idle room was not unloaded");
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Get {
            id,
            room: "s".into(),
            key: "k".into()
        })
        .await,
        ServerFrame::Val {
            exp: None,
            id,
            key: "k".into(),
            value: Some(Value::from("v")),
            ver: 1
        }
    );
    assert_eq!(c.publish_seq("s", b"y").await, 3);
}
