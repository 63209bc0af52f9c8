//! Cluster mode: many roomd nodes share rooms through Redis (>= 7.0) or Valkey.
//!
//! - [`keys`]: a room's keys and live channel, under one hash tag.
//! - [`feed`]: the node's pub/sub subscription that brings other nodes' writes to its rooms.
//! - this file: [`Cluster`], the node's connection to Redis and the room operations on it, each
//!   one atomic Function of `functions.lua`.
//!
//! A room's order lives in Redis, not in any node: a node's room task forms a batch as on one
//! node (seqs after its last known one, state checked against its copy of the state) and the
//! `roomd_apply` Function stores it only if the room's last seq is still the one the batch
//! follows; otherwise the node reads what it missed (from the reply's seq on), brings its copy
//! up to date and forms the batch again. So ordering, `mid` de-duplication, compare-and-set and
//! the limits stay one implementation, the room task's, on every engine; a room written from
//! many nodes at once pays for it with retries (`roomd_cluster_write_conflicts_total`).
//!
//! A write is acknowledged once the Function's reply arrives (in strict mode, Redis fsyncs its
//! append-only file before it sends replies), and only then does the node publish the entries
//! to the room's channel: a publish from inside the Function could reach a lagging subscriber
//! before the fsync (see `../shared/design/cluster.md`).

pub(crate) mod feed;
pub(crate) mod keys;
mod primary;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use crate::config::{ClusterConfig, ClusterDurability};
use crate::lifecycle::Lifecycle;
use crate::store::reader::{LoadLimits, RoomSnapshot};
use crate::store::{record, RoomWrite, StoreError};
use feed::{Feed, Member};
use keys::RoomKeys;
use primary::Primary;

const FUNCTIONS: &str = include_str!("functions.lua");

/// Entries one load returns at most (Lua's `unpack` takes about 8,000 values).
const LOAD_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis at {url} {problem}; cluster.durability = \"strict\" needs appendonly yes and appendfsync always (or set cluster.durability = \"relaxed\" and accept the loss window)")]
    Durability { url: String, problem: String },
    #[error("redis at {url} is version {version}; roomd needs Redis >= 7.0 or Valkey")]
    Version { url: String, version: String },
    #[error("sentinel: {0}")]
    Sentinel(String),
}

/// What became of a write sent to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Stored: the room's last seq and first retained seq now.
    Stored { head: u64, earliest: u64 },
    /// Another node wrote first: the room's last seq is `head`.
    Behind { head: u64 },
    /// The room is on another epoch (another node's fence, or this write tripped one).
    Epoch { epoch: u64 },
}

/// A read of a room's log.
pub(crate) struct Range {
    /// The room's epoch (0: no such room).
    pub epoch: u64,
    /// The seq of `recs[0]`.
    pub first: u64,
    /// Entries remain in the direction read.
    pub more: bool,
    /// Log records of consecutive seqs (empty where an entry is missing).
    pub recs: Vec<Vec<u8>>,
}

/// A batch for `roomd_apply`.
pub(crate) struct Apply<'a> {
    pub epoch: u64,
    /// The seq the batch follows.
    pub base: u64,
    pub dedup_max: usize,
    /// Retention: entries below this seq go (0: none).
    pub trim_before: u64,
    pub write: &'a RoomWrite,
}

/// A presence change this node makes, sent to Redis in order by one task.
struct PresenceOp {
    room: Arc<str>,
    conn: Arc<str>,
    /// `None`: the connection left.
    member: Option<Member>,
}

/// Presence changes waiting for Redis, at most (past it they are dropped and logged: a member
/// may then linger on other nodes until this node's instance is gone).
const PRESENCE_QUEUE: usize = 65_536;

/// Ephemeral messages waiting to go to the other nodes, at most, in bytes. They are
/// best-effort (SPEC.md 4.10): past it they are dropped and counted.
const SIGNAL_QUEUE_BYTES: usize = 8 << 20;

/// An ephemeral message on its way to a room's channel.
struct SignalOp {
    channel: String,
    msg: Vec<u8>,
}

/// This node's link to Redis.
pub(crate) struct Cluster {
    node_id: String,
    /// The node id and this process's boot: a restarted node is a new instance, so members
    /// left over from its previous life are told apart from its new ones.
    instance: Arc<str>,
    presence: tokio::sync::mpsc::Sender<PresenceOp>,
    /// Ephemeral messages for the other nodes, in order, and their queued bytes.
    signals: tokio::sync::mpsc::UnboundedSender<SignalOp>,
    signal_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// A node whose heartbeat lapsed this long ago is gone: its members leave.
    node_ttl: Duration,
    /// Instances this node already announced as gone.
    gone: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// The connection to the primary: it reconnects by itself after Redis restarts or the
    /// connection drops (calls made while it is down fail, and are answered 503), and follows a
    /// failover when Sentinel names a new primary.
    primary: Arc<Primary>,
    /// What a new primary must offer (version, durability), checked before it is used.
    cfg: ClusterConfig,
    feed: Feed,
    /// Whether the last health check reached Redis.
    reachable: AtomicBool,
    /// Since when (ms after `started`) Redis has been unreachable; 0: reachable.
    down_since_ms: AtomicU64,
    started: Instant,
    grace: Duration,
    probe: Duration,
}

impl Cluster {
    /// Connects, checks Redis's version and durability, loads the Functions and starts the
    /// node's feed.
    pub(crate) async fn connect(
        cfg: &ClusterConfig,
        default_id: String,
        lifecycle: &Lifecycle,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let conn_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            // Reconnection attempts back off from 10 ms to at most 500 ms apart.
            .set_factor(10)
            .set_max_delay(500)
            .set_number_of_retries(3);
        let primary = Arc::new(Primary::connect(cfg, conn_cfg).await?);
        let mut conn = primary.conn();
        check(&mut conn, cfg).await?;
        load_functions(&mut conn).await?;
        let node_id = if cfg.node_id.is_empty() {
            default_id
        } else {
            cfg.node_id.clone()
        };
        tracing::info!(node = %node_id, durability = ?cfg.durability, "cluster: connected to redis");
        let instance: Arc<str> = Arc::from(format!("{node_id}/{:08x}", rand::random::<u32>()));
        let (presence, rx) = tokio::sync::mpsc::channel(PRESENCE_QUEUE);
        let writer = PresenceWriter {
            primary: primary.clone(),
            instance: instance.clone(),
        };
        let stop = lifecycle.clone();
        lifecycle.spawn_background(async move {
            tokio::select! {
                () = writer.run(rx) => {}
                () = stop.stopping() => {}
            }
        });
        let (signals, rx) = tokio::sync::mpsc::unbounded_channel();
        let signal_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sender = SignalSender {
            primary: primary.clone(),
            queued: signal_bytes.clone(),
        };
        let stop = lifecycle.clone();
        lifecycle.spawn_background(async move {
            tokio::select! {
                () = sender.run(rx) => {}
                () = stop.stopping() => {}
            }
        });
        let cluster = Arc::new(Cluster {
            node_id,
            instance,
            presence,
            signals,
            signal_bytes,
            node_ttl: Duration::from_millis(cfg.node_ttl_ms),
            gone: std::sync::Mutex::default(),
            feed: Feed::start(primary.clone(), lifecycle),
            primary,
            cfg: cfg.clone(),
            reachable: AtomicBool::new(true),
            down_since_ms: AtomicU64::new(0),
            started: Instant::now(),
            grace: Duration::from_millis(cfg.unreachable_grace_ms),
            probe: Duration::from_millis(cfg.probe_ms),
        });
        // Alive before any room loads: another node reading this one's members must not take
        // them for a dead node's.
        cluster.heartbeat().await;
        Ok(cluster)
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn feed(&self) -> &Feed {
        &self.feed
    }

    pub(crate) fn instance(&self) -> &Arc<str> {
        &self.instance
    }

    /// Records a local member (or, with `None`, its leaving) in Redis and tells the other
    /// nodes; in order, off the room's task.
    pub(crate) fn set_presence(&self, room: &Arc<str>, conn: &Arc<str>, member: Option<Member>) {
        let op = PresenceOp {
            room: room.clone(),
            conn: conn.clone(),
            member,
        };
        if self.presence.try_send(op).is_err() {
            tracing::warn!(%room, %conn, "cluster: presence queue full; a change is dropped");
        }
    }

    /// Sends an ephemeral message (its `signal` frame, encoded) to the room's other nodes, in
    /// order, off the room's task; dropped (and counted) when the queue is full.
    pub(crate) fn signal(&self, room: &str, frame: &[u8]) {
        use std::sync::atomic::Ordering;
        let msg = feed::encode_signal(&self.instance, frame);
        let len = msg.len();
        if self.signal_bytes.fetch_add(len, Ordering::Relaxed) + len > SIGNAL_QUEUE_BYTES {
            self.signal_bytes.fetch_sub(len, Ordering::Relaxed);
            return crate::metrics::cluster_signal_dropped();
        }
        let op = SignalOp {
            channel: RoomKeys::new(room).channel,
            msg,
        };
        if self.signals.send(op).is_err() {
            self.signal_bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The room's members held by live node instances other than this one.
    pub(crate) async fn remote_members(
        &self,
        room: &str,
    ) -> Result<Vec<(String, Member)>, StoreError> {
        let keys = RoomKeys::new(room);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&keys.presence);
        let reply = self.call_twice(&cmd).await?;
        let all: Vec<(String, Member)> = array(&reply)
            .unwrap_or_default()
            .chunks_exact(2)
            .filter_map(|kv| {
                let conn = std::str::from_utf8(bytes_of(&kv[0])?).ok()?.to_string();
                Some((conn, Member::decode(bytes_of(&kv[1])?)?))
            })
            .collect();
        let alive = self.alive().await?;
        let (keep, dead): (Vec<_>, Vec<_>) = all
            .into_iter()
            .filter(|(_, m)| *m.instance != *self.instance)
            .partition(|(_, m)| alive.contains(m.instance.as_str()));
        if !dead.is_empty() {
            let mut del = redis::cmd("HDEL");
            del.arg(&keys.presence);
            for (conn, _) in &dead {
                del.arg(conn);
            }
            let _ = self.call(&del).await;
        }
        Ok(keep)
    }

    /// The node instances whose heartbeat has not lapsed.
    async fn alive(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys::NODES)
            .arg(now_ms())
            .arg("+inf")
            .arg("BYSCORE");
        let reply = self.call_twice(&cmd).await?;
        Ok(array(&reply)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| Some(std::str::from_utf8(bytes_of(v)?).ok()?.to_string()))
            .collect())
    }

    /// Renews this instance's heartbeat, and tells the rooms about instances whose heartbeat
    /// lapsed (forgetting them once long gone).
    async fn heartbeat(&self) {
        let ttl = duration_ms(self.node_ttl);
        let now = now_ms();
        let mut beat = redis::cmd("ZADD");
        beat.arg(keys::NODES).arg(now + ttl).arg(&*self.instance);
        if self.call(&beat).await.is_err() {
            return;
        }
        let mut lapsed = redis::cmd("ZRANGE");
        lapsed
            .arg(keys::NODES)
            .arg("-inf")
            .arg(format!("({now}"))
            .arg("BYSCORE")
            .arg("WITHSCORES");
        let Ok(reply) = self.call(&lapsed).await else {
            return;
        };
        for pair in array(&reply).unwrap_or_default().chunks_exact(2) {
            let (Some(name), Some(until)) = (bytes_of(&pair[0]), u64_of(&pair[1])) else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let name: Arc<str> = Arc::from(name);
            if self
                .gone
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone())
            {
                tracing::warn!(instance = %name, "cluster: a node's heartbeat lapsed; its members leave");
                self.feed.node_gone(&name);
            }
            // Every node has had many heartbeats to see it go.
            if now.saturating_sub(until) > 10 * ttl {
                let mut rm = redis::cmd("ZREM");
                rm.arg(keys::NODES).arg(&*name);
                let _ = self.call(&rm).await;
            }
        }
    }

    /// Whether Redis answered the last health check.
    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Checks Redis every quarter of the grace (at most every 500 ms), probes every loaded room
    /// every `cluster.probe_ms`, and calls `on_lost` once each time Redis stays unreachable for
    /// longer than the grace.
    pub(crate) async fn watch(self: Arc<Self>, on_lost: impl Fn() + Send + 'static) {
        let every = (self.grace / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_probe = Instant::now();
        let mut told = false;
        loop {
            tick.tick().await;
            if self.primary.follows_sentinel() {
                self.follow().await;
            }
            let mut conn = self.primary.conn();
            let ok = tokio::time::timeout(every.max(Duration::from_millis(200)), async {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .is_ok_and(|r| r.is_ok());
            let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if ok {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("cluster: redis reachable again");
                    self.feed.probe_all();
                }
                self.down_since_ms.store(0, Ordering::Relaxed);
                told = false;
            } else {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!("cluster: redis unreachable");
                    self.down_since_ms.store(now_ms.max(1), Ordering::Relaxed);
                }
                let since = self.down_since_ms.load(Ordering::Relaxed);
                if !told && now_ms.saturating_sub(since) >= duration_ms(self.grace) {
                    tracing::warn!(grace_ms = duration_ms(self.grace), "cluster: redis unreachable past the grace; closing connections so clients reconnect");
                    on_lost();
                    told = true;
                }
            }
            if ok {
                self.heartbeat().await;
            }
            if ok && last_probe.elapsed() >= self.probe {
                last_probe = Instant::now();
                self.feed.probe_all();
            }
        }
    }

    /// Loads a room (creating its meta if new, with `epoch`) as of one moment.
    pub(crate) async fn load(
        &self,
        room: &str,
        epoch: u64,
        lim: &LoadLimits,
    ) -> Result<RoomSnapshot, StoreError> {
        let keys = RoomKeys::new(room);
        let mut cmd = fcall("roomd_load", &keys.all());
        cmd.arg(epoch)
            .arg(lim.recent.min(LOAD_MAX))
            .arg(lim.dedup_max.min(LOAD_MAX));
        let reply = self.call_twice(&cmd).await?;
        let mut snap = parse_load(&reply).ok_or_else(|| bad_reply("roomd_load", &reply))?;
        snap.dedup.retain(|(_, _, ts)| *ts >= lim.dedup_since_ms);
        Ok(snap)
    }

    /// Stores a batch if the room's last seq is still `base`.
    pub(crate) async fn apply(&self, room: &str, a: &Apply<'_>) -> Result<Applied, StoreError> {
        let keys = RoomKeys::new(room);
        let mut cmd = fcall("roomd_apply", &keys.all());
        // A fresh epoch, taken if this write trips the loss fence.
        let fresh = rand::random::<u64>() >> 11;
        cmd.arg(a.epoch)
            .arg(a.base)
            .arg(fresh)
            .arg(a.dedup_max)
            .arg(a.trim_before)
            .arg(a.write.entries.len());
        for (_, rec) in &a.write.entries {
            let mid = record::decode_log(rec)
                .and_then(|r| r.dedup.map(|key| record::encode_mid(r.ts, key)))
                .unwrap_or_default();
            cmd.arg(rec.as_slice()).arg(mid);
        }
        cmd.arg(a.write.state.len());
        for (key, rec) in &a.write.state {
            cmd.arg(key.as_str())
                .arg(rec.as_deref().unwrap_or_default());
        }
        cmd.arg(a.write.redactions.len());
        for (target, frame) in &a.write.redactions {
            cmd.arg(*target).arg(frame.as_slice());
        }
        let reply = self.call(&cmd).await?;
        let applied = parse_apply(&reply).ok_or_else(|| bad_reply("roomd_apply", &reply))?;
        if let Applied::Epoch { epoch } = applied {
            if epoch == fresh {
                crate::metrics::cluster_fence_trip();
                tracing::warn!(
                    room,
                    epoch,
                    "cluster: redis lost acknowledged writes; the room's epoch rotated"
                );
            }
        }
        Ok(applied)
    }

    /// A key of a room's state as Redis has it now: (ver, deadline, encoded value).
    pub(crate) async fn state_get(
        &self,
        room: &str,
        key: &str,
    ) -> Result<Option<(u64, Option<u64>, Vec<u8>)>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(RoomKeys::new(room).state).arg(key);
        let reply = self.call_twice(&cmd).await?;
        Ok(bytes_of(&reply)
            .and_then(record::decode_state)
            .map(|r| (r.ver, r.exp, r.value.to_vec())))
    }

    /// Tells the other nodes (and this one) about stored entries.
    pub(crate) async fn publish(&self, room: &str, epoch: u64, entries: &[(u64, Vec<u8>)]) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(RoomKeys::new(room).channel)
            .arg(feed::encode(epoch, entries));
        if let Err(e) = self.call(&cmd).await {
            // The others find the entries by the next seq's gap, or their probe.
            tracing::debug!(room, error = %e, "cluster: publish to the room's channel failed");
        }
    }

    /// Log records from `lo` to `hi` (inclusive, clamped to what the room holds), at most
    /// `count`, from the low end or (`back`) the high end. A `fence` above the room's last seq
    /// (a node's last seq: Redis lost writes) rotates the room's epoch instead.
    pub(crate) async fn range(
        &self,
        room: &str,
        lo: u64,
        hi: u64,
        count: usize,
        back: bool,
        fence: u64,
    ) -> Result<Range, StoreError> {
        let keys = RoomKeys::new(room);
        let mut cmd = fcall("roomd_range", &[&keys.meta, &keys.log]);
        let fresh = rand::random::<u64>() >> 11;
        cmd.arg(lo)
            .arg(hi.min(i64::MAX as u64))
            .arg(count.min(LOAD_MAX))
            .arg(if back { "b" } else { "f" })
            .arg(fence)
            .arg(fresh);
        let reply = self.call_twice(&cmd).await?;
        let range = parse_range(&reply).ok_or_else(|| bad_reply("roomd_range", &reply))?;
        if fence > 0 && range.epoch == fresh {
            crate::metrics::cluster_fence_trip();
            tracing::warn!(
                room,
                epoch = fresh,
                fence,
                "cluster: redis lost acknowledged writes; the room's epoch rotated"
            );
        }
        Ok(range)
    }

    /// A replay page: entries from `from` on as WebSocket frames, within `max_bytes` (at
    /// least one).
    pub(crate) async fn read_forward(
        &self,
        room: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<crate::wire::Page, StoreError> {
        let Range { first, recs, .. } = self.range(room, from, u64::MAX, limit, false, 0).await?;
        let mut page = crate::wire::PageFrames::with_capacity(recs.len());
        for (seq, rec) in (first..).zip(&recs) {
            let Some(r) = record::decode_log(rec) else {
                continue;
            };
            if !page.is_empty() && page.payload_bytes() + r.frame.len() > max_bytes {
                break;
            }
            page.push(seq, r.frame);
        }
        Ok(page.finish())
    }

    /// One entry as a WebSocket frame, if stored.
    pub(crate) async fn read_entry(
        &self,
        room: &str,
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let Range { first, recs, .. } = self.range(room, seq, seq, 1, false, 0).await?;
        Ok(recs
            .first()
            .filter(|_| first == seq)
            .and_then(|rec| record::decode_log(rec))
            .map(|r| crate::wire::wrap(r.frame)))
    }

    /// A history page (SPEC.md 4.4), as the embedded store's `history` gives it.
    pub(crate) async fn history(
        &self,
        room: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        let lo = after.map_or(0, |a| a.saturating_add(1));
        let hi = before.map_or(u64::MAX, |b| b.saturating_sub(1));
        if before == Some(0) || lo > hi {
            return Ok((Vec::new(), false));
        }
        let back = after.is_none();
        let Range { mut more, recs, .. } = self.range(room, lo, hi, limit, back, 0).await?;
        let frames: Vec<&[u8]> = recs
            .iter()
            .filter_map(|rec| record::decode_log(rec).map(|r| r.frame))
            .collect();
        // Within the byte budget, counted from the end the page starts at.
        let mut keep = 0;
        let mut bytes = 0;
        let order: Box<dyn Iterator<Item = &&[u8]>> = if back {
            Box::new(frames.iter().rev())
        } else {
            Box::new(frames.iter())
        };
        for f in order {
            if keep > 0 && bytes + f.len() > max_bytes {
                more = true;
                break;
            }
            bytes += f.len();
            keep += 1;
        }
        let kept = if back {
            &frames[frames.len() - keep..]
        } else {
            &frames[..keep]
        };
        Ok((
            kept.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
            more,
        ))
    }

    /// With Sentinel: moves the node to the primary Sentinel names, once it is checked
    /// (version, and durability as configured) and has the Functions. A primary that fails the
    /// check is not used: the node stays unreachable (503, then 4005) and says why.
    async fn follow(&self) {
        let Some(addr) = self.primary.moved().await else {
            return;
        };
        let adopted = async {
            let mut conn = self.primary.open(&addr).await?;
            check(&mut conn, &self.cfg).await?;
            load_functions(&mut conn).await?;
            self.primary.switch(addr.clone(), conn)
        };
        match adopted.await {
            Ok(()) => {
                tracing::warn!(host = %addr.0, port = addr.1, "cluster: Sentinel names a new primary; following it");
                crate::metrics::cluster_failover();
                self.feed.probe_all();
            }
            Err(e) => {
                tracing::error!(host = %addr.0, port = addr.1, error = %e, "cluster: the primary Sentinel names cannot be used");
            }
        }
    }

    /// For reads (and the load, which at most creates a room's meta): the first call after
    /// Redis restarted finds the old connection broken while the manager reconnects.
    async fn call_twice(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        match self.call(cmd).await {
            Ok(v) => Ok(v),
            Err(_) => self.call(cmd).await,
        }
    }

    async fn call(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let start = Instant::now();
        let mut conn = self.primary.conn();
        let mut res = cmd.query_async::<Value>(&mut conn).await;
        if res.as_ref().is_err_and(|e| {
            e.kind() == redis::ErrorKind::NoScriptError
                || e.to_string().contains("Function not found")
        }) {
            // A Redis that came back without its data (no persistence, or a new primary that
            // never had the Functions) gets them again.
            if let Err(e) = load_functions(&mut conn).await {
                tracing::warn!(error = %e, "cluster: loading the Functions again failed");
            }
            res = cmd.query_async::<Value>(&mut conn).await;
        }
        crate::metrics::cluster_engine(start.elapsed());
        res.map_err(|e| StoreError::Engine(e.to_string()))
    }
}

/// Writes this node's presence changes to Redis in the order they happened.
struct PresenceWriter {
    primary: Arc<Primary>,
    instance: Arc<str>,
}

impl PresenceWriter {
    async fn run(self, mut rx: tokio::sync::mpsc::Receiver<PresenceOp>) {
        while let Some(op) = rx.recv().await {
            let keys = RoomKeys::new(&op.room);
            let mut pipe = redis::pipe();
            match &op.member {
                Some(m) => pipe.hset(&keys.presence, &*op.conn, m.encode()).ignore(),
                None => pipe.hdel(&keys.presence, &*op.conn).ignore(),
            };
            pipe.publish(
                &keys.channel,
                feed::encode_presence(&op.conn, op.member.as_ref()),
            )
            .ignore();
            if let Err(e) = pipe.query_async::<()>(&mut self.primary.conn()).await {
                tracing::warn!(instance = %self.instance, room = %op.room, error = %e, "cluster: a presence change did not reach redis");
            }
        }
    }
}

/// Publishes this node's ephemeral messages, as many as are waiting in one pipeline.
struct SignalSender {
    primary: Arc<Primary>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl SignalSender {
    /// Messages sent in one round trip, at most.
    const BATCH: usize = 256;

    async fn run(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<SignalOp>) {
        let mut batch = Vec::with_capacity(Self::BATCH);
        while rx.recv_many(&mut batch, Self::BATCH).await > 0 {
            let mut pipe = redis::pipe();
            let mut bytes = 0;
            for op in batch.drain(..) {
                bytes += op.msg.len();
                pipe.publish(op.channel, op.msg).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut self.primary.conn()).await {
                tracing::debug!(error = %e, "cluster: ephemeral messages did not reach redis");
            }
            self.queued
                .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn load_functions(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(FUNCTIONS)
        .query_async::<String>(conn)
        .await
        .map(drop)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn fcall(name: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(name).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    cmd
}

/// Refuses a Redis that is too old, or (strict) does not fsync every write.
async fn check(conn: &mut ConnectionManager, cfg: &ClusterConfig) -> Result<(), ClusterError> {
    let url = redact_url(&cfg.redis_url);
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(ClusterError::Version { url, version });
    }
    let get = |name: &'static str| {
        let mut c = conn.clone();
        async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<Vec<String>>(&mut c)
                .await
                .map(|kv| kv.get(1).cloned().unwrap_or_default())
        }
    };
    let (aof, fsync, policy) = (
        get("appendonly").await,
        get("appendfsync").await,
        get("maxmemory-policy").await,
    );
    let problem = match (&aof, &fsync) {
        (Ok(a), Ok(f)) if a == "yes" && f == "always" => None,
        (Ok(a), Ok(f)) => Some(format!("has appendonly {a} and appendfsync {f}")),
        (Err(e), _) | (_, Err(e)) => Some(format!("does not answer CONFIG GET ({e})")),
    };
    if let Some(problem) = problem {
        match cfg.durability {
            ClusterDurability::Strict => return Err(ClusterError::Durability { url, problem }),
            _ => {
                tracing::warn!(%url, %problem, "cluster: durability relaxed: a redis crash may lose acknowledged writes (the loss fence then rotates the room's epoch)")
            }
        }
    }
    if let Ok(p) = policy {
        if p != "noeviction" {
            tracing::warn!(%url, policy = %p, "cluster: redis may evict keys under memory pressure (maxmemory-policy is not noeviction): rooms could lose data");
        }
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn bad_reply(function: &str, reply: &Value) -> StoreError {
    StoreError::Engine(format!("unexpected reply from {function}: {reply:?}"))
}

fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        v => std::str::from_utf8(bytes_of(v)?).ok()?.parse().ok(),
    }
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

fn parse_apply(v: &Value) -> Option<Applied> {
    let a = array(v)?;
    match bytes_of(a.first()?)? {
        b"ok" => Some(Applied::Stored {
            head: u64_of(a.get(1)?)?,
            earliest: u64_of(a.get(2)?)?,
        }),
        b"behind" => Some(Applied::Behind {
            head: u64_of(a.get(1)?)?,
        }),
        b"epoch" | b"fenced" => Some(Applied::Epoch {
            epoch: u64_of(a.get(1)?)?,
        }),
        _ => None,
    }
}

fn parse_load(v: &Value) -> Option<RoomSnapshot> {
    let a = array(v)?;
    let (epoch, head, earliest) = (u64_of(a.first()?)?, u64_of(a.get(1)?)?, u64_of(a.get(2)?)?);
    let mut state = Vec::new();
    for kv in array(a.get(3)?)?.chunks_exact(2) {
        let key = String::from_utf8(bytes_of(&kv[0])?.to_vec()).ok()?;
        let rec = record::decode_state(bytes_of(&kv[1])?)?;
        state.push((key, rec.ver, rec.exp, rec.ephemeral, rec.value.to_vec()));
    }
    let mut recent = Vec::new();
    for sr in array(a.get(4)?)?.chunks_exact(2) {
        let rec = record::decode_log(bytes_of(&sr[1])?)?;
        recent.push((u64_of(&sr[0])?, crate::wire::wrap(rec.frame)));
    }
    let mut dedup = Vec::new();
    for ms in array(a.get(5)?)?.chunks_exact(2) {
        let (ts, key) = record::decode_mid(bytes_of(&ms[0])?)?;
        dedup.push((key.to_string(), u64_of(&ms[1])?, ts));
    }
    // Newest first from Redis; the window is kept oldest first.
    dedup.reverse();
    Some(RoomSnapshot {
        id: Some(0),
        epoch,
        head,
        earliest,
        state,
        walked: recent.len(),
        recent,
        dedup,
    })
}

fn parse_range(v: &Value) -> Option<Range> {
    let a = array(v)?;
    let recs = a
        .get(3..)?
        .iter()
        .map(|r| bytes_of(r).map(<[u8]>::to_vec))
        .collect::<Option<Vec<_>>>()?;
    Some(Range {
        epoch: u64_of(a.first()?)?,
        first: u64_of(a.get(1)?)?,
        more: bytes_of(a.get(2)?)? == b"1",
        recs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_loses_its_password_in_messages() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn apply_replies_parse() {
        let s = |x: &str| Value::BulkString(x.as_bytes().to_vec());
        assert_eq!(
            parse_apply(&Value::Array(vec![s("ok"), s("12"), s("3")])),
            Some(Applied::Stored {
                head: 12,
                earliest: 3
            })
        );
        assert_eq!(
            parse_apply(&Value::Array(vec![s("behind"), s("14")])),
            Some(Applied::Behind { head: 14 })
        );
        assert_eq!(
            parse_apply(&Value::Array(vec![s("fenced"), s("99"), s("12")])),
            Some(Applied::Epoch { epoch: 99 })
        );
        assert_eq!(parse_apply(&Value::Array(vec![s("what")])), None);
    }
}
