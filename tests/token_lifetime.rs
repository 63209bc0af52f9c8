//! Token lifetime while connected (SPEC.md 9.3): `expiring` ahead of `exp`, an in-band `auth`
//! keeps the connection (with the new token's permissions), an unrefreshed one is closed with
//! 4003 and resumes after reconnecting with a new token, without loss.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use roomd_protocol::{ClientFrame, ServerFrame};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str, exp: u64, rooms: Option<serde_json::Value>) -> String {
    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if let Some(r) = rooms {
        claims["rooms"] = r;
    }
    hs256(SECRET, &claims)
}

fn broker() -> Broker {
    Broker::start(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\nrefresh_window_secs = 2\n"
    ))
}

async fn connect(b: &Broker, tok: &str) -> Client {
    Client::connect_query(b, &format!("token={tok}")).await
}

async fn auth(c: &mut Client, tok: &str) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Auth {
        id,
        token: tok.into(),
    })
    .await
}

/// The next event that is not a `msg`, within `wait`.
async fn expiring(c: &mut Client, wait: Duration) -> Option<u64> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match c.try_event(Duration::from_millis(100)).await {
            Some(ServerFrame::Expiring { exp }) => return Some(exp),
            _ => continue,
        }
    }
    None
}

#[tokio::test]
async fn a_refreshed_connection_goes_on_past_the_first_tokens_expiry() {
    let b = broker();
    let exp = now() + 3;
    let mut c = connect(&b, &token("ada", exp, None)).await;
    assert_eq!(c.publish_seq("r", b"1").await, 1);
    // Told 2 s ahead (the window), with the token's exp.
    assert_eq!(expiring(&mut c, Duration::from_secs(5)).await, Some(exp));
    let fresh = token("ada", now() + 3600, None);
    assert!(matches!(auth(&mut c, &fresh).await, ServerFrame::Ok { .. }));
    // Well past the first exp: still open, still working.
    tokio::time::sleep(Duration::from_millis(
        (exp + 2).saturating_sub(now()) * 1000 + 200,
    ))
    .await;
    assert_eq!(c.publish_seq("r", b"2").await, 2);
    assert_eq!(c.try_event(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn an_unrefreshed_connection_is_closed_with_4003_and_resumes_without_loss() {
    let b = broker();
    let mut sub = connect(&b, &token("ada", now() + 2, None)).await;
    assert!(matches!(
        sub.sub("feed", None).await,
        ServerFrame::Subbed { .. }
    ));
    let mut publisher = connect(&b, &token("bob", now() + 3600, None)).await;
    assert_eq!(publisher.publish_seq("feed", b"m1").await, 1);
    let mut last = 0;
    let t = Instant::now();
    let code = loop {
        match tokio::time::timeout(TIMEOUT, read_frame_or_close(&mut sub)).await {
            Ok(Ok(ServerFrame::Msg { seq, .. })) => last = seq,
            Ok(Ok(_)) => {}
            Ok(Err(code)) => break code,
            Err(_) => panic!("not closed"),
        }
    };
    assert_eq!(code, Some(4003));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(last, 1);
    // Published while the subscriber was away.
    for i in 2..=5 {
        assert_eq!(
            publisher
                .publish_seq("feed", format!("m{i}").as_bytes())
                .await,
            i
        );
    }
    // Reconnect with a new token and resume: every message once, in order.
    let mut again = connect(&b, &token("ada", now() + 3600, None)).await;
    assert!(matches!(
        again.sub("feed", Some(last)).await,
        ServerFrame::Subbed { .. }
    ));
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        let (seq, _) = again.msg().await;
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![2, 3, 4, 5]);
}

/// The next frame, or the close code when the connection closes.
async fn read_frame_or_close(c: &mut Client) -> Result<ServerFrame, Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match c.ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(roomd_protocol::decode_server(&b).unwrap()),
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| f.code.into())),
            Some(Ok(_)) => continue,
            _ => return Err(None),
        }
    }
}

#[tokio::test]
async fn a_refresh_must_be_a_valid_token_for_the_same_user() {
    let b = broker();
    let mut c = connect(&b, &token("ada", now() + 3600, None)).await;
    for (tok, why) in [
        (token("eve", now() + 3600, None), "another user"),
        (token("ada", now() - 10, None), "expired"),
        ("garbage".to_string(), "invalid"),
    ] {
        let r = auth(&mut c, &tok).await;
        assert_eq!(err_code(&r), 401, "{why}: {r:?}");
    }
    // The connection goes on under its token.
    assert_eq!(c.publish_seq("r", b"x").await, 1);

    // On an open server there is nothing to refresh.
    let open = Broker::start("");
    let mut o = Client::connect(&open).await;
    assert_eq!(
        err_code(&auth(&mut o, &token("ada", now() + 60, None)).await),
        406
    );
}

#[tokio::test]
async fn a_refresh_changes_the_connections_permissions() {
    let b = broker();
    let first = serde_json::json!([{"match": "a:*", "allow": ["pub"]}]);
    let second = serde_json::json!([{"match": "b:*", "allow": ["pub"]}]);
    let mut c = connect(&b, &token("ada", now() + 3600, Some(first))).await;
    assert_eq!(c.publish_seq("a:1", b"x").await, 1);
    assert_eq!(err_code(&c.publish("b:1", b"x").await), 403);
    let fresh = token("ada", now() + 3600, Some(second));
    assert!(matches!(auth(&mut c, &fresh).await, ServerFrame::Ok { .. }));
    assert_eq!(err_code(&c.publish("a:1", b"x").await), 403);
    assert_eq!(c.publish_seq("b:1", b"x").await, 1);
}

#[tokio::test]
async fn refreshes_are_rate_limited_before_their_signature_is_checked() {
    let b = broker();
    let mut c = connect(&b, &token("ada", now() + 3600, None)).await;
    // The burst (3) passes to the check, valid or not; the next is refused unchecked.
    for _ in 0..3 {
        assert_eq!(err_code(&auth(&mut c, "garbage").await), 401);
    }
    match auth(&mut c, &token("ada", now() + 3600, None)).await {
        ServerFrame::Err {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, 429);
            assert!(retry_after_ms.is_some_and(|ms| ms >= 1));
        }
        other => panic!("a fourth refresh at once was taken: {other:?}"),
    }
    assert_eq!(c.publish_seq("r", b"still open").await, 1);
}
