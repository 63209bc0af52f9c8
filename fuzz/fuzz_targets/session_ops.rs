//! A whole session, as `session`, but driven by structured requests: the input is read as a list
//! of operations (every request kind with fuzzer-chosen fields, raw bytes, or a reconnect) over
//! a few shared rooms and keys, so the fuzzer spends its time in the rooms rather than in the
//! decoder. Same checks: no panic, every request answered, every frame out decodes.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use roomd::fuzzing::SessionHarness;
use roomd_protocol::{decode_server, encode, ClientFrame, Value};

const INPUTS_PER_SERVER: u32 = 20_000;
const MAX_OPS: usize = 64;

static HARNESS: Mutex<Option<(SessionHarness, u32)>> = Mutex::new(None);

/// A few valid room names, and invalid ones (empty, a space, too long, not ASCII).
const ROOMS: [&str; 6] = ["lobby", "org/team-1", "a", "", "a b", "é"];
/// Keys, including an empty one and one past the default key limit.
const KEYS: [&str; 5] = ["k", "k2", "kk", "", "counter"];

#[derive(Arbitrary, Debug)]
enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Val>),
    Map(Vec<(Val, Val)>),
    Big(u32),
}

impl Val {
    fn value(&self, depth: u32) -> Value {
        if depth > 8 {
            return Value::Nil;
        }
        match self {
            Val::Nil => Value::Nil,
            Val::Bool(b) => Value::Boolean(*b),
            Val::Int(i) => Value::from(*i),
            Val::UInt(u) => Value::from(*u),
            Val::F64(f) => Value::F64(*f),
            Val::Str(s) => Value::from(s.as_str()),
            Val::Bin(b) => Value::Binary(b.clone()),
            Val::Array(a) => Value::Array(a.iter().map(|v| v.value(depth + 1)).collect()),
            Val::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.value(depth + 1), v.value(depth + 1)))
                    .collect(),
            ),
            // Around the value limits (64 KiB by default).
            Val::Big(n) => Value::Binary(vec![7; (*n % (128 * 1024)) as usize]),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw(Vec<u8>),
    Reconnect,
    Ping,
    Sub {
        room: u8,
        since: Option<u64>,
        state: Option<bool>,
        presence: Option<bool>,
        info: Option<Val>,
    },
    Unsub {
        room: u8,
    },
    Pub {
        room: u8,
        data: Vec<u8>,
        mid: Option<u8>,
    },
    PubBig {
        room: u8,
        len: u32,
    },
    Signal {
        room: u8,
        data: Vec<u8>,
    },
    Edit {
        room: u8,
        target: u8,
        data: Vec<u8>,
    },
    Redact {
        room: u8,
        target: u8,
    },
    Hist {
        room: u8,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    },
    Get {
        room: u8,
        key: u8,
    },
    List {
        room: u8,
        prefix: Option<u8>,
        after: Option<u8>,
        limit: Option<u32>,
    },
    Put {
        room: u8,
        key: u8,
        value: Val,
    },
    Del {
        room: u8,
        key: u8,
    },
    Cas {
        room: u8,
        key: u8,
        ver: u8,
        value: Val,
    },
    Incr {
        room: u8,
        key: u8,
        by: Option<i64>,
    },
    Who {
        room: u8,
    },
}

fn room(i: u8) -> String {
    match ROOMS.get(usize::from(i)) {
        Some(r) => (*r).to_string(),
        None if i == u8::MAX => "r".repeat(200),
        None => ROOMS[usize::from(i) % 3].to_string(),
    }
}

fn key(i: u8) -> String {
    match KEYS.get(usize::from(i)) {
        Some(k) => (*k).to_string(),
        None if i == u8::MAX => "k".repeat(300),
        None => format!("k{}", i % 16),
    }
}

/// The frame's bytes, or `None` for a reconnect.
fn frame(op: &Op, id: u32) -> Option<Vec<u8>> {
    let f = match op {
        Op::Raw(bytes) => return Some(bytes.clone()),
        Op::Reconnect => return None,
        Op::Ping => ClientFrame::Ping { id },
        Op::Sub {
            room: r,
            since,
            state,
            presence,
            info,
        } => ClientFrame::Sub {
            id,
            room: room(*r),
            since: *since,
            state: *state,
            presence: *presence,
            info: info.as_ref().map(|v| v.value(0)),
        },
        Op::Unsub { room: r } => ClientFrame::Unsub { id, room: room(*r) },
        Op::Pub { room: r, data, mid } => ClientFrame::Pub {
            id,
            room: room(*r),
            data: data.clone(),
            mid: mid.map(|m| format!("m{}", m % 8)),
        },
        Op::PubBig { room: r, len } => ClientFrame::Pub {
            id,
            room: room(*r),
            data: vec![1; (*len % (128 * 1024)) as usize],
            mid: None,
        },
        Op::Signal { room: r, data } => ClientFrame::Signal {
            id,
            room: room(*r),
            data: data.clone(),
            ephemeral: true,
        },
        Op::Edit {
            room: r,
            target,
            data,
        } => ClientFrame::Edit {
            id,
            room: room(*r),
            target: u64::from(*target),
            data: data.clone(),
        },
        Op::Redact { room: r, target } => ClientFrame::Redact {
            id,
            room: room(*r),
            target: u64::from(*target),
        },
        Op::Hist {
            room: r,
            after,
            before,
            limit,
        } => ClientFrame::Hist {
            id,
            room: room(*r),
            after: *after,
            before: *before,
            limit: *limit,
        },
        Op::Get { room: r, key: k } => ClientFrame::Get {
            id,
            room: room(*r),
            key: key(*k),
        },
        Op::List {
            room: r,
            prefix,
            after,
            limit,
        } => ClientFrame::List {
            id,
            room: room(*r),
            prefix: prefix.map(key),
            after: after.map(key),
            limit: *limit,
        },
        Op::Put {
            room: r,
            key: k,
            value,
        } => ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: room(*r),
            key: key(*k),
            value: value.value(0),
        },
        Op::Del { room: r, key: k } => ClientFrame::Del {
            id,
            room: room(*r),
            key: key(*k),
        },
        Op::Cas {
            room: r,
            key: k,
            ver,
            value,
        } => ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: room(*r),
            key: key(*k),
            ver: u64::from(*ver),
            value: value.value(0),
        },
        Op::Incr {
            room: r,
            key: k,
            by,
        } => ClientFrame::Incr {
            id,
            room: room(*r),
            key: key(*k),
            by: *by,
        },
        Op::Who { room: r } => ClientFrame::Who { id, room: room(*r) },
    };
    Some(encode(&f))
}

fuzz_target!(|ops: Vec<Op>| {
    let mut guard = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|(_, n)| *n >= INPUTS_PER_SERVER) {
        *guard = None;
        *guard = Some((SessionHarness::new().expect("start a server"), 0));
    }
    let Some((harness, n)) = guard.as_mut() else {
        return;
    };
    *n += 1;
    harness.reconnect();
    for (i, op) in ops.iter().take(MAX_OPS).enumerate() {
        let Some(bytes) = frame(op, i as u32) else {
            harness.reconnect();
            continue;
        };
        let fed = harness.feed(&bytes);
        for out in &fed.frames {
            if let Err(e) = decode_server(out) {
                panic!(
                    "the server sent {out:02x?}, which does not decode: {e}\n(in answer to {op:?})"
                );
            }
        }
        assert!(
            fed.answered,
            "no answer within {:?} to {op:?}",
            roomd::fuzzing::REPLY_TIMEOUT
        );
    }
});
