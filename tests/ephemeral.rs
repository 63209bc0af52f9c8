//! Keys that go with their connection (SPEC.md 4.14): a `put` or `cas` with `ephemeral`
//! ties the key to the writing connection; when the connection's departure is final (at its
//! end, or after the reconnect grace that holds its subscription), the room deletes the key
//! with a logged `state` entry from "ephemeral". A lock taken that way is handed over with a
//! larger fencing token (the taking write's seq). A restart ends every connection: the
//! keys of the old run are deleted at start.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::{Duration, Instant};

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};

fn put(id: u32, room: &str, key: &str, ephemeral: bool) -> ClientFrame {
    ClientFrame::Put {
        id,
        room: room.into(),
        key: key.into(),
        value: Value::from(1),
        ttl_ms: None,
        ephemeral,
    }
}

/// A lock: `cas` with `ver: 0`, tied to the taking connection.
fn take(id: u32) -> ClientFrame {
    ClientFrame::Cas {
        id,
        room: "lock".into(),
        key: "leader".into(),
        ver: 0,
        value: Value::from("me"),
        ttl_ms: None,
        ephemeral: true,
    }
}

fn done_seq(r: &ServerFrame) -> u64 {
    match r {
        ServerFrame::Done { seq: Some(s), .. } => *s,
        other => panic!("expected done, got {other:?}"),
    }
}

/// Waits (at most `within`) for the next `state` event, skipping other events.
async fn next_state(c: &mut Client, within: Duration) -> Option<ServerFrame> {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match c.try_event(left).await {
            Some(f @ ServerFrame::State { .. }) => return Some(f),
            Some(_) => {}
            None => return None,
        }
    }
}

/// A release: the deletion of `key` from "ephemeral", by no user; returns its seq and ts.
fn assert_release(f: &ServerFrame, key: &str) -> (u64, u64) {
    match f {
        ServerFrame::State {
            seq,
            ts,
            from,
            uid,
            key: k,
            ver,
            value,
            ..
        } => {
            assert_eq!(
                (k.as_str(), from.as_str(), *ver, value, uid),
                (key, "ephemeral", 0, &None, &None),
                "{f:?}"
            );
            (*seq, *ts)
        }
        other => panic!("expected a state event, got {other:?}"),
    }
}

async fn get_ver(c: &mut Client, room: &str, key: &str) -> u64 {
    let id = c.id();
    match c
        .request(ClientFrame::Get {
            id,
            room: room.into(),
            key: key.into(),
        })
        .await
    {
        ServerFrame::Val { ver, .. } => ver,
        other => panic!("{other:?}"),
    }
}

/// The holder never subscribed to the room: its end still reaches the room.
#[tokio::test]
async fn a_lock_goes_with_its_connection_and_the_next_holder_gets_a_larger_token() {
    let b = Broker::start("");
    let mut watch = Client::connect(&b).await;
    watch.sub("lock", None).await;
    let mut first = Client::connect(&b).await;
    let id = first.id();
    let first_token = done_seq(&first.request(take(id)).await);
    assert!(next_state(&mut watch, Duration::from_secs(5))
        .await
        .is_some());
    let mut second = Client::connect(&b).await;
    let id = second.id();
    assert_eq!(err_code(&second.request(take(id)).await), 409, "held");
    // Held while its connection lives, however long.
    assert!(next_state(&mut watch, Duration::from_millis(500))
        .await
        .is_none());
    drop(first);
    let release = next_state(&mut watch, Duration::from_secs(5))
        .await
        .expect("the lock went with its connection");
    let (release_seq, _) = assert_release(&release, "leader");
    assert_eq!(release_seq, first_token + 1);
    let id = second.id();
    let r = second.request(take(id)).await;
    let second_token = done_seq(&r);
    assert!(matches!(r, ServerFrame::Done { ver: 1, .. }), "{r:?}");
    assert!(
        second_token > first_token,
        "{second_token} <= {first_token}"
    );
}

/// `unsub` is no end of the connection; a write by another connection, or one without
/// `ephemeral`, takes the key over, and the first connection's end leaves it alone.
#[tokio::test]
async fn only_keys_the_ended_connection_still_owns_go() {
    let b = Broker::start("");
    let mut watch = Client::connect(&b).await;
    watch.sub("r", None).await;
    let mut a = Client::connect(&b).await;
    for key in ["mine", "taken", "plain"] {
        let id = a.id();
        done_seq(&a.request(put(id, "r", key, true)).await);
    }
    a.sub("r", None).await;
    let id = a.id();
    a.request(ClientFrame::Unsub {
        id,
        room: "r".into(),
    })
    .await;
    let mut other = Client::connect(&b).await;
    let id = other.id();
    done_seq(&other.request(put(id, "r", "taken", true)).await);
    let id = a.id();
    done_seq(&a.request(put(id, "r", "plain", false)).await);
    // An incr keeps the owner.
    let id = a.id();
    done_seq(
        &a.request(ClientFrame::Incr {
            id,
            room: "r".into(),
            key: "mine".into(),
            by: Some(1),
        })
        .await,
    );
    for _ in 0..6 {
        next_state(&mut watch, Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert!(next_state(&mut watch, Duration::from_millis(300))
        .await
        .is_none());
    drop(a);
    let release = next_state(&mut watch, Duration::from_secs(5))
        .await
        .unwrap();
    assert_release(&release, "mine");
    assert!(
        next_state(&mut watch, Duration::from_millis(500))
            .await
            .is_none(),
        "only \"mine\" goes"
    );
    assert_eq!(get_ver(&mut watch, "r", "taken").await, 2);
    assert_eq!(get_ver(&mut watch, "r", "plain").await, 2);
    // The other owner's end takes its key.
    drop(other);
    let release = next_state(&mut watch, Duration::from_secs(5))
        .await
        .unwrap();
    assert_release(&release, "taken");
}

/// A subscription of a connection with a user id is held for the reconnect grace (SPEC.md
/// 4.12): its keys go when the hold ends, not before.
#[tokio::test]
async fn a_held_subscription_keeps_the_keys_for_the_grace() {
    let grace = 1000;
    let b = Broker::start(&format!("[rooms]\npresence_grace_ms = {grace}\n"));
    let mut watch = Client::connect(&b).await;
    watch.sub("g", None).await;
    let mut ada = Client::connect_query(&b, "user=ada").await;
    ada.sub("g", None).await;
    let id = ada.id();
    done_seq(&ada.request(put(id, "g", "k", true)).await);
    next_state(&mut watch, Duration::from_secs(5))
        .await
        .unwrap();
    let closed = Instant::now();
    drop(ada);
    let release = next_state(&mut watch, Duration::from_secs(10))
        .await
        .expect("released after the grace");
    let waited = closed.elapsed();
    assert_release(&release, "k");
    assert!(
        waited >= Duration::from_millis(grace - 100),
        "released {waited:?} after the close, before the grace"
    );
}

/// A crash ends every connection: the ephemeral keys on disk are deleted at start, without
/// anyone loading their room.
#[tokio::test]
async fn ephemeral_keys_of_a_crashed_run_are_deleted_at_start() {
    let mut b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let id = c.id();
    done_seq(&c.request(put(id, "crash", "k", true)).await);
    let id = c.id();
    done_seq(&c.request(put(id, "crash", "kept", false)).await);
    b.kill9();
    b.restart();
    let mut c = Client::connect(&b).await;
    let mut hist = Vec::new();
    for _ in 0..50 {
        hist = c.history_all("crash").await;
        if hist.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hist.len(), 3, "{hist:?}");
    assert_eq!(assert_release(&hist[2], "k").0, 3);
    assert_eq!(get_ver(&mut c, "crash", "kept").await, 1);
    assert_eq!(get_ver(&mut c, "crash", "k").await, 0);
}

/// A connection has ephemeral keys in at most `limits.subscriptions_per_connection` rooms.
#[tokio::test]
async fn ephemeral_keys_in_too_many_rooms_get_429() {
    let b = Broker::start("[limits]\nsubscriptions_per_connection = 2\n");
    let mut c = Client::connect(&b).await;
    for room in ["a", "b", "a"] {
        let id = c.id();
        done_seq(&c.request(put(id, room, "k", true)).await);
    }
    let id = c.id();
    let r = c.request(put(id, "c", "k", true)).await;
    assert_eq!(err_code(&r), 429, "{r:?}");
    assert!(matches!(r, ServerFrame::Err { max: Some(2), .. }), "{r:?}");
    // Without `ephemeral` the room limit does not apply.
    let id = c.id();
    done_seq(&c.request(put(id, "c", "k", false)).await);
}

/// A write still pending or in flight when its connection ends: the key goes right after it
/// is written.
#[tokio::test]
async fn a_write_in_flight_when_its_connection_ends_goes_too() {
    let b = Broker::start("");
    let mut watch = Client::connect(&b).await;
    watch.sub("f", None).await;
    for round in 0..5 {
        let mut c = Client::connect(&b).await;
        let id = c.id();
        let key = format!("k{round}");
        c.send(&put(id, "f", &key, true)).await;
        drop(c);
        let written = next_state(&mut watch, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            matches!(&written, ServerFrame::State { key: k, ver: 1, .. } if *k == key),
            "{written:?}"
        );
        let release = next_state(&mut watch, Duration::from_secs(5))
            .await
            .expect("released after it was written");
        assert_release(&release, &key);
    }
}
