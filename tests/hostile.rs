//! Invariant: the broker stores and forwards only what every client can read: a request is
//! exactly one MessagePack map with string keys and fields of exactly their documented type,
//! state values and presence info stay in the accepted subset (SPEC.md section 4.5), and every
//! size a request names is checked against its limit. Anything else is refused, stores nothing,
//! and leaves the connection and the room usable.

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
use tokio_tungstenite::tungstenite::Message;

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// `depth` arrays around an integer: `[[[1]]]` is depth 3.
fn nested(depth: usize) -> Value {
    let mut v = Value::from(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

async fn send_value(c: &mut Client, v: &Value) {
    c.send_raw(Message::Binary(enc(v).into())).await;
}

/// The next frame, which must be an `err` without id; its code.
async fn anonymous_err(c: &mut Client) -> u16 {
    match c.event().await {
        ServerFrame::Err { id: None, code, .. } => code,
        other => panic!("expected err without id, got {other:?}"),
    }
}

/// The room's log is still empty: a fresh publish gets seq 1.
async fn nothing_stored(c: &mut Client, room: &str) {
    assert_eq!(
        c.publish_seq(room, b"after").await,
        1,
        "something was stored"
    );
}

#[tokio::test]
async fn only_maps_with_string_keys_are_requests() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    // A pub as a MessagePack array (serde reads arrays as structs).
    let array = Value::Array(vec![
        "pub".into(),
        8.into(),
        "r".into(),
        Value::Binary(b"x".to_vec()),
    ]);
    send_value(&mut c, &array).await;
    assert_eq!(anonymous_err(&mut c).await, 400);
    // A pub whose keys are bin, not str.
    let bin_keys = Value::Map(vec![
        (Value::Binary(b"t".to_vec()), "pub".into()),
        (Value::Binary(b"id".to_vec()), 9.into()),
        (Value::Binary(b"room".to_vec()), "r".into()),
        (
            Value::Binary(b"data".to_vec()),
            Value::Binary(b"x".to_vec()),
        ),
    ]);
    send_value(&mut c, &bin_keys).await;
    assert_eq!(anonymous_err(&mut c).await, 400);
    // One integer key among string keys.
    let int_key = Value::Map(vec![
        ("t".into(), "ping".into()),
        ("id".into(), 10.into()),
        (Value::from(3), "x".into()),
    ]);
    send_value(&mut c, &int_key).await;
    assert_eq!(anonymous_err(&mut c).await, 400);
    nothing_stored(&mut c, "r").await;
}

#[tokio::test]
async fn fields_of_the_wrong_type_get_406_with_the_id() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let cases: Vec<(u32, Value)> = vec![
        // `data` as str.
        (
            11,
            map(&[
                ("t", "pub".into()),
                ("id", 11.into()),
                ("room", "r".into()),
                ("data", "x".into()),
            ]),
        ),
        // `data` as an array of bytes.
        (
            12,
            map(&[
                ("t", "pub".into()),
                ("id", 12.into()),
                ("room", "r".into()),
                ("data", Value::Array(vec![1.into(), 2.into()])),
            ]),
        ),
        // `room` as bin.
        (
            13,
            map(&[
                ("t", "pub".into()),
                ("id", 13.into()),
                ("room", Value::Binary(b"r".to_vec())),
                ("data", Value::Binary(b"x".to_vec())),
            ]),
        ),
        // `mid` as bin.
        (
            14,
            map(&[
                ("t", "pub".into()),
                ("id", 14.into()),
                ("room", "r".into()),
                ("data", Value::Binary(b"x".to_vec())),
                ("mid", Value::Binary(b"m".to_vec())),
            ]),
        ),
        // `key` as bin.
        (
            15,
            map(&[
                ("t", "put".into()),
                ("id", 15.into()),
                ("room", "r".into()),
                ("key", Value::Binary(b"k".to_vec())),
                ("value", 1.into()),
            ]),
        ),
        // `room` of a sub as bin.
        (
            16,
            map(&[
                ("t", "sub".into()),
                ("id", 16.into()),
                ("room", Value::Binary(b"r".to_vec())),
            ]),
        ),
    ];
    for (id, frame) in &cases {
        send_value(&mut c, frame).await;
        match c.reply_to(*id).await {
            ServerFrame::Err { code: 406, .. } => {}
            other => panic!("request {id}: expected 406, got {other:?}"),
        }
    }
    nothing_stored(&mut c, "r").await;
    let id = c.id();
    match c
        .request(ClientFrame::Get {
            id,
            room: "r".into(),
            key: "k".into(),
        })
        .await
    {
        ServerFrame::Val { ver: 0, .. } => {}
        other => panic!("key was stored: {other:?}"),
    }
}

#[tokio::test]
async fn state_values_outside_the_subset_are_refused_and_the_room_stays_readable() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let mut watcher = Client::connect(&b).await;
    watcher.sub("r", None).await;
    let bad = [
        // A bool map key: the JS SDK's decoder throws on it.
        Value::Map(vec![(true.into(), 1.into())]),
        // An integer map key, nested in an array.
        Value::Array(vec![Value::Map(vec![(1.into(), "x".into())])]),
        // An ext type.
        Value::Ext(5, vec![1, 2, 3]),
        // Nested deeper than 32.
        nested(33),
    ];
    for value in &bad {
        let id = c.id();
        let r = c
            .request(ClientFrame::Put {
                ttl_ms: None,
                ephemeral: false,
                id,
                room: "r".into(),
                key: "k".into(),
                value: value.clone(),
            })
            .await;
        assert_eq!(err_code(&r), 406, "put {value:?}: {r:?}");
        let id = c.id();
        let r = c
            .request(ClientFrame::Cas {
                ttl_ms: None,
                ephemeral: false,
                id,
                room: "r".into(),
                key: "k".into(),
                ver: 0,
                value: value.clone(),
            })
            .await;
        assert_eq!(err_code(&r), 406, "cas {value:?}: {r:?}");
    }
    // A map key that is a str of invalid UTF-8 (raw bytes: rmpv would write it as bin).
    let mut frame = enc(&map(&[
        ("t", "put".into()),
        ("id", 900.into()),
        ("room", "r".into()),
        ("key", "k".into()),
        ("value", Value::Nil),
    ]));
    assert_eq!(frame.pop(), Some(0xc0));
    frame.extend_from_slice(&[0x81, 0xa2, 0xff, 0xfe, 0x01]);
    c.send_raw(Message::Binary(frame.into())).await;
    assert_eq!(err_code(&c.reply_to(900).await), 406);
    // The message names the problem.
    let id = c.id();
    match c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "r".into(),
            key: "k".into(),
            value: bad[0].clone(),
        })
        .await
    {
        ServerFrame::Err { msg, .. } => assert!(msg.contains("key"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Nothing was stored or delivered; the room's state is still readable by everyone.
    nothing_stored(&mut c, "r").await;
    assert_eq!(watcher.msg().await.0, 1);
    // The whole subset is accepted, up to depth 32.
    let good = map(&[
        ("nil", Value::Nil),
        ("bool", true.into()),
        ("int", (-5).into()),
        ("big", u64::MAX.into()),
        ("float", 1.5.into()),
        ("str", "s".into()),
        ("bin", Value::Binary(vec![0, 1])),
        ("arr", Value::Array(vec![1.into(), "a".into()])),
        ("map", map(&[("k", map(&[]))])),
    ]);
    for value in [good, nested(32)] {
        let id = c.id();
        let r = c
            .request(ClientFrame::Put {
                ttl_ms: None,
                ephemeral: false,
                id,
                room: "r".into(),
                key: "k".into(),
                value: value.clone(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Done { .. }), "{value:?}: {r:?}");
    }
}

#[tokio::test]
async fn presence_info_outside_the_subset_is_refused() {
    let b = Broker::start("");
    let mut c = Client::connect(&b).await;
    let mut watcher = Client::connect(&b).await;
    let id = watcher.id();
    watcher
        .request(ClientFrame::Sub {
            id,
            room: "r".into(),
            since: None,
            state: None,
            presence: Some(true),
            info: None,
        })
        .await;
    for info in [
        Value::Map(vec![(1.into(), "Ada".into())]),
        Value::Ext(1, vec![0]),
        nested(40),
    ] {
        let id = c.id();
        let r = c
            .request(ClientFrame::Sub {
                id,
                room: "r".into(),
                since: None,
                state: None,
                presence: None,
                info: Some(info.clone()),
            })
            .await;
        assert_eq!(err_code(&r), 406, "{info:?}: {r:?}");
    }
    // Not subscribed by the refused requests: a good one succeeds, and only it joins.
    let id = c.id();
    let r = c
        .request(ClientFrame::Sub {
            id,
            room: "r".into(),
            since: None,
            state: None,
            presence: None,
            info: Some(map(&[("name", "Ada".into())])),
        })
        .await;
    assert!(matches!(r, ServerFrame::Subbed { .. }), "{r:?}");
    match watcher.event().await {
        ServerFrame::Join { info, .. } => assert_eq!(info, Some(map(&[("name", "Ada".into())]))),
        other => panic!("expected join, got {other:?}"),
    }
}

#[tokio::test]
async fn list_prefix_and_after_are_held_to_the_key_limit() {
    let b = Broker::start("[limits]\nkey_bytes = 8\n");
    let mut c = Client::connect(&b).await;
    let long = "k".repeat(9);
    for (prefix, after) in [(Some(long.clone()), None), (None, Some(long.clone()))] {
        let id = c.id();
        let r = c
            .request(ClientFrame::List {
                id,
                room: "r".into(),
                prefix,
                after,
                limit: None,
            })
            .await;
        assert!(
            matches!(
                r,
                ServerFrame::Err {
                    code: 413,
                    max: Some(8),
                    ..
                }
            ),
            "{r:?}"
        );
    }
    // At the limit is fine.
    let id = c.id();
    let r = c
        .request(ClientFrame::List {
            id,
            room: "r".into(),
            prefix: Some("k".repeat(8)),
            after: Some("k".repeat(8)),
            limit: None,
        })
        .await;
    assert!(matches!(r, ServerFrame::Vals { .. }), "{r:?}");
}
