//! The room task: the single owner of a room's order, state, subscribers and presence.
//!
//! Writes are pipelined through the store writer with at most one batch in flight per room:
//! requests that arrive while a batch is being committed wait in `pending` and go out together
//! as the next batch. Seqs are assigned when a batch is formed, so a failed commit never leaves
//! a hole: its seqs are simply reused by the next batch.
//!
//! Nothing is delivered or acknowledged before its batch is durable. Subscribers are fed with
//! `try`-pushes into their outboxes; a full outbox closes that connection, never this task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use roomd_protocol::{ErrorCode, Member, ServerFrame, Value};
use tokio::sync::oneshot;

use super::registry::Registry;
use super::replay::Replay;
use super::state::{Effect, Overlay, RoomState};
use super::{Command, Inbox, InboxSender, Mutation};
use crate::peer::{Peer, ReplyError};
use crate::store::reader::{LoadLimits, RoomSnapshot};
use crate::store::{record, CommitResult, RoomBatch, RoomRef, RoomWrite, StoreError, Trim};
use crate::wire;

/// Most commands taken from the inbox at once before a batch is formed.
const DRAIN_MAX: usize = 1024;

struct Sub {
    peer: Arc<Peer>,
    /// Receives live broadcasts; otherwise a replay is in progress.
    live: bool,
    /// Next seq this subscriber must receive while replaying.
    next: u64,
    presence: bool,
    token: u64,
}

/// A request waiting to be written.
enum Pending {
    Publish {
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        dedup: Option<String>,
        received: Instant,
    },
    Mutate {
        peer: Arc<Peer>,
        id: u32,
        op: Mutation,
    },
}

/// An entry of the batch in flight, with who to answer once it is durable.
struct Written {
    seq: u64,
    frame: Bytes,
    reply: Reply,
}

enum Reply {
    Ack {
        peer: Arc<Peer>,
        id: u32,
        dedup: Option<String>,
        received: Instant,
    },
    Done {
        peer: Arc<Peer>,
        id: u32,
        effect: Effect,
    },
}

struct Room {
    name: Arc<str>,
    registry: Arc<Registry>,
    tx: InboxSender,
    id: Option<u64>,
    epoch: u64,
    /// Last durable seq.
    head: u64,
    /// First retained seq.
    earliest: u64,
    state: RoomState,
    /// The newest durable frames, for cheap catch-up of subscribers that are slightly behind.
    cache: VecDeque<(u64, Bytes)>,
    /// Boxed: most rooms never see a `mid`, and a loaded room should stay small.
    dedup: Box<Dedup>,
    subs: HashMap<Arc<str>, Sub>,
    members: HashMap<Arc<str>, Member>,
    pending: Vec<Pending>,
    in_flight: Vec<Written>,
    trim_wanted: bool,
    replays: usize,
    next_token: u64,
    shutting_down: bool,
}

/// Recently stored `mid`s per client, and requests waiting on a `mid` already being written.
#[derive(Default)]
struct Dedup {
    seqs: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
    waiting: HashMap<String, Vec<(Arc<Peer>, u32)>>,
}

pub async fn run(name: Arc<str>, mut rx: Inbox, registry: Arc<Registry>) {
    // The handle was inserted before this task was spawned; a clone lets replay tasks reach us.
    let loaded = Box::pin(load(&registry, &name)).await;
    let unloaded = match (registry.sender(&name), loaded) {
        (Some(tx), Ok(snap)) => {
            Room::new(name.clone(), registry.clone(), tx, snap)
                .run(&mut rx)
                .await
        }
        (_, Err(e)) => {
            tracing::error!(room = %name, error = %e, "room load failed");
            fail_all(&mut rx, ErrorCode::Storage, &e.to_string());
            false
        }
        (None, _) => false,
    };
    // Closing first lets the registry see this inbox is dead and drop its entry, so the next
    // command for the room starts a fresh task instead of hitting a closed channel forever.
    rx.close();
    if !unloaded {
        fail_all(
            &mut rx,
            ErrorCode::Unavailable,
            "room stopped; the server is shutting down",
        );
    }
    registry.stopped(&name, unloaded);
}

async fn load(registry: &Arc<Registry>, name: &Arc<str>) -> Result<RoomSnapshot, StoreError> {
    let cfg = &registry.config.rooms;
    let lim = LoadLimits {
        recent: cfg.cache_entries,
        dedup_max: cfg.dedup_max,
        dedup_since_ms: now_ms().saturating_sub(cfg.dedup_window_secs * 1000),
    };
    let (store, name) = (registry.store.clone(), name.clone());
    tokio::task::spawn_blocking(move || store.load_room(&name, &lim))
        .await
        .map_err(StoreError::Task)?
}

/// Answers every command still queued for a room that stops without running them.
fn fail_all(rx: &mut Inbox, code: ErrorCode, msg: &str) {
    while let Ok(cmd) = rx.try_recv() {
        if let Some((peer, id)) = requester(&cmd) {
            peer.send_err(Some(id), ReplyError::new(code, msg));
        }
    }
}

fn requester(cmd: &Command) -> Option<(&Arc<Peer>, u32)> {
    match cmd {
        Command::Subscribe { peer, id, .. }
        | Command::Unsubscribe { peer, id }
        | Command::Publish { peer, id, .. }
        | Command::Mutate { peer, id, .. }
        | Command::Get { peer, id, .. }
        | Command::List { peer, id, .. }
        | Command::Who { peer, id } => Some((peer, *id)),
        _ => None,
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What became of a room's pending requests.
enum Flushed {
    /// Nothing to write, logged already (relaxed mode), or failed: answered.
    Done,
    /// With the writer: the outcome comes through this.
    Queued(oneshot::Receiver<CommitResult>),
    /// The writer's queue is full: the batch waits to be queued.
    QueueFull(RoomBatch, oneshot::Receiver<CommitResult>),
}

async fn recv_commit(rx: &mut Option<oneshot::Receiver<CommitResult>>) -> CommitResult {
    match rx {
        Some(r) => r
            .await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Closed))),
        None => std::future::pending().await,
    }
}

impl Room {
    fn new(name: Arc<str>, registry: Arc<Registry>, tx: InboxSender, snap: RoomSnapshot) -> Room {
        let mut dedup = Box::<Dedup>::default();
        for (key, seq, ts) in snap.dedup {
            dedup.order.push_back((ts, key.clone()));
            dedup.seqs.insert(key, seq);
        }
        let epoch = match snap.id {
            Some(_) => snap.epoch,
            // Below 2^53 so JavaScript numbers hold it exactly.
            None => rand::random::<u64>() >> 11,
        };
        Room {
            name,
            registry,
            tx,
            id: snap.id,
            epoch,
            head: snap.head,
            earliest: snap.earliest,
            state: RoomState::load(snap.state),
            cache: snap.recent.into(),
            dedup,
            subs: HashMap::new(),
            members: HashMap::new(),
            pending: Vec::new(),
            in_flight: Vec::new(),
            trim_wanted: false,
            replays: 0,
            next_token: 0,
            shutting_down: false,
        }
    }

    /// The room's main loop; returns whether the inbox was closed by an idle unload.
    async fn run(&mut self, rx: &mut Inbox) -> bool {
        let idle_after = Duration::from_secs(self.registry.config.rooms.idle_unload_secs);
        let mut commit: Option<oneshot::Receiver<CommitResult>> = None;
        let mut idle_since = Instant::now();
        // One timer for the room's life, re-armed only when it fires: arming a fresh one each
        // time the room goes quiet (after every commit of a room nobody subscribes to) would
        // cost a timer-wheel insert and removal per batch.
        let idle_timer = tokio::time::sleep(idle_after);
        tokio::pin!(idle_timer);
        loop {
            let quiet = commit.is_none() && self.pending.is_empty();
            if quiet && self.shutting_down {
                return false;
            }
            let idle = quiet && self.subs.is_empty() && self.replays == 0;
            tokio::select! {
                biased;
                res = recv_commit(&mut commit) => {
                    commit = None;
                    self.on_commit(res);
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(*cmd),
                    None => return false,
                },
                () = &mut idle_timer, if idle => {
                    let due = idle_since + idle_after;
                    if Instant::now() >= due && self.registry.remove_if_idle(&self.name, rx) {
                        rx.close();
                        self.forward_leftovers(rx);
                        return true;
                    }
                    // Busy since the timer was armed, or a command just came in.
                    idle_timer.as_mut().reset(due.into());
                }
            }
            if commit.is_none() && (!self.pending.is_empty() || self.trim_wanted) {
                // Whatever else is already waiting joins this batch: one commit and one
                // broadcast for all of it.
                for _ in 0..DRAIN_MAX {
                    match rx.try_recv() {
                        Ok(cmd) => self.handle(*cmd),
                        Err(_) => break,
                    }
                }
                commit = match self.flush() {
                    Flushed::Done => None,
                    Flushed::Queued(wait) => Some(wait),
                    // Boxed: the state of a wait for the writer's queue is on the heap only
                    // while the queue is full.
                    Flushed::QueueFull(batch, wait) => Box::pin(self.submit(batch, wait)).await,
                };
            }
            if !idle {
                idle_since = Instant::now();
            }
        }
    }

    /// Commands that reached the inbox after the room left the registry go to its successor.
    fn forward_leftovers(&mut self, rx: &mut Inbox) {
        while let Ok(cmd) = rx.try_recv() {
            let (registry, name) = (self.registry.clone(), self.name.clone());
            tokio::spawn(async move {
                let _ = registry.send(&name, *cmd).await;
            });
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe {
                peer,
                id,
                since,
                state,
                presence,
                info,
            } => self.subscribe(peer, id, since, state, presence, info),
            Command::Unsubscribe { peer, id } => {
                if self.remove_sub(&peer.id) {
                    peer.send(&ServerFrame::Ok { id });
                } else {
                    peer.send_err(
                        Some(id),
                        ReplyError::new(ErrorCode::NotSubscribed, "not subscribed"),
                    );
                }
            }
            Command::Leave { conn } => {
                self.remove_sub(&conn);
            }
            Command::Publish {
                peer,
                id,
                data,
                mid,
                received,
            } => self.publish(peer, id, data, mid, received),
            Command::Mutate { peer, id, op } => self.pending.push(Pending::Mutate { peer, id, op }),
            Command::Get { peer, id, key } => {
                let entry = self.state.get(&key);
                peer.send(&ServerFrame::Val {
                    id,
                    ver: entry.map_or(0, |e| e.ver),
                    value: entry.map(|e| e.value.clone()),
                    key,
                });
            }
            Command::List {
                peer,
                id,
                prefix,
                after,
                limit,
            } => {
                let (items, more) = self.state.list(&prefix, after.as_deref(), limit);
                peer.send(&ServerFrame::Vals { id, items, more });
            }
            Command::Who { peer, id } => peer.send(&ServerFrame::Who {
                id,
                room: String::from(&*self.name),
                members: self.members.values().cloned().collect(),
            }),
            Command::ReplayPage {
                conn,
                token,
                frames,
                next,
            } => {
                let _ = next.send(self.replay_page(&conn, token, frames));
            }
            Command::Trim => self.trim_wanted = self.id.is_some() && self.replays == 0,
            Command::Shutdown => self.shutting_down = true,
        }
    }

    fn publish(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        data: Vec<u8>,
        mid: Option<String>,
        received: Instant,
    ) {
        let dedup = mid.map(|m| format!("{}\0{}", peer.client, m));
        if let Some(key) = &dedup {
            self.dedup.expire(&self.registry.config.rooms);
            if let Some(&seq) = self.dedup.seqs.get(key) {
                peer.send(&ServerFrame::Ack {
                    id,
                    seq,
                    dup: Some(true),
                });
                return;
            }
            if let Some(waiters) = self.dedup.waiting.get_mut(key) {
                waiters.push((peer, id));
                return;
            }
            self.dedup.waiting.insert(key.clone(), Vec::new());
        }
        self.pending.push(Pending::Publish {
            peer,
            id,
            data,
            dedup,
            received,
        });
    }

    /// Forms the next batch from everything pending and hands it to the writer, unless the
    /// writer's queue is full.
    fn flush(&mut self) -> Flushed {
        let ts = now_ms();
        let max_keys = self.registry.config.limits.keys_per_room;
        let mut seq = self.head;
        let mut entries = Vec::new();
        let mut state = Vec::new();
        let mut written = Vec::new();
        let mut overlay = Overlay::new(&self.state, max_keys);
        // Taken and given back, so its capacity is kept from batch to batch.
        let mut pending = std::mem::take(&mut self.pending);
        for op in pending.drain(..) {
            match op {
                Pending::Publish {
                    peer,
                    id,
                    data,
                    dedup,
                    received,
                } => {
                    seq += 1;
                    let frame = wire::encode(&ServerFrame::Msg {
                        room: String::from(&*self.name),
                        seq,
                        ts,
                        from: String::from(&*peer.id),
                        uid: peer.user.as_deref().map(str::to_string),
                        data,
                    });
                    entries.push((
                        seq,
                        record::encode_log(ts, dedup.as_deref(), wire::payload(&frame)),
                    ));
                    written.push(Written {
                        seq,
                        frame,
                        reply: Reply::Ack {
                            peer,
                            id,
                            dedup,
                            received,
                        },
                    });
                }
                Pending::Mutate { peer, id, op } => match overlay.apply(op) {
                    Err(e) => peer.send_err(Some(id), e),
                    Ok(None) => peer.send(&ServerFrame::Done {
                        id,
                        seq: None,
                        ver: 0,
                        value: None,
                    }),
                    Ok(Some(effect)) => {
                        seq += 1;
                        let frame = wire::encode(&ServerFrame::State {
                            room: String::from(&*self.name),
                            seq,
                            ts,
                            from: String::from(&*peer.id),
                            uid: peer.user.as_deref().map(str::to_string),
                            key: effect.key.clone(),
                            ver: effect.ver,
                            value: effect.entry.as_ref().map(|e| e.value.clone()),
                        });
                        entries.push((seq, record::encode_log(ts, None, wire::payload(&frame))));
                        let rec = effect
                            .entry
                            .as_ref()
                            .map(|e| record::encode_state(e.ver, &e.encoded));
                        state.push((effect.key.clone(), rec));
                        written.push(Written {
                            seq,
                            frame,
                            reply: Reply::Done { peer, id, effect },
                        });
                    }
                },
            }
        }
        self.pending = pending;
        let trim = self.take_trim();
        if written.is_empty() && trim.is_none() {
            return Flushed::Done;
        }
        let room = match self.id {
            Some(id) => RoomRef::Id(id),
            None => RoomRef::New {
                name: self.name.clone(),
                epoch: self.epoch,
            },
        };
        let write = RoomWrite {
            room,
            entries,
            state,
            trim,
        };
        self.in_flight = written;
        // Relaxed mode: logged right here when the log is free, and done.
        let write = match self.registry.writer.try_log(write) {
            Ok(res) => {
                self.on_commit(res);
                return Flushed::Done;
            }
            Err(write) => write,
        };
        let (done, wait) = oneshot::channel();
        match self.registry.writer.try_submit(RoomBatch { write, done }) {
            Ok(Ok(())) => Flushed::Queued(wait),
            Ok(Err(e)) => {
                self.on_commit(Err(Arc::new(e)));
                Flushed::Done
            }
            Err(batch) => Flushed::QueueFull(batch, wait),
        }
    }

    /// Waits for room in the writer's queue (backpressure on a busy room).
    async fn submit(
        &mut self,
        batch: RoomBatch,
        wait: oneshot::Receiver<CommitResult>,
    ) -> Option<oneshot::Receiver<CommitResult>> {
        if let Err(e) = self.registry.writer.submit(batch).await {
            self.on_commit(Err(Arc::new(e)));
            return None;
        }
        Some(wait)
    }

    fn take_trim(&mut self) -> Option<Trim> {
        if !std::mem::take(&mut self.trim_wanted) || self.replays > 0 || self.head == 0 {
            return None;
        }
        let cfg = &self.registry.config.retention;
        let before_seq = match cfg.max_messages {
            0 => 0,
            max => self.head.saturating_sub(max) + 1,
        };
        let older_than_ms =
            (cfg.max_age_secs > 0).then(|| now_ms().saturating_sub(cfg.max_age_secs * 1000));
        Some(Trim {
            before_seq,
            older_than_ms,
            head: self.head,
        })
    }

    fn on_commit(&mut self, res: CommitResult) {
        let written = std::mem::take(&mut self.in_flight);
        let info = match res {
            Ok(info) => info,
            Err(e) => return self.fail_written(written, &e),
        };
        self.id = Some(info.room_id);
        if let Some(earliest) = info.earliest {
            self.earliest = earliest;
            while self.cache.front().is_some_and(|(s, _)| *s < earliest) {
                self.cache.pop_front();
            }
        }
        let cache_max = self.registry.config.rooms.cache_entries;
        // The batch's frames are contiguous WebSocket frames: concatenated once, they cost each
        // subscriber one reference, one queue slot and one wake-up, however many entries the
        // commit carried.
        let batch = match written.as_slice() {
            [one] => one.frame.clone(),
            many => {
                let mut all = BytesMut::with_capacity(many.iter().map(|w| w.frame.len()).sum());
                for w in many {
                    all.extend_from_slice(&w.frame);
                }
                all.freeze()
            }
        };
        self.broadcast(&batch, written.len());
        for w in written {
            self.head = w.seq;
            if cache_max > 0 {
                if self.cache.len() == cache_max {
                    self.cache.pop_front();
                }
                self.cache.push_back((w.seq, w.frame));
            }
            match w.reply {
                Reply::Ack {
                    peer,
                    id,
                    dedup,
                    received,
                } => {
                    crate::metrics::published(received.elapsed());
                    peer.send(&ServerFrame::Ack {
                        id,
                        seq: w.seq,
                        dup: None,
                    });
                    if let Some(key) = dedup {
                        self.dedup.stored(key, w.seq);
                    }
                }
                Reply::Done { peer, id, effect } => {
                    let value = effect
                        .reply_value
                        .then(|| effect.entry.as_ref().map(|e| e.value.clone()))
                        .flatten();
                    peer.send(&ServerFrame::Done {
                        id,
                        seq: Some(w.seq),
                        ver: effect.ver,
                        value,
                    });
                    self.state.apply(effect);
                }
            }
        }
    }

    /// The batch was not stored: answer everyone in it; its seqs will be reused.
    fn fail_written(&mut self, written: Vec<Written>, e: &StoreError) {
        let err = ReplyError::new(ErrorCode::Storage, format!("not stored: {e}"));
        for w in written {
            match w.reply {
                Reply::Ack {
                    peer, id, dedup, ..
                } => {
                    peer.send_err(Some(id), err.clone());
                    for (peer, id) in dedup
                        .and_then(|k| self.dedup.waiting.remove(&k))
                        .unwrap_or_default()
                    {
                        peer.send_err(Some(id), err.clone());
                    }
                }
                Reply::Done { peer, id, .. } => peer.send_err(Some(id), err.clone()),
            }
        }
    }

    /// Queues `frames` (one or more complete WebSocket frames, `entries` log entries) to every
    /// live subscriber.
    fn broadcast(&mut self, frames: &Bytes, entries: usize) {
        let mut slow = Vec::new();
        let mut n = 0;
        for (conn, sub) in &self.subs {
            if sub.live {
                n += entries;
                if sub.peer.outbox.push(frames.clone()).is_err() {
                    slow.push(conn.clone());
                }
            }
        }
        crate::metrics::delivered(n, 0);
        for conn in slow {
            self.remove_sub(&conn);
        }
    }

    fn subscribe(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        since: Option<u64>,
        want_state: bool,
        want_presence: bool,
        info: Option<Value>,
    ) {
        if self.subs.contains_key(&peer.id) {
            return peer.send_err(
                Some(id),
                ReplyError::new(
                    ErrorCode::AlreadySubscribed,
                    "already subscribed to this room",
                ),
            );
        }
        let last = self.head;
        let (first, complete) = match since {
            Some(s) if s < last => {
                let start = s + 1;
                if start < self.earliest {
                    (self.earliest, false)
                } else {
                    (start, true)
                }
            }
            _ => (last + 1, true),
        };
        if let Some(info) = info {
            let member = Member {
                conn: String::from(&*peer.id),
                user: peer.user.as_deref().map(str::to_string),
                info: Some(info),
            };
            self.presence_event(&ServerFrame::Join {
                room: String::from(&*self.name),
                conn: member.conn.clone(),
                user: member.user.clone(),
                info: member.info.clone(),
            });
            self.members.insert(peer.id.clone(), member);
        }
        peer.send(&ServerFrame::Subbed {
            id,
            room: String::from(&*self.name),
            epoch: self.epoch,
            last,
            first,
            earliest: self.earliest.min(last + 1),
            complete,
            state: want_state.then(|| self.state.snapshot()),
            presence: want_presence.then(|| self.members.values().cloned().collect()),
        });
        self.next_token += 1;
        let mut sub = Sub {
            peer,
            live: false,
            next: first,
            presence: want_presence,
            token: self.next_token,
        };
        if !self.catch_up_from_cache(&mut sub) {
            self.start_replay(&sub);
        }
        self.subs.insert(sub.peer.id.clone(), sub);
    }

    /// Queues the entries from `sub.next` to the head from the cache and makes the subscriber
    /// live, if the cache holds them all and they are at most one page.
    fn catch_up_from_cache(&self, sub: &mut Sub) -> bool {
        if sub.next > self.head {
            sub.live = true;
            return true;
        }
        let missing = self.head - sub.next + 1;
        let cached_from = self.cache.front().map_or(u64::MAX, |(s, _)| *s);
        if cached_from > sub.next || missing > self.registry.config.limits.page as u64 {
            return false;
        }
        let skip = (sub.next - cached_from) as usize;
        let bytes: usize = self.cache.iter().skip(skip).map(|(_, f)| f.len()).sum();
        if bytes > self.registry.config.outbox.max_bytes / 2 {
            return false;
        }
        for (_, frame) in self.cache.iter().skip(skip) {
            let _ = sub.peer.outbox.push(frame.clone());
        }
        crate::metrics::delivered(missing as usize, 0);
        sub.next = self.head + 1;
        sub.live = true;
        true
    }

    fn start_replay(&mut self, sub: &Sub) {
        let Some(room_id) = self.id else { return };
        self.replays += 1;
        let replay = Replay {
            store: self.registry.store.clone(),
            room_tx: self.tx.clone(),
            room_id,
            conn: sub.peer.id.clone(),
            token: sub.token,
            outbox: sub.peer.outbox.clone(),
            from: sub.next,
            page: self.registry.config.limits.page,
        };
        tokio::spawn(replay.run());
    }

    /// Queues one replayed page; returns where the replay continues, or `None` once live.
    fn replay_page(
        &mut self,
        conn: &Arc<str>,
        token: u64,
        frames: Vec<(u64, Bytes)>,
    ) -> Option<u64> {
        let head = self.head;
        let sub = self
            .subs
            .get_mut(conn)
            .filter(|s| s.token == token && !s.live)?;
        let read_any = !frames.is_empty();
        let mut n = 0;
        for (seq, frame) in frames {
            // Entries past the head are committed but not yet broadcast: they come live.
            if seq < sub.next || seq > head {
                continue;
            }
            match sub.peer.outbox.push_replay(&frame) {
                Ok(true) => {
                    sub.next = seq + 1;
                    n += 1;
                }
                // The outbox is half full: the rest of this page is read again later.
                Ok(false) | Err(_) => break,
            }
        }
        crate::metrics::delivered(n, 0);
        if sub.peer.outbox.is_closed() {
            self.remove_sub(conn);
            return None;
        }
        let mut sub = self.subs.remove(conn)?;
        if !self.catch_up_from_cache(&mut sub) && !read_any && n == 0 {
            // Nothing readable at `next` although the head is past it. Retention cannot run
            // during a replay, so this would be a bug: go live rather than loop forever.
            tracing::warn!(room = %self.name, next = sub.next, head, "replay found no entries; going live");
            sub.next = head + 1;
            sub.live = true;
        }
        let (live, next) = (sub.live, sub.next);
        self.subs.insert(conn.clone(), sub);
        if live {
            self.replays -= 1;
            None
        } else {
            Some(next)
        }
    }

    fn remove_sub(&mut self, conn: &Arc<str>) -> bool {
        let Some(sub) = self.subs.remove(conn) else {
            return false;
        };
        if !sub.live {
            self.replays = self.replays.saturating_sub(1);
        }
        if let Some(member) = self.members.remove(conn) {
            self.presence_event(&ServerFrame::Leave {
                room: String::from(&*self.name),
                conn: member.conn,
                user: member.user,
            });
        }
        true
    }

    fn presence_event(&mut self, frame: &ServerFrame) {
        let bytes = wire::encode(frame);
        let mut slow = Vec::new();
        for (conn, sub) in &self.subs {
            if sub.presence && sub.peer.outbox.push(bytes.clone()).is_err() {
                slow.push(conn.clone());
            }
        }
        for conn in slow {
            self.remove_sub(&conn);
        }
    }
}

impl Dedup {
    fn stored(&mut self, key: String, seq: u64) {
        for (peer, id) in self.waiting.remove(&key).unwrap_or_default() {
            peer.send(&ServerFrame::Ack {
                id,
                seq,
                dup: Some(true),
            });
        }
        self.order.push_back((now_ms(), key.clone()));
        self.seqs.insert(key, seq);
    }

    fn expire(&mut self, cfg: &crate::config::RoomsConfig) {
        let cutoff = now_ms().saturating_sub(cfg.dedup_window_secs * 1000);
        while let Some((ts, key)) = self.order.front() {
            if *ts >= cutoff && self.order.len() <= cfg.dedup_max {
                break;
            }
            self.seqs.remove(key);
            self.order.pop_front();
        }
    }
}
