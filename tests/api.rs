//! The server API against the real binary, mixed with WebSocket traffic in the same rooms.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{api_at, err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};
use serde_json::json;

const KEY: &str = "backend-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

const KEYS: &str = r#"
[[api.keys]]
name = "backend"
key = "backend-secret-0123456789"
scopes = ["publish", "read", "state", "presence", "admin"]

[[api.keys]]
name = "reader"
key = "reader-secret-0123456789"
scopes = ["read"]

[[api.keys]]
name = "writer"
key = "writer-secret-0123456789"
scopes = ["publish", "state"]
"#;

fn broker() -> Broker {
    Broker::start(KEYS)
}

/// The MessagePack encoding of a JSON value, as the API stores `data`.
fn packed(v: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec(v).unwrap()
}

async fn publish(b: &Broker, room: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    b.api(
        "POST",
        &format!("/api/v1/rooms/{room}/messages"),
        Some(KEY),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn api_publishes_are_ordered_with_websocket_publishes_for_subscribers() {
    let b = broker();
    let mut sub = Client::connect(&b).await;
    sub.sub("mixed", None).await;
    let mut ws = Client::connect(&b).await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let seq = if i % 2 == 0 {
            let (status, out) = publish(&b, "mixed", json!({"data": {"n": i}})).await;
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["dup"], false);
            (out["seq"].as_u64().unwrap(), packed(&json!({"n": i})))
        } else {
            let data = format!("ws {i}").into_bytes();
            (ws.publish_seq("mixed", &data).await, data)
        };
        expected.push(seq);
    }
    let seqs: Vec<u64> = expected.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    for (seq, data) in expected {
        assert_eq!(sub.msg().await, (seq, data));
    }
    // An API message's `from` names the key.
    let (status, out) = b
        .api(
            "GET",
            "/api/v1/rooms/mixed/messages?limit=1&after=0",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(out["items"][0]["from"], "api:backend");
    assert_eq!(out["items"][0]["data"], json!({"n": 0}));
}

#[tokio::test]
async fn a_retried_publish_with_the_same_mid_is_stored_once() {
    let b = broker();
    let body = json!({"data_b64": "aGVsbG8=", "mid": "m-1"});
    let (s1, first) = publish(&b, "idem", body.clone()).await;
    let (s2, again) = publish(&b, "idem", body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, json!({"seq": 1, "dup": false}));
    assert_eq!(again, json!({"seq": 1, "dup": true}));
    let (_, h) = b
        .api("GET", "/api/v1/rooms/idem/messages", Some(KEY), None)
        .await;
    assert_eq!(h["items"].as_array().unwrap().len(), 1);
    assert_eq!(h["items"][0]["data_b64"], "aGVsbG8=");
}

#[tokio::test]
async fn history_pages_forward_and_backward() {
    let b = broker();
    for i in 1..=5 {
        publish(&b, "pages", json!({"data": i})).await;
    }
    let get = |q: &'static str| {
        let b = &b;
        async move {
            let (status, out) = b
                .api(
                    "GET",
                    &format!("/api/v1/rooms/pages/messages{q}"),
                    Some(KEY),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{out}");
            let seqs: Vec<u64> = out["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["seq"].as_u64().unwrap())
                .collect();
            (seqs, out["more"].as_bool().unwrap())
        }
    };
    assert_eq!(get("?after=0&limit=2").await, (vec![1, 2], true));
    assert_eq!(get("?after=2&limit=2").await, (vec![3, 4], true));
    assert_eq!(get("?after=4&limit=2").await, (vec![5], false));
    assert_eq!(get("?limit=2").await, (vec![4, 5], true));
    assert_eq!(get("?before=4&limit=2").await, (vec![2, 3], true));
    assert_eq!(get("?before=2").await, (vec![1], false));
    let (status, out) = b
        .api(
            "GET",
            "/api/v1/rooms/pages/messages?limit=0",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((status, out["code"].as_u64()), (400, Some(406)));
}

#[tokio::test]
async fn state_operations_and_concurrent_incr_sum_exactly() {
    let b = broker();
    let path = |k: &str| format!("/api/v1/rooms/counter/state/{k}");
    let (s, put) = b
        .api(
            "PUT",
            &path("title"),
            Some(KEY),
            Some(json!({"value": {"t": "hi"}})),
        )
        .await;
    assert_eq!((s, put["ver"].as_u64()), (200, Some(1)));
    let (_, got) = b.api("GET", &path("title"), Some(KEY), None).await;
    assert_eq!(got, json!({"key": "title", "value": {"t": "hi"}, "ver": 1}));
    let (s, conflict) = b
        .api(
            "POST",
            &format!("{}/cas", path("title")),
            Some(KEY),
            Some(json!({"ver": 7, "value": 1})),
        )
        .await;
    assert_eq!(
        (s, conflict["code"].as_u64(), conflict["ver"].as_u64()),
        (409, Some(409), Some(1))
    );
    let (s, _) = b
        .api(
            "POST",
            &format!("{}/cas", path("title")),
            Some(KEY),
            Some(json!({"ver": 1, "value": "new"})),
        )
        .await;
    assert_eq!(s, 200);

    // 8 clients, 25 increments each, at once: the sum is exact.
    let addr = b.addr.clone();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let (s, out) = api_at(
                    &addr,
                    "POST",
                    "/api/v1/rooms/counter/state/count/incr",
                    Some(KEY),
                    None,
                )
                .await;
                assert_eq!(s, 200, "{out}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, count) = b.api("GET", &path("count"), Some(KEY), None).await;
    assert_eq!(count["value"], 200);
    let (_, by) = b
        .api(
            "POST",
            &format!("{}/incr", path("count")),
            Some(KEY),
            Some(json!({"by": -50})),
        )
        .await;
    assert_eq!(by["value"], 150);
    let (s, not_int) = b
        .api("POST", &format!("{}/incr", path("title")), Some(KEY), None)
        .await;
    assert_eq!((s, not_int["code"].as_u64()), (422, Some(422)));

    let (_, list) = b
        .api(
            "GET",
            "/api/v1/rooms/counter/state?limit=1",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(list["items"][0]["key"], "count");
    assert_eq!(list["more"], true);
    let (_, list) = b
        .api(
            "GET",
            "/api/v1/rooms/counter/state?after=count",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(list["items"][0]["key"], "title");
    assert_eq!(list["more"], false);

    let (s, del) = b.api("DELETE", &path("title"), Some(KEY), None).await;
    assert_eq!((s, del["ver"].as_u64()), (200, Some(0)));
    assert!(del["seq"].is_u64());
    let (_, again) = b.api("DELETE", &path("title"), Some(KEY), None).await;
    assert_eq!(again, json!({"ver": 0}));

    // A WebSocket reader sees the same state.
    let mut ws = Client::connect(&b).await;
    let id = ws.id();
    match ws
        .request(ClientFrame::Get {
            id,
            room: "counter".into(),
            key: "count".into(),
        })
        .await
    {
        ServerFrame::Val { value, .. } => assert_eq!(value, Some(Value::from(150))),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn presence_room_info_and_room_list() {
    let b = broker();
    let mut ws = Client::connect_query(&b, "user=ada").await;
    let id = ws.id();
    let reply = ws
        .request(ClientFrame::Sub {
            id,
            room: "lobby".into(),
            since: None,
            state: None,
            presence: Some(true),
            info: Some(Value::Map(vec![("name".into(), "Ada".into())])),
        })
        .await;
    assert!(matches!(reply, ServerFrame::Subbed { .. }), "{reply:?}");
    ws.publish_seq("lobby", b"x").await;
    let (s, p) = b
        .api("GET", "/api/v1/rooms/lobby/presence", Some(KEY), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["members"][0]["user"], "ada");
    assert_eq!(p["members"][0]["info"], json!({"name": "Ada"}));
    assert_eq!(p["members"][0]["conn"], ws.conn.as_str());

    b.api(
        "PUT",
        "/api/v1/rooms/lobby/state/k",
        Some(KEY),
        Some(json!({"value": 1})),
    )
    .await;
    let (s, info) = b
        .api("GET", "/api/v1/rooms/lobby", Some(READER), None)
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["room"], "lobby");
    assert_eq!(info["last"], 2);
    assert_eq!(info["first"], 1);
    assert_eq!(info["subscribers"], 1);
    assert_eq!(info["members"], 1);
    assert_eq!(info["keys"], 1);
    assert!(info["epoch"].as_u64().unwrap() > 0);

    b.api("GET", "/api/v1/rooms/other", Some(KEY), None).await;
    let (_, rooms) = b.api("GET", "/api/v1/rooms", Some(KEY), None).await;
    assert_eq!(rooms, json!({"rooms": ["lobby", "other"], "more": false}));
    let (_, rooms) = b
        .api("GET", "/api/v1/rooms?prefix=o", Some(KEY), None)
        .await;
    assert_eq!(rooms["rooms"], json!(["other"]));
    let (_, rooms) = b.api("GET", "/api/v1/rooms?limit=1", Some(KEY), None).await;
    assert_eq!(rooms, json!({"rooms": ["lobby"], "more": true}));
}

#[tokio::test]
async fn disconnecting_a_user_closes_all_their_connections_with_the_documented_code() {
    let b = broker();
    let mut a1 = Client::connect_query(&b, "user=mallory").await;
    let mut a2 = Client::connect_query(&b, "user=mallory").await;
    let mut other = Client::connect_query(&b, "user=ada").await;
    let (s, out) = b
        .api("POST", "/api/v1/users/mallory/disconnect", Some(KEY), None)
        .await;
    assert_eq!((s, out), (200, json!({"connections": 2})));
    assert_eq!(a1.close_code().await, Some(4403));
    assert_eq!(a2.close_code().await, Some(4403));
    assert!(roomd_protocol::CloseCode::should_reconnect(4004));
    assert!(!roomd_protocol::CloseCode::should_reconnect(4403));
    // Others are untouched.
    let id = other.id();
    assert!(matches!(
        other.request(ClientFrame::Ping { id }).await,
        ServerFrame::Pong { .. }
    ));

    let mut again = Client::connect_query(&b, "user=mallory").await;
    let (_, out) = b
        .api(
            "POST",
            "/api/v1/users/mallory/disconnect",
            Some(KEY),
            Some(json!({"reconnect": true})),
        )
        .await;
    assert_eq!(out["connections"], 1);
    assert_eq!(again.close_code().await, Some(4004));
    let (_, none) = b
        .api("POST", "/api/v1/users/nobody/disconnect", Some(KEY), None)
        .await;
    assert_eq!(none["connections"], 0);
}

#[tokio::test]
async fn unsubscribing_a_user_ends_their_subscriptions_in_that_room_only() {
    let b = broker();
    let mut m = Client::connect_query(&b, "user=mallory").await;
    m.sub("room-a", None).await;
    m.sub("room-b", None).await;
    let (s, out) = b
        .api(
            "POST",
            "/api/v1/rooms/room-a/users/mallory/unsubscribe",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((s, out), (200, json!({"subscriptions": 1})));
    match m.event().await {
        ServerFrame::Unsubbed { room, .. } => assert_eq!(room, "room-a"),
        other => panic!("expected unsubbed, got {other:?}"),
    }
    // No more messages from room-a; room-b still live.
    publish(&b, "room-a", json!({"data": 1})).await;
    publish(&b, "room-b", json!({"data": 2})).await;
    let (seq, data) = m.msg().await;
    assert_eq!((seq, data), (1, packed(&json!(2))));
    // The connection forgot the subscription: unsub says so, and sub works again.
    let id = m.id();
    let r = m
        .request(ClientFrame::Unsub {
            id,
            room: "room-a".into(),
        })
        .await;
    assert_eq!(err_code(&r), 404);
    assert!(matches!(
        m.sub("room-a", None).await,
        ServerFrame::Subbed { .. }
    ));
}

#[tokio::test]
async fn a_deleted_message_leaves_history_and_replay_and_subscribers_are_told() {
    let b = broker();
    let mut live = Client::connect(&b).await;
    live.sub("del", None).await;
    for i in 1..=3 {
        publish(&b, "del", json!({"data": format!("secret {i}")})).await;
    }
    let (s, out) = b
        .api("DELETE", "/api/v1/rooms/del/messages/2", Some(KEY), None)
        .await;
    assert_eq!((s, out.clone()), (200, json!({"seq": 4, "dup": false})));
    let (_, again) = b
        .api("DELETE", "/api/v1/rooms/del/messages/2", Some(KEY), None)
        .await;
    assert_eq!(again, json!({"seq": 4, "dup": true}));
    for bad in ["0", "4", "99"] {
        let (s, e) = b
            .api(
                "DELETE",
                &format!("/api/v1/rooms/del/messages/{bad}"),
                Some(KEY),
                None,
            )
            .await;
        assert_eq!((s, e["code"].as_u64()), (400, Some(406)), "{bad}: {e}");
    }
    for _ in 0..3 {
        live.msg().await;
    }
    match live.event().await {
        ServerFrame::Del { seq, target, .. } => assert_eq!((seq, target), (4, 2)),
        other => panic!("expected del, got {other:?}"),
    }
    let (_, h) = b
        .api("GET", "/api/v1/rooms/del/messages", Some(KEY), None)
        .await;
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[1]["deleted"], 4);
    assert!(items[1].get("data").is_none(), "{}", items[1]);
    assert_eq!(items[1]["data_b64"], "");
    assert_eq!(items[3]["type"], "del");
    assert_eq!(items[3]["target"], 2);
    let raw = serde_json::to_string(&h).unwrap();
    assert!(!raw.contains("secret 2"), "{raw}");

    // A subscriber resuming from before it gets the tombstone, not the payload.
    let mut resume = Client::connect(&b).await;
    resume.sub("del", Some(0)).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(resume.event().await);
    }
    match &seen[1] {
        ServerFrame::Msg {
            seq: 2,
            data,
            deleted,
            ..
        } => {
            assert!(data.is_empty());
            assert_eq!(*deleted, Some(4));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        seen[3],
        ServerFrame::Del {
            seq: 4,
            target: 2,
            ..
        }
    ));
}

#[tokio::test]
async fn every_auth_and_scope_failure_is_a_json_error() {
    let b = broker();
    let path = "/api/v1/rooms/x/messages";
    let body = Some(json!({"data": 1}));
    let (s, e) = b.api("POST", path, None, body.clone()).await;
    assert_eq!(
        (s, e["code"].as_u64(), e["error"].as_str()),
        (401, Some(401), Some("unauthorized"))
    );
    let (s, e) = b
        .api("POST", path, Some("wrong-key-0123456789"), body.clone())
        .await;
    assert_eq!((s, e["code"].as_u64()), (401, Some(401)));
    let (s, _, out) = b
        .http(
            "POST",
            path,
            &[("Authorization", &format!("Basic {KEY}"))],
            b"{}",
        )
        .await;
    assert_eq!(s, 401, "{}", String::from_utf8_lossy(&out));
    for (method, p, body) in [
        ("POST", path, body.clone()),
        ("PUT", "/api/v1/rooms/x/state/k", Some(json!({"value": 1}))),
        ("GET", "/api/v1/rooms/x/presence", None),
        ("POST", "/api/v1/users/u/disconnect", None),
        ("DELETE", "/api/v1/rooms/x/messages/1", None),
    ] {
        let (s, e) = b.api(method, p, Some(READER), body).await;
        assert_eq!(
            (s, e["code"].as_u64(), e["error"].as_str()),
            (403, Some(403), Some("forbidden")),
            "{method} {p}"
        );
    }
    let (s, _) = b.api("GET", path, Some(READER), None).await;
    assert_eq!(s, 200);
    for p in [path, "/api/v1/rooms/x", "/api/v1/rooms"] {
        let (s, e) = b
            .api("GET", p, Some("writer-secret-0123456789"), None)
            .await;
        assert_eq!((s, e["code"].as_u64()), (403, Some(403)), "{p}");
    }

    // A server without keys refuses everything.
    let open = Broker::start("");
    let (s, e) = open.api("GET", path, Some(KEY), None).await;
    assert_eq!((s, e["code"].as_u64()), (401, Some(401)));
}

#[tokio::test]
async fn bad_bodies_get_the_protocols_codes() {
    let b = Broker::start(&format!(
        "{KEYS}\n[limits]\npayload_bytes = 2048\n[websocket]\nmax_frame_bytes = 8192\n[outbox]\nmax_bytes = 65536\n"
    ));
    let path = "/api/v1/rooms/x/messages";
    let auth = format!("Bearer {KEY}");
    let json = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let code =
        |out: &[u8]| serde_json::from_slice::<serde_json::Value>(out).unwrap()["code"].as_u64();
    // Over the body bound (2 × frame): 413 with the bound.
    let (s, _, out) = b.http("POST", path, &json, &vec![b' '; 20_000]).await;
    assert_eq!((s, code(&out)), (413, Some(413)));
    // A payload over limits.payload_bytes: 413 with that limit.
    let big = json!({"data_b64": base64_of(&[7u8; 3000])}).to_string();
    let (s, _, out) = b.http("POST", path, &json, big.as_bytes()).await;
    let e: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (s, e["code"].as_u64(), e["max"].as_u64()),
        (413, Some(413), Some(2048))
    );
    // Not JSON at all: 400 malformed. A wrong or unknown field: 400 bad_request (406).
    let (s, _, out) = b.http("POST", path, &json, b"{nope").await;
    assert_eq!((s, code(&out)), (400, Some(400)));
    for body in [
        r#"[1, null]"#,
        r#"{"data": 1, "extra": 2}"#,
        r#"{"mid": 5, "data": 1}"#,
        r#"{}"#,
        r#"{"data": 1, "data_b64": "AA=="}"#,
        r#"{"data_b64": "%%%"}"#,
        r#"{"data": 1, "mid": ""}"#,
    ] {
        let (s, _, out) = b.http("POST", path, &json, body.as_bytes()).await;
        assert_eq!(
            (s, code(&out)),
            (400, Some(406)),
            "{body}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    // A bad room name: 400 with the protocol's bad_room.
    let (s, _, out) = b
        .http(
            "POST",
            "/api/v1/rooms/no%20spaces/messages",
            &json,
            br#"{"data": 1}"#,
        )
        .await;
    assert_eq!((s, code(&out)), (400, Some(414)));
    // Another content type: 415.
    let (s, _, _) = b
        .http(
            "POST",
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "text/plain"),
            ],
            b"hi",
        )
        .await;
    assert_eq!(s, 415);
    // Unknown query parameters are refused too; unknown routes and methods are JSON errors.
    let (s, e) = b
        .api("GET", "/api/v1/rooms/x/messages?sinse=1", Some(KEY), None)
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(406)));
    let (s, e) = b.api("GET", "/api/v1/nope", Some(KEY), None).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(405)));
    let (s, _) = b.api("PATCH", path, Some(KEY), None).await;
    assert_eq!(s, 405);
    // Broadcast: more rooms than allowed.
    let rooms: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    let (s, e) = b
        .api(
            "POST",
            "/api/v1/broadcast",
            Some(KEY),
            Some(json!({"rooms": rooms, "data": 1})),
        )
        .await;
    assert_eq!((s, e["max"].as_u64()), (413, Some(1000)));
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn broadcast_answers_per_room() {
    let b = broker();
    let mut sub = Client::connect(&b).await;
    sub.sub("b1", None).await;
    let (s, out) = b
        .api(
            "POST",
            "/api/v1/broadcast",
            Some(KEY),
            Some(json!({"rooms": ["b1", "b2", "b1"], "data": "hi", "mid": "x"})),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    let r = &out["results"];
    assert_eq!(r[0], json!({"room": "b1", "seq": 1, "dup": false}));
    assert_eq!(r[1], json!({"room": "b2", "seq": 1, "dup": false}));
    // The same mid in the same room: de-duplicated.
    assert_eq!(r[2], json!({"room": "b1", "seq": 1, "dup": true}));
    assert_eq!(sub.msg().await, (1, packed(&json!("hi"))));
    // One bad name refuses the whole request, before anything is published.
    let (s, e) = b
        .api(
            "POST",
            "/api/v1/broadcast",
            Some(KEY),
            Some(json!({"rooms": ["b3", "bad room"], "data": 1})),
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(414)));
    let (_, info) = b.api("GET", "/api/v1/rooms/b3", Some(KEY), None).await;
    assert_eq!(info["last"], 0);
}

#[tokio::test]
async fn msgpack_in_and_out() {
    let b = broker();
    let auth = format!("Bearer {KEY}");
    let post = |body: Vec<u8>| {
        let (b, auth) = (&b, auth.clone());
        async move {
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/msgpack"),
            ];
            b.http("POST", "/api/v1/rooms/mp/messages", &headers, &body)
                .await
        }
    };
    let body = rmp_serde::to_vec_named(&json!({"data": {"a": 1}, "mid": "mp"})).unwrap();
    let (s, headers, out) = post(body).await;
    assert_eq!(s, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/msgpack"));
    let v: serde_json::Value = rmp_serde::from_slice(&out).unwrap();
    assert_eq!(v, json!({"seq": 1, "dup": false}));
    // `data` is a value in MessagePack bodies too: a bin is stored as its encoding.
    let bin = rmpv::Value::Map(vec![("data".into(), rmpv::Value::Binary(b"raw".to_vec()))]);
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &bin).unwrap();
    assert_eq!(post(body).await.0, 200);
    let (s, _, out) = b
        .http(
            "GET",
            "/api/v1/rooms/mp/messages",
            &[
                ("Authorization", auth.as_str()),
                ("Accept", "application/msgpack"),
            ],
            b"",
        )
        .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = rmp_serde::from_slice(&out).unwrap();
    assert_eq!(v["items"][0]["data"], json!({"a": 1}));
    assert_eq!(v["items"][1]["data_b64"], base64_of(b"\xc4\x03raw"));
    assert_eq!(v["items"][1]["data"], json!([114, 97, 119]));
}

#[tokio::test]
async fn openapi_document_metrics_and_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap().to_string();
    drop(admin);
    let b = Broker::start_in(
        dir,
        &format!("{KEYS}\n[admin]\nlisten = \"{admin_addr}\"\n"),
    );
    let (s, doc) = b.http_get("/api/openapi.json").await;
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/api/v1/rooms/{room}/messages",
        "/api/v1/broadcast",
        "/api/v1/rooms/{room}/state/{key}/incr",
        "/api/v1/users/{user}/disconnect",
        "/api/v1/rooms/{room}/messages/{seq}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
    publish(&b, "m", json!({"data": 1})).await;
    b.api(
        "POST",
        "/api/v1/rooms/m/messages",
        None,
        Some(json!({"data": 1})),
    )
    .await;
    let (_, metrics) = b.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"roomd_api_requests_total{op="publish",code="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"roomd_api_requests_total{op="publish",code="401"} 1"#));
    assert!(metrics.contains("roomd_api_request_seconds_bucket{op=\"publish\""));
    // The admin listener serves the API too.
    let (s, out) = api_at(&admin_addr, "GET", "/api/v1/rooms/m", Some(KEY), None).await;
    assert_eq!((s, out["last"].as_u64()), (200, Some(1)));
}

/// The README's backend examples (examples/backend.mjs and .py) run against a real server.
#[tokio::test]
async fn the_backend_examples_run() {
    let b = broker();
    let mut ws = Client::connect_query(&b, "user=ada").await;
    let id = ws.id();
    ws.request(ClientFrame::Sub {
        id,
        room: "chat:lobby".into(),
        since: None,
        state: None,
        presence: None,
        info: Some(Value::Map(vec![("name".into(), "Ada".into())])),
    })
    .await;
    for (i, (program, script)) in [
        ("node", "examples/backend.mjs"),
        ("python3", "examples/backend.py"),
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!("http://{}", b.addr);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(program)
                .arg(script)
                .env("ROOMD_URL", url)
                .env("ROOMD_API_KEY", KEY)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{program}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let posted = if i == 0 {
            "posted seq 1\n"
        } else {
            "posted seq 1 (already posted)\n"
        };
        assert!(stdout.starts_with(posted), "{program}: {stdout}");
        assert!(
            stdout.contains(&format!("visits: {}\n", i + 1)),
            "{program}: {stdout}"
        );
        let line = stdout.lines().find(|l| l.starts_with("#1 api:backend: "));
        assert!(
            line.is_some_and(|l| l.contains("02:00 UTC")),
            "{program}: {stdout}"
        );
        assert!(stdout.contains("online: ada\n"), "{program}: {stdout}");
    }
}

/// A request that does not finish in `api.request_timeout_ms` (here a body that never comes)
/// is answered 503 and the connection freed.
#[tokio::test]
async fn a_request_that_stalls_times_out_with_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Broker::start(&format!("{KEYS}\n[api]\nrequest_timeout_ms = 300\n"));
    let mut s = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/rooms/x/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"data\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut out))
        .await
        .expect("an answer before the test's timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":503"), "{text}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    let (_, info) = b.api("GET", "/api/v1/rooms/x", Some(KEY), None).await;
    assert_eq!(info["last"], 0, "nothing was stored");
}
