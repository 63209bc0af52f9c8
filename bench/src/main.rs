//! roomd-bench: a load generator comparing roomd with nats-server on one machine, in one run.
//!
//! - [`scenario`]: the four scenarios (fan-out, fixed-rate latency, idle memory, durable publish).
//! - [`catchup`]: one subscriber replaying a long history, warm and cold, beside the disk.
//! - [`storm`]: every client cut by a server restart coming back at once.
//! - [`servers`]: starting each server fresh and stopping it by PID.
//! - [`cluster`]: roomd nodes on one Redis of the benchmark's own, and the Redis floor
//!   (`redis-benchmark` running roomd's Function).
//! - [`client`]: what a scenario asks of a client; [`roomd_client`] and [`nats_client`] do it.
//! - [`mpack`], [`nats_proto`]: reading deliveries in place, writing publishes.
//! - [`track`], [`stats`]: per-subscriber loss accounting, per-thread latency histograms.
//! - [`procstat`]: the server's CPU seconds and RSS from `/proc`.
//! - [`report`]: JSON lines, the side-by-side table and the targets.

mod catchup;
mod client;
mod clock;
mod cluster;
mod http_client;
mod mpack;
mod nats_client;
mod nats_proto;
mod procstat;
mod report;
mod roomd_client;
mod scenario;
mod servers;
mod stats;
mod storm;
mod track;
mod ws;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::report::Cell;
use crate::scenario::{Ctx, FanOut, Publishers, Rooms, Topology, Via};
use crate::servers::{Binaries, Broker, Durability};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setup: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl BenchError {
    pub fn io(what: &'static str, source: std::io::Error) -> BenchError {
        BenchError::Io { what, source }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "roomd-bench",
    about = "Fan-out, latency, idle-memory and durable-publish benchmarks of roomd against nats-server",
    after_help = "Run everything: cargo build --release --bin roomd && cargo run --release -p roomd-bench -- all"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// A short matrix with short cells, for a smoke run (about a minute).
    #[arg(long, global = true)]
    quick: bool,
    /// Brokers to measure, comma separated: roomd, nats.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "roomd,nats"
    )]
    brokers: Vec<String>,
    /// The roomd binary under test.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/roomd"))]
    roomd_bin: PathBuf,
    /// The nats-server binary (Debian package `nats-server`).
    #[arg(long, global = true, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Seconds each cell publishes for (default 3, quick 1).
    #[arg(long, global = true)]
    duration: Option<f64>,
    /// Fan-out: subscriber counts.
    #[arg(long, global = true, value_delimiter = ',')]
    subs: Option<Vec<u32>>,
    /// Fan-out: publisher counts (1 to 64).
    #[arg(long, global = true, value_delimiter = ',')]
    pubs: Option<Vec<usize>>,
    /// Fan-out: payload sizes in bytes (at least 16).
    #[arg(long, global = true, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Fan-out: messages per publisher not yet delivered to every subscriber (default: 256000 /
    /// subs, between 32 and 1024, split over the publishers).
    #[arg(long, global = true)]
    window: Option<u64>,
    /// Latency: messages per second into the room.
    #[arg(long, global = true, default_value_t = 1000.0)]
    rate: f64,
    /// Latency: subscriber counts of the room (one cell each).
    #[arg(long, global = true, value_delimiter = ',', default_value = "100,1000")]
    rate_subs: Vec<u32>,
    /// Idle: connections (at most 10000: the open-file limit is shared with the server).
    #[arg(long, global = true)]
    conns: Option<u32>,
    /// Durable: concurrent publishers, one publish in flight each.
    #[arg(long, global = true, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Latency and durable: roomd storage modes to measure.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "durable,relaxed"
    )]
    modes: Vec<String>,
    /// TOML appended to roomd's generated config, for experiments (`\n` for newlines), e.g.
    /// '[websocket]\nwrite_buffer_bytes = 4096'.
    #[arg(long, global = true)]
    roomd_extra_toml: Option<String>,
    /// A JWT every roomd client connects with (`/ws?token=`), to measure with auth on: give roomd
    /// the key with `--roomd-extra-toml` and mint the token with `roomd token`.
    #[arg(long, global = true)]
    roomd_token: Option<String>,
    /// A command prefix to start roomd under, for profiling only (its CPU and RSS figures then
    /// describe the wrapper too), e.g. 'valgrind --tool=massif'.
    #[arg(long, global = true)]
    roomd_wrapper: Option<String>,
    /// Idle: every connection subscribes to one shared room instead of its own (separates the
    /// cost of a connection from the cost of a room).
    #[arg(long, global = true)]
    idle_shared_room: bool,
    /// Durable: also publish through roomd's server API (HTTP POST, one request in flight per
    /// keep-alive connection) to the same configuration, as the broker `roomd-http`.
    #[arg(long, global = true)]
    api: bool,
    /// Catch-up: messages in the history (default 1000000 of 64 B and 200000 of 1 KiB; quick:
    /// a tenth).
    #[arg(long, global = true)]
    msgs: Option<u64>,
    /// Catch-up under load: subscribers resuming from the start of the history.
    #[arg(long, global = true, default_value_t = 1000)]
    resumers: u32,
    /// Catch-up under load: messages in the history the resumers replay.
    #[arg(long, global = true, default_value_t = 10_000)]
    behind: u64,
    /// Cluster: roomd nodes on the one Redis.
    #[arg(long, global = true, default_value_t = 3)]
    nodes: usize,
    /// Run the whole matrix this many times; the table shows the median of each figure.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: u32,
    /// Also append every JSON line to this file.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// Every scenario, then the side-by-side table and the targets.
    All,
    /// Scenario 1: S subscribers in one room, P publishers, as fast as the slowest subscriber.
    Fanout,
    /// Scenario 2: a fixed publish rate into one room; latency percentiles.
    Latency,
    /// Scenario 3: idle subscribed connections; server RSS per connection.
    Idle,
    /// Scenario 4: durable publishes with one in flight per publisher; acks/s and latency.
    Durable,
    /// Scenario 5: roomd nodes sharing one Redis beside one roomd: fan-out over the nodes,
    /// durable publish, and Redis CPU per publish beside redis-benchmark running the Function.
    Cluster,
    /// Scenario 6: one subscriber resumes from seq 0 of a long history, warm and cold, beside
    /// the disk's sequential read rate and a JetStream ordered consumer.
    Catchup,
    /// Scenario 7 (roomd): subscribers resuming far behind while live traffic continues; time
    /// to all live and the live subscribers' latency meanwhile.
    CatchupLoad,
    /// Scenario 8: 10,000 subscribers over 100 rooms at 1,000 msg/s; the server restarted under
    /// them (kill -9, then SIGTERM); time until all are back and caught up, loss, duplicates.
    Storm,
}

fn main() {
    let cli = Cli::parse();
    // The idle scenario needs thousands of sockets; the hard limit is the ceiling.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut runs = Vec::new();
    for round in 0..cli.repeat.max(1) {
        if cli.repeat > 1 {
            println!("# round {} of {}", round + 1, cli.repeat);
        }
        runs.extend(rt.block_on(run(&cli)));
    }
    let cells = report::aggregate(&runs);
    println!();
    println!("{}", machine());
    if cells.iter().any(|c| !c.scenario.starts_with("cluster-")) {
        println!("{}", report::side_by_side(&cells));
    }
    let cluster = report::cluster_tables(&cells);
    if !cluster.is_empty() {
        println!("{cluster}");
    }
    if cli.cmd == Cmd::All || (cli.cmd != Cmd::Cluster && cells.len() > 1) {
        println!("Targets:\n{}", report::targets(&cells));
    }
}

fn brokers(cli: &Cli) -> Vec<Broker> {
    let mut out = Vec::new();
    for b in &cli.brokers {
        match b.as_str() {
            "roomd" => out.push(Broker::Roomd),
            "nats" => out.push(Broker::Nats),
            other => eprintln!("unknown broker {other:?} ignored"),
        }
    }
    out
}

async fn run(cli: &Cli) -> Vec<Cell> {
    let q = cli.quick;
    let ctx = Ctx {
        bins: Binaries {
            roomd: cli.roomd_bin.clone(),
            nats: cli.nats_bin.clone(),
            roomd_wrapper: cli
                .roomd_wrapper
                .as_deref()
                .map(|w| w.split_whitespace().map(String::from).collect())
                .unwrap_or_default(),
            roomd_extra_toml: cli
                .roomd_extra_toml
                .clone()
                .unwrap_or_default()
                .replace("\\n", "\n"),
            // Leaked once: every client's `Target` is `Copy` and holds its path as `&'static str`.
            roomd_api_key: cli.api,
            roomd_ws_path: match &cli.roomd_token {
                Some(t) => Box::leak(format!("/ws?token={t}").into_boxed_str()),
                None => "/ws",
            },
        },
        duration: Duration::from_secs_f64(cli.duration.unwrap_or(if q { 1.0 } else { 3.0 })),
        window: cli.window,
    };
    let brokers = brokers(cli);
    let mut cells = Vec::new();
    let mut emit = |r: Result<Cell, BenchError>, what: String| match r {
        Ok(cell) => {
            let line = cell.json();
            println!("{line}");
            println!("# {}", cell.human());
            if let Some(path) = &cli.json_out {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
            cells.push(cell);
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"cell": what, "error": e.to_string()})
            );
        }
    };
    let all = cli.cmd == Cmd::All;
    if all || cli.cmd == Cmd::Fanout {
        let subs = cli.subs.clone().unwrap_or(if q {
            vec![100, 1000]
        } else {
            vec![100, 1000, 5000]
        });
        let pubs = cli
            .pubs
            .clone()
            .unwrap_or(if q { vec![1] } else { vec![1, 4] });
        let sizes = cli
            .sizes
            .clone()
            .unwrap_or(if q { vec![64] } else { vec![64, 1024] });
        for &s in &subs {
            for &p in &pubs {
                for &size in &sizes {
                    let f = FanOut {
                        subs: s,
                        pubs: p.clamp(1, track::MAX_PUBS),
                        size: size.max(track::HEADER),
                        rate: None,
                    };
                    for &b in &brokers {
                        let what = format!("fanout {b:?} {f:?}");
                        let r = scenario::fanout(&ctx, b, Durability::Durable, Topology::Single, f);
                        emit(r.await, what);
                    }
                }
            }
        }
    }
    if all || cli.cmd == Cmd::Latency {
        for &subs in &cli.rate_subs {
            let f = FanOut {
                subs: if q { subs.min(200) } else { subs },
                pubs: 1,
                size: 64,
                rate: Some(cli.rate),
            };
            for &b in &brokers {
                for d in modes(cli, b) {
                    let r = scenario::fanout(&ctx, b, d, Topology::Single, f).await;
                    emit(r, format!("latency {b:?} {d:?}"));
                }
            }
        }
    }
    if all || cli.cmd == Cmd::Idle {
        let conns = cli
            .conns
            .unwrap_or(if q { 2000 } else { 10_000 })
            .min(10_000);
        let hold = Duration::from_secs(if q { 1 } else { 3 });
        for &b in &brokers {
            emit(
                scenario::idle(&ctx, b, conns, hold, cli.idle_shared_room).await,
                format!("idle {b:?}"),
            );
        }
    }
    if all || cli.cmd == Cmd::Durable {
        let conc = cli
            .concurrency
            .clone()
            .unwrap_or(if q { vec![1, 16] } else { vec![1, 16, 64] });
        for &c in &conc {
            for &b in &brokers {
                for d in modes(cli, b) {
                    let c = c.clamp(1, 256);
                    let t = Topology::Single;
                    let load = Publishers {
                        concurrency: c,
                        rooms: Rooms::Rotate(64),
                        size: 64,
                    };
                    let r = scenario::durable(&ctx, b, d, t, load, Via::Native).await;
                    emit(r, format!("durable {b:?} {d:?} {c}"));
                    if cli.api && b == Broker::Roomd {
                        let r = scenario::durable(&ctx, b, d, t, load, Via::Http).await;
                        emit(r, format!("durable {b:?} {d:?} {c} over the server API"));
                    }
                }
            }
        }
    }
    if all || cli.cmd == Cmd::Catchup {
        let scale = if q { 10 } else { 1 };
        let loads: Vec<catchup::Load> = match (&cli.sizes, cli.msgs) {
            (None, None) => vec![(1_000_000 / scale, 64), (200_000 / scale, 1024)],
            (sizes, msgs) => sizes
                .clone()
                .unwrap_or(vec![64])
                .iter()
                .map(|&s| (msgs.unwrap_or(1_000_000 / scale), s))
                .collect(),
        }
        .into_iter()
        .map(|(msgs, size)| catchup::Load {
            msgs: msgs.max(1),
            size: size.max(track::HEADER),
        })
        .collect();
        for load in loads {
            for &b in &brokers {
                match catchup::catchup(&ctx, b, load).await {
                    Ok(got) => got.into_iter().for_each(|c| emit(Ok(c), String::new())),
                    Err(e) => emit(Err(e), format!("catchup {b:?} {load:?}")),
                }
            }
        }
    }
    if (all || cli.cmd == Cmd::CatchupLoad) && brokers.contains(&Broker::Roomd) {
        let u = catchup::UnderLoad {
            resumers: if q {
                cli.resumers.min(100)
            } else {
                cli.resumers
            }
            .clamp(1, 5000),
            behind: cli.behind.max(1),
            live_subs: cli.rate_subs.first().copied().unwrap_or(100).clamp(1, 2000),
            rate: cli.rate,
        };
        emit(
            catchup::under_load(&ctx, u).await,
            format!("catchup-load {u:?}"),
        );
    }
    if all || cli.cmd == Cmd::Storm {
        let conns = cli
            .conns
            .unwrap_or(if q { 2000 } else { 10_000 })
            .min(10_000);
        for kill in [true, false] {
            for &b in &brokers {
                let s = storm::Storm {
                    conns,
                    rooms: 100.min(conns),
                    rate: cli.rate,
                    kill,
                };
                emit(storm::storm(&ctx, b, s).await, format!("storm {b:?} {s:?}"));
            }
        }
    }
    if all || cli.cmd == Cmd::Cluster {
        let nodes = cli.nodes.clamp(1, 16);
        let topologies = [Topology::Beside, Topology::Cluster(nodes)];
        let roomd = Broker::Roomd;
        let durable = Durability::Durable;
        let subs = cli.subs.clone().unwrap_or(vec![if q { 150 } else { 300 }]);
        let pubs = cli
            .pubs
            .clone()
            .unwrap_or(if q { vec![1] } else { vec![1, 4] });
        let sizes = cli.sizes.clone().unwrap_or(vec![64]);
        for &s in &subs {
            for &p in &pubs {
                for &size in &sizes {
                    let f = FanOut {
                        subs: s.min(2000),
                        pubs: p.clamp(1, track::MAX_PUBS),
                        size: size.max(track::HEADER),
                        rate: None,
                    };
                    for t in topologies {
                        let r = scenario::fanout(&ctx, roomd, durable, t, f).await;
                        emit(r, format!("cluster fanout {t:?} {f:?}"));
                    }
                }
            }
        }
        let conc = cli.concurrency.clone().unwrap_or(vec![1, 64]);
        let mut record = None;
        for &c in &conc {
            let c = c.clamp(1, 256);
            let layouts: &[Rooms] = if c == 1 {
                &[Rooms::Own]
            } else {
                &[Rooms::Own, Rooms::Shared]
            };
            for &rooms in layouts {
                for t in topologies {
                    let load = Publishers {
                        concurrency: c,
                        rooms,
                        size: 64,
                    };
                    let r = scenario::durable(&ctx, roomd, durable, t, load, Via::Native);
                    let r = r.await;
                    if let Ok(cell) = &r {
                        record = cell
                            .metric("record_bytes")
                            .filter(|n| n.is_finite())
                            .or(record);
                    }
                    emit(r, format!("cluster durable {t:?} {c} {rooms:?}"));
                }
            }
        }
        // The floor: the same Function driven by redis-benchmark, with the record size the
        // nodes stored, at one call in flight and at 64 (as 64 connections, and as 3
        // pipelined ones like the nodes' multiplexed connections).
        match record {
            Some(len) => {
                for (clients, pipeline) in [(1, 1), (64, 1), (nodes, 64usize.div_ceil(nodes))] {
                    let r = cluster::floor(clients, pipeline, ctx.duration, len as usize);
                    emit(r, format!("cluster floor {clients}x{pipeline}"));
                }
            }
            None => eprintln!("cluster floor skipped: no cluster durable cell stored a record"),
        }
    }
    cells
}

/// The storage modes to measure a broker in: roomd's from `--modes`, one for nats.
fn modes(cli: &Cli, b: Broker) -> Vec<Durability> {
    match b {
        Broker::Nats => vec![Durability::Durable],
        Broker::Roomd => cli
            .modes
            .iter()
            .filter_map(|m| match m.as_str() {
                "durable" => Some(Durability::Durable),
                "relaxed" => Some(Durability::Relaxed),
                _ => None,
            })
            .collect(),
    }
}

/// The machine and versions, printed with the results.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nats = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "nats-server not found".into());
    format!(
        "Machine: {cpu}, {cores} cores (shared by client and server), Linux {}; {nats}",
        kernel.trim()
    )
}
