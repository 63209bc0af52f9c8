//! A full disk: publishes get error 507 and nothing acknowledged is lost; once space is freed
//! the broker carries on without a restart.
//!
//! Needs root to mount a small tmpfs (CI runs as root); elsewhere it says so and returns.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::process::Command;

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// With the default storage settings the log fills the disk first.
#[tokio::test]
async fn full_disk_gives_507_keeps_acknowledged_data_and_recovers() {
    full_disk("").await;
}

/// With checkpoints every 200 KB of log, redb's own writes hit the full disk too: the failed
/// checkpoint leaves redb to be reopened and the log to be replayed into it.
#[tokio::test]
async fn full_disk_during_checkpoints_keeps_acknowledged_data_and_recovers() {
    full_disk("[storage]\ncheckpoint_bytes = 200000\napply_bytes = 60000\n").await;
}

/// Relaxed mode, where rooms append to the log themselves: the same guarantees.
#[tokio::test]
async fn relaxed_full_disk_gives_507_keeps_acknowledged_data_and_recovers() {
    full_disk("[storage]\ndurability = \"relaxed\"\n").await;
}

#[tokio::test]
async fn relaxed_full_disk_during_checkpoints_keeps_acknowledged_data_and_recovers() {
    full_disk(
        "[storage]\ndurability = \"relaxed\"\ncheckpoint_bytes = 200000\napply_bytes = 60000\n",
    )
    .await;
}

async fn full_disk(storage: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the disk-full test needs one");
        return;
    }
    let _mount = Mount(mnt.clone());
    let filler = mnt.join("filler");
    // Leave a few MiB for the database.
    std::fs::write(&filler, vec![0u8; 18 << 20]).unwrap();
    let mut b = Broker::start_in(dir, &format!("[limits]\npayload_bytes = 60000\n{storage}"));
    b.kill9();
    let data = mnt.join("data");
    b.spawn_with("127.0.0.1:0", &data);

    let mut c = Client::connect(&b).await;
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400u32 {
        let mut payload = vec![(i % 251) as u8; 50_000];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        let r = c.publish("full", &payload).await;
        match r {
            ServerFrame::Ack { seq, .. } => acked.push((seq, payload)),
            other => {
                assert_eq!(err_code(&other), 507, "{other:?}");
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
        }
    }
    assert!(
        refused >= 3,
        "the disk never filled up ({} acks)",
        acked.len()
    );
    assert!(!acked.is_empty());
    // The connection and the server are still fine.
    let id = c.id();
    assert_eq!(
        c.request(ClientFrame::Ping { id }).await,
        ServerFrame::Pong { id }
    );

    // Free space: writes work again, without a restart, and seqs stay dense.
    std::fs::remove_file(&filler).unwrap();
    let mut next = None;
    for _ in 0..50 {
        match c.publish("full", b"after").await {
            ServerFrame::Ack { seq, .. } => {
                next = Some(seq);
                break;
            }
            other => assert_eq!(err_code(&other), 507),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let next = next.expect("writes did not recover after space was freed");
    assert_eq!(next, acked.last().unwrap().0 + 1);
    if storage.contains("relaxed") {
        assert!(b.metric("roomd_room_logged_batches_total").await > 0.0);
    }

    // Every acknowledged message is there after a crash and restart.
    b.kill9();
    b.spawn_with("127.0.0.1:0", &data);
    let mut c = Client::connect(&b).await;
    let mut s = c.sub("full", Some(0)).await;
    let ServerFrame::Subbed { last, .. } = &mut s else {
        panic!()
    };
    assert_eq!(*last, next);
    for (seq, payload) in &acked {
        assert_eq!(&c.msg().await, &(*seq, payload.clone()));
    }
}
