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
            store,
            writer,
            limits,
            background: tokio_util::task::TaskTracker::new(),
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
    let store = f.env.store.clone();
    let stored =
        tokio::task::spawn_blocking(move || store.read_forward(room_id, 1, 100, usize::MAX))
            .await
            .unwrap()
            .unwrap();
    let stored: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
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
