//! A connection is let in by a token that the operator's keys verify, and by nothing else: each
//! algorithm with its own key only, no algorithm confusion, `exp`, `nbf`, `iss` and `aud`
//! enforced, JWKS from a file and from a URL (rotation, bounded refetches, failed fetches keep
//! the keys), and `roomd token` makes tokens the server accepts.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{read_frame, run_to_exit, Broker};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomd_protocol::ServerFrame;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const FAR: u64 = 4_000_000_000;
const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": FAR})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, c: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, c, key).unwrap()
}

fn hs(alg: Algorithm, secret: &str, c: &serde_json::Value) -> String {
    sign(alg, None, &EncodingKey::from_secret(secret.as_bytes()), c)
}

/// A key pair: the private half to sign with, the public half as PEM and as a JWK.
struct Pair {
    alg: Algorithm,
    encoding: EncodingKey,
    public_pem: String,
    raw_public: Vec<u8>,
}

impl Pair {
    fn new(alg: Algorithm) -> Pair {
        let kind = match alg {
            Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => panic!("no test keys for {other:?}"),
        };
        let kp = rcgen::KeyPair::generate_for(kind).unwrap();
        let private = kp.serialize_pem();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .unwrap();
        Pair {
            alg,
            encoding,
            public_pem: kp.public_key_pem(),
            raw_public: kp.public_key_raw().to_vec(),
        }
    }

    fn token(&self, kid: Option<&str>, c: &serde_json::Value) -> String {
        sign(self.alg, kid, &self.encoding, c)
    }

    /// The public key as a JWK with this `kid`.
    fn jwk(&self, kid: &str) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match self.alg {
            Algorithm::RS256 => serde_json::to_value(
                jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding, self.alg).unwrap(),
            )
            .unwrap(),
            // An uncompressed point: 0x04, x, y.
            Algorithm::ES256 => json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256",
                "x": b64(&self.raw_public[1..33]), "y": b64(&self.raw_public[33..65]),
            }),
            _ => {
                json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(&self.raw_public)})
            }
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk
    }
}

fn jwks(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Starts roomd with `config`, after writing `files` (name, contents) beside its config file.
fn broker(config: &str, files: &[(&str, &str)]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Broker::start_in(dir, config)
}

/// How the server answered a connection.
#[derive(Debug, PartialEq)]
enum Answer {
    /// `hello`, naming the user.
    Hello(Option<String>),
    /// `err` 401 then close 4401, with the message.
    Refused(String),
}

async fn answer(b: &Broker, token: &str) -> Answer {
    answer_to(
        b.ws_url(&format!("token={token}"))
            .into_client_request()
            .unwrap(),
    )
    .await
}

async fn answer_to(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> Answer {
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    match read_frame(&mut ws).await {
        Some(ServerFrame::Hello { user, .. }) => Answer::Hello(user),
        Some(ServerFrame::Err {
            id: None,
            code: 401,
            msg,
            ..
        }) => {
            let close = loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => break None,
                }
            };
            assert_eq!(close, Some(4401), "{msg}");
            Answer::Refused(msg)
        }
        other => panic!("unexpected first frame {other:?}"),
    }
}

fn hello(user: &str) -> Answer {
    Answer::Hello(Some(user.to_string()))
}

/// Asserts a refusal whose message contains `why`.
async fn assert_refused(b: &Broker, token: &str, why: &str) {
    match answer(b, token).await {
        Answer::Refused(msg) => assert!(msg.contains(why), "{msg:?} lacks {why:?}"),
        other => panic!("accepted ({other:?}), expected a refusal for {why:?}"),
    }
}

#[tokio::test]
async fn hmac_algorithms_verify_with_the_secret_only() {
    let b = broker(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"), &[]);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            answer(&b, &hs(alg, SECRET, &claims("ada"))).await,
            hello("ada")
        );
        let wrong = hs(alg, "another-secret-of-at-least-32-bytes", &claims("ada"));
        assert_refused(&b, &wrong, "bad signature").await;
    }
    // `alg: none`, signed or not, is not an algorithm.
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        part(json!({"alg": "none", "typ": "JWT"})),
        part(claims("ada"))
    );
    assert_refused(&b, &unsigned, "invalid token").await;
}

#[tokio::test]
async fn each_public_key_algorithm_verifies_with_its_key_only() {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let pair = Pair::new(alg);
        let b = broker(
            "[auth]\npublic_key = \"key.pub.pem\"\naudience = \"roomd\"\n",
            &[("key.pub.pem", &pair.public_pem)],
        );
        let c = json!({"sub": "ada", "exp": FAR, "aud": "roomd"});
        assert_eq!(
            answer(&b, &pair.token(None, &c)).await,
            hello("ada"),
            "{alg:?}"
        );
        let other = Pair::new(alg);
        assert_refused(&b, &other.token(None, &c), "bad signature").await;
    }
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let rsa = Pair::new(Algorithm::RS256);
    let b = broker(
        &format!("[auth]\njwt_secret = \"{SECRET}\"\npublic_key = \"key.pub.pem\"\n"),
        &[("key.pub.pem", &rsa.public_pem)],
    );
    assert_eq!(
        answer(&b, &rsa.token(None, &claims("ada"))).await,
        hello("ada")
    );
    // HS256 "signed" with the public key's PEM as the secret: checked against the secret only.
    let forged = hs(Algorithm::HS256, &rsa.public_pem, &claims("mallory"));
    assert_refused(&b, &forged, "bad signature").await;
    // A header claiming RS256 over an HMAC signature made with the public key.
    let head = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims("mallory").to_string());
    let mac = forged.rsplit('.').next().unwrap();
    assert!(matches!(
        answer(&b, &format!("{head}.{body}.{mac}")).await,
        Answer::Refused(_)
    ));
    // An EC token where only RSA and HMAC keys are configured.
    let ec = Pair::new(Algorithm::ES256);
    assert_refused(&b, &ec.token(None, &claims("mallory")), "not accepted").await;
}

#[tokio::test]
async fn time_claims_are_enforced_with_the_configured_leeway() {
    let strict = broker(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"), &[]);
    let lenient = broker(
        &format!("[auth]\njwt_secret = \"{SECRET}\"\nleeway_secs = 60\n"),
        &[],
    );
    let t = now();
    let early = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ada", "exp": FAR, "nbf": t + 30}),
    );
    let late = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ada", "exp": t - 30}),
    );
    let very_late = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ada", "exp": t - 300}),
    );
    let far_future = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ada", "exp": FAR, "nbf": t + 300}),
    );
    assert_refused(&strict, &early, "not yet valid").await;
    assert_refused(&strict, &late, "expired").await;
    assert_eq!(answer(&lenient, &early).await, hello("ada"));
    assert_eq!(answer(&lenient, &late).await, hello("ada"));
    assert_refused(&lenient, &very_late, "expired").await;
    assert_refused(&lenient, &far_future, "not yet valid").await;
}

#[tokio::test]
async fn issuer_and_audience_must_match() {
    let b = broker(
        &format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nissuer = \"https://id.example\"\naudience = [\"roomd\", \"chat\"]\n"
        ),
        &[],
    );
    let token = |iss: &str, aud: serde_json::Value| {
        hs(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "ada", "exp": FAR, "iss": iss, "aud": aud}),
        )
    };
    let ok = token("https://id.example", json!("chat"));
    assert_eq!(answer(&b, &ok).await, hello("ada"));
    let ok = token("https://id.example", json!(["other", "roomd"]));
    assert_eq!(answer(&b, &ok).await, hello("ada"));
    assert_refused(&b, &token("https://evil.example", json!("roomd")), "issuer").await;
    assert_refused(&b, &token("https://id.example", json!("other")), "audience").await;
    let no_aud = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ada", "exp": FAR, "iss": "https://id.example"}),
    );
    assert_refused(&b, &no_aud, "`aud`").await;
}

#[tokio::test]
async fn a_lowercase_bearer_header_is_accepted() {
    let b = broker(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"), &[]);
    let token = hs(Algorithm::HS256, SECRET, &claims("ada"));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let mut req = b.ws_url("").into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("{scheme} {token}").parse().unwrap(),
        );
        assert_eq!(answer_to(req).await, hello("ada"), "{scheme}");
    }
    let mut req = b.ws_url("").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Basic {token}").parse().unwrap());
    assert!(matches!(answer_to(req).await, Answer::Refused(m) if m.contains("required")));
}

#[tokio::test]
async fn bad_user_ids_and_unknown_capabilities_are_refused() {
    let b = broker(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"), &[]);
    for sub in [
        "",
        "evil\u{202E}gpj.exe",
        "\u{2066}x\u{2069}",
        "a\u{200F}",
        "line\nbreak",
        "nul\u{0}",
        &"x".repeat(65),
    ] {
        let token = hs(Algorithm::HS256, SECRET, &claims(sub));
        assert_refused(&b, &token, "sub must be").await;
    }
    assert_eq!(
        answer(&b, &hs(Algorithm::HS256, SECRET, &claims(&"x".repeat(64)))).await,
        hello(&"x".repeat(64))
    );
    let rooms = |allow: serde_json::Value| {
        hs(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "ada", "exp": FAR, "rooms": [{"match": "chat:*", "allow": allow}]}),
        )
    };
    assert_eq!(
        answer(&b, &rooms(json!(["sub", "pub", "state.read"]))).await,
        hello("ada")
    );
    assert_refused(
        &b,
        &rooms(json!(["sub", "admin"])),
        "unknown variant `admin`",
    )
    .await;
}

#[tokio::test]
async fn keys_come_from_a_jwks_file() {
    let (rsa, ec, ed) = (
        Pair::new(Algorithm::RS256),
        Pair::new(Algorithm::ES256),
        Pair::new(Algorithm::EdDSA),
    );
    let doc = jwks(&[rsa.jwk("r1"), ec.jwk("e1"), ed.jwk("d1")]);
    let b = broker(
        "[auth]\njwks_file = \"jwks.json\"\n",
        &[("jwks.json", &doc)],
    );
    for (pair, kid) in [(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")] {
        let c = claims(kid);
        assert_eq!(answer(&b, &pair.token(Some(kid), &c)).await, hello(kid));
        // Without a kid, the keys of its algorithm are tried.
        assert_eq!(answer(&b, &pair.token(None, &c)).await, hello(kid));
    }
    // A kid the set lacks, and a key of the right kind that is not in the set.
    assert_refused(&b, &rsa.token(Some("r2"), &claims("a")), "no key with id").await;
    let stranger = Pair::new(Algorithm::ES256);
    assert_refused(
        &b,
        &stranger.token(Some("e1"), &claims("a")),
        "bad signature",
    )
    .await;
}

/// A JWKS server on its own thread (so a test blocked starting roomd still answers it): serves
/// whatever status and body it is given, and counts the requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://localhost:{}/.well-known/jwks.json",
            listener.local_addr().unwrap().port()
        );
        let answer = Arc::new(Mutex::new((503, String::new())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let reply = |s: &mut dyn ReadWrite| {
                    JwksServer::reply(s, &a, &h);
                };
                match &tls {
                    None => reply(&mut { tcp }),
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                        reply(&mut rustls::StreamOwned::new(conn, tcp));
                    }
                }
            }
        });
        JwksServer { url, answer, hits }
    }

    fn reply(s: &mut dyn ReadWrite, answer: &Mutex<(u16, String)>, hits: &AtomicUsize) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let (status, body) = answer.lock().unwrap().clone();
        let _ = write!(
            s,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.flush();
    }

    fn serve(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn jwks_url_config(url: &str) -> String {
    format!(
        "[auth]\njwks_url = \"{url}\"\njwks_min_refetch_secs = 2\njwks_refresh_secs = 600\naudience = \"roomd\"\n"
    )
}

/// Past `jwks_min_refetch_secs = 2`.
async fn wait_refetch_interval() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

fn aud(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": FAR, "aud": "roomd"})
}

#[tokio::test]
async fn jwks_url_rotation_with_bounded_refetches() {
    let (old, new) = (Pair::new(Algorithm::ES256), Pair::new(Algorithm::RS256));
    let idp = JwksServer::start(None);
    idp.serve(200, &jwks(&[old.jwk("k1")]));
    let b = broker(&jwks_url_config(&idp.url), &[]);
    assert_eq!(idp.hits(), 1, "fetched at startup");
    assert_eq!(
        answer(&b, &old.token(Some("k1"), &aud("ada"))).await,
        hello("ada")
    );
    assert_eq!(idp.hits(), 1, "a known kid needs no fetch");

    // The provider rotates: a token with the new kid makes roomd fetch again.
    idp.serve(200, &jwks(&[new.jwk("k2")]));
    wait_refetch_interval().await;
    assert_eq!(
        answer(&b, &new.token(Some("k2"), &aud("bob"))).await,
        hello("bob")
    );
    assert_eq!(idp.hits(), 2);
    // Right after a fetch, unknown kids are refused without another, however many arrive.
    for kid in ["x1", "x2", "x3"] {
        assert_refused(&b, &new.token(Some(kid), &aud("eve")), "no key with id").await;
    }
    assert_eq!(idp.hits(), 2, "refetches are bounded");
    // The rotated-out key no longer verifies.
    assert_refused(&b, &old.token(Some("k1"), &aud("ada")), "no key").await;

    // Concurrent connections with one unknown kid share one fetch.
    wait_refetch_interval().await;
    let tokens: Vec<String> = (0..6).map(|_| new.token(Some("x4"), &aud("eve"))).collect();
    let answers = futures_util::future::join_all(tokens.iter().map(|t| answer(&b, t))).await;
    assert!(answers.iter().all(|a| matches!(a, Answer::Refused(_))));
    assert_eq!(idp.hits(), 3, "one fetch for concurrent unknown kids");

    // A failed fetch keeps the cached keys.
    idp.serve(500, "oops");
    wait_refetch_interval().await;
    assert_refused(&b, &new.token(Some("x5"), &aud("eve")), "no key").await;
    assert_eq!(idp.hits(), 4);
    assert_eq!(
        answer(&b, &new.token(Some("k2"), &aud("bob"))).await,
        hello("bob")
    );
    assert!(b.metric("roomd_jwks_fetch_failures_total").await >= 1.0);
}

#[tokio::test]
async fn a_jwks_url_down_at_startup_is_retried() {
    let pair = Pair::new(Algorithm::EdDSA);
    let idp = JwksServer::start(None);
    idp.serve(503, "down");
    let b = broker(&jwks_url_config(&idp.url), &[]);
    // Started anyway, refusing every token (fail closed).
    let token = pair.token(Some("k1"), &aud("ada"));
    assert_refused(&b, &token, "no key").await;
    idp.serve(200, &jwks(&[pair.jwk("k1")]));
    wait_refetch_interval().await;
    assert_eq!(answer(&b, &token).await, hello("ada"));
}

#[tokio::test]
async fn a_jwks_url_over_https_uses_the_system_roots() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let idp = JwksServer::start(Some(Arc::new(tls)));
    let pair = Pair::new(Algorithm::ES256);
    idp.serve(200, &jwks(&[pair.jwk("k1")]));
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, ca.pem()).unwrap();
    let b = Broker::start_env(
        dir,
        &jwks_url_config(&idp.url),
        // rustls-native-certs reads the roots from here instead of the system's.
        &[("SSL_CERT_FILE", roots.to_str().unwrap())],
    );
    assert_eq!(idp.hits(), 1);
    assert_eq!(
        answer(&b, &pair.token(Some("k1"), &aud("ada"))).await,
        hello("ada")
    );
}

fn roomd_token(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("token")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn roomd_token_makes_tokens_the_server_accepts() {
    let b = broker(
        &format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nissuer = \"roomd-dev\"\naudience = \"roomd\"\n"
        ),
        &[],
    );
    let out = roomd_token(
        &b.config,
        &[
            "--user",
            "ada",
            "--room",
            "chat:*=sub,pub,hist",
            "--ttl",
            "15m",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(answer(&b, &token).await, hello("ada"));
    // Its claims: the grant, the lifetime, the configured iss and aud.
    let payload = token.split('.').nth(1).unwrap();
    let c: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        c["rooms"],
        json!([{"match": "chat:*", "allow": ["sub", "pub", "hist"]}])
    );
    assert_eq!(
        (c["iss"].clone(), c["aud"].clone()),
        (json!("roomd-dev"), json!("roomd"))
    );
    let ttl = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert_eq!(ttl, 900);
    // Mistakes are refused with the reason.
    let out = roomd_token(&b.config, &["--user", "ada", "--room", "chat:*=sub,admin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown capability \"admin\""));
}

#[test]
fn roomd_token_refuses_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(&config, "[auth]\njwks_url = \"https://id.example/jwks\"\n").unwrap();
    let out = roomd_token(&config, &["--user", "ada"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("public keys only"), "{err}");
    std::fs::write(&config, "").unwrap();
    let out = roomd_token(&config, &["--user", "ada"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open"),
        "{out:?}"
    );
}

#[test]
fn auth_config_mistakes_are_reported_and_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_roomd"))
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check(
        "[auth]\njwks_url = \"ftp://id.example/jwks\"\nalgorithms = [\"HS256\"]\njwks_min_refetch_secs = 0\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for what in ["auth.jwks_url", "jwks_min_refetch_secs", "lists HS256"] {
        assert!(err.contains(what), "{what}: {err}");
    }
    let out = check("[auth]\nalgorithms = [\"none\"]\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown variant `none`"));
    let out = check(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\njwks_url = \"http://id.example/jwks\"\n"
    ));
    assert!(out.status.success(), "{out:?}");
    let (shown, warned) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !shown.contains(SECRET) && shown.contains("********"),
        "{shown}"
    );
    assert!(
        warned.contains("plain http") && warned.contains("auth.audience"),
        "{warned}"
    );
    // A public key file that is missing stops the server from starting.
    std::fs::write(&config, "[auth]\npublic_key = \"missing.pem\"\n").unwrap();
    let out = run_to_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.pem"),
        "{out:?}"
    );
}
