//! TLS on the main port: wss:// and https:// with a certificate from a test CA, SIGHUP reloads
//! (a good pair is taken, a bad one refused while the old one serves on), handshake timeouts and
//! failures, and the config's checks.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use roomd_protocol::ServerFrame;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA and a way to issue server certificates for 127.0.0.1 and localhost.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// Writes a fresh leaf certificate and key to `dir/cert.pem` and `dir/key.pem`; returns
    /// the certificate's DER.
    fn issue(&self, dir: &Path, cn: &str) -> Vec<u8> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Starts roomd with TLS from `cert.pem`/`key.pem` beside its config (relative paths: taken
/// from the config file's directory).
fn start_tls(ca: &TestCa, extra: &str) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "first");
    Broker::start_in(
        dir,
        &format!("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n{extra}"),
    )
}

/// A TLS connection to the broker; returns it with the certificate the server presented.
async fn tls_connect(
    b: &Broker,
    tls: &Arc<rustls::ClientConfig>,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let tcp = TcpStream::connect(&b.addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake");
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (stream, cert)
}

/// An HTTPS GET: the status and the body.
async fn https_get(b: &Broker, tls: &Arc<rustls::ClientConfig>, path: &str) -> (u16, String) {
    let (mut s, _) = tls_connect(b, tls).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // rustls reports a peer that closes without close_notify as an error; the body is whole.
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string());
    (status, body.unwrap_or_default())
}

async fn metric(b: &Broker, tls: &Arc<rustls::ClientConfig>, name: &str) -> f64 {
    let (_, body) = https_get(b, tls, "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sighup(b: &Broker) {
    let ok = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits until a new handshake presents the certificate `want` (a reload is asynchronous).
async fn wait_for_cert(b: &Broker, tls: &Arc<rustls::ClientConfig>, want: &[u8]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if tls_connect(b, tls).await.1 == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wss_and_https_work_with_a_certificate_from_the_config() {
    let ca = TestCa::new("roomd test CA");
    let b = start_tls(&ca, "");
    let tls = ca.client();

    let (status, body) = https_get(&b, &tls, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let url = format!("wss://{}/ws", b.addr);
    let mut sub = Client::connect_tls(&url, tls.clone()).await;
    let mut publ = Client::connect_tls(&url, tls.clone()).await;
    assert!(matches!(
        sub.sub("tls", None).await,
        ServerFrame::Subbed { .. }
    ));
    assert_eq!(publ.publish_seq("tls", b"over tls").await, 1);
    match sub.event().await {
        ServerFrame::Msg { data, seq, .. } => assert_eq!((seq, &data[..]), (1, &b"over tls"[..])),
        other => panic!("expected msg, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_speak_tls_is_refused_and_counted() {
    let ca = TestCa::new("roomd test CA");
    let b = start_tls(&ca, "");
    let tls = ca.client();

    // Plain HTTP to the TLS port: the handshake fails and the socket closes.
    let mut s = TcpStream::connect(&b.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept a non-TLS client open");
    assert!(!String::from_utf8_lossy(&out).contains("ok"), "{out:?}");

    // A client that does not trust the server's CA cannot connect either.
    let other = TestCa::new("another CA").client();
    let tcp = TcpStream::connect(&b.addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let refused = tokio_rustls::TlsConnector::from(other)
        .connect(name, tcp)
        .await;
    assert!(refused.is_err());

    let deadline = Instant::now() + TIMEOUT;
    while metric(&b, &tls, "roomd_tls_handshake_failures_total").await < 2.0 {
        assert!(Instant::now() < deadline, "handshake failures not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_header_timeout() {
    let ca = TestCa::new("roomd test CA");
    let b = start_tls(&ca, "[server]\nheader_timeout_ms = 500\n");
    let mut s = TcpStream::connect(&b.addr).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    // No ClientHello: the server closes the socket once the timeout passes.
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .expect("a stalled TLS handshake was held open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "closed early: {took:?}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_refused() {
    let ca = TestCa::new("roomd test CA");
    let b = start_tls(&ca, "");
    let tls = ca.client();
    let dir = b.dir.path().to_path_buf();
    let first = tls_connect(&b, &tls).await.1;

    // A connection opened before the renewal.
    let url = format!("wss://{}/ws", b.addr);
    let mut before = Client::connect_tls(&url, tls.clone()).await;
    assert!(matches!(
        before.sub("r", None).await,
        ServerFrame::Subbed { .. }
    ));

    let second = ca.issue(&dir, "second");
    assert_ne!(first, second);
    sighup(&b);
    wait_for_cert(&b, &tls, &second).await;
    assert_eq!(metric(&b, &tls, "roomd_tls_reloads_total").await, 1.0);

    // The open connection goes on; a new one gets the new certificate.
    let mut after = Client::connect_tls(&url, tls.clone()).await;
    assert_eq!(after.publish_seq("r", b"renewed").await, 1);
    assert!(matches!(
        before.event().await,
        ServerFrame::Msg { seq: 1, .. }
    ));

    // A key that does not belong to the certificate: refused, the second pair serves on.
    let stray = KeyPair::generate().unwrap();
    std::fs::write(dir.join("key.pem"), stray.serialize_pem()).unwrap();
    sighup(&b);
    // And a file that is not PEM at all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    sighup(&b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tls_connect(&b, &tls).await.1, second);
    assert_eq!(metric(&b, &tls, "roomd_tls_reloads_total").await, 1.0);
    assert_eq!(after.publish_seq("r", b"still up").await, 2);
}

#[tokio::test]
async fn without_tls_sighup_changes_nothing() {
    let mut b = Broker::start("");
    let mut c = Client::connect(&b).await;
    sighup(&b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.is_running(), "SIGHUP stopped roomd");
    assert_eq!(c.publish_seq("r", b"x").await, 1);
}

#[test]
fn tls_config_mistakes_stop_the_start_with_a_clear_error() {
    let ca = TestCa::new("roomd test CA");
    let bin = env!("CARGO_BIN_EXE_roomd");
    let dir = tempfile::tempdir().unwrap();
    ca.issue(dir.path(), "leaf");
    let run = |toml: &str| {
        let config = dir.path().join("roomd.toml");
        std::fs::write(&config, toml).unwrap();
        let out = run_to_exit(&config);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, err) = run("[tls]\ncert = \"cert.pem\"\n");
    assert!(!ok);
    assert!(
        err.contains("tls.cert and tls.key must be set together"),
        "{err}"
    );

    let (ok, err) = run("[tls]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n");
    assert!(!ok);
    assert!(
        err.contains("cannot read TLS certificate") && err.contains("missing.pem"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("other-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let (ok, err) = run("[tls]\ncert = \"cert.pem\"\nkey = \"other-key.pem\"\n");
    assert!(!ok);
    assert!(err.contains("do not make a key pair"), "{err}");
    // None of these got as far as creating the database.
    assert!(!dir.path().join("data").exists());

    // check-config shows the paths resolved against the config's directory.
    let config = dir.path().join("roomd.toml");
    std::fs::write(&config, "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n").unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    let cert = dir.path().join("cert.pem");
    assert!(shown.contains(&*cert.to_string_lossy()), "{shown}");
}
