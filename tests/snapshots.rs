//! Every `subbed` (state snapshot and presence list) and every `who` reply fits in
//! `limits.frame`: a larger one continues in `snap` frames, paced by the reader, and the
//! subscriber then gets every entry after the snapshot's head exactly once, in order; presence
//! a room holds is bounded by `rooms.presence_bytes`.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{err_code, Broker, Client, TIMEOUT};
use futures_util::StreamExt;
use roomd_protocol::{decode_server, ClientFrame, Member, ServerFrame, StateItem, Value};
use tokio_tungstenite::tungstenite::Message;

/// Small frames and a small outbox, so a snapshot of a few hundred KiB is many frames and many
/// times the outbox.
const SMALL: &str = "[websocket]\nmax_frame_bytes = 16384\n\
    [limits]\npayload_bytes = 8192\nvalue_bytes = 4096\ninfo_bytes = 1024\n\
    [outbox]\nmax_bytes = 32768\n";
const FRAME: usize = 16384;

/// The next frame, failing if it is larger than `FRAME` or the socket closes.
async fn next_within_frame(c: &mut Client) -> ServerFrame {
    loop {
        let m = tokio::time::timeout(TIMEOUT, c.ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection closed")
            .expect("read");
        match m {
            Message::Binary(b) => {
                assert!(
                    b.len() <= FRAME,
                    "a frame of {} bytes exceeds limits.frame {FRAME}",
                    b.len()
                );
                return decode_server(&b).unwrap();
            }
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

/// A frame's debug text, cut: a snapshot's would fill the terminal.
fn short(f: &ServerFrame) -> String {
    format!("{f:?}").chars().take(300).collect()
}

fn blob(i: u32, len: usize) -> Value {
    Value::Binary((0..len).map(|j| (i as usize + j) as u8).collect())
}

async fn put(c: &mut Client, room: &str, key: &str, value: Value) {
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: room.into(),
            key: key.into(),
            value,
        })
        .await;
    assert!(matches!(r, ServerFrame::Done { .. }), "{r:?}");
}

/// Reads a `subbed` and its `snap` continuations: (last, state, presence).
async fn read_snapshot(c: &mut Client, id: u32) -> (u64, Vec<StateItem>, Vec<Member>, usize) {
    // A `snap` of an earlier subscription that ended mid-snapshot may still come first.
    let first = loop {
        match next_within_frame(c).await {
            ServerFrame::Snap { id: got, .. } if got != id => continue,
            f => break f,
        }
    };
    let ServerFrame::Subbed {
        id: got,
        last,
        state,
        presence,
        mut more,
        ..
    } = first
    else {
        panic!("expected subbed, got {}", short(&first))
    };
    assert_eq!(got, id);
    let (mut state, mut presence) = (state.unwrap(), presence.unwrap_or_default());
    let mut frames = 1;
    while more {
        match next_within_frame(c).await {
            ServerFrame::Snap {
                id: got,
                state: s,
                presence: p,
                more: m,
                ..
            } => {
                assert_eq!(got, id);
                state.extend(s.unwrap_or_default());
                presence.extend(p.unwrap_or_default());
                more = m;
                frames += 1;
            }
            other => panic!("expected snap before anything else, got {}", short(&other)),
        }
    }
    (last, state, presence, frames)
}

/// A snapshot many times the frame and outbox bounds, taken while writes go on: it arrives in
/// frames within `limits.frame`, without a slow-consumer close, and the log events after it
/// start at its head + 1 with no gap and no duplicate, so the mirrored state ends up exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_snapshot_is_split_and_continues_with_no_gap() {
    let b = Broker::start(SMALL);
    let mut w = Client::connect(&b).await;
    let mut expected = BTreeMap::new();
    for i in 0..100u32 {
        let key = format!("k{i:03}");
        put(&mut w, "big", &key, blob(i, 4000)).await;
        expected.insert(key, blob(i, 4000));
    }
    let mut s = Client::connect(&b).await;
    let id = s.id();
    s.send(&ClientFrame::Sub {
        id,
        room: "big".into(),
        since: None,
        state: Some(true),
        presence: Some(true),
        info: Some(Value::from("me")),
    })
    .await;
    // Writes while the subscriber has not read its snapshot yet.
    let mut last_seq = 0;
    for i in 0..40u32 {
        let key = format!("k{:03}", i * 2);
        put(&mut w, "big", &key, Value::from(i)).await;
        expected.insert(key, Value::from(i));
        last_seq = w.publish_seq("big", &i.to_be_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (head, state, presence, frames) = read_snapshot(&mut s, id).await;
    assert!(frames > 20, "{frames} frames");
    assert_eq!(presence.len(), 1);
    let mut mirror: BTreeMap<String, (Value, u64)> = state
        .into_iter()
        .map(|i| (i.key, (i.value, i.ver)))
        .collect();
    assert_eq!(mirror.len(), 100);
    let mut next = head + 1;
    while next <= last_seq {
        match next_within_frame(&mut s).await {
            ServerFrame::Msg { seq, .. } => {
                assert_eq!(seq, next);
                next += 1;
            }
            ServerFrame::State {
                seq,
                key,
                value,
                ver,
                ..
            } => {
                assert_eq!(seq, next);
                next += 1;
                mirror.insert(key, (value.unwrap(), ver));
            }
            other => panic!("{other:?}"),
        }
    }
    let got: BTreeMap<_, _> = mirror.into_iter().map(|(k, (v, _))| (k, v)).collect();
    assert_eq!(got, expected);
    // Live from here.
    let seq = w.publish_seq("big", b"live").await;
    match next_within_frame(&mut s).await {
        ServerFrame::Msg { seq: got, .. } => assert_eq!(got, seq),
        other => panic!("{other:?}"),
    }
}

async fn join(b: &Broker, room: &str, info: Value) -> (Client, ServerFrame) {
    let mut c = Client::connect(b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Sub {
            id,
            room: room.into(),
            since: None,
            state: None,
            presence: None,
            info: Some(info),
        })
        .await;
    (c, r)
}

/// A presence list larger than a frame: `who` and `subbed` with presence are split, and a
/// presence subscriber gets the joins that happen while its list is sent after the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_are_split_into_frames() {
    let b = Broker::start(SMALL);
    let mut members = Vec::new();
    for i in 0..40u32 {
        let (c, r) = join(&b, "p", blob(i, 1000)).await;
        assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
        members.push(c);
    }
    let mut watcher = Client::connect(&b).await;
    let id = watcher.id();
    watcher
        .send(&ClientFrame::Who {
            id,
            room: "p".into(),
        })
        .await;
    let ServerFrame::Who {
        members: mut list,
        mut more,
        ..
    } = next_within_frame(&mut watcher).await
    else {
        panic!()
    };
    assert!(more);
    while more {
        let ServerFrame::Snap {
            id: got,
            presence,
            more: m,
            ..
        } = next_within_frame(&mut watcher).await
        else {
            panic!()
        };
        assert_eq!(got, id);
        list.extend(presence.unwrap());
        more = m;
    }
    assert_eq!(list.len(), 40);

    let id = watcher.id();
    watcher
        .send(&ClientFrame::Sub {
            id,
            room: "p".into(),
            since: None,
            state: None,
            presence: Some(true),
            info: None,
        })
        .await;
    let (late, r) = join(&b, "p", Value::from("late")).await;
    assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
    let first = next_within_frame(&mut watcher).await;
    let ServerFrame::Subbed {
        presence, mut more, ..
    } = first
    else {
        panic!("{first:?}")
    };
    let mut list = presence.unwrap();
    while more {
        let ServerFrame::Snap {
            presence, more: m, ..
        } = next_within_frame(&mut watcher).await
        else {
            panic!()
        };
        list.extend(presence.unwrap_or_default());
        more = m;
    }
    // The late member is either in the list or joins right after it, never before it ends.
    if list.len() == 40 {
        match next_within_frame(&mut watcher).await {
            ServerFrame::Join { conn, .. } => assert_eq!(conn, late.conn),
            other => panic!("{other:?}"),
        }
    } else {
        assert_eq!(list.len(), 41);
    }
}

/// `rooms.presence_bytes` bounds a room's presence: a `sub` whose info would pass it gets 429
/// with `max`, and a member that leaves makes room again.
#[tokio::test]
async fn presence_bytes_bound_refuses_info_past_the_budget() {
    let b = Broker::start("[rooms]\npresence_bytes = 4096\n");
    let mut present = Vec::new();
    for i in 0..3u32 {
        let (c, r) = join(&b, "q", blob(i, 1000)).await;
        assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
        present.push(c);
    }
    let (mut fourth, r) = join(&b, "q", blob(3, 1000)).await;
    assert_eq!(err_code(&r), 429);
    let ServerFrame::Err { max, .. } = r else {
        unreachable!()
    };
    assert_eq!(max, Some(4096));
    // Without info it subscribes.
    let r = fourth.sub("q", None).await;
    assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
    drop(present.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c, r) = join(&b, "q", blob(4, 1000)).await;
    assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
}

/// A subscription that ends while its snapshot may still be being sent: the `unsub` is answered,
/// and the next `sub` on the connection gets a whole snapshot again, then live entries. (Whether
/// the first snapshot was cut short depends on how much the kernel's socket buffers took.)
#[tokio::test]
async fn unsubscribing_mid_snapshot_then_subscribing_again_gets_a_whole_snapshot() {
    let b = Broker::start(SMALL);
    let mut w = Client::connect(&b).await;
    for i in 0..100u32 {
        put(&mut w, "u", &format!("k{i:03}"), blob(i, 4000)).await;
    }
    let mut s = Client::connect(&b).await;
    let id = s.id();
    let sub = |id| ClientFrame::Sub {
        id,
        room: "u".into(),
        since: None,
        state: Some(true),
        presence: None,
        info: None,
    };
    s.send(&sub(id)).await;
    let unsub_id = s.id();
    s.send(&ClientFrame::Unsub {
        id: unsub_id,
        room: "u".into(),
    })
    .await;
    loop {
        match next_within_frame(&mut s).await {
            ServerFrame::Subbed { id: got, more, .. } => assert!(got == id && more),
            ServerFrame::Snap { .. } => {}
            ServerFrame::Ok { id: got } => {
                assert_eq!(got, unsub_id);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let id = s.id();
    s.send(&sub(id)).await;
    let (_, state, _, _) = read_snapshot(&mut s, id).await;
    assert_eq!(state.len(), 100);
    let seq = w.publish_seq("u", b"x").await;
    match next_within_frame(&mut s).await {
        ServerFrame::Msg { seq: got, .. } => assert_eq!(got, seq),
        other => panic!("{other:?}"),
    }
}
