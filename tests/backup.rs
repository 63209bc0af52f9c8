//! An online backup holds every entry acknowledged before it began, taken while publishers
//! keep writing, and a restore of it serves them all.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{Broker, Client};
use roomd_protocol::ServerFrame;

/// Acks per room: (seq, payload).
type Acked = BTreeMap<String, Vec<(u64, Vec<u8>)>>;

fn free_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_acknowledged_entry() {
    let admin = free_addr();
    let mut b = Broker::start(&format!("[admin]\nlisten = \"{admin}\"\n"));
    // Acks as they arrive, per room: (seq, payload).
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for room in ["a", "b", "c"] {
        let mut c = Client::connect(&b).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("{room}-{i}").into_bytes();
                if let ServerFrame::Ack { seq, .. } = c.publish(room, &payload).await {
                    acked
                        .lock()
                        .unwrap()
                        .entry(room.to_string())
                        .or_default()
                        .push((seq, payload));
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Everything acknowledged before the backup begins must be in it.
    let before = acked.lock().unwrap().clone();
    assert!(before.values().all(|v| v.len() > 10), "too few publishes");
    let dest = b.dir.path().join("copy.redb");
    let out = Command::new(env!("CARGO_BIN_EXE_roomd"))
        .args(["backup", "--admin", &admin])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 rooms"),
        "{out:?}"
    );
    // Publishing goes on around the backup.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = acked.lock().unwrap().values().map(Vec::len).sum::<usize>();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    assert!(during > before.values().map(Vec::len).sum::<usize>());
    b.kill9();

    // Restore into a fresh data directory and serve it.
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("restore")
        .arg(&dest)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A second restore into the same directory is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("restore")
        .arg(&dest)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    b.spawn_with("127.0.0.1:0", &data);
    let mut c = Client::connect(&b).await;
    for (room, entries) in &before {
        let ServerFrame::Subbed { last, .. } = c.sub(room, Some(0)).await else {
            panic!()
        };
        assert!(last >= entries.last().unwrap().0);
        let mut got = BTreeMap::new();
        for _ in 0..last {
            let (seq, data) = c.msg().await;
            got.insert(seq, data);
        }
        for (seq, payload) in entries {
            assert_eq!(got.get(seq), Some(payload), "room {room} seq {seq} missing");
        }
    }
    // The restored server takes new writes after them.
    let seq = c.publish_seq("a", b"after").await;
    assert!(seq > before["a"].last().unwrap().0);
}
