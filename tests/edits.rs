//! Editing and deleting a message (SPEC.md 4.11, 5.6, 5.8): only its author over WebSocket, any
//! message through the server API; each change is a log entry of its own, the message is
//! rewritten (edited content, or a stub), superseded edits lose their content, and all of it
//! survives a kill -9.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame};
use serde_json::json;

const KEY: &str = "backend-secret-0123456789";
const KEYS: &str = r#"
[[api.keys]]
name = "backend"
key = "backend-secret-0123456789"
scopes = ["publish", "read", "state", "admin"]

[[api.keys]]
name = "writer"
key = "writer-secret-0123456789"
scopes = ["publish", "read"]
"#;

async fn edit(c: &mut Client, room: &str, target: u64, data: &[u8]) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Edit {
        id,
        room: room.into(),
        target,
        data: data.to_vec(),
    })
    .await
}

async fn redact(c: &mut Client, room: &str, target: u64) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Redact {
        id,
        room: room.into(),
        target,
    })
    .await
}

fn acked(f: &ServerFrame) -> (u64, Option<bool>) {
    match f {
        ServerFrame::Ack { seq, dup, .. } => (*seq, *dup),
        other => panic!("expected ack, got {other:?}"),
    }
}

/// The room's whole log through `hist`.
async fn log(c: &mut Client, room: &str) -> Vec<ServerFrame> {
    c.history_all(room).await
}

/// A `msg` as (seq, data, deleted, edited, edits).
type Row = (u64, Vec<u8>, Option<u64>, Option<u64>, Option<u64>);

fn rows(items: &[ServerFrame]) -> Vec<Row> {
    items
        .iter()
        .map(|f| match f {
            ServerFrame::Msg {
                seq,
                data,
                deleted,
                edited,
                edits,
                ..
            } => (*seq, data.clone(), *deleted, *edited, *edits),
            ServerFrame::Del { seq, target, .. } => {
                (*seq, b"del".to_vec(), None, None, Some(*target))
            }
            other => panic!("unexpected entry {other:?}"),
        })
        .collect()
}

fn row(
    seq: u64,
    data: &[u8],
    deleted: Option<u64>,
    edited: Option<u64>,
    edits: Option<u64>,
) -> Row {
    (seq, data.to_vec(), deleted, edited, edits)
}

#[tokio::test]
async fn the_author_edits_and_deletes_and_everyone_sees_it_in_order() {
    let mut b = Broker::start("");
    let mut ada = Client::connect_query(&b, "user=ada").await;
    let mut bob = Client::connect_query(&b, "user=bob").await;
    bob.sub("chat", None).await;
    assert_eq!(ada.publish_seq("chat", b"helo").await, 1);
    assert_eq!(ada.publish_seq("chat", b"other").await, 2);

    assert_eq!(acked(&edit(&mut ada, "chat", 1, b"hello").await), (3, None));
    assert_eq!(
        acked(&edit(&mut ada, "chat", 1, b"hello!").await),
        (4, None)
    );
    // Live: the messages, then each edit entry in order, with the editor's ids.
    assert_eq!(bob.msg().await, (1, b"helo".to_vec()));
    assert_eq!(bob.msg().await, (2, b"other".to_vec()));
    for (seq, text) in [(3, &b"hello"[..]), (4, &b"hello!"[..])] {
        match bob.event().await {
            ServerFrame::Msg {
                seq: s,
                data,
                edits,
                uid,
                from,
                ..
            } => {
                assert_eq!((s, data.as_slice(), edits), (seq, text, Some(1)));
                assert_eq!((uid.as_deref(), from), (Some("ada"), ada.conn.clone()));
            }
            other => panic!("expected edit entry, got {other:?}"),
        }
    }
    // History: the message with its latest content and `edited`, the first edit superseded
    // (no content left), the second one whole.
    assert_eq!(
        rows(&log(&mut bob, "chat").await),
        [
            row(1, b"hello!", None, Some(4), None),
            row(2, b"other", None, None, None),
            row(3, b"", Some(4), None, Some(1)),
            row(4, b"hello!", None, None, Some(1)),
        ]
    );

    // Deleting it: the `del` entry, the message a stub, its last edit emptied too.
    assert_eq!(acked(&redact(&mut ada, "chat", 1).await), (5, None));
    assert_eq!(acked(&redact(&mut ada, "chat", 1).await), (5, Some(true)));
    assert!(matches!(
        bob.event().await,
        ServerFrame::Del {
            seq: 5,
            target: 1,
            ..
        }
    ));
    let after = vec![
        row(1, b"", Some(5), None, None),
        row(2, b"other", None, None, None),
        row(3, b"", Some(4), None, Some(1)),
        row(4, b"", Some(5), None, Some(1)),
        row(5, b"del", None, None, Some(1)),
    ];
    assert_eq!(rows(&log(&mut bob, "chat").await), after);
    // A deleted message cannot be edited, and stays its author's: bob is refused as before.
    assert_eq!(err_code(&edit(&mut ada, "chat", 1, b"back").await), 406);
    assert_eq!(err_code(&redact(&mut bob, "chat", 1).await), 423);
    // A resuming subscriber replays exactly the log, dense.
    let mut late = Client::connect(&b).await;
    late.sub("chat", Some(0)).await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(late.event().await);
    }
    assert_eq!(rows(&replayed), after);

    // All of it is durable: after kill -9 the log reads the same.
    b.kill9();
    b.restart();
    let mut again = Client::connect(&b).await;
    assert_eq!(rows(&log(&mut again, "chat").await), after);
}

#[tokio::test]
async fn only_the_author_may_change_a_message_and_only_a_message() {
    let b = Broker::start(
        "[limits]\npayload_bytes = 1000\n[namespaces.ro]\nanonymous = [\"sub\", \"hist\"]\n",
    );
    let mut ada = Client::connect_query(&b, "user=ada").await;
    let mut bob = Client::connect_query(&b, "user=bob").await;
    let mut anon = Client::connect(&b).await;
    assert_eq!(ada.publish_seq("r", b"ada's").await, 1);
    assert_eq!(anon.publish_seq("r", b"anonymous").await, 2);
    // Someone else's message: 423, whatever the request.
    for f in [
        edit(&mut bob, "r", 1, b"mine now").await,
        redact(&mut bob, "r", 1).await,
        edit(&mut anon, "r", 1, b"mine now").await,
        // A message without a user id has no author to match.
        edit(&mut anon, "r", 2, b"x").await,
        redact(&mut ada, "r", 2).await,
    ] {
        assert!(
            matches!(&f, ServerFrame::Err { code: 423, msg, .. } if msg.contains("not yours")),
            "{f:?}"
        );
    }
    // Not a stored message: 406.
    let id = ada.id();
    let put = ClientFrame::Put {
        ttl_ms: None,
        ephemeral: false,
        id,
        room: "r".into(),
        key: "k".into(),
        value: 1.into(),
    };
    assert!(matches!(
        ada.request(put).await,
        ServerFrame::Done { seq: Some(3), .. }
    ));
    assert_eq!(acked(&edit(&mut ada, "r", 1, b"v2").await), (4, None));
    for target in [0, 3, 4, 99] {
        let r = edit(&mut ada, "r", target, b"x").await;
        assert_eq!(err_code(&r), 406, "{target}: {r:?}");
        assert_eq!(err_code(&redact(&mut ada, "r", target).await), 406);
    }
    // An edit's size limit, and the room grammar.
    let r = edit(&mut ada, "r", 1, &[0; 1001]).await;
    assert!(
        matches!(
            r,
            ServerFrame::Err {
                code: 413,
                max: Some(1000),
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(err_code(&edit(&mut ada, "bad room", 1, b"x").await), 414);
    // The `pub` capability.
    assert_eq!(err_code(&edit(&mut anon, "ro:x", 1, b"x").await), 403);
    assert_eq!(err_code(&redact(&mut anon, "ro:x", 1).await), 403);
    // Nothing refused was stored: the log is 1 to 4.
    let seqs: Vec<u64> = log(&mut ada, "r")
        .await
        .iter()
        .filter_map(ServerFrame::seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

/// A message no longer in the room's cache is read from disk with its latest edit, which the
/// new edit supersedes just the same.
#[tokio::test]
async fn an_old_message_is_changed_from_disk() {
    let b = Broker::start("[rooms]\ncache_entries = 2\n");
    let mut ada = Client::connect_query(&b, "user=ada").await;
    assert_eq!(ada.publish_seq("r", b"v1").await, 1);
    assert_eq!(acked(&edit(&mut ada, "r", 1, b"v2").await), (2, None));
    for i in 3..=6u64 {
        assert_eq!(ada.publish_seq("r", b"filler").await, i);
    }
    assert_eq!(acked(&edit(&mut ada, "r", 1, b"v3").await), (7, None));
    let first = rows(&log(&mut ada, "r").await);
    assert_eq!(first[0], row(1, b"v3", None, Some(7), None));
    assert_eq!(first[1], row(2, b"", Some(7), None, Some(1)));
    assert_eq!(first[6], row(7, b"v3", None, None, Some(1)));
    // Concurrent: two edits and a delete pipelined, decided in order.
    let ids: Vec<u32> = (0..3).map(|_| ada.id()).collect();
    for (i, f) in [
        ClientFrame::Edit {
            id: ids[0],
            room: "r".into(),
            target: 1,
            data: b"v4".to_vec(),
        },
        ClientFrame::Edit {
            id: ids[1],
            room: "r".into(),
            target: 1,
            data: b"v5".to_vec(),
        },
        ClientFrame::Redact {
            id: ids[2],
            room: "r".into(),
            target: 1,
        },
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(f.id(), ids[i]);
        ada.send(f).await;
    }
    let mut seqs = Vec::new();
    for id in ids {
        seqs.push(acked(&ada.reply_to(id).await).0);
    }
    assert_eq!(seqs, [8, 9, 10]);
    let last = rows(&log(&mut ada, "r").await);
    assert_eq!(last[0], row(1, b"", Some(10), None, None));
    for (i, superseded_by) in [(6, 8), (7, 9), (8, 10)] {
        assert_eq!(last[i].1, b"", "entry {} keeps no content", i + 1);
        assert_eq!(last[i].2, Some(superseded_by));
    }
}

#[tokio::test]
async fn a_backend_edits_any_message_through_the_server_api() {
    let b = Broker::start(KEYS);
    let mut ada = Client::connect_query(&b, "user=ada").await;
    ada.sub("api", None).await;
    assert_eq!(ada.publish_seq("api", b"rude words").await, 1);
    let (s, out) = b
        .api(
            "PATCH",
            "/api/v1/rooms/api/messages/1",
            Some(KEY),
            Some(json!({"data_b64": "KG1vZGVyYXRlZCk="})),
        )
        .await;
    assert_eq!((s, out), (200, json!({"seq": 2})));
    assert_eq!(ada.msg().await, (1, b"rude words".to_vec()));
    match ada.event().await {
        ServerFrame::Msg {
            seq: 2,
            data,
            edits: Some(1),
            from,
            uid: None,
            ..
        } => assert_eq!(
            (data.as_slice(), from.as_str()),
            (&b"(moderated)"[..], "api:backend")
        ),
        other => panic!("expected the edit entry, got {other:?}"),
    }
    // A value is stored as its MessagePack encoding, as for a publish.
    let (s, _) = b
        .api(
            "PATCH",
            "/api/v1/rooms/api/messages/1",
            Some(KEY),
            Some(json!({"data": {"n": 1}})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, h) = b
        .api("GET", "/api/v1/rooms/api/messages", Some(KEY), None)
        .await;
    let items = h["items"].as_array().unwrap();
    assert_eq!(items[0]["edited"], json!(3));
    assert_eq!(items[0]["data"], json!({"n": 1}));
    assert_eq!(items[1]["edits"], json!(1));
    assert_eq!(items[1]["deleted"], json!(3));
    assert_eq!(items[2]["edits"], json!(1));
    // Bad input: no payload, both payloads, an unknown key, a bad seq; the admin scope.
    for body in [
        json!({}),
        json!({"data": 1, "data_b64": "AA=="}),
        json!({"data": 1, "mid": "x"}),
        json!({"data_b64": "not base64!"}),
    ] {
        let (s, e) = b
            .api(
                "PATCH",
                "/api/v1/rooms/api/messages/1",
                Some(KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {e}");
    }
    let (s, e) = b
        .api(
            "PATCH",
            "/api/v1/rooms/api/messages/99",
            Some(KEY),
            Some(json!({"data": 1})),
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(406)), "{e}");
    let (s, e) = b
        .api(
            "PATCH",
            "/api/v1/rooms/api/messages/1",
            Some("writer-secret-0123456789"),
            Some(json!({"data": 1})),
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (403, Some(403)), "{e}");
    // The operation is in the OpenAPI document.
    let (_, doc) = b.http_get("/api/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let op = &doc["paths"]["/api/v1/rooms/{room}/messages/{seq}"]["patch"];
    assert_eq!(op["operationId"], json!("edit_message"), "{op}");
}
