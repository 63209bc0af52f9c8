//! Durability: what was acknowledged survives restarts and `kill -9` at any moment, with dense
//! seqs; graceful shutdown acknowledges in-flight writes and closes with 1001.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};

/// Every entry of a room, read through `hist` pages: (seq, payload; empty for a state change).
async fn read_all(c: &mut Client, room: &str) -> Vec<(u64, Vec<u8>)> {
    c.history_all(room)
        .await
        .into_iter()
        .map(|item| match item {
            ServerFrame::Msg { seq, data, .. } => (seq, data),
            ServerFrame::State { seq, .. } => (seq, Vec::new()),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn restart_keeps_history_state_and_continues_seqs() {
    let mut b = Broker::start("");
    let mut c = Client::connect(&b).await;
    for i in 1..=10u8 {
        c.publish_seq("keep", &[i]).await;
    }
    let id = c.id();
    c.request(ClientFrame::Put {
        ttl_ms: None,
        ephemeral: false,
        id,
        room: "keep".into(),
        key: "topic".into(),
        value: Value::from("hello"),
    })
    .await;
    let ServerFrame::Subbed { epoch, .. } = c.sub("keep", None).await else {
        panic!()
    };
    drop(c);
    assert_eq!(b.terminate(), Some(0));
    b.restart();
    let mut c = Client::connect(&b).await;
    let id = c.id();
    let r = c
        .request(ClientFrame::Sub {
            id,
            room: "keep".into(),
            since: Some(0),
            state: Some(true),
            presence: None,
            info: None,
        })
        .await;
    let ServerFrame::Subbed {
        last,
        epoch: e2,
        state: Some(state),
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!((last, e2), (11, epoch));
    assert_eq!(state.len(), 1);
    assert_eq!(
        (state[0].key.as_str(), &state[0].value, state[0].ver),
        ("topic", &Value::from("hello"), 1)
    );
    for i in 1..=10u64 {
        assert_eq!(c.msg().await, (i, vec![i as u8]));
    }
    assert!(matches!(
        c.event().await,
        ServerFrame::State { seq: 11, .. }
    ));
    assert_eq!(c.publish_seq("keep", b"after").await, 12);
    assert_eq!(c.msg().await, (12, b"after".to_vec()));
}

/// With no checkpoint, redb holds the writes only in memory; after kill -9 the write-ahead log
/// brings back new rooms (with their ids and epochs), messages, every kind of state mutation and
/// retention trims, in order; and what is written after the replay survives the next crash too.
#[tokio::test]
async fn kill_9_between_checkpoints_replays_rooms_state_and_trims_from_the_log() {
    let mut b = Broker::start(
        "[storage]\ncheckpoint_interval_ms = 3600000\ncheckpoint_bytes = 1073741824\n\
         [retention]\nmax_messages = 5\nsweep_interval_secs = 1\n",
    );
    let mut c = Client::connect(&b).await;
    let mut epochs = HashMap::new();
    for room in ["wal-a", "wal-b", "wal-c"] {
        for i in 1..=3u8 {
            c.publish_seq(room, &[i]).await;
        }
        let ServerFrame::Subbed { epoch, .. } = c.sub(room, None).await else {
            panic!()
        };
        epochs.insert(room, epoch);
    }
    let mutations = [
        ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id: 0,
            room: "wal-a".into(),
            key: "topic".into(),
            value: Value::from("hi"),
        },
        ClientFrame::Incr {
            id: 0,
            room: "wal-a".into(),
            key: "n".into(),
            by: Some(5),
        },
        ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id: 0,
            room: "wal-a".into(),
            key: "gone".into(),
            value: Value::from(1),
        },
        ClientFrame::Del {
            id: 0,
            room: "wal-a".into(),
            key: "gone".into(),
        },
        ClientFrame::Cas {
            ttl_ms: None,
            ephemeral: false,
            id: 0,
            room: "wal-a".into(),
            key: "owner".into(),
            ver: 0,
            value: Value::from("ada"),
        },
    ];
    for mut m in mutations {
        let id = c.id();
        match &mut m {
            ClientFrame::Put { id: i, .. }
            | ClientFrame::Incr { id: i, .. }
            | ClientFrame::Del { id: i, .. }
            | ClientFrame::Cas { id: i, .. } => *i = id,
            _ => unreachable!(),
        }
        let r = c.request(m).await;
        assert!(matches!(r, ServerFrame::Done { .. }), "{r:?}");
    }
    // wal-b (and wal-a) grow past max_messages: the sweep trims them to their last 5.
    for i in 4..=20u8 {
        c.publish_seq("wal-b", &[i]).await;
    }
    for round in 0..2u64 {
        let before = settled(&b).await;
        assert_eq!(
            before.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
            [
                (4 + round, 8 + round),
                (16 + round, 20 + round),
                (1, 3 + round)
            ],
            "round {round}: (earliest, last) before the crash"
        );
        b.kill9();
        b.restart();
        let mut after = Client::connect(&b).await;
        assert_eq!(settled(&b).await, before, "round {round}");
        for (room, epoch) in &epochs {
            let ServerFrame::Subbed { epoch: e, .. } = after.sub(room, None).await else {
                panic!()
            };
            assert_eq!(e, *epoch, "round {round}: {room}");
        }
        let id = after.id();
        let r = after
            .request(ClientFrame::List {
                id,
                room: "wal-a".into(),
                prefix: None,
                after: None,
                limit: None,
            })
            .await;
        let ServerFrame::Vals { items, .. } = r else {
            panic!("{r:?}")
        };
        let got: Vec<_> = items
            .iter()
            .map(|e| (e.key.as_str(), e.value.clone(), e.ver))
            .collect();
        assert_eq!(
            got,
            [
                ("n", Value::from(5), 1),
                ("owner", Value::from("ada"), 1),
                ("topic", Value::from("hi"), 1),
            ],
            "round {round}"
        );
        // Written after the replay: must survive the next round's crash.
        for room in ["wal-a", "wal-b", "wal-c"] {
            after.publish_seq(room, b"next").await;
        }
    }
}

/// (room, earliest, last, every seq in history) of the WAL test's rooms, once the retention
/// sweep has left each with at most 5 entries (so nothing changes until the next write).
async fn settled(b: &Broker) -> Vec<(&'static str, u64, u64, Vec<u64>)> {
    for _ in 0..100 {
        let mut out = Vec::new();
        for room in ["wal-a", "wal-b", "wal-c"] {
            let mut s = Client::connect(b).await;
            let seqs: Vec<u64> = read_all(&mut s, room).await.iter().map(|e| e.0).collect();
            let ServerFrame::Subbed { earliest, last, .. } = s.sub(room, None).await else {
                panic!()
            };
            out.push((room, earliest, last, seqs));
        }
        if out
            .iter()
            .all(|r| r.3.len() <= 5 && r.3.first() == Some(&r.1))
        {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the retention sweep did not settle");
}

/// With applies to redb deferred as long as possible, every kind of read still sees every
/// acknowledged write: history pages, a resume that replays from the store (no in-memory cache),
/// and a room loaded again after an idle unload.
#[tokio::test]
async fn reads_see_acknowledged_writes_that_are_only_in_the_log() {
    reads_see_log_only_writes("").await;
}

/// The same in relaxed mode, where rooms append their batches to the log themselves.
#[tokio::test]
async fn relaxed_reads_see_acknowledged_writes_that_rooms_logged_themselves() {
    let b = reads_see_log_only_writes("durability = \"relaxed\"\n").await;
    assert!(b.metric("roomd_room_logged_batches_total").await >= 20.0);
}

async fn reads_see_log_only_writes(storage: &str) -> Broker {
    let b = Broker::start(&format!(
        "[storage]\n{storage}checkpoint_interval_ms = 3600000\ncheckpoint_bytes = 1073741824\n\
         flush_interval_ms = 3600000\napply_bytes = 1073741824\n\
         [rooms]\ncache_entries = 0\nidle_unload_secs = 1\n",
    ));
    let mut p = Client::connect(&b).await;
    let sent: Vec<(u64, Vec<u8>)> = {
        let mut out = Vec::new();
        for i in 1..=20u8 {
            out.push((p.publish_seq("log-only", &[i]).await, vec![i]));
        }
        out
    };
    assert_eq!(sent.last().unwrap().0, 20);

    let mut r = Client::connect(&b).await;
    assert_eq!(read_all(&mut r, "log-only").await, sent);
    let ServerFrame::Subbed { last, .. } = r.sub("log-only", Some(5)).await else {
        panic!()
    };
    assert_eq!(last, 20);
    for entry in &sent[5..] {
        assert_eq!(&r.msg().await, entry);
    }
    drop(r);

    // More writes, then let the room unload (no subscriber, idle for 1 s) and load again.
    for i in 21..=25u8 {
        p.publish_seq("log-only", &[i]).await;
    }
    drop(p);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(c.publish_seq("log-only", b"after-reload").await, 26);
    let log = read_all(&mut c, "log-only").await;
    assert_eq!(
        log.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=26).collect::<Vec<_>>()
    );
    b
}

/// room → seq → payload of every acknowledged publish.
type Acked = HashMap<String, HashMap<u64, Vec<u8>>>;

/// Publishers hammer several rooms; the broker is killed with SIGKILL mid-stream, five times.
/// After each restart every acknowledged message is there with its seq and payload, and each
/// room's seqs are 1..=last without a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_concurrent_publishing_loses_no_acknowledged_message() {
    kill_9_loop("").await;
}

/// The same with a checkpoint (and a rewind of the write-ahead log) every 16 KiB of log, so
/// kills land around rewinds and recovery reads logs whose old records follow the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_around_frequent_checkpoints_loses_no_acknowledged_message() {
    kill_9_loop("[storage]\ncheckpoint_bytes = 16384\n").await;
}

/// The same with no checkpoint at all: every acknowledged write is recovered from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_no_checkpoint_recovers_everything_from_the_log() {
    kill_9_loop("[storage]\ncheckpoint_interval_ms = 3600000\ncheckpoint_bytes = 1073741824\n")
        .await;
}

/// Relaxed mode, where rooms log their own batches while the writer thread applies and
/// checkpoints (every 16 KiB) around them: a crash of the process loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_relaxed_mode_with_rooms_logging_around_checkpoints_loses_nothing() {
    let b = kill_9_loop(
        "[storage]\ndurability = \"relaxed\"\ncheckpoint_bytes = 16384\napply_bytes = 4096\n",
    )
    .await;
    // Each round ended in a kill: show on the last process that rooms do log for themselves.
    let mut c = Client::connect(&b).await;
    for i in 0..20u8 {
        c.publish_seq("crash-a", &[i]).await;
    }
    // (The first one after a restart goes through the writer thread: the log was emptied by
    // recovery and must grow first.)
    assert!(b.metric("roomd_room_logged_batches_total").await >= 10.0);
}

async fn kill_9_loop(extra: &str) -> Broker {
    let mut b = Broker::start(extra);
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let rooms = ["crash-a", "crash-b", "crash-c", "crash-d"];
    for round in 0..5u32 {
        let mut tasks = Vec::new();
        for w in 0..8u32 {
            let (url, acked) = (b.ws_url(""), acked.clone());
            let room = rooms[(w % 4) as usize].to_string();
            tasks.push(tokio::spawn(async move {
                let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_tungstenite::connect_async(url.as_str()),
                )
                .await
                else {
                    return;
                };
                use futures_util::{SinkExt, StreamExt};
                common::read_frame(&mut ws).await; // hello
                let mut sent: HashMap<u32, Vec<u8>> = HashMap::new();
                for i in 0..100_000u32 {
                    let data = format!("r{round}-w{w}-{i}").into_bytes();
                    let frame = ClientFrame::Pub {
                        id: i,
                        room: room.clone(),
                        data: data.clone(),
                        mid: None,
                    };
                    sent.insert(i, data);
                    if ws
                        .send(roomd_protocol::codec::encode(&frame).into())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Keep up to 4 in flight per connection.
                    while sent.len() >= 4 {
                        match ws.next().await {
                            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                                if let Ok(ServerFrame::Ack { id, seq, .. }) =
                                    roomd_protocol::decode_server(&b)
                                {
                                    let data = sent.remove(&id).unwrap();
                                    acked
                                        .lock()
                                        .unwrap()
                                        .entry(room.clone())
                                        .or_default()
                                        .insert(seq, data);
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 150 * u64::from(round))).await;
        b.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        b.restart();
        let mut c = Client::connect(&b).await;
        let snapshot = acked.lock().unwrap().clone();
        let total: usize = snapshot.values().map(|m| m.len()).sum();
        assert!(
            total > (round as usize + 1) * 100,
            "round {round}: only {total} acks; the test did not load the broker"
        );
        for room in rooms {
            let log = read_all(&mut c, room).await;
            let seqs: Vec<u64> = log.iter().map(|e| e.0).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "round {round}: {room} has holes"
            );
            let stored: HashMap<u64, Vec<u8>> = log.into_iter().collect();
            for (seq, data) in snapshot.get(room).into_iter().flatten() {
                assert_eq!(
                    stored.get(seq),
                    Some(data),
                    "round {round}: {room} lost acknowledged seq {seq}"
                );
            }
        }
    }
    b
}

#[tokio::test]
async fn graceful_shutdown_acknowledges_in_flight_publishes_and_closes_with_1001() {
    let mut b = Broker::start("");
    let mut s = Client::connect(&b).await;
    s.sub("g", None).await;
    let mut p = Client::connect(&b).await;
    for i in 0..50u32 {
        let id = p.id();
        p.send(&ClientFrame::Pub {
            id,
            room: "g".into(),
            data: i.to_be_bytes().to_vec(),
            mid: None,
        })
        .await;
    }
    // Wait until the broker has at least read them, then stop it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = b.pid();
    let stop = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
    });
    let mut acks = 0;
    loop {
        match tokio::time::timeout(common::TIMEOUT, futures_util::StreamExt::next(&mut p.ws))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) => {
                if let ServerFrame::Ack { .. } = roomd_protocol::decode_server(&bytes).unwrap() {
                    acks += 1;
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acks, 50,
        "every publish read before shutdown is acknowledged"
    );
    assert_eq!(s.close_code().await, Some(1001));
    stop.await.unwrap();
    assert_eq!(b.terminate_wait(), Some(0));
    b.restart();
    let mut c = Client::connect(&b).await;
    assert_eq!(read_all(&mut c, "g").await.len(), 50);
}

/// Groups go on being logged and acknowledged while a checkpoint commits (held here for 10 s by
/// fault injection): they go to the log's other file. A crash before the checkpoint commits
/// loses none of them: recovery follows the log from the file of the last committed checkpoint
/// into the other one.
#[tokio::test]
async fn kill_9_while_a_checkpoint_commits_loses_nothing_logged_meanwhile() {
    kill_9_during_checkpoint("").await;
}

#[tokio::test]
async fn relaxed_kill_9_while_a_checkpoint_commits_loses_nothing_logged_meanwhile() {
    kill_9_during_checkpoint("durability = \"relaxed\"\n").await;
}

async fn kill_9_during_checkpoint(storage: &str) {
    let mut b = Broker::start_env(
        tempfile::tempdir().unwrap(),
        &format!(
            "[storage]\n{storage}checkpoint_interval_ms = 100\nflush_interval_ms = 20\n\
             checkpoint_bytes = 1073741824\n"
        ),
        &[("ROOMD_TEST_CHECKPOINT_HOLD_MS", "10000")],
    );
    let mut c = Client::connect(&b).await;
    // Creating the room is a redb write: the next flush tick starts a checkpoint, held.
    assert_eq!(c.publish_seq("held", &[0]).await, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 1..=50u8 {
        c.publish_seq("held", &[i]).await;
    }
    let id = c.id();
    let r = c
        .request(ClientFrame::Put {
            ttl_ms: None,
            ephemeral: false,
            id,
            room: "held".into(),
            key: "k".into(),
            value: Value::from(7),
        })
        .await;
    assert!(
        matches!(r, ServerFrame::Done { seq: Some(52), .. }),
        "{r:?}"
    );
    // Acknowledged while the checkpoint is still held: they did not wait for it.
    assert_eq!(b.metric("roomd_checkpoint_seconds_count").await, 0.0);
    b.kill9();
    b.restart();
    let mut c = Client::connect(&b).await;
    let log = read_all(&mut c, "held").await;
    assert_eq!(
        log.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=52).collect::<Vec<_>>()
    );
    assert_eq!(log[50].1, vec![50]);
    let id = c.id();
    let r = c
        .request(ClientFrame::Get {
            id,
            room: "held".into(),
            key: "k".into(),
        })
        .await;
    assert!(matches!(r, ServerFrame::Val { ver: 1, .. }), "{r:?}");
    assert_eq!(c.publish_seq("held", b"next").await, 53);
}

/// While a checkpoint commits, logged groups wait in memory for redb; past their bound
/// (`checkpoint_bytes`) new writes wait for the checkpoint instead of piling up, in both modes.
#[tokio::test]
async fn groups_waiting_for_a_checkpoint_are_bounded() {
    bounded_during_checkpoint("").await;
}

#[tokio::test]
async fn relaxed_groups_waiting_for_a_checkpoint_are_bounded() {
    bounded_during_checkpoint("durability = \"relaxed\"\n").await;
}

async fn bounded_during_checkpoint(storage: &str) {
    let b = Broker::start_env(
        tempfile::tempdir().unwrap(),
        &format!(
            "[storage]\n{storage}checkpoint_interval_ms = 100\nflush_interval_ms = 20\n\
             checkpoint_bytes = 65536\napply_bytes = 4096\n"
        ),
        &[("ROOMD_TEST_CHECKPOINT_HOLD_MS", "5000")],
    );
    let mut c = Client::connect(&b).await;
    c.publish_seq("bounded", b"first").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // About 400 KiB of log: far past the bound, and quick to send unless writes wait.
    let payload = vec![7u8; 200];
    for _ in 0..2000 {
        c.publish_seq("bounded", &payload).await;
    }
    assert!(
        b.metric("roomd_checkpoint_seconds_count").await >= 1.0,
        "every write was acknowledged while the checkpoint was held: nothing bounded them"
    );
    assert_eq!(read_all(&mut c, "bounded").await.len(), 2001);
}

/// A read that comes while a checkpoint commits waits for it (the groups it holds become
/// readable only then) without holding up the writes that follow, and sees every write
/// acknowledged before it: those in the checkpoint and those logged while it commits.
#[tokio::test]
async fn a_read_during_a_checkpoint_sees_its_groups_and_does_not_hold_up_writes() {
    let b = Broker::start_env(
        tempfile::tempdir().unwrap(),
        "[storage]\ncheckpoint_interval_ms = 100\nflush_interval_ms = 20\n\
         checkpoint_bytes = 1073741824\n[rooms]\ncache_entries = 0\n",
        &[("ROOMD_TEST_CHECKPOINT_HOLD_MS", "5000")],
    );
    let mut p = Client::connect(&b).await;
    for i in 1..=3u8 {
        p.publish_seq("read-held", &[i]).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 4..=6u8 {
        p.publish_seq("read-held", &[i]).await;
    }
    let mut r = Client::connect(&b).await;
    let id = r.id();
    r.send(&ClientFrame::Hist {
        id,
        room: "read-held".into(),
        after: None,
        before: None,
        limit: None,
    })
    .await;
    for i in 7..=10u8 {
        p.publish_seq("read-held", &[i]).await;
    }
    assert_eq!(b.metric("roomd_checkpoint_seconds_count").await, 0.0);
    let ServerFrame::Hist { items, .. } = r.reply_to(id).await else {
        panic!()
    };
    let seqs: Vec<u64> = items
        .iter()
        .map(|i| match i {
            ServerFrame::Msg { seq, .. } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        seqs.starts_with(&[1, 2, 3, 4, 5, 6]),
        "the read missed acknowledged writes: {seqs:?}"
    );
    assert_eq!(
        read_all(&mut r, "read-held").await.len(),
        10,
        "every write is readable"
    );
}

/// Room ids are given out by the writer and reach redb only when their groups are applied: after
/// a restart, whether the creations were checkpointed or only in the log, new rooms must get
/// ids of their own, or their entries would land in (and overwrite) another room's log.
#[tokio::test]
async fn rooms_created_after_a_restart_get_ids_of_their_own() {
    let mut b = Broker::start(
        "[storage]\ncheckpoint_interval_ms = 3600000\ncheckpoint_bytes = 1073741824\n\
         apply_bytes = 1073741824\n",
    );
    let mut c = Client::connect(&b).await;
    for room in ["ids-a", "ids-b"] {
        c.publish_seq(room, room.as_bytes()).await;
    }
    drop(c);
    // The creations are only in the log: replayed at the start.
    b.kill9();
    b.restart();
    let mut c = Client::connect(&b).await;
    c.publish_seq("ids-c", b"ids-c").await;
    drop(c);
    // Checkpointed by the graceful stop this time.
    assert_eq!(b.terminate(), Some(0));
    b.restart();
    let mut c = Client::connect(&b).await;
    c.publish_seq("ids-d", b"ids-d").await;
    for room in ["ids-a", "ids-b", "ids-c", "ids-d"] {
        assert_eq!(
            read_all(&mut c, room).await,
            [(1, room.as_bytes().to_vec())],
            "room {room}"
        );
    }
}

/// Logged groups reach redb on the applier thread while the writer goes on logging: with an
/// apply after every group (`apply_bytes = 1`), reads keep arriving while one runs and newer
/// groups wait behind it. Each read must still see every write acknowledged before it was
/// sent, not only those of the apply that happened to finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_applies_see_every_acknowledged_write() {
    reads_racing_applies("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_reads_racing_applies_see_every_acknowledged_write() {
    reads_racing_applies("durability = \"relaxed\"\n").await;
}

async fn reads_racing_applies(storage: &str) {
    let b = Broker::start(&format!(
        "[storage]\n{storage}apply_bytes = 1\ncheckpoint_interval_ms = 3600000\n\
         checkpoint_bytes = 1073741824\n[rooms]\ncache_entries = 0\n",
    ));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let mut p = Client::connect(&b).await;
        let (acked, stop) = (acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seq = p.publish_seq("racing", b"x").await;
                acked.fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    let mut r = Client::connect(&b).await;
    let mut reads = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let known = acked.load(std::sync::atomic::Ordering::SeqCst);
        if known < 2 {
            tokio::task::yield_now().await;
            continue;
        }
        let id = r.id();
        let reply = r
            .request(ClientFrame::Hist {
                id,
                room: "racing".into(),
                after: Some(known - 1),
                before: None,
                limit: Some(1),
            })
            .await;
        let ServerFrame::Hist { items, .. } = reply else {
            panic!("{reply:?}")
        };
        assert!(
            matches!(items.first(), Some(ServerFrame::Msg { seq, .. }) if *seq == known),
            "read {reads}: seq {known} was acknowledged before the read but is not in it"
        );
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    assert!(reads > 100, "only {reads} reads");
    assert!(b.metric("roomd_apply_seconds_count").await > 100.0);
}

/// Relaxed mode acks before the fsync, but after the write-ahead log append: a crash of the
/// process (the page cache survives) loses nothing, even right after the acks and with no
/// checkpoint; seqs stay dense.
#[tokio::test]
async fn relaxed_mode_loses_nothing_acknowledged_when_the_process_crashes() {
    let mut b = Broker::start(
        "[storage]\ndurability = \"relaxed\"\nflush_interval_ms = 3600000\n\
         checkpoint_interval_ms = 3600000\ncheckpoint_bytes = 1073741824\n",
    );
    let mut c = Client::connect(&b).await;
    for i in 1..=100u8 {
        assert_eq!(c.publish_seq("relaxed", &[i]).await, u64::from(i));
    }
    b.kill9();
    b.restart();
    let mut c = Client::connect(&b).await;
    let log = read_all(&mut c, "relaxed").await;
    assert_eq!(
        log,
        (1..=100u8)
            .map(|i| (u64::from(i), vec![i]))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.publish_seq("relaxed", b"next").await, 101);
}

/// With a writer queue of one batch, rooms whose batches find it full wait for room (while a
/// held checkpoint stops the writer, most of them do) and every write still lands, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_wait_for_a_full_writer_queue_and_lose_nothing() {
    let b = Broker::start_env(
        tempfile::tempdir().unwrap(),
        "[storage]\nqueue = 1\ncheckpoint_interval_ms = 100\nflush_interval_ms = 20\n\
         checkpoint_bytes = 65536\napply_bytes = 4096\n",
        &[("ROOMD_TEST_CHECKPOINT_HOLD_MS", "2000")],
    );
    let mut first = Client::connect(&b).await;
    first.publish_seq("full-0", b"first").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut tasks = Vec::new();
    for r in 0..8 {
        let url = b.ws_url("");
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect_url(&url).await;
            let room = format!("full-{r}");
            let payload = vec![r as u8; 200];
            let mut seqs = Vec::new();
            for _ in 0..300 {
                seqs.push(c.publish_seq(&room, &payload).await);
            }
            seqs
        }));
    }
    for (r, t) in tasks.into_iter().enumerate() {
        let seqs = t.await.unwrap();
        let first_seq = if r == 0 { 2 } else { 1 };
        assert_eq!(
            seqs,
            (first_seq..first_seq + 300).collect::<Vec<u64>>(),
            "room {r}"
        );
    }
    for r in 0..8 {
        let expected = if r == 0 { 301 } else { 300 };
        assert_eq!(
            read_all(&mut first, &format!("full-{r}")).await.len(),
            expected
        );
    }
}
