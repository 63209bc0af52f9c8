//! What a connection may do in a room (SPEC.md 9.2): namespace defaults for verified and
//! anonymous connections, each capability allowing and denying its requests with 403, presence
//! off and subscriber caps per namespace, anonymous admission, identity (no dedup hijack, unsafe
//! ids ignored).

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use common::*;
use roomd_protocol::{ClientFrame, ServerFrame, Value};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const FAR: u64 = 4_000_000_000;

fn jwt(sub: &str) -> String {
    hs256(SECRET, &serde_json::json!({"sub": sub, "exp": FAR}))
}

/// A server with auth on, anonymous connections admitted, and `extra` config.
fn broker(extra: &str) -> Broker {
    Broker::start(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\n[permissions]\nallow_anonymous = true\n{extra}"
    ))
}

async fn user(b: &Broker, sub: &str) -> Client {
    Client::connect_query(b, &format!("token={}", jwt(sub))).await
}

/// Every request kind, each needing one capability, against `room`: the codes they got.
async fn try_each(c: &mut Client, room: &str) -> Vec<(&'static str, u16)> {
    let mut out = Vec::new();
    let r = room.to_string();
    let requests: Vec<(&'static str, ClientFrame)> = vec![
        (
            "sub",
            ClientFrame::Sub {
                id: 0,
                room: r.clone(),
                since: None,
                state: None,
                presence: None,
                info: None,
            },
        ),
        (
            "pub",
            ClientFrame::Pub {
                id: 0,
                room: r.clone(),
                data: b"x".to_vec(),
                mid: None,
            },
        ),
        (
            "hist",
            ClientFrame::Hist {
                id: 0,
                room: r.clone(),
                after: None,
                before: None,
                limit: None,
            },
        ),
        (
            "state.read",
            ClientFrame::Get {
                id: 0,
                room: r.clone(),
                key: "k".into(),
            },
        ),
        (
            "state.write",
            ClientFrame::Put {
                ttl_ms: None,
                ephemeral: false,
                id: 0,
                room: r.clone(),
                key: "k".into(),
                value: Value::from(1),
            },
        ),
        (
            "presence",
            ClientFrame::Who {
                id: 0,
                room: r.clone(),
            },
        ),
    ];
    for (cap, mut frame) in requests {
        let id = c.id();
        set_id(&mut frame, id);
        let reply = c.request(frame).await;
        let code = match reply {
            ServerFrame::Err { code, .. } => code,
            _ => 200,
        };
        out.push((cap, code));
    }
    out
}

fn set_id(frame: &mut ClientFrame, new: u32) {
    match frame {
        ClientFrame::Sub { id, .. }
        | ClientFrame::Pub { id, .. }
        | ClientFrame::Hist { id, .. }
        | ClientFrame::Get { id, .. }
        | ClientFrame::Put { id, .. }
        | ClientFrame::Who { id, .. } => *id = new,
        _ => unreachable!(),
    }
}

fn codes(allowed: &[&str]) -> Vec<(&'static str, u16)> {
    [
        "sub",
        "pub",
        "hist",
        "state.read",
        "state.write",
        "presence",
    ]
    .into_iter()
    .map(|c| (c, if allowed.contains(&c) { 200 } else { 403 }))
    .collect()
}

#[tokio::test]
async fn namespace_defaults_allow_and_deny_each_capability() {
    let b = broker(
        "[namespaces.news]\nanonymous = [\"sub\", \"hist\"]\nauthenticated = [\"sub\", \"hist\", \"pub\"]\n\
         [namespaces.vault]\nanonymous = []\nauthenticated = [\"state.read\", \"state.write\"]\n",
    );
    let mut ada = user(&b, "ada").await;
    let mut anon = Client::connect(&b).await;

    assert_eq!(
        try_each(&mut ada, "news:today").await,
        codes(&["sub", "pub", "hist"])
    );
    assert_eq!(
        try_each(&mut anon, "news:today").await,
        codes(&["sub", "hist"])
    );
    assert_eq!(
        try_each(&mut ada, "vault:1").await,
        codes(&["state.read", "state.write"])
    );
    assert_eq!(try_each(&mut anon, "vault:1").await, codes(&[]));
    // Rooms outside a configured namespace keep [permissions]' defaults: everything.
    let all = [
        "sub",
        "pub",
        "hist",
        "state.read",
        "state.write",
        "presence",
    ];
    assert_eq!(try_each(&mut anon, "lobby").await, codes(&all));
    assert_eq!(try_each(&mut ada, "other:x").await, codes(&all));

    // A 403 leaves the connection open and stores nothing.
    assert_eq!(ada.publish_seq("news:today", b"after").await, 2);
    let ServerFrame::Err { code, .. } = anon.publish("news:today", b"no").await else {
        panic!("anonymous publish to news: was accepted")
    };
    assert_eq!(code, 403);
    assert_eq!(ada.publish_seq("news:today", b"next").await, 3);
}

#[tokio::test]
async fn sub_needs_state_read_for_state_and_presence_for_presence() {
    let b = broker("[namespaces.feed]\nanonymous = [\"sub\"]\n");
    let mut anon = Client::connect(&b).await;
    let sub = |id, state, presence, info: Option<Value>| ClientFrame::Sub {
        id,
        room: "feed:1".into(),
        since: None,
        state,
        presence,
        info,
    };
    let with_state = sub(1, Some(true), None, None);
    assert_eq!(err_code(&anon.request(with_state).await), 403);
    let with_presence = sub(2, None, Some(true), None);
    assert_eq!(err_code(&anon.request(with_presence).await), 403);
    let with_info = sub(3, None, None, Some(Value::from("me")));
    assert_eq!(err_code(&anon.request(with_info).await), 403);
    // The refused subs left nothing behind: a plain one works.
    assert!(matches!(
        anon.request(sub(4, None, None, None)).await,
        ServerFrame::Subbed { .. }
    ));
}

#[tokio::test]
async fn presence_off_and_subscriber_caps_per_namespace() {
    let b = broker("[namespaces.big]\npresence = false\nmax_subscribers = 2\n");
    let mut a = user(&b, "a").await;
    let who = ClientFrame::Who {
        id: 1,
        room: "big:x".into(),
    };
    assert_eq!(err_code(&a.request(who).await), 403);
    let with_presence = ClientFrame::Sub {
        id: 2,
        room: "big:x".into(),
        since: None,
        state: None,
        presence: Some(true),
        info: None,
    };
    assert_eq!(err_code(&a.request(with_presence).await), 403);

    assert!(matches!(
        a.sub("big:x", None).await,
        ServerFrame::Subbed { .. }
    ));
    let mut b2 = user(&b, "b").await;
    assert!(matches!(
        b2.sub("big:x", None).await,
        ServerFrame::Subbed { .. }
    ));
    let mut c = user(&b, "c").await;
    match c.sub("big:x", None).await {
        ServerFrame::Err { code, max, .. } => assert_eq!((code, max), (429, Some(2))),
        other => panic!("a third subscriber was admitted: {other:?}"),
    }
    // The refused subscription is forgotten: after one leaves, the same `sub` works.
    drop(a);
    let mut admitted = false;
    for _ in 0..100 {
        if matches!(c.sub("big:x", None).await, ServerFrame::Subbed { .. }) {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted);
    // Other namespaces have no cap.
    for _ in 0..3 {
        let mut x = user(&b, "x").await;
        assert!(matches!(
            x.sub("small:x", None).await,
            ServerFrame::Subbed { .. }
        ));
    }
}

#[tokio::test]
async fn without_allow_anonymous_a_connection_needs_a_token() {
    let b = Broker::start(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"));
    let (mut ws, _) = tokio_tungstenite::connect_async(b.ws_url(""))
        .await
        .unwrap();
    let f = read_frame(&mut ws).await.expect("err frame");
    assert_eq!(err_code(&f), 401, "{f:?}");
    let mut ok = user(&b, "ada").await;
    assert_eq!(ok.publish_seq("r", b"x").await, 1);
}

#[tokio::test]
async fn another_user_cannot_make_a_publish_a_duplicate_with_its_client_id() {
    let b = broker("");
    let mut mallory =
        Client::connect_query(&b, &format!("token={}&client=c1", jwt("mallory"))).await;
    let mut ada = Client::connect_query(&b, &format!("token={}&client=c1", jwt("ada"))).await;
    let publish = |id, data: &[u8]| ClientFrame::Pub {
        id,
        room: "dm".into(),
        data: data.to_vec(),
        mid: Some("m1".into()),
    };
    let first = mallory.request(publish(1, b"decoy")).await;
    assert!(
        matches!(
            first,
            ServerFrame::Ack {
                seq: 1,
                dup: None,
                ..
            }
        ),
        "{first:?}"
    );
    // Ada's publish with the same client id and mid is hers: stored, not a duplicate.
    let hers = ada.request(publish(1, b"real")).await;
    assert!(
        matches!(
            hers,
            ServerFrame::Ack {
                seq: 2,
                dup: None,
                ..
            }
        ),
        "{hers:?}"
    );
    // Her own retry is still recognised.
    let retry = ada.request(publish(2, b"real")).await;
    assert!(
        matches!(
            retry,
            ServerFrame::Ack {
                seq: 2,
                dup: Some(true),
                ..
            }
        ),
        "{retry:?}"
    );
}

#[tokio::test]
async fn self_declared_ids_with_control_or_bidi_characters_are_ignored() {
    let b = Broker::start("");
    // U+202E (right-to-left override) in `user`: ignored, the connection has no user.
    let mut c = Client::connect_query(&b, "user=ada%E2%80%AEnimda&client=x%00y").await;
    assert!(matches!(c.sub("r", None).await, ServerFrame::Subbed { .. }));
    let mut p = Client::connect_query(&b, "user=ada").await;
    p.publish_seq("r", b"hi").await;
    match c.event().await {
        ServerFrame::Msg { uid, .. } => assert_eq!(uid.as_deref(), Some("ada")),
        other => panic!("{other:?}"),
    }
    let ServerFrame::Who { members, .. } = c
        .request(ClientFrame::Who {
            id: 9,
            room: "r".into(),
        })
        .await
    else {
        panic!("who")
    };
    assert!(members.is_empty(), "{members:?}");
    let mut bidi = Client::connect_query(&b, "user=%E2%80%AEeve").await;
    bidi.publish_seq("r", b"x").await;
    match c.event().await {
        ServerFrame::Msg { uid, .. } => assert_eq!(uid, None),
        other => panic!("{other:?}"),
    }
}

/// The HTTP status of a WebSocket upgrade sent with `origin`.
async fn upgrade_status(b: &Broker, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = b.ws_url("").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused_unless_listed() {
    let b = Broker::start("[server]\nallowed_origins = [\"https://app.example.com\"]\n");
    let own = format!("http://{}", b.addr);
    assert_eq!(upgrade_status(&b, None).await, 101);
    assert_eq!(upgrade_status(&b, Some(&own)).await, 101);
    assert_eq!(
        upgrade_status(&b, Some("https://app.example.com")).await,
        101
    );
    assert_eq!(upgrade_status(&b, Some("https://evil.example")).await, 403);
    assert_eq!(upgrade_status(&b, Some("null")).await, 403);

    let open = Broker::start("[server]\nallowed_origins = [\"*\"]\n");
    assert_eq!(
        upgrade_status(&open, Some("https://evil.example")).await,
        101
    );
}

fn jwt_with_rooms(sub: &str, rooms: serde_json::Value) -> String {
    hs256(
        SECRET,
        &serde_json::json!({"sub": sub, "exp": FAR, "rooms": rooms}),
    )
}

#[tokio::test]
async fn a_tokens_rooms_claim_grants_per_room_first_match_wins() {
    let b = broker("[namespaces.chat]\nauthenticated = [\"sub\"]\n");
    let rooms = serde_json::json!([
        {"match": "inbox:{sub}", "allow": ["sub", "hist", "state.read", "state.write"]},
        {"match": "chat:readonly", "allow": ["sub", "hist"]},
        {"match": "chat:*", "allow": ["sub", "pub", "hist", "presence"]},
        {"match": "private/ada-only", "allow": []},
    ]);
    let token = jwt_with_rooms("mallory", rooms);
    let mut m = Client::connect_query(&b, &format!("token={token}")).await;

    assert_eq!(
        try_each(&mut m, "inbox:mallory").await,
        codes(&["sub", "hist", "state.read", "state.write"])
    );
    // `{sub}` is the token's own user: another user's inbox matches no grant.
    assert_eq!(try_each(&mut m, "inbox:ada").await, codes(&[]));
    assert_eq!(
        try_each(&mut m, "chat:readonly").await,
        codes(&["sub", "hist"])
    );
    // The claim overrides the namespace's defaults (which allow only `sub` in chat:).
    assert_eq!(
        try_each(&mut m, "chat:lobby").await,
        codes(&["sub", "pub", "hist", "presence"])
    );
    // No match: nothing, even where [permissions] would allow everything.
    assert_eq!(try_each(&mut m, "private/ada-only").await, codes(&[]));
    assert_eq!(try_each(&mut m, "lobby").await, codes(&[]));

    // A token without the claim gets the namespace's defaults.
    let mut ada = user(&b, "ada").await;
    assert_eq!(try_each(&mut ada, "chat:lobby").await, codes(&["sub"]));
    assert_eq!(
        try_each(&mut ada, "private/ada-only").await,
        codes(&[
            "sub",
            "pub",
            "hist",
            "state.read",
            "state.write",
            "presence"
        ])
    );
}

#[tokio::test]
async fn a_namespace_sets_its_own_retention_and_publish_rate() {
    let b = broker(
        "[retention]\nsweep_interval_secs = 1\n\
         [namespaces.tmp]\nmax_messages = 3\n\
         [namespaces.slow]\npublishes_per_sec = 2\npublishes_burst = 2\n",
    );
    let mut c = user(&b, "ada").await;
    for i in 0..10u8 {
        c.publish_seq("tmp:x", &[i]).await;
        c.publish_seq("keep:x", &[i]).await;
    }
    // The sweep trims tmp: to its last 3 entries; other rooms keep everything (no global bound).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut probe = user(&b, "probe").await;
        let ServerFrame::Subbed { earliest, .. } = probe.sub("tmp:x", Some(0)).await else {
            panic!("sub")
        };
        if earliest == 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tmp:x not trimmed: earliest {earliest}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ServerFrame::Subbed { earliest, .. } = c.sub("keep:x", Some(0)).await else {
        panic!("sub")
    };
    assert_eq!(earliest, 1);

    // slow: takes 2 publishes at once, then 429 with retry_after_ms; other rooms are not slowed.
    assert_eq!(c.publish_seq("slow:x", b"1").await, 1);
    assert_eq!(c.publish_seq("slow:x", b"2").await, 2);
    match c.publish("slow:x", b"3").await {
        ServerFrame::Err {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, 429);
            assert!(retry_after_ms.is_some_and(|ms| ms >= 1));
        }
        other => panic!("third publish admitted: {other:?}"),
    }
    for i in 0..5u8 {
        c.publish_seq("fast:x", &[i]).await;
    }
}

#[tokio::test]
async fn subbed_says_what_the_connection_may_do_when_not_everything() {
    let b = broker("[namespaces.news]\nauthenticated = [\"sub\", \"hist\"]\n");
    let mut ada = user(&b, "ada").await;
    match ada.sub("news:today", None).await {
        ServerFrame::Subbed { allow, .. } => {
            assert_eq!(allow, Some(vec!["sub".to_string(), "hist".to_string()]));
        }
        other => panic!("{other:?}"),
    }
    match ada.sub("lobby", None).await {
        ServerFrame::Subbed { allow, .. } => assert_eq!(allow, None),
        other => panic!("{other:?}"),
    }
}
