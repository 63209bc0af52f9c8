//! What the strict client decoder costs against serde's (which it replaced): time per decoded
//! frame (the workspace forbids unsafe code, so allocations are not counted here), for the `pub` frame on the fan-out path and a `put` with a map
//! value. Run: `cargo test -p roomd-protocol --release --test decode_cost -- --ignored --nocapture`.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

use std::time::Instant;

use roomd_protocol::{codec, decode_client, ClientFrame, Value};
use serde::Deserialize;

/// The previous decoder: serde's internally tagged enum over rmp-serde.
fn serde_decode(bytes: &[u8]) -> ClientFrame {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    ClientFrame::deserialize(&mut de).unwrap()
}

/// The best of 7 batches of 50,000 decodes (the least disturbed by other work on the machine).
fn measure(name: &str, bytes: &[u8], f: impl Fn(&[u8]) -> ClientFrame) {
    let n = 50_000;
    let best = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(f(std::hint::black_box(bytes)));
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min);
    println!("{name:<32} {:>5} B  {best:>7.1} ns/frame", bytes.len());
}

#[test]
#[ignore = "a measurement, not a check: run in release with --nocapture"]
fn decode_cost() {
    let frames = [
        (
            "pub 64 B",
            ClientFrame::Pub {
                id: 7,
                room: "bench/room-1".into(),
                data: vec![1; 64],
                mid: None,
            },
        ),
        (
            "pub 1 KiB + mid",
            ClientFrame::Pub {
                id: 7,
                room: "bench/room-1".into(),
                data: vec![1; 1024],
                mid: Some("c1-123456".into()),
            },
        ),
        (
            "put map value",
            ClientFrame::Put {
                ttl_ms: None,
                ephemeral: false,
                id: 9,
                room: "lobby".into(),
                key: "profile".into(),
                value: Value::Map(vec![
                    ("name".into(), "Ada".into()),
                    ("tags".into(), Value::Array(vec!["a".into(), "b".into()])),
                    ("n".into(), 42.into()),
                ]),
            },
        ),
    ];
    for (name, frame) in frames {
        let bytes = codec::encode(&frame);
        assert_eq!(decode_client(&bytes).unwrap(), frame);
        assert_eq!(serde_decode(&bytes), frame);
        measure(&format!("{name} strict"), &bytes, |b| {
            decode_client(b).unwrap()
        });
        measure(&format!("{name} serde (before)"), &bytes, serde_decode);
        let check = |b: &[u8]| {
            let f = decode_client(b).unwrap();
            if let ClientFrame::Put { value, .. } = &f {
                roomd_protocol::check_value(value).unwrap();
            }
            f
        };
        if name.starts_with("put") {
            measure(&format!("{name} strict + subset"), &bytes, check);
        }
    }
}
