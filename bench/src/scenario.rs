//! The four scenarios. Each cell starts its server fresh, measures, and stops it by PID.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Barrier};
use tokio::task::JoinHandle;

use crate::client::{self, DurableArgs, Pacing, PubArgs, SubArgs};
use crate::cluster::{Calls, Deployment};
use crate::procstat::{self, Sample};
use crate::report::Cell;
use crate::servers::{Binaries, Broker, Durability, Server};
use crate::track::{Flow, Totals};
use crate::ws::{self, Target};
use crate::{nats_client, stats, BenchError};

/// Handshakes in flight at once while a cell sets up its connections.
const CONNECT_CONCURRENCY: usize = 128;
/// How long a cell waits for in-flight messages after publishing stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Settings shared by every cell.
pub struct Ctx {
    pub bins: Binaries,
    pub duration: Duration,
    /// Per-publisher window override for fan-out (messages not yet delivered to everyone).
    pub window: Option<u64>,
}

/// Where a cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server, in the main matrix.
    Single,
    /// One roomd, in the cluster matrix (the baseline its cluster cells are compared with).
    Beside,
    /// This many roomd nodes sharing one Redis.
    Cluster(usize),
}

impl Topology {
    fn nodes(self) -> usize {
        match self {
            Topology::Cluster(n) => n,
            _ => 0,
        }
    }

    /// The cell's scenario name: the cluster matrix's cells are kept apart from the main ones.
    fn scenario(self, name: &'static str) -> &'static str {
        match (self, name) {
            (Topology::Single, _) => name,
            (_, "fanout") => "cluster-fanout",
            (_, "durable") => "cluster-durable",
            _ => name,
        }
    }
}

/// Runs `body` against a fresh deployment and always stops it afterwards.
async fn with_deployment<F, Fut>(
    ctx: &Ctx,
    broker: Broker,
    durability: Durability,
    topology: Topology,
    body: F,
) -> Result<Cell, BenchError>
where
    F: FnOnce(Arc<Deployment>) -> Fut,
    Fut: std::future::Future<Output = Result<Cell, BenchError>>,
{
    let dep = Arc::new(Deployment::start(
        broker,
        topology.nodes(),
        &ctx.bins,
        durability,
    )?);
    let result = body(dep.clone()).await;
    let dep =
        Arc::try_unwrap(dep).map_err(|_| BenchError::Setup("deployment still shared".into()))?;
    let result =
        result.map_err(|e| BenchError::Setup(format!("{e}\nserver log tail:\n{}", dep.log_tail())));
    dep.stop();
    result
}

/// Runs `body` against a fresh server and always stops the server afterwards.
async fn with_server<F, Fut>(
    ctx: &Ctx,
    broker: Broker,
    durability: Durability,
    body: F,
) -> Result<Cell, BenchError>
where
    F: FnOnce(Arc<Server>) -> Fut,
    Fut: std::future::Future<Output = Result<Cell, BenchError>>,
{
    let server = Arc::new(Server::start(broker, &ctx.bins, durability)?);
    let result = body(server.clone()).await;
    let server =
        Arc::try_unwrap(server).map_err(|_| BenchError::Setup("server still shared".into()))?;
    let result = result
        .map_err(|e| BenchError::Setup(format!("{e}\nserver log tail:\n{}", server.log_tail())));
    server.stop();
    result
}

/// Redis's share of a cell: CPU and command counts between two readings.
struct RedisUse {
    port: u16,
    cpu: Sample,
    calls: Calls,
}

impl RedisUse {
    fn start(dep: &Deployment) -> Option<RedisUse> {
        let r = dep.redis.as_ref()?;
        Some(RedisUse {
            port: r.port,
            cpu: dep.redis_sample()?,
            calls: Calls::read(r.port),
        })
    }

    /// Redis CPU seconds, `FCALL`s, `PUBLISH`es and all commands since `start`, per `per`
    /// (publishes acked or delivered), as metrics named with `unit`.
    fn metrics(&self, dep: &Deployment, per: f64) -> Vec<(&'static str, f64)> {
        let cpu = dep
            .redis_sample()
            .map_or(f64::NAN, |after| self.cpu.cpu_secs_until(&after));
        let calls = Calls::read(self.port).since(&self.calls);
        println!("# redis commands per publish: {}", calls.breakdown(per));
        vec![
            ("redis_cpu_s", cpu),
            ("redis_cpu_us_per_publish", cpu * 1e6 / per),
            ("redis_fcalls_per_publish", calls.fcall as f64 / per),
            ("redis_publishes_per_publish", calls.publish as f64 / per),
            ("redis_commands_per_publish", calls.all as f64 / per),
        ]
    }
}

/// Batches a node formed again because another node wrote the room first.
const CONFLICTS: &str = "roomd_cluster_write_conflicts_total";

/// The sum of a counter over the nodes' `/metrics` (NaN if a node does not answer).
fn nodes_counter(dep: &Deployment, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut sum = 0.0;
    for s in &dep.servers {
        let text = std::net::TcpStream::connect(s.ws_addr).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
            let mut out = String::new();
            c.read_to_string(&mut out)?;
            Ok(out)
        });
        let value = text.ok().and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix(name)
                    .filter(|rest| rest.starts_with(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        });
        // A counter never incremented is not exported yet: zero.
        sum += value.unwrap_or(0.0);
    }
    sum
}

/// Waits for each connection's ready signal, keeping at most [`CONNECT_CONCURRENCY`] pending.
struct Admission {
    pending: VecDeque<oneshot::Receiver<Result<(), BenchError>>>,
    failed: u64,
    first_error: Option<BenchError>,
}

impl Admission {
    fn new() -> Admission {
        Admission {
            pending: VecDeque::new(),
            failed: 0,
            first_error: None,
        }
    }

    async fn push(&mut self, rx: oneshot::Receiver<Result<(), BenchError>>) {
        self.pending.push_back(rx);
        if self.pending.len() >= CONNECT_CONCURRENCY {
            self.settle_one().await;
        }
    }

    async fn settle_one(&mut self) {
        if let Some(rx) = self.pending.pop_front() {
            let r = tokio::time::timeout(Duration::from_secs(60), rx).await;
            let err = match r {
                Ok(Ok(Ok(()))) => return,
                Ok(Ok(Err(e))) => e,
                Ok(Err(_)) => BenchError::Protocol("connection task ended".into()),
                Err(_) => BenchError::Timeout("connection setup"),
            };
            self.failed += 1;
            self.first_error.get_or_insert(err);
        }
    }

    async fn finish(mut self) -> (u64, Option<BenchError>) {
        while !self.pending.is_empty() {
            self.settle_one().await;
        }
        (self.failed, self.first_error)
    }
}

/// The parameters of a fan-out or fixed-rate latency cell.
#[derive(Debug, Clone, Copy)]
pub struct FanOut {
    pub subs: u32,
    pub pubs: usize,
    pub size: usize,
    /// `None`: as fast as the window allows; `Some(r)`: r messages per second in total.
    pub rate: Option<f64>,
}

impl FanOut {
    /// The per-publisher window: enough messages in flight to keep the server busy, few enough
    /// that a subscriber's queue stays well under any broker's slow-consumer bound.
    fn window(&self, ctx: &Ctx) -> u64 {
        let total = (256_000 / u64::from(self.subs)).clamp(32, 1024);
        ctx.window
            .unwrap_or((total / self.pubs as u64).max(2))
            .min(Flow::MAX_WINDOW)
    }
}

pub async fn fanout(
    ctx: &Ctx,
    broker: Broker,
    durability: Durability,
    topology: Topology,
    f: FanOut,
) -> Result<Cell, BenchError> {
    let window = f.window(ctx);
    let duration = ctx.duration;
    with_deployment(ctx, broker, durability, topology, move |dep| async move {
        stats::reset();
        let pids = dep.pids();
        // Subscribers and publishers spread over the nodes, round robin.
        let targets: Vec<Target> = dep
            .servers
            .iter()
            .map(|s| client::target(broker, s, 64 * 1024))
            .collect();
        let target = |i: usize| targets[i % targets.len()];
        // A valid roomd room name and a valid NATS subject.
        let room = "fanout".to_string();
        let flow = Arc::new(Flow::new(f.subs, f.pubs));
        let totals = Arc::new(Totals::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let setup = Instant::now();
        let mut subs: Vec<JoinHandle<()>> = Vec::with_capacity(f.subs as usize);
        let mut admission = Admission::new();
        for i in 0..f.subs {
            let (ready, rx) = oneshot::channel();
            let args = SubArgs {
                target: target(i as usize),
                src: ws::source(i),
                room: room.clone(),
                flow: flow.clone(),
                totals: totals.clone(),
                stop: stop_rx.clone(),
                ready,
            };
            subs.push(tokio::spawn(client::subscriber(broker, args)));
            admission.push(rx).await;
        }
        let (failed, err) = admission.finish().await;
        if let Some(e) = err {
            let _ = stop_tx.send(true);
            return Err(BenchError::Setup(format!(
                "{failed} of {} subscribers failed: {e}",
                f.subs
            )));
        }
        let setup_s = setup.elapsed().as_secs_f64();

        let pacing = match f.rate {
            Some(r) => Pacing::Rate(r / f.pubs as f64),
            None => Pacing::Window(window),
        };
        let fsync_us = procstat::fsync_probe_us();
        let before = Sample::read_all(&pids).map_err(|e| BenchError::io("read /proc", e))?;
        let redis = RedisUse::start(&dep);
        let conflicts_before = nodes_counter(&dep, CONFLICTS);
        let client_before =
            Sample::read(std::process::id()).map_err(|e| BenchError::io("read /proc", e))?;
        let busy_before = procstat::machine_busy_ticks();
        let start = Instant::now() + Duration::from_millis(100);
        let pubs: Vec<_> = (0..f.pubs)
            .map(|p| {
                tokio::spawn(client::publisher(
                    broker,
                    PubArgs {
                        target: target(p),
                        src: ws::source(f.subs + p as u32),
                        room: room.clone(),
                        index: p,
                        size: f.size,
                        flow: flow.clone(),
                        pacing,
                        start,
                        duration,
                    },
                ))
            })
            .collect();
        let mut accepted = Vec::with_capacity(f.pubs);
        let (mut sent, mut errors) = (0, 0);
        for h in pubs {
            let r = h
                .await
                .map_err(|e| BenchError::Protocol(format!("publisher panicked: {e}")))??;
            accepted.push(r.accepted);
            sent += r.sent;
            errors += r.errors;
        }
        let drain_until = Instant::now() + DRAIN;
        while !flow.all_complete(&accepted) && Instant::now() < drain_until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let end = Instant::now();
        let after = Sample::read_all(&pids).map_err(|e| BenchError::io("read /proc", e))?;
        let client_after =
            Sample::read(std::process::id()).map_err(|e| BenchError::io("read /proc", e))?;
        let busy = procstat::machine_busy_ticks().saturating_sub(busy_before) as f64
            / procstat::clk_tck() as f64;
        let _ = stop_tx.send(true);
        for h in subs {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
        let secs = end.saturating_duration_since(start).as_secs_f64();
        let (hist, deliveries) = stats::merged();
        let [p50, p99, p999] = stats::percentiles_us(&hist);
        let published: u64 = accepted.iter().sum();
        let unique = totals.unique.load(Ordering::Relaxed);
        let expected = published * u64::from(f.subs);
        let cpu = before.cpu_secs_until(&after);
        let redis_metrics = redis.map(|r| {
            let conflicts = nodes_counter(&dep, CONFLICTS) - conflicts_before;
            let mut m = r.metrics(&dep, published as f64);
            m.push(("write_conflicts_per_publish", conflicts / published as f64));
            m
        });
        let mut params = vec![
            ("subs", u64::from(f.subs)),
            ("pubs", f.pubs as u64),
            ("size", f.size as u64),
        ];
        if let Some(r) = f.rate {
            params.push(("rate", r as u64));
        }
        let mut cell = Cell {
            scenario: if f.rate.is_some() {
                "latency"
            } else {
                topology.scenario("fanout")
            },
            params,
            broker: label(broker, durability, topology),
            metrics: vec![
                ("deliveries_per_s", deliveries as f64 / secs),
                (
                    "server_cpu_s_per_1m_deliveries",
                    cpu / (deliveries as f64 / 1e6),
                ),
                ("p50_us", p50),
                ("p99_us", p99),
                ("p999_us", p999),
                ("lost", expected.saturating_sub(unique) as f64),
                ("dups", totals.dups.load(Ordering::Relaxed) as f64),
                (
                    "seq_errors",
                    totals.seq_errors.load(Ordering::Relaxed) as f64,
                ),
                (
                    "disconnects",
                    totals.disconnects.load(Ordering::Relaxed) as f64,
                ),
                ("resumes", totals.resumes.load(Ordering::Relaxed) as f64),
                ("published", published as f64),
                ("sent", sent as f64),
                ("publish_errors", errors as f64),
                ("deliveries", deliveries as f64),
                ("secs", secs),
                ("server_cpu_s", cpu),
                ("server_cpu_util", cpu / secs),
                ("server_rss_kib", after.rss_kib as f64),
                ("client_cpu_s", client_before.cpu_secs_until(&client_after)),
                (
                    "other_cpu_s",
                    (busy - cpu - client_before.cpu_secs_until(&client_after)).max(0.0),
                ),
                (
                    "window",
                    if f.rate.is_some() {
                        f64::NAN
                    } else {
                        window as f64
                    },
                ),
                ("setup_s", setup_s),
                ("disk_fsync_us", fsync_us),
                ("nodes", pids.len() as f64),
            ],
        };
        cell.metrics.extend(redis_metrics.unwrap_or_default());
        Ok(cell)
    })
    .await
}

pub async fn idle(
    ctx: &Ctx,
    broker: Broker,
    conns: u32,
    hold: Duration,
    shared_room: bool,
) -> Result<Cell, BenchError> {
    with_server(ctx, broker, Durability::Durable, move |server| async move {
        let pid = server.pid;
        let target: Target = client::target(broker, &server, 4 * 1024);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = Sample::read(pid).map_err(|e| BenchError::io("read /proc", e))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(conns as usize);
        let mut admission = Admission::new();
        for i in 0..conns {
            let (ready, rx) = oneshot::channel();
            let n = if shared_room { 0 } else { i };
            let room = match broker {
                Broker::Roomd => format!("idle-{n}"),
                Broker::Nats => format!("idle.{n}"),
            };
            tasks.push(tokio::spawn(client::idle(
                broker,
                target,
                ws::source(i),
                room,
                ready,
                stop_rx.clone(),
            )));
            admission.push(rx).await;
        }
        let (failed, err) = admission.finish().await;
        let connect_s = started.elapsed().as_secs_f64();
        let connected = hold_and_sample(pid, hold).await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(e) = err {
            if failed * 100 > u64::from(conns) {
                return Err(BenchError::Setup(format!(
                    "{failed} of {conns} idle connections failed: {e}"
                )));
            }
        }
        let (mid, after) = connected?;
        let ok = u64::from(conns) - failed;
        let per_conn = (after.rss_kib as f64 - before.rss_kib as f64) / ok as f64;
        Ok(Cell {
            scenario: "idle",
            params: vec![
                ("conns", u64::from(conns)),
                ("rooms", if shared_room { 1 } else { u64::from(conns) }),
            ],
            broker: broker.name().to_string(),
            metrics: vec![
                ("rss_per_conn_kib", per_conn),
                ("server_rss_kib", after.rss_kib as f64),
                ("server_rss_before_kib", before.rss_kib as f64),
                ("server_rss_connected_kib", mid.rss_kib as f64),
                ("connected", ok as f64),
                ("failed", failed as f64),
                ("connect_s", connect_s),
                ("server_cpu_s_connect", before.cpu_secs_until(&mid)),
            ],
        })
    })
    .await
}

/// Samples right after connecting and again after holding the connections idle.
async fn hold_and_sample(pid: u32, hold: Duration) -> Result<(Sample, Sample), BenchError> {
    let mid = Sample::read(pid).map_err(|e| BenchError::io("read /proc", e))?;
    tokio::time::sleep(hold).await;
    let after = Sample::read(pid).map_err(|e| BenchError::io("read /proc", e))?;
    Ok((mid, after))
}

/// Which rooms the durable scenario's publishers write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rooms {
    /// Every publisher goes round this many rooms, one publish each.
    Rotate(usize),
    /// Each publisher in a room of its own (the common case in a cluster: no write conflicts).
    Own,
    /// One room for every publisher (in a cluster: written from every node, so nodes retry).
    Shared,
}

/// The durable scenario's load: publishers (one publish in flight each), their rooms, payload.
#[derive(Debug, Clone, Copy)]
pub struct Publishers {
    pub concurrency: usize,
    pub rooms: Rooms,
    pub size: usize,
}

/// How the durable scenario's publishers reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The broker's own protocol.
    Native,
    /// roomd's server API over HTTP (label `roomd-http`).
    Http,
}

pub async fn durable(
    ctx: &Ctx,
    broker: Broker,
    durability: Durability,
    topology: Topology,
    load: Publishers,
    via: Via,
) -> Result<Cell, BenchError> {
    let Publishers {
        concurrency,
        rooms,
        size,
    } = load;
    let duration = ctx.duration;
    with_deployment(ctx, broker, durability, topology, move |dep| async move {
        stats::reset();
        let pids = dep.pids();
        // Publishers spread over the nodes, round robin.
        let targets: Vec<Target> = dep
            .servers
            .iter()
            .map(|s| client::target(broker, s, 16 * 1024))
            .collect();
        let target = targets[0];
        let (n_rooms, own_room) = match rooms {
            Rooms::Rotate(n) => (n, false),
            Rooms::Own => (concurrency, true),
            Rooms::Shared => (1, true),
        };
        if broker == Broker::Nats {
            nats_client::create_stream(&target, "BENCH", "bench.>").await?;
        }
        let fsync_us = procstat::fsync_probe_us();
        let ready = Arc::new(Barrier::new(concurrency + 1));
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let args = DurableArgs {
                    target: targets[i % targets.len()],
                    src: ws::source(i as u32),
                    index: i,
                    rooms: n_rooms,
                    own_room,
                    size,
                    ready: ready.clone(),
                    duration,
                };
                match via {
                    Via::Native => tokio::spawn(client::durable_publisher(broker, args)),
                    Via::Http => {
                        let addr = args.target.addr;
                        tokio::spawn(crate::http_client::durable_publisher(addr, args))
                    }
                }
            })
            .collect();
        ready.wait().await;
        let before = Sample::read_all(&pids).map_err(|e| BenchError::io("read /proc", e))?;
        let redis = RedisUse::start(&dep);
        let conflicts_before = nodes_counter(&dep, CONFLICTS);
        let client_before =
            Sample::read(std::process::id()).map_err(|e| BenchError::io("read /proc", e))?;
        let busy_before = procstat::machine_busy_ticks();
        let start = Instant::now();
        let (mut acks, mut errors, mut first_err) = (0, 0, None);
        for t in tasks {
            match t.await {
                Ok(Ok(r)) => {
                    acks += r.accepted;
                    errors += r.errors;
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err
                        .get_or_insert(BenchError::Protocol(format!("publisher panicked: {e}")));
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let after = Sample::read_all(&pids).map_err(|e| BenchError::io("read /proc", e))?;
        let redis_metrics = redis.map(|r| r.metrics(&dep, acks as f64));
        let conflicts = nodes_counter(&dep, CONFLICTS) - conflicts_before;
        let record_bytes = dep
            .redis
            .as_ref()
            .and_then(|r| crate::cluster::record_len(r, "durable-0"))
            .map_or(f64::NAN, |n| n as f64);
        let client_after =
            Sample::read(std::process::id()).map_err(|e| BenchError::io("read /proc", e))?;
        let busy = procstat::machine_busy_ticks().saturating_sub(busy_before) as f64
            / procstat::clk_tck() as f64;
        let client_cpu = client_before.cpu_secs_until(&client_after);
        if let Some(e) = first_err {
            return Err(e);
        }
        let (hist, _) = stats::merged();
        let [p50, p99, p999] = stats::percentiles_us(&hist);
        let cpu = before.cpu_secs_until(&after);
        let mut cell = Cell {
            scenario: topology.scenario("durable"),
            params: vec![
                ("concurrency", concurrency as u64),
                ("rooms", n_rooms as u64),
                ("size", size as u64),
            ],
            broker: match via {
                Via::Http => format!("{}-http", label(broker, durability, topology)),
                Via::Native => label(broker, durability, topology),
            },
            metrics: vec![
                ("acks_per_s", acks as f64 / secs),
                ("server_cpu_us_per_ack", cpu * 1e6 / acks as f64),
                ("p50_us", p50),
                ("p99_us", p99),
                ("p999_us", p999),
                ("errors", errors as f64),
                ("acks", acks as f64),
                ("secs", secs),
                ("server_cpu_s", cpu),
                ("server_cpu_util", cpu / secs),
                ("server_rss_kib", after.rss_kib as f64),
                ("client_cpu_s", client_cpu),
                ("other_cpu_s", (busy - cpu - client_cpu).max(0.0)),
                ("disk_fsync_us", fsync_us),
                ("nodes", pids.len() as f64),
            ],
        };
        if let Some(m) = redis_metrics {
            cell.metrics.extend(m);
            cell.metrics
                .push(("write_conflicts_per_ack", conflicts / acks as f64));
            cell.metrics.push(("record_bytes", record_bytes));
        }
        Ok(cell)
    })
    .await
}

/// `roomd`, `roomd-relaxed`, `roomd-cluster`, `roomd-cluster-relaxed` or `nats`.
fn label(broker: Broker, durability: Durability, topology: Topology) -> String {
    let cluster = if matches!(topology, Topology::Cluster(_)) {
        "-cluster"
    } else {
        ""
    };
    match (broker, durability) {
        (Broker::Roomd, Durability::Relaxed) => format!("roomd{cluster}-relaxed"),
        _ => format!("{}{cluster}", broker.name()),
    }
}
