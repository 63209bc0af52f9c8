//! Catch-up: one subscriber resumes from the start of a long history (issue #19).
//!
//! Each broker is filled once per load (roomd: a room written through `pub`, every publish
//! acknowledged; nats-server: a file-storage JetStream stream written with acked `PUB`s), then
//! restarted gracefully twice on the same data and replayed once after each restart:
//!
//! - **warm**: the data files are still in the page cache (just written or read);
//! - **cold**: every data file is evicted from the page cache (`posix_fadvise(DONTNEED)`, which
//!   needs no root, after `fdatasync` so no page is dirty) once the server listens again.
//!
//! The replay is timed from sending `sub` with `since: 0` (roomd) or the consumer's creation
//! request (nats-server: an ordered push consumer, as nats.go's `OrderedConsumer`) to the last
//! message. After the cold replay the data files are evicted again and read sequentially with
//! 1 MiB reads: the disk's sequential read rate, for the cold 1 KiB target.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procstat::Sample;
use crate::report::Cell;
use crate::roomd_client::Replayed;
use crate::scenario::Ctx;
use crate::servers::{Broker, Durability, Server};
use crate::ws::Target;
use crate::{client, nats_client, roomd_client, BenchError};

/// roomd's room and nats-server's subject (in stream [`STREAM`]).
const ROOM: &str = "catchup";
const STREAM: &str = "CATCHUP";
/// Unacknowledged publishes while filling: below roomd's `limits.requests_in_flight` (1024).
const FILL_WINDOW: u64 = 768;
/// The replaying connection's initial read buffer.
const READ_BUFFER: usize = 256 * 1024;

/// One history to replay: `msgs` messages of `size` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub msgs: u64,
    pub size: usize,
}

/// Fills `broker` with `load`, then replays it warm and cold: two cells (or the first error).
pub async fn catchup(ctx: &Ctx, broker: Broker, load: Load) -> Result<Vec<Cell>, BenchError> {
    let mut slot = Some(Server::start(broker, &ctx.bins, Durability::Durable)?);
    let result = measure(ctx, broker, load, &mut slot).await;
    Server::finish(slot, result)
}

async fn measure(
    ctx: &Ctx,
    broker: Broker,
    load: Load,
    slot: &mut Option<Server>,
) -> Result<Vec<Cell>, BenchError> {
    let server = slot.as_ref().expect("a server is running");
    let target = client::target(broker, server, READ_BUFFER);
    let t0 = Instant::now();
    let filled = match broker {
        Broker::Roomd => {
            roomd_client::fill(&target, ROOM, load.msgs, load.size, FILL_WINDOW).await?
        }
        Broker::Nats => {
            nats_client::create_stream(&target, STREAM, ROOM).await?;
            nats_client::fill_stream(&target, ROOM, load.msgs, load.size, 4 * FILL_WINDOW).await?
        }
    };
    let fill_per_s = filled as f64 / t0.elapsed().as_secs_f64();
    println!(
        "# catchup {}: filled {filled} x {} B at {fill_per_s:.0} msgs/s",
        broker.name(),
        load.size
    );
    let mut cells = Vec::new();
    for cold in [false, true] {
        let old = slot.take().expect("a server is running");
        let server = slot.insert(old.restart(&ctx.bins, Durability::Durable)?);
        if cold {
            evict(&server.data_files())?;
        }
        let target = client::target(broker, server, READ_BUFFER);
        let (cell, r) = replay_cell(broker, server, &target, load, cold).await?;
        if r.received != load.msgs || r.out_of_order != 0 {
            return Err(BenchError::Protocol(format!(
                "replay got {} of {} messages, {} out of order",
                r.received, load.msgs, r.out_of_order
            )));
        }
        cells.push(cell);
    }
    // The disk beside the cold replay: the data files, evicted, read in order.
    let server = slot.as_ref().expect("a server is running");
    let disk = disk_read_rate(&server.data_files())?;
    for c in &mut cells {
        c.metrics.push(("fill_msgs_per_s", fill_per_s));
        if c.param("cold") == Some(1) {
            let mb_s = c.metric("payload_mb_s").unwrap_or(f64::NAN);
            c.metrics.push(("disk_read_mb_s", disk.0));
            c.metrics.push(("disk_data_mb", disk.1));
            c.metrics.push(("payload_share_of_disk", mb_s / disk.0));
        }
    }
    Ok(cells)
}

async fn replay_cell(
    broker: Broker,
    server: &Server,
    target: &Target,
    load: Load,
    cold: bool,
) -> Result<(Cell, Replayed), BenchError> {
    let me = std::process::id();
    let (s0, c0) = (sample(server.pid)?, sample(me)?);
    let r = match broker {
        Broker::Roomd => roomd_client::replay(target, ROOM, load.msgs).await?,
        Broker::Nats => nats_client::ordered_replay(target, STREAM, load.msgs).await?,
    };
    let (s1, c1) = (sample(server.pid)?, sample(me)?);
    let secs = r.done.as_secs_f64();
    let server_cpu = s0.cpu_secs_until(&s1);
    let n = r.received as f64;
    let cell = Cell {
        scenario: "catchup",
        params: vec![
            ("msgs", load.msgs),
            ("size", load.size as u64),
            ("cold", u64::from(cold)),
        ],
        broker: broker.name().to_string(),
        metrics: vec![
            ("msgs_per_s", n / secs),
            ("payload_mb_s", n * load.size as f64 / secs / 1e6),
            ("replay_s", secs),
            ("subbed_ms", r.subbed.as_secs_f64() * 1e3),
            ("server_cpu_s", server_cpu),
            ("server_cpu_us_per_msg", server_cpu * 1e6 / n),
            ("client_cpu_s", c0.cpu_secs_until(&c1)),
            ("server_rss_mib", s1.rss_kib as f64 / 1024.0),
            ("received", n),
            ("out_of_order", r.out_of_order as f64),
        ],
    };
    Ok((cell, r))
}

fn sample(pid: u32) -> Result<Sample, BenchError> {
    Sample::read(pid).map_err(|e| BenchError::io("read /proc", e))
}

/// Drops `files` from the page cache: flushed first (a dirty page cannot be dropped), then
/// `POSIX_FADV_DONTNEED` over the whole file. Works for any file the user can open.
fn evict(files: &[PathBuf]) -> Result<(), BenchError> {
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| BenchError::io("open data file", e))?;
        file.sync_data()
            .map_err(|e| BenchError::io("fdatasync data file", e))?;
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
            .map_err(|e| BenchError::io("posix_fadvise", e.into()))?;
    }
    Ok(())
}

/// Evicts `files` and reads each in order with 1 MiB reads, one after the other: (MB/s, MB).
/// All of them, as nats-server keeps a stream in 8 MB blocks and roomd in one file.
fn disk_read_rate(files: &[PathBuf]) -> Result<(f64, f64), BenchError> {
    evict(files)?;
    let (mut bytes, mut took) = (0u64, Duration::ZERO);
    for f in files {
        let (b, t) = read_all(f)?;
        bytes += b;
        took += t;
    }
    Ok((bytes as f64 / took.as_secs_f64() / 1e6, bytes as f64 / 1e6))
}

fn read_all(path: &Path) -> Result<(u64, Duration), BenchError> {
    let mut file = std::fs::File::open(path).map_err(|e| BenchError::io("open data file", e))?;
    let mut buf = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| BenchError::io("read data file", e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok((total, t0.elapsed()))
}

/// Catch-up under load (roomd only): `live_subs` subscribers of one room receive `rate`
/// messages a second; after `BASELINE` of that alone, `resumers` more subscribe with `since`
/// from the start of a history of `behind` messages, and keep reading once caught up.
#[derive(Debug, Clone, Copy)]
pub struct UnderLoad {
    pub resumers: u32,
    pub behind: u64,
    pub live_subs: u32,
    pub rate: f64,
}

/// How long the live subscribers' latency is measured alone before the resumers come.
const BASELINE: Duration = Duration::from_secs(3);
/// The most the resumers may take to catch up before the cell is an error.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);
const LOAD_ROOM: &str = "catchup-load";

pub async fn under_load(ctx: &Ctx, u: UnderLoad) -> Result<Cell, BenchError> {
    let server = Server::start(Broker::Roomd, &ctx.bins, Durability::Durable)?;
    let result = under_load_on(&server, u)
        .await
        .map_err(|e| BenchError::Setup(format!("{e}\nserver log tail:\n{}", server.log_tail())));
    server.stop();
    result
}

async fn under_load_on(server: &Server, u: UnderLoad) -> Result<Cell, BenchError> {
    use std::sync::Arc;
    use tokio::sync::{oneshot, watch};

    use crate::client::{Pacing, PubArgs, SubArgs};
    use crate::track::{Flow, Totals};
    use crate::{stats, ws};

    let target = client::target(Broker::Roomd, server, 64 * 1024);
    // The history the resumers replay (the live subscribers subscribe without `since`: they
    // never see it).
    roomd_client::fill(&target, LOAD_ROOM, u.behind, 64, FILL_WINDOW).await?;
    let flow = Arc::new(Flow::new(u.live_subs, 1));
    let totals = Arc::new(Totals::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..u.live_subs {
        let (ready, rx) = oneshot::channel();
        let args = SubArgs {
            target,
            src: ws::source(i),
            room: LOAD_ROOM.to_string(),
            flow: flow.clone(),
            totals: totals.clone(),
            stop: stop_rx.clone(),
            ready,
        };
        tasks.push(tokio::spawn(client::subscriber(Broker::Roomd, args)));
        timeout_ready(rx).await?;
    }
    stats::reset();
    let start = Instant::now() + Duration::from_millis(100);
    let publisher = tokio::spawn(client::publisher(
        Broker::Roomd,
        PubArgs {
            target,
            src: ws::source(u.live_subs),
            room: LOAD_ROOM.to_string(),
            index: 0,
            size: 64,
            flow: flow.clone(),
            pacing: Pacing::Rate(u.rate),
            start,
            duration: BASELINE + CATCH_UP_LIMIT,
        },
    ));
    tokio::time::sleep_until((start + BASELINE).into()).await;
    let (alone, _) = stats::merged();
    stats::reset();
    let before = sample(server.pid)?;
    let t0 = Instant::now();
    let mut waits = Vec::new();
    for i in 0..u.resumers {
        let (live, rx) = oneshot::channel();
        tasks.push(tokio::spawn(roomd_client::resume_to_live(
            target,
            ws::source(u.live_subs + 1 + i),
            LOAD_ROOM.to_string(),
            0,
            live,
            stop_rx.clone(),
        )));
        waits.push(rx);
    }
    let mut behind = 0u64;
    let mut failed = None;
    for rx in waits {
        match tokio::time::timeout_at((t0 + CATCH_UP_LIMIT).into(), rx).await {
            Ok(Ok(Ok((_, b)))) => behind += b,
            Ok(Ok(Err(e))) => failed = failed.or(Some(e)),
            Ok(Err(_)) => failed = failed.or(Some(BenchError::Protocol("resumer ended".into()))),
            Err(_) => failed = failed.or(Some(BenchError::Timeout("resumers to catch up"))),
        }
    }
    let all_live = t0.elapsed();
    let after = sample(server.pid)?;
    let (during, _) = stats::merged();
    let _ = stop_tx.send(true);
    publisher.abort();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let [a50, a99, _] = stats::percentiles_us(&alone);
    let [d50, d99, _] = stats::percentiles_us(&during);
    let replayed = behind as f64;
    Ok(Cell {
        scenario: "catchup-load",
        params: vec![
            ("resumers", u64::from(u.resumers)),
            ("behind", u.behind),
            ("live_subs", u64::from(u.live_subs)),
            ("rate", u.rate as u64),
        ],
        broker: "roomd".into(),
        metrics: vec![
            ("all_live_s", all_live.as_secs_f64()),
            ("replayed_msgs_per_s", replayed / all_live.as_secs_f64()),
            ("mean_behind", replayed / f64::from(u.resumers.max(1))),
            ("live_p50_alone_us", a50),
            ("live_p99_alone_us", a99),
            ("live_p50_during_us", d50),
            ("live_p99_during_us", d99),
            ("live_p99_ratio", d99 / a99),
            ("server_cpu_s", before.cpu_secs_until(&after)),
            ("server_rss_mib", after.rss_kib as f64 / 1024.0),
            (
                "live_gaps",
                totals.gaps.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ),
        ],
    })
}

async fn timeout_ready(
    rx: tokio::sync::oneshot::Receiver<Result<(), BenchError>>,
) -> Result<(), BenchError> {
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(BenchError::Protocol("subscriber task ended".into())),
        Err(_) => Err(BenchError::Timeout("subscriber setup")),
    }
}
