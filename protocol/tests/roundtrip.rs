//! Property tests: every client and server frame kind, with arbitrary field values of bounded
//! size, encodes to bytes that decode to the same frame, and re-encoding those gives the same
//! bytes (the encoding is canonical). Room names follow the grammar; strings, keys, binary data
//! and MessagePack values (nested up to 3 deep) are otherwise arbitrary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use roomd_protocol::{
    decode_client, decode_server, encode, ClientFrame, Limits, Member, ServerFrame, StateItem,
    Value,
};

/// Any string, up to 16 characters (any Unicode scalar values).
fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

/// A room name by the grammar: 1 to 40 bytes of `A-Z a-z 0-9 - _ . : @ / ~`.
fn room() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@/~-]{1,40}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

/// A MessagePack value. Floats are never NaN (NaN is unequal to itself); ext types are left
/// out (the protocol carries none).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f32>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
        text().prop_map(Value::from),
        bytes().prop_map(Value::Binary),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
}

/// An optional value as the protocol carries it: SPEC.md section 2 has a receiver treat an
/// explicit `nil` like an absent field, so `Some(Nil)` decodes as `None` by design and is not
/// generated.
fn opt_value() -> impl Strategy<Value = Option<Value>> {
    option::of(value().prop_filter("nil is absent", |v| !v.is_nil()))
}

fn state_item() -> impl Strategy<Value = StateItem> {
    (text(), value(), any::<u64>(), option::of(any::<u64>())).prop_map(|(key, value, ver, exp)| {
        StateItem {
            key,
            value,
            ver,
            exp,
        }
    })
}

fn member() -> impl Strategy<Value = Member> {
    (
        text(),
        option::of(text()),
        opt_value(),
        option::of(any::<u32>()),
    )
        .prop_map(|(conn, user, info, conns)| Member {
            conn,
            user,
            info,
            conns,
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    vec(any::<u32>(), 10).prop_map(|v| Limits {
        frame: v[0],
        payload: v[1],
        room: v[2],
        key: v[3],
        value: v[4],
        info: v[5],
        subs: v[6],
        page: v[7],
        keys: v[8],
        mid: v[9],
    })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    let id = any::<u32>;
    prop_oneof![
        (
            id(),
            room(),
            option::of(any::<u64>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            opt_value()
        )
            .prop_map(
                |(id, room, since, state, presence, info)| ClientFrame::Sub {
                    id,
                    room,
                    since,
                    state,
                    presence,
                    info
                }
            ),
        (id(), room()).prop_map(|(id, room)| ClientFrame::Unsub { id, room }),
        (id(), room(), bytes(), option::of(text())).prop_map(|(id, room, data, mid)| {
            ClientFrame::Pub {
                id,
                room,
                data,
                mid,
            }
        }),
        (
            id(),
            room(),
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            option::of(any::<u32>())
        )
            .prop_map(|(id, room, after, before, limit)| ClientFrame::Hist {
                id,
                room,
                after,
                before,
                limit
            }),
        (id(), room(), text()).prop_map(|(id, room, key)| ClientFrame::Get { id, room, key }),
        (
            id(),
            room(),
            option::of(text()),
            option::of(text()),
            option::of(any::<u32>())
        )
            .prop_map(|(id, room, prefix, after, limit)| ClientFrame::List {
                id,
                room,
                prefix,
                after,
                limit
            }),
        (id(), room(), text(), value(), option::of(any::<u64>())).prop_map(
            |(id, room, key, value, ttl_ms)| ClientFrame::Put {
                ttl_ms,
                ephemeral: false,
                id,
                room,
                key,
                value
            }
        ),
        (id(), room(), text()).prop_map(|(id, room, key)| ClientFrame::Del { id, room, key }),
        (id(), room(), text(), any::<u64>(), value()).prop_map(|(id, room, key, ver, value)| {
            ClientFrame::Cas {
                ttl_ms: None,
                ephemeral: false,
                id,
                room,
                key,
                ver,
                value,
            }
        }),
        (id(), room(), text(), option::of(any::<i64>()))
            .prop_map(|(id, room, key, by)| ClientFrame::Incr { id, room, key, by }),
        (id(), room()).prop_map(|(id, room)| ClientFrame::Who { id, room }),
        id().prop_map(|id| ClientFrame::Ping { id }),
        (id(), text()).prop_map(|(id, token)| ClientFrame::Auth { id, token }),
        (id(), room(), bytes()).prop_map(|(id, room, data)| ClientFrame::Signal {
            id,
            room,
            data,
            ephemeral: true,
        }),
        (id(), room(), any::<u64>(), bytes()).prop_map(|(id, room, target, data)| {
            ClientFrame::Edit {
                id,
                room,
                target,
                data,
            }
        }),
        (id(), room(), any::<u64>()).prop_map(|(id, room, target)| ClientFrame::Redact {
            id,
            room,
            target
        }),
    ]
}

/// A log event (`msg`, `del` or `state`), as carried in `hist` items.
fn event() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            room(),
            any::<u64>(),
            any::<u64>(),
            text(),
            option::of(text()),
            bytes(),
            option::of(any::<u64>()),
            (option::of(any::<u64>()), option::of(any::<u64>()))
        )
            .prop_map(
                |(room, seq, ts, from, uid, data, deleted, (edited, edits))| ServerFrame::Msg {
                    room,
                    seq,
                    ts,
                    from,
                    uid,
                    data,
                    deleted,
                    edited,
                    edits
                }
            ),
        (
            room(),
            any::<u64>(),
            any::<u64>(),
            text(),
            option::of(text()),
            any::<u64>()
        )
            .prop_map(|(room, seq, ts, from, uid, target)| ServerFrame::Del {
                room,
                seq,
                ts,
                from,
                uid,
                target
            }),
        (
            room(),
            any::<u64>(),
            any::<u64>(),
            text(),
            option::of(text()),
            text(),
            any::<u64>(),
            opt_value(),
            option::of(any::<u64>())
        )
            .prop_map(|(room, seq, ts, from, uid, key, ver, value, exp)| {
                ServerFrame::State {
                    room,
                    seq,
                    ts,
                    from,
                    uid,
                    key,
                    ver,
                    value,
                    exp,
                }
            }),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let id = any::<u32>;
    prop_oneof![
        (
            any::<u32>(),
            text(),
            text(),
            option::of(text()),
            any::<u32>(),
            limits(),
            option::of(text())
        )
            .prop_map(
                |(v, server, conn, user, ping, limits, node)| ServerFrame::Hello {
                    v,
                    server,
                    conn,
                    user,
                    ping,
                    limits,
                    node
                }
            ),
        (
            (id(), room(), any::<u64>(), any::<u64>(), any::<u64>()),
            (
                any::<u64>(),
                any::<bool>(),
                option::of(vec(state_item(), 0..4)),
                option::of(vec(member(), 0..4)),
                option::of(vec(text(), 0..6))
            )
        )
            .prop_map(
                |((id, room, epoch, last, first), (earliest, complete, state, presence, allow))| {
                    ServerFrame::Subbed {
                        id,
                        room,
                        epoch,
                        last,
                        first,
                        earliest,
                        complete,
                        state,
                        presence,
                        // `more: true` (continued in `snap` frames) is pinned by the vectors.
                        more: false,
                        allow,
                    }
                }
            ),
        id().prop_map(|id| ServerFrame::Ok { id }),
        (id(), any::<u64>(), option::of(any::<bool>()))
            .prop_map(|(id, seq, dup)| ServerFrame::Ack { id, seq, dup }),
        (id(), room(), vec(event(), 0..4), any::<bool>()).prop_map(|(id, room, items, more)| {
            ServerFrame::Hist {
                id,
                room,
                items,
                more,
            }
        }),
        (
            id(),
            text(),
            opt_value(),
            any::<u64>(),
            option::of(any::<u64>())
        )
            .prop_map(|(id, key, value, ver, exp)| ServerFrame::Val {
                id,
                key,
                value,
                ver,
                exp,
            }),
        (id(), vec(state_item(), 0..4), any::<bool>())
            .prop_map(|(id, items, more)| ServerFrame::Vals { id, items, more }),
        (id(), option::of(any::<u64>()), any::<u64>(), opt_value()).prop_map(
            |(id, seq, ver, value)| ServerFrame::Done {
                id,
                seq,
                ver,
                value
            }
        ),
        (id(), room(), vec(member(), 0..4)).prop_map(|(id, room, members)| ServerFrame::Who {
            id,
            room,
            members,
            more: false,
        }),
        id().prop_map(|id| ServerFrame::Pong { id }),
        any::<u64>().prop_map(|exp| ServerFrame::Expiring { exp }),
        (
            option::of(id()),
            any::<u16>(),
            text(),
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            option::of(any::<u64>())
        )
            .prop_map(
                |(id, code, msg, ver, max, retry_after_ms)| ServerFrame::Err {
                    id,
                    code,
                    msg,
                    ver,
                    max,
                    retry_after_ms,
                }
            ),
        event(),
        (
            room(),
            text(),
            option::of(text()),
            opt_value(),
            option::of(any::<u32>())
        )
            .prop_map(|(room, conn, user, info, conns)| ServerFrame::Join {
                room,
                conn,
                user,
                info,
                conns,
            }),
        (room(), any::<u64>(), any::<u64>()).prop_map(|(room, members, conns)| {
            ServerFrame::Count {
                room,
                members,
                conns,
            }
        }),
        (room(), text(), option::of(text())).prop_map(|(room, conn, user)| ServerFrame::Leave {
            room,
            conn,
            user
        }),
        room().prop_map(|room| ServerFrame::Unsubbed { room }),
        (room(), any::<u64>(), text(), option::of(text()), bytes()).prop_map(
            |(room, ts, from, uid, data)| ServerFrame::Signal {
                room,
                ts,
                from,
                uid,
                data
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let bytes = encode(&frame);
        let back = decode_client(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&back, &frame);
        prop_assert_eq!(encode(&back), bytes);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let bytes = encode(&frame);
        let back = decode_server(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&back, &frame);
        prop_assert_eq!(encode(&back), bytes);
    }

    /// A frame followed by a second complete MessagePack value is refused.
    #[test]
    fn trailing_values_are_refused(frame in client_frame(), tail in value()) {
        let mut bytes = encode(&frame);
        rmpv::encode::write_value(&mut bytes, &tail).unwrap();
        prop_assert!(decode_client(&bytes).is_err());
    }

    /// A frame followed by any bytes at all is refused, including a trailing value cut short
    /// (say one byte `0x81`, a map header), which the decoder before the stricter one took for
    /// the end of the input (fuzz/artifacts-found/README.md).
    #[test]
    fn trailing_bytes_are_refused(frame in client_frame(), tail in vec(any::<u8>(), 1..8)) {
        let mut bytes = encode(&frame);
        bytes.extend_from_slice(&tail);
        prop_assert!(decode_client(&bytes).is_err());
    }

    /// Any prefix of an encoded frame is refused, never read as a shorter frame or a panic.
    #[test]
    fn truncated_frames_are_refused(frame in client_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&frame);
        let cut = cut.index(bytes.len());
        prop_assert!(decode_client(&bytes[..cut]).is_err());
    }
}
