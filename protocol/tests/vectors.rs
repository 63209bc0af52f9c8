//! The test vectors in `vectors/frames.json` are the protocol's bytes: every frame decodes from
//! its hex to its value, and the typed encoder reproduces the hex byte for byte.
//!
//! Run with `ROOMD_REGEN_VECTORS=1` to (re)write the `hex` fields from the `value` fields.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roomd_protocol::{codec, decode_client, decode_server, Value};
use serde_json::Value as Json;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/frames.json");

fn to_msgpack(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap()),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(to_msgpack).collect()),
        Json::Object(o) => match o.get("$bin") {
            Some(Json::String(h)) if o.len() == 1 => Value::Binary(from_hex(h)),
            _ => Value::Map(
                o.iter()
                    .map(|(k, v)| (Value::from(k.as_str()), to_msgpack(v)))
                    .collect(),
            ),
        },
    }
}

fn from_hex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn vectors_round_trip() {
    let text = std::fs::read_to_string(PATH).unwrap();
    let mut doc: Json = serde_json::from_str(&text).unwrap();
    let regen = std::env::var_os("ROOMD_REGEN_VECTORS").is_some();
    let frames = doc["frames"].as_array_mut().unwrap();
    assert!(frames.len() >= 30);
    let mut kinds = std::collections::BTreeSet::new();
    for f in frames.iter_mut() {
        let name = f["name"].as_str().unwrap().to_string();
        let value = to_msgpack(&f["value"]);
        let mut generic = Vec::new();
        rmpv::encode::write_value(&mut generic, &value).unwrap();
        if regen {
            f["hex"] = Json::String(to_hex(&generic));
        }
        let bytes = from_hex(f["hex"].as_str().unwrap());
        assert_eq!(to_hex(&generic), to_hex(&bytes), "{name}: hex is not value");
        let typed = match f["dir"].as_str().unwrap() {
            "client" => {
                codec::encode(&decode_client(&bytes).unwrap_or_else(|e| panic!("{name}: {e}")))
            }
            _ => codec::encode(&decode_server(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))),
        };
        assert_eq!(
            to_hex(&typed),
            to_hex(&bytes),
            "{name}: typed re-encoding differs"
        );
        kinds.insert(format!(
            "{}:{}",
            f["dir"].as_str().unwrap(),
            f["value"]["t"].as_str().unwrap()
        ));
    }
    // Every frame kind of the protocol has at least one vector.
    for k in roomd_protocol::ClientFrame::KINDS {
        assert!(
            kinds.contains(&format!("client:{k}")),
            "no vector for client {k}"
        );
    }
    for k in [
        "hello", "subbed", "ok", "ack", "hist", "val", "vals", "done", "who", "pong", "err", "msg",
        "state", "del", "join", "leave", "unsubbed", "signal", "count",
    ] {
        assert!(
            kinds.contains(&format!("server:{k}")),
            "no vector for server {k}"
        );
    }
    if regen {
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
}
