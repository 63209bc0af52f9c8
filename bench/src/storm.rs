//! Restart storm (issue #19): many subscribed connections over many rooms, a steady publisher,
//! and the server restarted under them (`kill -9` or SIGTERM) on the same port. Every client
//! reconnects with the SDK's backoff (full jitter, 250 ms doubling up to 10 s, as
//! `sdk-js/src/backoff.ts`); roomd subscribers resume with `since` = the last seq they got, the
//! roomd publisher resends its unacknowledged publishes with the same `mid` (and `client`), and
//! NATS clients resubscribe (core NATS cannot resume) while the publisher buffers what it
//! publishes while disconnected, as nats.go does.
//!
//! Payloads carry the room's publish counter, so a subscriber counts what it missed and what it
//! got twice; a roomd subscriber also checks that seq k holds the room's k-th publish (a
//! retried publish stored twice would shift every later one).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::procstat::Sample;
use crate::report::Cell;
use crate::scenario::Ctx;
use crate::servers::{Broker, Durability, Server};
use crate::ws::Target;
use crate::{client, nats_client, roomd_client, ws, BenchError};

/// The publisher's `client` (SPEC 5.3: a `mid` de-duplicates per user and `client`).
pub const PUB_PATH: &str = "/ws?client=bench-storm";

#[derive(Debug, Clone, Copy)]
pub struct Storm {
    pub conns: u32,
    pub rooms: u32,
    pub rate: f64,
    pub kill: bool,
}

/// Full-jitter exponential backoff, as the SDK's: a delay drawn from [0, min(10 s, 250 ms ·
/// 2^attempt)]. A small xorshift per client: the jitter needs spread, not quality.
pub struct Backoff {
    attempt: u32,
    state: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let ceiling = (250u64 << self.attempt.min(6)).min(10_000);
        self.attempt += 1;
        Duration::from_millis(self.state % (ceiling + 1))
    }
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubReport {
    /// Publishes it never got (counter gaps), and counters it got twice.
    pub missed: u64,
    pub dups: u64,
    /// roomd: seq k not holding the room's k-th publish.
    pub misplaced: u64,
    /// Its next expected counter at the end (= publishes it got in order).
    pub next: u64,
    /// When it was subscribed again after the restart, and when it had every message the
    /// room held when the server went down.
    pub resubbed: Option<Instant>,
    pub caught_up: Option<Instant>,
}

/// Shared with every subscriber: the room heads to catch up to (set at the restart).
pub struct Marks {
    pub targets: watch::Receiver<Option<Arc<Vec<u64>>>>,
    pub restarted: watch::Receiver<bool>,
    pub stop: watch::Receiver<bool>,
}

impl SubReport {
    /// Handles publish counter `k` of the room (0-based).
    pub fn on_counter(&mut self, k: u64) {
        if k < self.next {
            self.dups += 1;
            return;
        }
        self.missed += k - self.next;
        self.next = k + 1;
    }

    pub fn check_caught_up(&mut self, room: u32, targets: &Option<Arc<Vec<u64>>>) {
        if self.caught_up.is_none() {
            if let Some(t) = targets {
                if self.next >= t[room as usize] {
                    self.caught_up = Some(Instant::now());
                    CAUGHT.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The room heads the publisher has seen acknowledged (roomd) or sent (NATS), per room.
pub struct Heads {
    pub published: Vec<AtomicU64>,
}

impl Heads {
    pub fn new(rooms: u32) -> Heads {
        Heads {
            published: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.published
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }
}

pub fn room_name(broker: Broker, r: u32) -> String {
    match broker {
        Broker::Roomd => format!("storm-{r}"),
        Broker::Nats => format!("storm.{r}"),
    }
}

/// Reads `TcpExt: ListenOverflows` from `/proc/net/netstat` (what `nstat` reports).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

pub async fn storm(ctx: &Ctx, broker: Broker, s: Storm) -> Result<Cell, BenchError> {
    let mut slot = Some(Server::start(broker, &ctx.bins, Durability::Durable)?);
    let result = run(ctx, broker, s, &mut slot).await;
    Server::finish(slot, result)
}

async fn run(
    ctx: &Ctx,
    broker: Broker,
    s: Storm,
    slot: &mut Option<Server>,
) -> Result<Cell, BenchError> {
    let server = slot.as_ref().expect("a server is running");
    let target = client::target(broker, server, 4 * 1024);
    let (targets_tx, targets_rx) = watch::channel(None);
    let (restarted_tx, restarted_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subs = Vec::with_capacity(s.conns as usize);
    let setup = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..s.conns {
        let (ready, rx) = oneshot::channel();
        let marks = Marks {
            targets: targets_rx.clone(),
            restarted: restarted_rx.clone(),
            stop: stop_rx.clone(),
        };
        let room = i % s.rooms;
        let args = (
            target,
            ws::source(i),
            room,
            room_name(broker, room),
            marks,
            ready,
        );
        subs.push(tokio::spawn(subscriber(broker, args, u64::from(i))));
        pending.push_back(rx);
        if pending.len() >= 128 {
            wait_ready(pending.pop_front()).await?;
        }
    }
    while let Some(rx) = pending.pop_front() {
        wait_ready(Some(rx)).await?;
    }
    println!(
        "# storm {}: {} subscribers in {:.1} s",
        broker.name(),
        s.conns,
        setup.elapsed().as_secs_f64()
    );
    let heads = Arc::new(Heads::new(s.rooms));
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(publisher(broker, target, s, heads.clone(), pub_stop_rx));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The restart, on the same port.
    let overflows0 = listen_overflows();
    let old = slot.take().expect("a server is running");
    // Set first: a client may be back before `restart_same_port` has seen the server listen.
    let _ = restarted_tx.send(true);
    let down = Instant::now();
    let server = slot.insert(old.restart_same_port(&ctx.bins, Durability::Durable, s.kill)?);
    let listening = Instant::now();
    // What each room held when it went down: everything acknowledged (roomd), or sent (NATS).
    let targets = Arc::new(heads.snapshot());
    let _ = targets_tx.send(Some(targets.clone()));
    let cpu0 = Sample::read(server.pid).map_err(|e| BenchError::io("read /proc", e))?;
    let mut peak_rss = cpu0.rss_kib;
    // Until every subscriber is back (bounded), sampling the server's RSS.
    let deadline = listening + Duration::from_secs(60);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(now) = Sample::read(server.pid) {
            peak_rss = peak_rss.max(now.rss_kib);
        }
        if subs.iter().all(|h| h.is_finished()) {
            break;
        }
        if CAUGHT.load(Ordering::Relaxed) >= u64::from(s.conns) {
            break;
        }
    }
    let cpu1 = Sample::read(server.pid).map_err(|e| BenchError::io("read /proc", e))?;
    let overflows = listen_overflows().saturating_sub(overflows0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = pub_stop_tx.send(true);
    let pubs = publisher
        .await
        .map_err(|e| BenchError::Protocol(format!("publisher panicked: {e}")))??;
    // Let the last messages arrive, then stop everyone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let final_heads = heads.snapshot();
    let mut reports = Vec::with_capacity(subs.len());
    for h in subs {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), h).await {
            reports.push(r);
        }
    }
    CAUGHT.store(0, Ordering::Relaxed);
    Ok(cell(
        broker,
        s,
        &Outcome {
            reports,
            final_heads,
            listening,
            down,
            cpu: cpu0.cpu_secs_until(&cpu1),
            peak_rss,
            overflows,
            pubs,
        },
    ))
}

/// Subscribers caught up in this cell (reset per cell).
pub static CAUGHT: AtomicU64 = AtomicU64::new(0);

async fn wait_ready(
    rx: Option<oneshot::Receiver<Result<(), BenchError>>>,
) -> Result<(), BenchError> {
    let Some(rx) = rx else { return Ok(()) };
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(BenchError::Protocol("subscriber task ended".into())),
        Err(_) => Err(BenchError::Timeout("storm subscriber setup")),
    }
}

pub type SubSetup = (
    Target,
    Ipv4Addr,
    u32,
    String,
    Marks,
    oneshot::Sender<Result<(), BenchError>>,
);

/// A storm subscriber's connection loop, the same for every broker: tries `attempt` until it
/// connects (waiting `backoff` between failures), reports the first success on `ready` (a
/// first failure too, which ends the subscriber) and the first one after the restart in
/// `report.resubbed`. `None`: told to stop, or the first attempt failed.
pub async fn connect<C, F, Fut>(
    attempt: F,
    report: &mut SubReport,
    ready: &mut Option<oneshot::Sender<Result<(), BenchError>>>,
    marks: &mut Marks,
    backoff: &mut Backoff,
) -> Option<C>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<C, BenchError>>,
{
    loop {
        let got = tokio::select! {
            got = attempt() => got,
            _ = marks.stop.changed() => return None,
        };
        match got {
            Ok(c) => {
                backoff.reset();
                match ready.take() {
                    Some(tx) => drop(tx.send(Ok(()))),
                    None if *marks.restarted.borrow() && report.resubbed.is_none() => {
                        report.resubbed = Some(Instant::now());
                    }
                    None => {}
                }
                return Some(c);
            }
            Err(e) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = marks.stop.changed() => return None,
                }
            }
        }
    }
}

async fn subscriber(broker: Broker, args: SubSetup, seed: u64) -> SubReport {
    match broker {
        Broker::Roomd => roomd_client::storm_subscriber(args, Backoff::new(seed)).await,
        Broker::Nats => nats_client::storm_subscriber(args, Backoff::new(seed)).await,
    }
}

/// What the publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PubReport {
    pub sent: u64,
    /// roomd: publishes sent again (same `mid`) after a reconnect; NATS: publishes buffered
    /// while disconnected and flushed after.
    pub resent: u64,
    pub unacked: u64,
}

async fn publisher(
    broker: Broker,
    target: Target,
    s: Storm,
    heads: Arc<Heads>,
    stop: watch::Receiver<bool>,
) -> Result<PubReport, BenchError> {
    match broker {
        Broker::Roomd => {
            let mut t = target;
            t.path = PUB_PATH;
            roomd_client::storm_publisher(t, s, heads, stop, Backoff::new(u64::MAX)).await
        }
        Broker::Nats => {
            nats_client::storm_publisher(target, s, heads, stop, Backoff::new(u64::MAX)).await
        }
    }
}

struct Outcome {
    reports: Vec<SubReport>,
    final_heads: Vec<u64>,
    listening: Instant,
    down: Instant,
    cpu: f64,
    peak_rss: u64,
    overflows: u64,
    pubs: PubReport,
}

fn cell(broker: Broker, s: Storm, o: &Outcome) -> Cell {
    let n = o.reports.len();
    let since =
        |t: Option<Instant>| t.map(|t| t.saturating_duration_since(o.listening).as_secs_f64());
    let mut caught: Vec<f64> = o
        .reports
        .iter()
        .filter_map(|r| since(r.caught_up))
        .collect();
    let mut resub: Vec<f64> = o.reports.iter().filter_map(|r| since(r.resubbed)).collect();
    caught.sort_by(f64::total_cmp);
    resub.sort_by(f64::total_cmp);
    let pct = |v: &[f64], q: f64| {
        if v.len() < n || v.is_empty() {
            // Not everyone got there: the percentile of everyone is unknown past that.
            let k = ((q * n as f64).ceil() as usize).max(1);
            return v.get(k - 1).copied().unwrap_or(f64::NAN);
        }
        v[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    let rooms = s.rooms as usize;
    // At the end every subscriber should have every publish of its room.
    let short: u64 = o
        .reports
        .iter()
        .enumerate()
        .map(|(i, r)| o.final_heads[i % rooms].saturating_sub(r.next))
        .sum();
    let sum = |f: fn(&SubReport) -> u64| o.reports.iter().map(f).sum::<u64>() as f64;
    Cell {
        scenario: "storm",
        params: vec![
            ("conns", u64::from(s.conns)),
            ("rooms", u64::from(s.rooms)),
            ("rate", s.rate as u64),
            ("kill9", u64::from(s.kill)),
        ],
        broker: broker.name().into(),
        metrics: vec![
            ("caught_up_p50_s", pct(&caught, 0.5)),
            ("caught_up_p99_s", pct(&caught, 0.99)),
            ("caught_up_all_s", pct(&caught, 1.0)),
            ("resubbed_p50_s", pct(&resub, 0.5)),
            ("resubbed_p99_s", pct(&resub, 0.99)),
            ("resubbed_all_s", pct(&resub, 1.0)),
            ("caught_up", caught.len() as f64),
            ("resubbed", resub.len() as f64),
            ("subscribers", n as f64),
            ("missed", sum(|r| r.missed) + short as f64),
            ("dups", sum(|r| r.dups)),
            ("misplaced", sum(|r| r.misplaced)),
            (
                "restart_s",
                o.listening.duration_since(o.down).as_secs_f64(),
            ),
            ("server_cpu_s", o.cpu),
            ("server_peak_rss_mib", o.peak_rss as f64 / 1024.0),
            ("listen_overflows", o.overflows as f64),
            ("published", o.final_heads.iter().sum::<u64>() as f64),
            ("pub_resent", o.pubs.resent as f64),
            ("pub_sent", o.pubs.sent as f64),
            ("pub_unacked", o.pubs.unacked as f64),
        ],
    }
}
