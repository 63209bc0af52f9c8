//! The cluster deployment: a redis-server of the benchmark's own (loopback port, fresh temp dir,
//! `appendonly yes`, `appendfsync always`, no RDB snapshots; never the system service) and
//! roomd nodes in cluster mode sharing it; and the floor, `redis-benchmark` running roomd's
//! `roomd_apply` Function with the arguments of one publish.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat::{self, Sample};
use crate::report::Cell;
use crate::servers::{self, Binaries, Broker, Durability, Server};
use crate::BenchError;

/// roomd's Functions, loaded into the floor's Redis exactly as the nodes load them.
const FUNCTIONS: &str = include_str!("../../src/cluster/functions.lua");

/// A redis-server started for one cell, stopped by PID.
pub struct Redis {
    pub pid: u32,
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Result<Redis, BenchError> {
        let dir = servers::fresh_dir("redis")?;
        let port = servers::free_port()?;
        let log =
            std::fs::File::create(dir.join("server.log")).map_err(|e| BenchError::io("log", e))?;
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--maxclients", "1000"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("spawn redis-server (apt-get install redis-server)", e))?;
        let pid = child.id();
        let redis = Redis {
            pid,
            port,
            child: {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Ok(reply) = command(port, &[b"PING"]) {
                        if reply.starts_with("+PONG") {
                            break;
                        }
                    }
                    if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(BenchError::Setup("redis-server did not answer PING".into()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                child
            },
            dir,
        };
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) {
        servers::stop_child(&mut self.child, self.pid, "redis-server");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command over a fresh connection; the reply's first line (enough for the status,
/// integer and error replies the benchmark reads).
pub fn command(port: u16, args: &[&[u8]]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req)?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The whole reply of `INFO section` (a bulk string).
pub fn info(port: u16, section: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n") {
            let want: usize = head.trim_start_matches('$').parse().unwrap_or(0);
            if body.len() >= want {
                return Ok(body.to_string());
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).to_string())
}

/// Calls of each Redis command so far (`INFO commandstats`): fcall, publish, and all commands.
#[derive(Debug, Default, Clone)]
pub struct Calls {
    pub fcall: u64,
    pub publish: u64,
    pub all: u64,
    /// Every command by name (commands a Function runs count too).
    pub each: Vec<(String, u64)>,
}

impl Calls {
    pub fn read(port: u16) -> Calls {
        let text = info(port, "commandstats").unwrap_or_default();
        let mut c = Calls::default();
        for line in text.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls: u64 = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            c.all += calls;
            c.each.push((name.to_string(), calls));
            match name {
                "fcall" => c.fcall += calls,
                "publish" => c.publish += calls,
                _ => {}
            }
        }
        c
    }

    pub fn since(&self, before: &Calls) -> Calls {
        let earlier = |name: &str| {
            before
                .each
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c)
        };
        let mut each: Vec<(String, u64)> = self
            .each
            .iter()
            .map(|(n, c)| (n.clone(), c.saturating_sub(earlier(n))))
            .filter(|(_, c)| *c > 0)
            .collect();
        each.sort_by_key(|e| std::cmp::Reverse(e.1));
        Calls {
            fcall: self.fcall.saturating_sub(before.fcall),
            publish: self.publish.saturating_sub(before.publish),
            all: self.all.saturating_sub(before.all),
            each,
        }
    }

    /// `name per`-unit counts, most frequent first: the profile of what Redis was asked.
    pub fn breakdown(&self, per: f64) -> String {
        self.each
            .iter()
            .map(|(n, c)| format!("{n} {:.3}", *c as f64 / per))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a cell runs against: one server, or roomd nodes sharing a Redis.
pub struct Deployment {
    pub servers: Vec<Server>,
    pub redis: Option<Redis>,
}

impl Deployment {
    /// One server (`nodes` = 0) or `nodes` roomd nodes in cluster mode on a fresh Redis.
    pub fn start(
        broker: Broker,
        nodes: usize,
        bins: &Binaries,
        durability: Durability,
    ) -> Result<Deployment, BenchError> {
        if nodes == 0 {
            let server = Server::start(broker, bins, durability)?;
            return Ok(Deployment {
                servers: vec![server],
                redis: None,
            });
        }
        procstat::settle(Duration::from_secs(10));
        let redis = Redis::start()?;
        let mode = match durability {
            Durability::Durable => "strict",
            Durability::Relaxed => "relaxed",
        };
        let toml = format!(
            "\n[cluster]\nengine = \"redis\"\nredis_url = \"{}\"\ndurability = \"{mode}\"\n",
            redis.url()
        );
        let mut servers = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            match servers::start_roomd_node(bins, durability, &toml) {
                Ok(s) => servers.push(s),
                Err(e) => {
                    servers.into_iter().for_each(Server::stop);
                    redis.stop();
                    return Err(e);
                }
            }
        }
        Ok(Deployment {
            servers,
            redis: Some(redis),
        })
    }

    /// The broker processes (not Redis): CPU and RSS figures are their sum.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.pid).collect()
    }

    /// Redis's counters, if there is a Redis.
    pub fn redis_sample(&self) -> Option<Sample> {
        self.redis.as_ref().and_then(|r| Sample::read(r.pid).ok())
    }

    pub fn log_tail(&self) -> String {
        self.servers
            .iter()
            .map(Server::log_tail)
            .collect::<Vec<_>>()
            .join("\n--\n")
    }

    pub fn stop(self) {
        for s in self.servers {
            s.stop();
        }
        if let Some(r) = self.redis {
            r.stop();
        }
    }
}

/// The length of one stored log record (seq 1 of `room`), as roomd wrote it to Redis: the floor
/// sends records of this size.
pub fn record_len(redis: &Redis, room: &str) -> Option<usize> {
    let log = format!("roomd:{{{}}}:{room}:log", partition(room));
    let reply = command(redis.port, &[b"HSTRLEN", log.as_bytes(), b"1"]).ok()?;
    reply
        .strip_prefix(':')?
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// roomd's room partition (`src/cluster/keys.rs`): FNV-1a of the name modulo 1024.
fn partition(room: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % 1024
}

/// The floor: `redis-benchmark` with `clients` connections calling `roomd_apply` as one
/// publish does (one entry of `record` bytes, no mid, no state, no redaction, no retention),
/// against a fresh Redis configured like the cluster's. Each call names a fresh meta key
/// (`__rand_int__`) so its `base` 0 is always current and the write is stored; the log, state
/// and mids keys are shared, so the log hash stays one field and no other key is created.
pub fn floor(
    clients: usize,
    pipeline: usize,
    duration: Duration,
    record: usize,
) -> Result<Cell, BenchError> {
    procstat::settle(Duration::from_secs(10));
    let redis = Redis::start()?;
    let r = floor_on(&redis, clients, pipeline, duration, record);
    redis.stop();
    r
}

fn floor_on(
    redis: &Redis,
    clients: usize,
    pipeline: usize,
    duration: Duration,
    record: usize,
) -> Result<Cell, BenchError> {
    let loaded = command(
        redis.port,
        &[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTIONS.as_bytes()],
    )
    .map_err(|e| BenchError::io("FUNCTION LOAD", e))?;
    if loaded.starts_with('-') {
        return Err(BenchError::Setup(format!("FUNCTION LOAD: {loaded}")));
    }
    // Command-line arguments cannot hold NUL bytes; the record's size is what costs.
    let rec = "r".repeat(record);
    let port = redis.port.to_string();
    let (c, p) = (clients.to_string(), pipeline.to_string());
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        &c,
        "-n",
        "2000000000",
        "-P",
        &p,
        // redis-benchmark reads -r as a C int: past 2^31 it measures errors instead.
        "-r",
        "2000000000",
        "-q",
        "FCALL",
        "roomd_apply",
        "4",
        "floor:{0}:__rand_int__:meta",
        "floor:{0}:log",
        "floor:{0}:state",
        "floor:{0}:mids",
        "4242",
        "0",
        "4343",
        "1024",
        "0",
        "1",
        &rec,
        "",
        "0",
        "0",
    ];
    // redis-benchmark has no time limit: it is given more calls than it can make, measured
    // for `duration` by Redis's own counters, then stopped by PID.
    let mut child = Command::new("redis-benchmark")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io("run redis-benchmark (apt-get install redis-tools)", e))?;
    // Let its connections open first.
    std::thread::sleep(Duration::from_millis(300));
    let before = Sample::read(redis.pid).map_err(|e| BenchError::io("read /proc", e))?;
    let calls_before = Calls::read(redis.port);
    let start = Instant::now();
    std::thread::sleep(duration);
    let after = Sample::read(redis.pid).map_err(|e| BenchError::io("read /proc", e))?;
    let calls = Calls::read(redis.port).since(&calls_before).fcall;
    let secs = start.elapsed().as_secs_f64();
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let out = child.wait_with_output().ok();
    // Every call must have stored its entry, or the floor measured something cheaper.
    let stored = command(redis.port, &[b"DBSIZE"]).unwrap_or_default();
    let keys: u64 = stored
        .strip_prefix(':')
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if exited.is_some() || calls == 0 || keys < calls / 2 {
        return Err(BenchError::Setup(format!(
            "redis-benchmark: exited {exited:?}, {calls} calls, {keys} keys; {}",
            out.map(|o| String::from_utf8_lossy(&o.stderr)
                .chars()
                .take(400)
                .collect::<String>())
                .unwrap_or_default()
        )));
    }
    let cpu = before.cpu_secs_until(&after);
    Ok(Cell {
        scenario: "cluster-floor",
        params: vec![
            ("clients", clients as u64),
            ("pipeline", pipeline as u64),
            ("record", record as u64),
        ],
        broker: "redis-benchmark".into(),
        metrics: vec![
            ("calls_per_s", calls as f64 / secs),
            ("redis_cpu_us_per_call", cpu * 1e6 / calls as f64),
            ("redis_cpu_s", cpu),
            ("calls", calls as f64),
            ("meta_keys_created", keys as f64),
            ("secs", secs),
        ],
    })
}
