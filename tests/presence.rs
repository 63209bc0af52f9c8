//! Presence v2 against the real binary (SPEC.md 4.12): a user who drops and comes back within
//! the reconnect grace is never seen to leave; a user's connections are one entry in the
//! per-user view; counts-only rooms send counts at most once per interval, and never a list.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    unreachable_pub
)]

mod common;

use std::time::{Duration, Instant};

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, Member, ServerFrame, Value};

/// `chat:` rooms show one entry per user, `big:` rooms only counts; grace `grace_ms`.
fn config(grace_ms: u64) -> String {
    format!(
        "[rooms]\npresence_grace_ms = {grace_ms}\n\n\
         [namespaces.chat]\npresence_mode = \"users\"\n\n\
         [namespaces.big]\npresence_mode = \"counts\"\ncount_interval_ms = 200\n"
    )
}

fn info(name: &str) -> Value {
    Value::Map(vec![(Value::from("name"), Value::from(name))])
}

/// Subscribes with `presence: true`, and with `info` (a member) when given.
async fn sub_presence(c: &mut Client, room: &str, info: Option<Value>) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Sub {
        id,
        room: room.into(),
        since: None,
        state: None,
        presence: Some(true),
        info,
    })
    .await
}

async fn member(b: &Broker, user: &str, room: &str) -> Client {
    let mut c = Client::connect_query(b, &format!("user={user}")).await;
    let r = sub_presence(&mut c, room, Some(info(user))).await;
    assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
    c
}

fn presence_of(f: &ServerFrame) -> Vec<Member> {
    match f {
        ServerFrame::Subbed { presence, .. } => presence.clone().unwrap_or_default(),
        other => panic!("not subbed: {other:?}"),
    }
}

/// The presence events (`join`, `leave`, `count`) a client receives within `wait`.
async fn presence_events(c: &mut Client, wait: Duration) -> Vec<ServerFrame> {
    let until = Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match c.try_event(left).await {
            Some(
                f @ (ServerFrame::Join { .. }
                | ServerFrame::Leave { .. }
                | ServerFrame::Count { .. }),
            ) => out.push(f),
            Some(_) => {}
            None => break,
        }
    }
    out
}

async fn next_presence(c: &mut Client) -> ServerFrame {
    loop {
        let f = c.event().await;
        if matches!(
            f,
            ServerFrame::Join { .. } | ServerFrame::Leave { .. } | ServerFrame::Count { .. }
        ) {
            return f;
        }
    }
}

async fn who(c: &mut Client, room: &str) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Who {
        id,
        room: room.into(),
    })
    .await
}

#[tokio::test]
async fn a_user_who_resumes_within_the_grace_is_never_seen_to_leave() {
    let b = Broker::start(&config(2000));
    let mut watcher = Client::connect(&b).await;
    sub_presence(&mut watcher, "chat:a", None).await;
    let ann = member(&b, "ann", "chat:a").await;
    let first_conn = ann.conn.clone();
    let joined = next_presence(&mut watcher).await;
    assert!(
        matches!(&joined, ServerFrame::Join { user: Some(u), conns: Some(1), .. } if u == "ann"),
        "{joined:?}"
    );
    // The tab drops (no `unsub`) and comes back half a second later on a new connection.
    drop(ann);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ann = member(&b, "ann", "chat:a").await;
    assert_ne!(ann.conn, first_conn);
    // Past the end of the first connection's grace: nothing at all.
    let seen = presence_events(&mut watcher, Duration::from_millis(2500)).await;
    assert!(seen.is_empty(), "the watcher saw {seen:?}");
    // The per-connection detail lists the new connection only.
    let ServerFrame::Who { members, .. } = who(&mut watcher, "chat:a").await else {
        panic!("who")
    };
    let conns: Vec<&str> = members.iter().map(|m| m.conn.as_str()).collect();
    assert_eq!(conns, vec![ann.conn.as_str()]);
    // An `unsub` is a deliberate leave: at once, no grace.
    let id = ann.id();
    let r = ann
        .request(ClientFrame::Unsub {
            id,
            room: "chat:a".into(),
        })
        .await;
    assert!(matches!(r, ServerFrame::Ok { .. }), "{r:?}");
    let t = Instant::now();
    let left = next_presence(&mut watcher).await;
    assert!(
        matches!(&left, ServerFrame::Leave { user: Some(u), .. } if u == "ann"),
        "{left:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn a_user_who_comes_back_after_the_grace_leaves_then_joins() {
    let b = Broker::start(&config(600));
    let mut watcher = Client::connect(&b).await;
    sub_presence(&mut watcher, "chat:a", None).await;
    let ann = member(&b, "ann", "chat:a").await;
    assert!(matches!(
        next_presence(&mut watcher).await,
        ServerFrame::Join { .. }
    ));
    let dropped = Instant::now();
    drop(ann);
    let left = next_presence(&mut watcher).await;
    let after = dropped.elapsed();
    assert!(
        matches!(&left, ServerFrame::Leave { user: Some(u), .. } if u == "ann"),
        "{left:?}"
    );
    assert!(after >= Duration::from_millis(550), "left after {after:?}");
    let _ann = member(&b, "ann", "chat:a").await;
    let joined = next_presence(&mut watcher).await;
    assert!(
        matches!(&joined, ServerFrame::Join { user: Some(u), conns: Some(1), .. } if u == "ann"),
        "{joined:?}"
    );
}

#[tokio::test]
async fn per_connection_rooms_hold_the_leave_for_the_grace_too() {
    // Protocol v1's shape (no presence_mode): the dropped connection stays listed until its
    // grace ends, then leaves.
    let b = Broker::start("[rooms]\npresence_grace_ms = 600\n");
    let mut watcher = Client::connect(&b).await;
    sub_presence(&mut watcher, "lobby", None).await;
    let ann = member(&b, "ann", "lobby").await;
    let conn = ann.conn.clone();
    let joined = next_presence(&mut watcher).await;
    assert!(
        matches!(&joined, ServerFrame::Join { conns: None, conn: c, .. } if *c == conn),
        "{joined:?}"
    );
    let dropped = Instant::now();
    drop(ann);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ServerFrame::Who { members, .. } = who(&mut watcher, "lobby").await else {
        panic!("who")
    };
    assert_eq!(members.len(), 1, "held through the grace");
    let left = next_presence(&mut watcher).await;
    assert!(
        matches!(&left, ServerFrame::Leave { conn: c, .. } if *c == conn),
        "{left:?}"
    );
    assert!(dropped.elapsed() >= Duration::from_millis(550));
}

#[tokio::test]
async fn a_connection_without_a_user_leaves_at_once() {
    let b = Broker::start(&config(5000));
    let mut watcher = Client::connect(&b).await;
    sub_presence(&mut watcher, "chat:a", None).await;
    let mut anon = Client::connect(&b).await;
    sub_presence(&mut anon, "chat:a", Some(info("anon"))).await;
    let joined = next_presence(&mut watcher).await;
    assert!(
        matches!(
            &joined,
            ServerFrame::Join {
                user: None,
                conns: Some(1),
                ..
            }
        ),
        "{joined:?}"
    );
    let t = Instant::now();
    drop(anon);
    assert!(matches!(
        next_presence(&mut watcher).await,
        ServerFrame::Leave { .. }
    ));
    assert!(t.elapsed() < Duration::from_millis(2000));
}

#[tokio::test]
async fn two_connections_of_one_user_are_one_entry() {
    let b = Broker::start(&config(0));
    let mut watcher = Client::connect(&b).await;
    sub_presence(&mut watcher, "chat:a", None).await;
    let mut tab1 = member(&b, "ann", "chat:a").await;
    let tab2 = member(&b, "ann", "chat:a").await;
    let _bob = member(&b, "bob", "chat:a").await;
    // One join per user, not per connection.
    let seen = presence_events(&mut watcher, Duration::from_millis(500)).await;
    let users: Vec<Option<String>> = seen
        .iter()
        .map(|f| match f {
            ServerFrame::Join { user, .. } => user.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(users, vec![Some("ann".into()), Some("bob".into())]);
    // A new subscriber's list: one entry for ann with both her connections.
    let mut late = Client::connect(&b).await;
    let list = presence_of(&sub_presence(&mut late, "chat:a", None).await);
    let mut entries: Vec<(String, Option<u32>)> = list
        .iter()
        .map(|m| (m.user.clone().unwrap(), m.conns))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![("ann".into(), Some(2)), ("bob".into(), Some(1))]
    );
    // `who` keeps the per-connection detail: three connections.
    let ServerFrame::Who { members, .. } = who(&mut late, "chat:a").await else {
        panic!("who")
    };
    assert_eq!(members.len(), 3);
    // Ann leaves only when her last connection goes.
    let id = tab1.id();
    tab1.request(ClientFrame::Unsub {
        id,
        room: "chat:a".into(),
    })
    .await;
    let seen = presence_events(&mut watcher, Duration::from_millis(500)).await;
    assert!(seen.is_empty(), "{seen:?}");
    drop(tab2);
    let left = next_presence(&mut watcher).await;
    assert!(
        matches!(&left, ServerFrame::Leave { user: Some(u), .. } if u == "ann"),
        "{left:?}"
    );
}

#[tokio::test]
async fn counts_only_rooms_send_counts_at_the_configured_rate() {
    let b = Broker::start(&config(0));
    let mut watcher = Client::connect(&b).await;
    let subbed = sub_presence(&mut watcher, "big:a", None).await;
    assert!(
        matches!(&subbed, ServerFrame::Subbed { presence: None, .. }),
        "no list in a counts-only room: {subbed:?}"
    );
    let first = next_presence(&mut watcher).await;
    assert!(
        matches!(
            first,
            ServerFrame::Count {
                members: 0,
                conns: 0,
                ..
            }
        ),
        "{first:?}"
    );
    // A burst of joins: 40 connections of 30 users.
    let start = Instant::now();
    let mut members = Vec::new();
    for i in 0..40 {
        members.push(member(&b, &format!("u{}", i % 30), "big:a").await);
    }
    let burst = start.elapsed();
    let seen = presence_events(
        &mut watcher,
        burst.max(Duration::from_millis(200)) + Duration::from_millis(600),
    )
    .await;
    let elapsed = start.elapsed();
    let counts: Vec<(u64, u64)> = seen
        .iter()
        .map(|f| match f {
            ServerFrame::Count { members, conns, .. } => (*members, *conns),
            other => panic!("a counts-only room sent {other:?}"),
        })
        .collect();
    let most = elapsed.as_millis() as usize / 200 + 1;
    assert!(
        counts.len() <= most,
        "{} counts in {elapsed:?} (at most {most})",
        counts.len()
    );
    assert_eq!(counts.last(), Some(&(30, 40)), "{counts:?}");
    println!(
        "counts-only: {} joins in {burst:?}, {} count frames in {elapsed:?}",
        members.len(),
        counts.len()
    );
    // No list to ask for either.
    assert_eq!(err_code(&who(&mut watcher, "big:a").await), 403);
    // Leaves are counted too.
    members.truncate(10);
    let mut last = None;
    while last != Some((10, 10)) {
        match next_presence(&mut watcher).await {
            ServerFrame::Count { members, conns, .. } => last = Some((members, conns)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn presence_updates_are_rate_limited_per_connection() {
    let b = Broker::start("[rate]\npresence_updates_per_sec = 2\npresence_updates_burst = 2\n");
    let mut c = Client::connect_query(&b, "user=ann").await;
    let churn = async |c: &mut Client| {
        let r = sub_presence(c, "lobby", Some(info("ann"))).await;
        if matches!(r, ServerFrame::Subbed { .. }) {
            let id = c.id();
            let ok = c
                .request(ClientFrame::Unsub {
                    id,
                    room: "lobby".into(),
                })
                .await;
            assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
        }
        r
    };
    // The burst, then a refusal that says when to retry.
    for _ in 0..2 {
        assert!(matches!(churn(&mut c).await, ServerFrame::Subbed { .. }));
    }
    let refused = churn(&mut c).await;
    let ServerFrame::Err {
        code: 429,
        retry_after_ms: Some(wait),
        ..
    } = refused
    else {
        panic!("{refused:?}")
    };
    assert!(wait > 0 && wait <= 500, "retry after {wait} ms");
    // Subscribing without `info` is no presence update.
    assert!(matches!(
        sub_presence(&mut c, "lobby", None).await,
        ServerFrame::Subbed { .. }
    ));
    // Another connection has its own budget.
    let mut other = Client::connect_query(&b, "user=bob").await;
    assert!(matches!(
        sub_presence(&mut other, "lobby", Some(info("bob"))).await,
        ServerFrame::Subbed { .. }
    ));
    // After the wait, the refused subscription is taken (the connection did not count it).
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert!(matches!(
        sub_presence(&mut c, "other", Some(info("ann"))).await,
        ServerFrame::Subbed { .. }
    ));
}
