//! What an operator watches is true: every metric exists from the start, `/healthz` says the
//! process lives, `/readyz` says it can take traffic (not while shutting down, not while the
//! disk refuses writes), and the admin listener serves them apart from the public port.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{err_code, Broker, Client};
use roomd_protocol::ServerFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn every_metric_is_exported_before_any_traffic() {
    let b = Broker::start("");
    let (status, text) = b.http_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "roomd_connections ",
        "roomd_connections_total ",
        "roomd_rooms_active ",
        "roomd_messages_published_total ",
        "roomd_messages_delivered_total ",
        "roomd_commit_failures_total ",
        "roomd_slow_consumers_total ",
        "roomd_publish_ack_seconds_bucket",
        "roomd_commit_seconds_bucket",
        "roomd_checkpoint_seconds_bucket",
        "roomd_errors_total{code=\"507\",name=\"storage\"} 0",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
        "roomd_build_info{",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let info = text
        .lines()
        .find(|l| l.starts_with("roomd_build_info{"))
        .unwrap();
    assert!(
        info.contains(concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"")),
        "{info}"
    );
    assert!(info.contains("commit=\""), "{info}");
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_health_and_readiness_falls_at_shutdown() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = probe.local_addr().unwrap().to_string();
    drop(probe);
    let mut b = Broker::start(&format!(
        "[admin]\nlisten = \"{admin}\"\n[server]\nlame_duck_ms = 3000\n"
    ));
    assert_eq!(get(&admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(&admin, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(b.http_get("/readyz").await.0, 200);
    assert!(get(&admin, "/metrics")
        .await
        .1
        .contains("roomd_connections "));
    // The admin port serves nothing else.
    assert_eq!(get(&admin, "/").await.0, 404);
    // Shutting down (lame duck): alive, not ready.
    let pid = b.pid();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&admin, "/readyz").await.0, 503);
    assert_eq!(get(&admin, "/healthz").await.0, 200);
    b.terminate_wait();
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn readiness_follows_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the readiness test needs one");
        return;
    }
    let _mount = Mount(mnt.clone());
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 18 << 20]).unwrap();
    let mut b = Broker::start_in(dir, "[limits]\npayload_bytes = 60000\n");
    b.kill9();
    b.spawn_with("127.0.0.1:0", &mnt.join("data"));
    assert_eq!(b.http_get("/readyz").await.0, 200);
    let mut c = Client::connect(&b).await;
    let mut refused = false;
    for i in 0..400u32 {
        match c.publish("full", &vec![(i % 251) as u8; 50_000]).await {
            ServerFrame::Ack { .. } => {}
            other => {
                assert_eq!(err_code(&other), 507, "{other:?}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the disk never filled up");
    assert_eq!(b.http_get("/readyz").await.0, 503);
    assert_eq!(b.http_get("/healthz").await.0, 200);
    // Space again: the next write goes through and the server is ready again.
    std::fs::remove_file(&filler).unwrap();
    let mut stored = false;
    for _ in 0..50 {
        if matches!(c.publish("full", b"after").await, ServerFrame::Ack { .. }) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "writes did not recover");
    assert_eq!(b.http_get("/readyz").await.0, 200);
}
