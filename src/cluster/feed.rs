//! The live path between nodes: each node holds one Redis pub/sub connection, subscribed to the
//! channel of every room it has loaded, and hands what arrives to that room.
//!
//! Pub/sub does not redeliver: a message published while the connection was down, or dropped
//! on the way, is simply not seen. The rooms do not depend on it for correctness, only for
//! speed: a room that sees a seq beyond the next one, or is probed (after a reconnect and on a
//! timer), reads what it missed from the room's log in Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::lifecycle::Lifecycle;

/// Entries as `(seq, log record)`, ascending.
pub(crate) type Entries = Vec<(u64, Vec<u8>)>;

/// What a node's feed tells a loaded room.
pub(crate) enum FeedEvent {
    /// Entries another node (or this one) stored: `(seq, log record)`, ascending.
    Entries { epoch: u64, entries: Entries },
    /// Compare the room's last seq with Redis's and read what is missing.
    Probe,
    /// A connection on some node joined the room's presence (`Some`) or left it.
    Presence {
        conn: String,
        member: Option<Member>,
    },
    /// A node instance stopped heart-beating: its members have left.
    NodeGone(Arc<str>),
    /// An ephemeral message (SPEC.md 4.10) published through node `instance`: its `signal`
    /// frame, encoded.
    Signal { instance: String, frame: Vec<u8> },
}

/// A member of a room's presence held by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The node instance (node id and boot) that holds the connection.
    pub instance: String,
    pub user: Option<String>,
    pub info: Vec<u8>,
}

impl Member {
    /// As stored in the room's presence hash: instance, user (if any), info.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.instance.len() + self.info.len() + 64);
        put_str(&mut out, &self.instance);
        match &self.user {
            Some(u) => {
                out.push(1);
                put_str(&mut out, u);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.info);
        out
    }

    pub(crate) fn decode(raw: &[u8]) -> Option<Member> {
        let (instance, rest) = take_str(raw)?;
        let (user, rest) = match rest.first()? {
            1 => {
                let (u, rest) = take_str(&rest[1..])?;
                (Some(u), rest)
            }
            _ => (None, &rest[1..]),
        };
        Some(Member {
            instance,
            user,
            info: rest.to_vec(),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn take_str(raw: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes(raw.get(..2)?.try_into().ok()?));
    let s = std::str::from_utf8(raw.get(2..2 + len)?).ok()?.to_string();
    Some((s, &raw[2 + len..]))
}

/// A presence change: `P`, then the connection, then the member (absent: it left).
pub(crate) fn encode_presence(conn: &str, member: Option<&Member>) -> Vec<u8> {
    let mut out = vec![b'P'];
    put_str(&mut out, conn);
    if let Some(m) = member {
        out.extend_from_slice(&m.encode());
    }
    out
}

/// An ephemeral message: `S`, then the node instance it came through, then its `signal` frame.
pub(crate) fn encode_signal(instance: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + instance.len() + frame.len());
    out.push(b'S');
    put_str(&mut out, instance);
    out.extend_from_slice(frame);
    out
}

/// How a room takes its feed: the room wraps the event into a command to its own inbox (so the
/// feed does not depend on the room module). Must not block.
pub(crate) type Deliver = Box<dyn Fn(FeedEvent) + Send + Sync>;

/// A published batch: `E`, `epoch`, then per entry `seq`, record length and record
/// (big-endian).
pub(crate) fn encode(epoch: u64, entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let len: usize = entries.iter().map(|(_, r)| 12 + r.len()).sum();
    let mut out = Vec::with_capacity(9 + len);
    out.push(b'E');
    out.extend_from_slice(&epoch.to_be_bytes());
    for (seq, rec) in entries {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&u32::try_from(rec.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(rec);
    }
    out
}

/// What a message on a room's channel says; `None`: not one this version wrote.
pub(crate) fn decode_event(raw: &[u8]) -> Option<FeedEvent> {
    match raw.first()? {
        b'E' => {
            let (epoch, entries) = decode(&raw[1..])?;
            Some(FeedEvent::Entries { epoch, entries })
        }
        b'P' => {
            let (conn, rest) = take_str(&raw[1..])?;
            let member = match rest.is_empty() {
                true => None,
                false => Some(Member::decode(rest)?),
            };
            Some(FeedEvent::Presence { conn, member })
        }
        b'S' => {
            let (instance, frame) = take_str(&raw[1..])?;
            Some(FeedEvent::Signal {
                instance,
                frame: frame.to_vec(),
            })
        }
        _ => None,
    }
}

fn decode(mut raw: &[u8]) -> Option<(u64, Entries)> {
    let epoch = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    raw = &raw[8..];
    let mut entries = Vec::new();
    while !raw.is_empty() {
        let seq = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(raw.get(8..12)?.try_into().ok()?) as usize;
        entries.push((seq, raw.get(12..12 + len)?.to_vec()));
        raw = &raw[12 + len..];
    }
    Some((epoch, entries))
}

enum Change {
    Watch(String, oneshot::Sender<()>),
    Unwatch(String),
}

/// The rooms this node watches, by channel.
#[derive(Clone)]
pub(crate) struct Feed {
    rooms: Arc<Mutex<HashMap<String, Deliver>>>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Feed {
    /// Starts the node's subscriber task.
    pub(crate) fn start(client: redis::Client, lifecycle: &Lifecycle) -> Feed {
        let (changes, rx) = mpsc::unbounded_channel();
        let feed = Feed {
            rooms: Arc::default(),
            changes,
        };
        let task = Subscriber {
            client,
            rooms: feed.rooms.clone(),
            changes: rx,
        };
        let stop = lifecycle.clone();
        lifecycle.spawn_background(async move {
            tokio::select! {
                () = task.run() => {}
                () = stop.stopping() => {}
            }
        });
        feed
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Deliver>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to a room's channel; resolves once Redis confirmed the subscription (or the
    /// connection is down: the room's probe covers what it misses).
    pub(crate) fn watch(&self, channel: &str, deliver: Deliver) -> oneshot::Receiver<()> {
        self.lock().insert(channel.to_owned(), deliver);
        let (done, wait) = oneshot::channel();
        let _ = self.changes.send(Change::Watch(channel.to_owned(), done));
        wait
    }

    pub(crate) fn unwatch(&self, channel: &str) {
        self.lock().remove(channel);
        let _ = self.changes.send(Change::Unwatch(channel.to_owned()));
    }

    /// Asks every watched room to compare its last seq with Redis's.
    pub(crate) fn probe_all(&self) {
        for deliver in self.lock().values() {
            deliver(FeedEvent::Probe);
        }
    }

    /// Tells every watched room that a node instance is gone.
    pub(crate) fn node_gone(&self, instance: &Arc<str>) {
        for deliver in self.lock().values() {
            deliver(FeedEvent::NodeGone(instance.clone()));
        }
    }
}

struct Subscriber {
    client: redis::Client,
    rooms: Arc<Mutex<HashMap<String, Deliver>>>,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl Subscriber {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Deliver>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects, subscribes to every watched room, and serves until the connection drops; then
    /// again, after a pause, for ever.
    async fn run(mut self) {
        let mut first = true;
        loop {
            match self.client.get_async_pubsub().await {
                Ok(pubsub) => {
                    if !first {
                        crate::metrics::cluster_pubsub_reconnect();
                    }
                    first = false;
                    self.serve(pubsub).await;
                }
                Err(e) => tracing::warn!(error = %e, "cluster: pub/sub connection failed"),
            }
            // Meanwhile, watch requests are answered at once: the rooms probe instead.
            let wait = tokio::time::sleep(Duration::from_millis(250));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    change = self.changes.recv() => match change {
                        Some(Change::Watch(_, done)) => drop(done),
                        Some(Change::Unwatch(_)) => {}
                        None => return,
                    },
                }
            }
        }
    }

    async fn serve(&mut self, pubsub: redis::aio::PubSub) {
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = self.lock().keys().cloned().collect();
        for ch in channels {
            if sink.subscribe(&ch).await.is_err() {
                return;
            }
        }
        // Whatever was published while no connection listened.
        self.probe_all();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.dispatch(&msg),
                    None => {
                        tracing::warn!("cluster: pub/sub connection lost; reconnecting");
                        return;
                    }
                },
                change = self.changes.recv() => match change {
                    Some(Change::Watch(ch, done)) => {
                        // Watched again (or still): subscribing twice is harmless.
                        if self.lock().contains_key(&ch) && sink.subscribe(&ch).await.is_err() {
                            return;
                        }
                        let _ = done.send(());
                    }
                    // Unless the room was loaded again meanwhile.
                    Some(Change::Unwatch(ch)) => {
                        if !self.lock().contains_key(&ch) && sink.unsubscribe(&ch).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }

    fn probe_all(&self) {
        for deliver in self.lock().values() {
            deliver(FeedEvent::Probe);
        }
    }

    fn dispatch(&self, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let Some(event) = decode_event(msg.get_payload_bytes()) else {
            tracing::warn!(channel, "cluster: a message this node cannot read; ignored");
            return;
        };
        if let Some(deliver) = self.lock().get(channel) {
            deliver(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_to_what_was_encoded() {
        let entries = vec![(7, b"abc".to_vec()), (8, Vec::new()), (9, vec![0; 300])];
        let raw = encode(42, &entries);
        assert_eq!(decode(&raw[1..]), Some((42, entries)));
        assert_eq!(decode(&raw[1..raw.len() - 1]), None);
        assert_eq!(decode(&raw[1..4]), None);
        assert!(decode_event(b"X").is_none());
    }

    #[test]
    fn presence_changes_decode_to_what_was_encoded() {
        let m = Member {
            instance: "n1/abc".into(),
            user: Some("ada".into()),
            info: vec![0x81, 0xa1, 0x6e],
        };
        assert_eq!(Member::decode(&m.encode()), Some(m.clone()));
        let anon = Member {
            user: None,
            ..m.clone()
        };
        assert_eq!(Member::decode(&anon.encode()), Some(anon));
        match decode_event(&encode_presence("c1", Some(&m))) {
            Some(FeedEvent::Presence { conn, member }) => {
                assert_eq!((conn.as_str(), member), ("c1", Some(m)));
            }
            _ => panic!(),
        }
        match decode_event(&encode_presence("c1", None)) {
            Some(FeedEvent::Presence { conn, member: None }) => assert_eq!(conn, "c1"),
            _ => panic!(),
        }
    }

    #[test]
    fn a_signal_decodes_to_what_was_encoded() {
        match decode_event(&encode_signal("n2/0001", b"\x85frame")) {
            Some(FeedEvent::Signal { instance, frame }) => {
                assert_eq!(
                    (instance.as_str(), frame.as_slice()),
                    ("n2/0001", &b"\x85frame"[..])
                );
            }
            _ => panic!(),
        }
        assert!(decode_event(b"S\x00").is_none());
    }
}
