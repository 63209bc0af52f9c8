//! Unit tests of a room's batching and replay-to-live switch, driven step by step against the
//! real store and writer on a temporary directory. The test plays the room's run loop: it hands
//! the room commands, forms batches, waits for their commits and delivers replay pages, so the
//! interleavings that matter are chosen rather than hoped for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomd_protocol::{codec, ErrorCode, ServerFrame, Value};
use tokio::sync::mpsc;

use super::actor::load;
use super::commit::{recv_commit, Flushed};
use super::model::Room;
use super::{Command, Inbox, Mutation, RoomEnv, RoomLimits};
use crate::config::{Config, StorageConfig};
use crate::engine::Engine;
use crate::outbox::Outbox;
use crate::peer::Peer;
use crate::store::{Store, WriterHandle};

/// The limits of a default configuration.
pub(crate) fn limits() -> RoomLimits {
    RoomLimits::from_config(&Config::default())
}

/// A connection with a roomy outbox.
pub(crate) fn peer(conn: &str) -> Arc<Peer> {
    Arc::new(Peer {
        id: conn.into(),
        user: None,
        client: conn.into(),
        outbox: Outbox::new(100_000, 64 << 20),
        refused: Default::default(),
        in_flight: Default::default(),
    })
}

/// Everything queued for `peer` so far, decoded; a queued batch counts once per frame in it.
pub(crate) fn frames(peer: &Peer) -> Vec<ServerFrame> {
    queued(peer).iter().flat_map(|b| split(b)).collect()
}

/// Everything queued for `peer` so far, as queued (a broadcast batch is one `Bytes`).
fn queued(peer: &Peer) -> Vec<Bytes> {
    let mut out = Vec::new();
    peer.outbox.drain(&mut out);
    out
}

/// Decodes one or more concatenated WebSocket frames.
fn split(mut bytes: &[u8]) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, len) = match bytes[1] & 0x7f {
            126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, n as usize),
        };
        out.push(codec::decode_server(&bytes[header..header + len]).unwrap());
        bytes = &bytes[header + len..];
    }
    out
}

/// A room on a fresh store, with its inbox's receiving end (where replay pages arrive).
struct Fixture {
    _dir: tempfile::TempDir,
    env: Arc<RoomEnv>,
    room: Room,
    rx: Inbox,
}

impl Fixture {
    async fn new(limits: RoomLimits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let writer = WriterHandle::spawn(store.clone(), &StorageConfig::default()).unwrap();
        let env = Arc::new(RoomEnv {
            engine: Engine::Embedded(store),
            writer,
            limits,
            background: tokio_util::task::TaskTracker::new(),
            webhooks: Default::default(),
        });
        let name: Arc<str> = Arc::from("r");
        let (tx, rx) = mpsc::channel(64);
        let snap = load(&env, &name).await.unwrap();
        let room = Room::new(name, env.clone(), tx, snap);
        Fixture {
            _dir: dir,
            env,
            room,
            rx,
        }
    }

    fn publish(&mut self, peer: &Arc<Peer>, id: u32, data: &[u8]) {
        self.room.handle(Command::Publish {
            peer: peer.clone(),
            id,
            data: data.to_vec(),
            mid: None,
            received: Instant::now(),
        });
    }

    fn mutate(&mut self, peer: &Arc<Peer>, id: u32, op: Mutation) {
        self.room.handle(Command::Mutate {
            peer: peer.clone(),
            id,
            op,
        });
    }

    /// Forms one batch from everything pending and waits until its commit is handled, as the
    /// run loop does.
    async fn commit(&mut self) {
        let wait = match self.room.flush() {
            Flushed::Settled => return,
            Flushed::Queued(wait) => Some(wait),
            Flushed::QueueFull(batch, wait) => self.room.submit(batch, wait).await,
        };
        let mut wait = wait;
        if wait.is_some() {
            let res = recv_commit(&mut wait).await;
            self.room.on_commit(res);
        }
    }

    /// The next command a replay task sent the room.
    async fn next_command(&mut self) -> Command {
        let cmd = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a replay page within 10 s")
            .expect("the inbox is open");
        *cmd
    }
}

fn put(key: &str, v: i64) -> Mutation {
    let value = Value::from(v);
    let mut encoded = Vec::new();
    rmpv::encode::write_value(&mut encoded, &value).unwrap();
    Mutation::Put {
        ttl_ms: None,
        owner: None,
        key: key.into(),
        value,
        encoded,
    }
}

fn seqs(frames: &[ServerFrame]) -> Vec<u64> {
    frames.iter().filter_map(ServerFrame::seq).collect()
}

fn subscribe(f: &mut Fixture, peer: &Arc<Peer>, since: Option<u64>) {
    f.room.handle(Command::Subscribe {
        peer: peer.clone(),
        id: 1,
        since,
        state: false,
        presence: false,
        info: None,
        allow: None,
    });
}

#[tokio::test]
async fn publishes_and_mutations_pending_together_form_one_write_in_order() {
    let mut f = Fixture::new(limits()).await;
    let (p, s) = (peer("p"), peer("s"));
    subscribe(&mut f, &s, None);
    assert!(matches!(
        frames(&s)[..],
        [ServerFrame::Subbed { last: 0, .. }]
    ));

    f.publish(&p, 1, b"a");
    f.mutate(&p, 2, put("k", 1));
    f.publish(&p, 3, b"b");
    f.mutate(
        &p,
        4,
        Mutation::Incr {
            key: "k".into(),
            by: 2,
        },
    );
    // Answered when the batch is formed, without a seq: a conflict and a no-op delete.
    f.mutate(
        &p,
        5,
        Mutation::Cas {
            ttl_ms: None,
            owner: None,
            key: "k".into(),
            ver: 9,
            value: Value::from(0),
            encoded: vec![0],
        },
    );
    f.mutate(&p, 6, Mutation::Del { key: "nope".into() });
    f.commit().await;

    // One write: the subscriber got one broadcast holding the four entries, seqs 1 to 4.
    let batches = queued(&s);
    assert_eq!(batches.len(), 1);
    let live = split(&batches[0]);
    assert_eq!(seqs(&live), [1, 2, 3, 4]);
    assert!(matches!(&live[0], ServerFrame::Msg { data, .. } if data == b"a"));
    assert!(matches!(&live[1], ServerFrame::State { key, ver: 1, .. } if key == "k"));
    assert!(matches!(&live[2], ServerFrame::Msg { data, .. } if data == b"b"));
    assert!(
        matches!(&live[3], ServerFrame::State { ver: 2, value: Some(v), .. } if v.as_i64() == Some(3))
    );

    // The writer answered in request order, after the two answered at formation.
    let answers = frames(&p);
    let conflict = ErrorCode::Conflict.as_u16();
    assert!(
        matches!(&answers[0], ServerFrame::Err { id: Some(5), code, ver: Some(2), .. } if *code == conflict)
    );
    assert!(matches!(
        answers[1],
        ServerFrame::Done {
            id: 6,
            seq: None,
            ..
        }
    ));
    assert!(matches!(
        answers[2],
        ServerFrame::Ack {
            id: 1,
            seq: 1,
            dup: None
        }
    ));
    assert!(matches!(
        answers[3],
        ServerFrame::Done {
            id: 2,
            seq: Some(2),
            ver: 1,
            ..
        }
    ));
    assert!(matches!(
        answers[4],
        ServerFrame::Ack {
            id: 3,
            seq: 3,
            dup: None
        }
    ));
    assert!(
        matches!(&answers[5], ServerFrame::Done { id: 4, seq: Some(4), ver: 2, value: Some(v) } if v.as_i64() == Some(3))
    );
    assert_eq!(answers.len(), 6);

    // Durable, in the same order, and the room's state and head moved with the commit.
    assert_eq!(f.room.head, 4);
    assert_eq!(f.room.state.get("k").map(|e| e.ver), Some(2));
    let room_id = f.room.id.expect("the first write created the room");
    let store = embedded(&f);
    let stored =
        tokio::task::spawn_blocking(move || store.read_forward(room_id, 1, 100, usize::MAX))
            .await
            .unwrap()
            .unwrap();
    let stored: Vec<u64> = stored.frames().iter().map(|(seq, _)| *seq).collect();
    assert_eq!(stored, [1, 2, 3, 4]);

    // The next batch continues the numbering.
    f.publish(&p, 7, b"c");
    f.commit().await;
    assert!(matches!(
        frames(&p)[..],
        [ServerFrame::Ack { id: 7, seq: 5, .. }]
    ));
    assert_eq!(seqs(&frames(&s)), [5]);
    f.env.writer.stop().await;
}

#[tokio::test]
async fn nothing_to_write_forms_no_batch() {
    let mut f = Fixture::new(limits()).await;
    let p = peer("p");
    f.mutate(&p, 1, Mutation::Del { key: "nope".into() });
    assert!(matches!(f.room.flush(), Flushed::Settled));
    assert!(matches!(
        frames(&p)[..],
        [ServerFrame::Done {
            id: 1,
            seq: None,
            ..
        }]
    ));
    assert_eq!((f.room.head, f.room.id), (0, None));
    f.env.writer.stop().await;
}

/// A subscriber resuming far behind is paged from disk while the room keeps committing; it gets
/// every entry after `since` exactly once, in order, then live entries.
#[tokio::test]
async fn a_resuming_subscriber_gets_pages_then_live_frames_with_no_gap_and_no_duplicate() {
    let mut f = Fixture::new(RoomLimits {
        page: 3,
        // A replay page is a quarter of the outbox: 3 too.
        outbox_max_frames: 12,
        cache_entries: 2,
        ..limits()
    })
    .await;
    let (p, s) = (peer("p"), peer("s"));
    for i in 1..=10u32 {
        f.publish(&p, i, &[i as u8]);
        if i % 4 == 0 {
            f.commit().await;
        }
    }
    f.commit().await;
    assert_eq!(f.room.head, 10);

    subscribe(&mut f, &s, Some(2));
    let subbed = frames(&s);
    assert!(matches!(
        subbed[..],
        [ServerFrame::Subbed {
            last: 10,
            first: 3,
            complete: true,
            ..
        }]
    ));
    assert_eq!(f.room.replays, 1, "the cache does not hold seq 3: a replay");

    // Each time a page arrives, another entry is committed first: it is past what the page
    // was read up to, and the subscriber is not live, so it must come from a later page.
    let mut pages = 0;
    let mut id = 100;
    while f.room.replays > 0 {
        let cmd = f.next_command().await;
        assert!(matches!(cmd, Command::ReplayPage { .. }));
        id += 1;
        f.publish(&p, id, &[id as u8]);
        f.commit().await;
        f.room.handle(cmd);
        pages += 1;
    }
    assert!(pages >= 3, "several pages of 3, not {pages}");
    let head = f.room.head;

    // Live now: the next commits are broadcast to it.
    for _ in 0..2 {
        id += 1;
        f.publish(&p, id, &[id as u8]);
        f.commit().await;
    }
    let got = seqs(&frames(&s));
    let want: Vec<u64> = (3..=head + 2).collect();
    assert_eq!(got, want);
    f.env.writer.stop().await;
}

/// A subscriber slightly behind catches up from the cache at once and is live.
#[tokio::test]
async fn a_subscriber_slightly_behind_catches_up_from_the_cache() {
    let mut f = Fixture::new(RoomLimits {
        cache_entries: 4,
        ..limits()
    })
    .await;
    let (p, s) = (peer("p"), peer("s"));
    for i in 1..=6u32 {
        f.publish(&p, i, &[i as u8]);
    }
    f.commit().await;
    subscribe(&mut f, &s, Some(4));
    assert_eq!(f.room.replays, 0);
    f.publish(&p, 7, b"x");
    f.commit().await;
    assert_eq!(seqs(&frames(&s)), [5, 6, 7]);
    f.env.writer.stop().await;
}

/// Requests that arrive while a batch is with the writer wait for the next one; a retry of a
/// `mid` in the batch in flight is answered with that entry's seq once it is durable.
#[tokio::test]
async fn requests_during_a_commit_wait_for_the_next_batch_and_retries_share_its_seq() {
    let mut f = Fixture::new(limits()).await;
    let p = peer("p");
    let publish_mid = |f: &mut Fixture, id: u32, mid: Option<&str>| {
        f.room.handle(Command::Publish {
            peer: p.clone(),
            id,
            data: vec![id as u8],
            mid: mid.map(str::to_string),
            received: Instant::now(),
        })
    };
    publish_mid(&mut f, 1, Some("m"));
    // Durable mode: the batch goes to the writer thread.
    let Flushed::Queued(wait) = f.room.flush() else {
        panic!("queued for the writer")
    };
    publish_mid(&mut f, 2, Some("m"));
    publish_mid(&mut f, 3, None);
    assert_eq!(
        f.room.pending.len(),
        1,
        "the retry waits on the write, not in pending"
    );
    assert!(frames(&p).is_empty(), "nothing answered before the commit");

    let res = recv_commit(&mut Some(wait)).await;
    f.room.on_commit(res);
    let answers = frames(&p);
    assert!(matches!(
        answers[..],
        [
            ServerFrame::Ack {
                id: 1,
                seq: 1,
                dup: None
            },
            ServerFrame::Ack {
                id: 2,
                seq: 1,
                dup: Some(true)
            },
        ]
    ));
    f.commit().await;
    assert!(matches!(
        frames(&p)[..],
        [ServerFrame::Ack {
            id: 3,
            seq: 2,
            dup: None
        }]
    ));
    // And a later retry is answered from the window at once.
    publish_mid(&mut f, 4, Some("m"));
    assert!(matches!(
        frames(&p)[..],
        [ServerFrame::Ack {
            id: 4,
            seq: 1,
            dup: Some(true)
        }]
    ));
    assert!(f.room.pending.is_empty());
    f.env.writer.stop().await;
}

fn redact(f: &mut Fixture, peer: &Arc<Peer>, id: u32, seq: u64) {
    f.room.handle(Command::Change {
        peer: peer.clone(),
        id,
        target: seq,
        change: super::Change::Delete,
        author_only: false,
    });
}

/// The room's stored history, oldest first, decoded.
/// The fixture's embedded store, for reading what a room wrote.
fn embedded(f: &Fixture) -> Store {
    match &f.env.engine {
        Engine::Embedded(store) => store.clone(),
        Engine::Redis(_) => unreachable!("the fixture runs on the embedded store"),
    }
}

async fn history(f: &Fixture) -> Vec<ServerFrame> {
    let store = embedded(f);
    let (items, _) =
        tokio::task::spawn_blocking(move || store.history("r", None, None, 1000, usize::MAX))
            .await
            .unwrap()
            .unwrap();
    items
        .iter()
        .map(|b| codec::decode_server(b).unwrap())
        .collect()
}

/// A deleted message's stub: `target`'s place, time and author, no data, deleted by `by`.
fn is_stub(frame: &ServerFrame, target: u64, by: u64) -> bool {
    matches!(frame, ServerFrame::Msg { seq, data, deleted: Some(d), from, .. }
        if *seq == target && data.is_empty() && *d == by && from == "p")
}

fn is_del(frame: &ServerFrame, seq_: u64, target_: u64) -> bool {
    matches!(frame, ServerFrame::Del { seq, target, from, .. }
        if *seq == seq_ && *target == target_ && from == "m")
}

/// A deletion is an entry of its own, acknowledged once durable, seen live; the target is a
/// stub in the database, in the cache and in a replay from disk.
#[tokio::test]
async fn a_deleted_message_becomes_a_stub_and_its_del_entry_follows_everywhere() {
    let mut f = Fixture::new(RoomLimits {
        cache_entries: 3,
        ..limits()
    })
    .await;
    let (p, m, live) = (peer("p"), peer("m"), peer("live"));
    subscribe(&mut f, &live, None);
    for i in 1..=3u32 {
        f.publish(&p, i, &[i as u8]);
    }
    f.mutate(&p, 4, put("k", 1));
    f.commit().await;
    let stored = history(&f).await;
    let ServerFrame::Msg { ts: ts2, .. } = stored[1] else {
        panic!("seq 2 is a message")
    };
    frames(&p);
    frames(&live);

    redact(&mut f, &m, 9, 2);
    assert!(frames(&m).is_empty(), "nothing answered before the commit");
    f.commit().await;
    assert!(matches!(
        frames(&m)[..],
        [ServerFrame::Ack {
            id: 9,
            seq: 5,
            dup: None
        }]
    ));
    let got = frames(&live);
    assert_eq!(got.len(), 1);
    assert!(is_del(&got[0], 5, 2), "live: {got:?}");

    // History: the stub keeps its seq, time and author; the `del` entry is seq 5.
    let hist = history(&f).await;
    assert_eq!(seqs(&hist), [1, 2, 3, 4, 5]);
    assert!(is_stub(&hist[1], 2, 5), "{:?}", hist[1]);
    assert!(matches!(hist[1], ServerFrame::Msg { ts, .. } if ts == ts2));
    assert!(matches!(&hist[0], ServerFrame::Msg { data, deleted: None, .. } if data == &[1]));
    assert!(is_del(&hist[4], 5, 2));

    // A subscriber resuming from the cache (it holds seqs 3 to 5).
    let cached = peer("cached");
    subscribe(&mut f, &cached, Some(2));
    assert_eq!(f.room.replays, 0);
    assert_eq!(seqs(&frames(&cached)), [3, 4, 5]);

    // A subscriber resuming from before the target is paged from disk: the stub, then `del`.
    let behind = peer("behind");
    subscribe(&mut f, &behind, Some(0));
    assert_eq!(f.room.replays, 1);
    while f.room.replays > 0 {
        let cmd = f.next_command().await;
        f.room.handle(cmd);
    }
    let got = frames(&behind);
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    assert!(is_stub(&got[2], 2, 5), "{:?}", got[2]);
    assert!(is_del(&got[5], 5, 2));
    f.env.writer.stop().await;
}

/// A message in the cache is stubbed there too, so a subscriber catching up from the cache
/// gets the stub, not the payload.
#[tokio::test]
async fn the_cache_holds_the_stub_after_a_deletion() {
    let mut f = Fixture::new(limits()).await;
    let (p, m) = (peer("p"), peer("m"));
    f.publish(&p, 1, b"secret");
    f.commit().await;
    redact(&mut f, &m, 2, 1);
    f.commit().await;
    let s = peer("s");
    subscribe(&mut f, &s, Some(0));
    assert_eq!(f.room.replays, 0, "caught up from the cache");
    let got = frames(&s);
    assert!(is_stub(&got[1], 1, 2), "{:?}", got[1]);
    assert!(is_del(&got[2], 2, 1));
    f.env.writer.stop().await;
}

/// Deleting a deleted message stores nothing and answers the first deletion's seq, whether
/// the first is durable already, in flight, or still reading its target from disk.
#[tokio::test]
async fn a_second_deletion_of_a_message_is_a_duplicate() {
    let mut f = Fixture::new(RoomLimits {
        cache_entries: 1,
        ..limits()
    })
    .await;
    let (p, m) = (peer("p"), peer("m"));
    for i in 1..=4u32 {
        f.publish(&p, i, &[i as u8]);
    }
    f.commit().await;

    // In the cache (seq 4): two requests before the commit.
    redact(&mut f, &m, 10, 4);
    redact(&mut f, &m, 11, 4);
    f.commit().await;
    let ack = |id, seq, dup| ServerFrame::Ack { id, seq, dup };
    assert_eq!(frames(&m), [ack(10, 5, None), ack(11, 5, Some(true))]);
    // Later, from the stub in the cache... (the cache now holds seq 5 only: from disk).
    redact(&mut f, &m, 12, 4);
    let cmd = f.next_command().await;
    assert!(matches!(cmd, Command::ChangeRead { target: 4, .. }));
    f.room.handle(cmd);
    assert_eq!(frames(&m), [ack(12, 5, Some(true))]);

    // Not in the cache: the target is read from disk while more requests for it arrive.
    redact(&mut f, &m, 20, 2);
    redact(&mut f, &m, 21, 2);
    let cmd = f.next_command().await;
    redact(&mut f, &m, 22, 2);
    f.room.handle(cmd);
    f.commit().await;
    assert_eq!(
        frames(&m),
        [
            ack(20, 6, None),
            ack(21, 6, Some(true)),
            ack(22, 6, Some(true))
        ]
    );
    assert_eq!(f.room.head, 6);
    assert!(f.room.redacting.is_empty());
    let hist = history(&f).await;
    assert_eq!(seqs(&hist), [1, 2, 3, 4, 5, 6]);
    f.env.writer.stop().await;
}

/// Only stored messages can be deleted; anything else is a 406 and stores nothing.
#[tokio::test]
async fn deleting_what_is_not_a_stored_message_is_a_bad_request() {
    let mut f = Fixture::new(RoomLimits {
        cache_entries: 1,
        ..limits()
    })
    .await;
    let (p, m) = (peer("p"), peer("m"));
    f.publish(&p, 1, b"a");
    f.mutate(&p, 2, put("k", 1));
    f.publish(&p, 3, b"b");
    f.commit().await;
    redact(&mut f, &m, 4, 3);
    f.commit().await;
    frames(&m);
    assert_eq!(f.room.head, 4);

    // 0 and beyond the head: refused at once.
    for (id, seq) in [(10, 0), (11, 5), (12, 99)] {
        redact(&mut f, &m, id, seq);
    }
    // A state entry (seq 2, read from disk) and the `del` entry (seq 4, in the cache).
    redact(&mut f, &m, 13, 2);
    let cmd = f.next_command().await;
    f.room.handle(cmd);
    redact(&mut f, &m, 14, 4);
    f.commit().await;
    let bad = ErrorCode::BadRequest.as_u16();
    let answers = frames(&m);
    let ids: Vec<u32> = answers
        .iter()
        .map(|a| match a {
            ServerFrame::Err {
                id: Some(id),
                code,
                msg,
                ..
            } if *code == bad => {
                assert!(msg.contains("seq"), "{msg}");
                *id
            }
            other => panic!("not a 406: {other:?}"),
        })
        .collect();
    assert_eq!(ids, [10, 11, 12, 13, 14]);
    assert_eq!(f.room.head, 4, "nothing stored");

    // Trimmed: before the room's earliest seq.
    f.room.earliest = 2;
    redact(&mut f, &m, 15, 1);
    assert!(
        matches!(&frames(&m)[..], [ServerFrame::Err { id: Some(15), code, .. }] if *code == bad)
    );
    f.env.writer.stop().await;
}

/// Restart: the stub and the `del` entry come back from disk (cache and history), a second
/// deletion is still a duplicate, and a retried publish of the deleted message is still a
/// duplicate (the stub kept its `mid`).
#[tokio::test]
async fn a_deletion_survives_a_restart() {
    let mut f = Fixture::new(limits()).await;
    let (p, m) = (peer("p"), peer("m"));
    f.room.handle(Command::Publish {
        peer: p.clone(),
        id: 1,
        data: b"oops".to_vec(),
        mid: Some("m1".into()),
        received: Instant::now(),
    });
    f.publish(&p, 2, b"fine");
    f.commit().await;
    redact(&mut f, &m, 3, 1);
    f.commit().await;
    assert_eq!(
        frames(&m),
        [ServerFrame::Ack {
            id: 3,
            seq: 3,
            dup: None
        }]
    );
    frames(&p);
    f.env.writer.stop().await;

    // The store closes when its last handle goes (the room's, the writer threads').
    let Fixture {
        _dir: dir,
        env,
        room,
        rx,
    } = f;
    drop((room, rx, env));
    let mut tries = 0;
    let store = loop {
        match Store::open(dir.path(), 1 << 20) {
            Ok(store) => break store,
            Err(e) if tries == 100 => panic!("the store did not close: {e}"),
            Err(_) => tries += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let writer = WriterHandle::spawn(store.clone(), &StorageConfig::default()).unwrap();
    let env = Arc::new(RoomEnv {
        engine: Engine::Embedded(store),
        writer,
        limits: limits(),
        background: tokio_util::task::TaskTracker::new(),
        webhooks: Default::default(),
    });
    let name: Arc<str> = Arc::from("r");
    let (tx, rx) = mpsc::channel(64);
    let snap = load(&env, &name).await.unwrap();
    let room = Room::new(name, env.clone(), tx, snap);
    let mut f = Fixture {
        _dir: dir,
        env,
        room,
        rx,
    };
    assert_eq!(f.room.head, 3);
    let hist = history(&f).await;
    assert!(is_stub(&hist[0], 1, 3), "{:?}", hist[0]);
    assert!(is_del(&hist[2], 3, 1));
    let s = peer("s");
    subscribe(&mut f, &s, Some(0));
    let got = frames(&s);
    assert!(is_stub(&got[1], 1, 3), "cache after load: {:?}", got[1]);

    redact(&mut f, &m, 4, 1);
    f.room.handle(Command::Publish {
        peer: p.clone(),
        id: 5,
        data: b"oops".to_vec(),
        mid: Some("m1".into()),
        received: Instant::now(),
    });
    f.commit().await;
    assert_eq!(
        frames(&m),
        [ServerFrame::Ack {
            id: 4,
            seq: 3,
            dup: Some(true)
        }]
    );
    assert_eq!(
        frames(&p),
        [ServerFrame::Ack {
            id: 5,
            seq: 1,
            dup: Some(true)
        }]
    );
    assert_eq!(f.room.head, 3, "nothing stored");
    f.env.writer.stop().await;
}

/// A connection of the given user, with a roomy outbox.
fn user_peer(conn: &str, user: &str) -> Arc<Peer> {
    Arc::new(Peer {
        user: Some(user.into()),
        ..Arc::into_inner(peer(conn)).unwrap()
    })
}

/// `RemoveUser` ends the user's subscriptions as `unsub` would, tells each of its connections
/// with `unsubbed`, and has them forget the subscription; others stay.
#[tokio::test]
async fn removing_a_user_ends_its_subscriptions_with_unsubbed() {
    let mut f = Fixture::new(limits()).await;
    let (a1, a2, b) = (
        user_peer("a1", "ann"),
        user_peer("a2", "ann"),
        user_peer("b", "bob"),
    );
    for (p, id) in [(&a1, 7u32), (&a2, 8), (&b, 9)] {
        f.room.handle(Command::Subscribe {
            peer: p.clone(),
            id,
            since: None,
            state: false,
            presence: true,
            info: Some(Bytes::from_static(b"\x80")),
            allow: None,
        });
    }
    for p in [&a1, &a2, &b] {
        frames(p);
    }
    let (reply, count) = tokio::sync::oneshot::channel();
    f.room.handle(Command::RemoveUser {
        user: "ann".into(),
        reply,
    });
    assert_eq!(count.await.unwrap(), 2);
    for (p, id) in [(&a1, 7), (&a2, 8)] {
        // Not each other's `leave`: they are removed together.
        assert_eq!(frames(p), [ServerFrame::Unsubbed { room: "r".into() }]);
        assert_eq!(p.take_refused(), [(Arc::from("r"), id)]);
    }
    let left: Vec<String> = frames(&b)
        .into_iter()
        .map(|fr| match fr {
            ServerFrame::Leave { conn, .. } => conn,
            other => panic!("not a leave: {other:?}"),
        })
        .collect();
    assert_eq!(left.len(), 2);
    assert!(b.take_refused().is_empty());
    assert_eq!(f.room.subs.len(), 1);
    assert_eq!(f.room.members.len(), 1);

    // Nothing more reaches the removed connections.
    f.publish(&b, 1, b"x");
    f.commit().await;
    assert!(frames(&a1).is_empty());
    assert_eq!(seqs(&frames(&b)), [1]);
    let (reply, count) = tokio::sync::oneshot::channel();
    f.room.handle(Command::RemoveUser {
        user: "ann".into(),
        reply,
    });
    assert_eq!(count.await.unwrap(), 0);
    f.env.writer.stop().await;
}

/// A deletion whose target retention removed after it was checked stores nothing: it and the
/// requests waiting on it get 406.
#[tokio::test]
async fn a_deletion_whose_target_was_trimmed_meanwhile_stores_nothing() {
    let mut f = Fixture::new(limits()).await;
    let (p, m) = (peer("p"), peer("m"));
    f.publish(&p, 1, b"a");
    f.publish(&p, 2, b"b");
    f.commit().await;
    redact(&mut f, &m, 10, 1);
    redact(&mut f, &m, 11, 1);
    // As a commit with a trim would leave it.
    f.room.earliest = 2;
    f.commit().await;
    let bad = ErrorCode::BadRequest.as_u16();
    let answers = frames(&m);
    assert_eq!(answers.len(), 2);
    for (a, want) in answers.iter().zip([10, 11]) {
        assert!(
            matches!(a, ServerFrame::Err { id: Some(id), code, .. } if *id == want && *code == bad),
            "{a:?}"
        );
    }
    assert_eq!(f.room.head, 2);
    assert!(f.room.redacting.is_empty());
    f.env.writer.stop().await;
}
