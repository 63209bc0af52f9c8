//! Starting and stopping the servers under test: each cell of the matrix gets a fresh process
//! with a fresh data directory, stopped by PID (SIGTERM, then SIGKILL after a deadline). Each
//! server runs in its own process group and the signals go to the group, so a wrapper
//! (`--roomd-wrapper`) that does not pass signals on cannot leave the server running.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::BenchError;

/// The nats-server configuration shipped with the benchmark (see `nats.conf`).
const NATS_CONF: &str = include_str!("../nats.conf");

/// Which broker a cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Roomd,
    Nats,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Roomd => "roomd",
            Broker::Nats => "nats",
        }
    }
}

/// roomd's storage mode (`[storage] durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Durable,
    Relaxed,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Relaxed => "relaxed",
        }
    }
}

/// Where the server binaries are, and extra roomd configuration for experiments.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub roomd: PathBuf,
    pub nats: PathBuf,
    /// TOML appended to the generated roomd config (e.g. `[websocket]` sizes).
    pub roomd_extra_toml: String,
    /// The roomd WebSocket path, with `?token=` when measuring with auth on.
    pub roomd_ws_path: &'static str,
    /// A command prefix roomd is started under, for profiling (e.g. valgrind); empty: none.
    pub roomd_wrapper: Vec<String>,
    /// Give roomd the benchmark's server API key (`--api`): off by default, so builds from
    /// before the server API (which refuse an `[api]` table) can be measured.
    pub roomd_api_key: bool,
}

/// A running server under test.
pub struct Server {
    pub broker: Broker,
    pub pid: u32,
    /// The websocket endpoint: address plus path.
    pub ws_addr: SocketAddr,
    pub ws_path: &'static str,
    child: Child,
    dir: PathBuf,
}

impl Server {
    pub fn start(
        broker: Broker,
        bins: &Binaries,
        durability: Durability,
    ) -> Result<Server, BenchError> {
        // The previous cell's files were just deleted, and neighbours may be busy: start on a
        // quiet machine (bounded wait).
        crate::procstat::settle(Duration::from_secs(10));
        let dir = fresh_dir(broker.name())?;
        match broker {
            Broker::Roomd => start_roomd(bins, durability, dir, ""),
            Broker::Nats => start_nats(&bins.nats, dir),
        }
    }

    /// Stops the server by PID and removes its directory.
    pub fn stop(mut self) {
        stop_child(&mut self.child, self.pid, self.broker.name());
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops the server (SIGTERM: a graceful stop) and starts it again on the same data, on
    /// new ports.
    pub fn restart(
        mut self,
        bins: &Binaries,
        durability: Durability,
    ) -> Result<Server, BenchError> {
        stop_child(&mut self.child, self.pid, self.broker.name());
        let dir = std::mem::take(&mut self.dir);
        match self.broker {
            Broker::Roomd => start_roomd(bins, durability, dir, ""),
            Broker::Nats => start_nats(&bins.nats, dir),
        }
    }

    /// Stops the server (`kill -9` if `kill`, else SIGTERM) and starts it again on the same
    /// data and the same WebSocket port, so clients reconnect to the address they had.
    pub fn restart_same_port(
        mut self,
        bins: &Binaries,
        durability: Durability,
        kill: bool,
    ) -> Result<Server, BenchError> {
        if kill {
            signal_group(self.pid, "KILL");
            let _ = self.child.wait();
        } else {
            stop_child(&mut self.child, self.pid, self.broker.name());
        }
        let dir = std::mem::take(&mut self.dir);
        let port = self.ws_addr.port();
        match self.broker {
            Broker::Roomd => {
                start_roomd_on(bins, durability, dir, "", &format!("127.0.0.1:{port}"))
            }
            Broker::Nats => start_nats_on(&bins.nats, dir, Some(port)),
        }
    }

    /// The files holding the server's data (roomd's `data/`, nats-server's `jetstream/`).
    pub fn data_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.join(match self.broker {
            Broker::Roomd => "data",
            Broker::Nats => "jetstream",
        })];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(e.path()),
                    Ok(t) if t.is_file() => out.push(e.path()),
                    _ => {}
                }
            }
        }
        out
    }

    /// Ends a run on the server left in `slot` (the run may have restarted it): stops it, and
    /// adds its log's tail to the run's error.
    pub fn finish<T>(slot: Option<Server>, result: Result<T, BenchError>) -> Result<T, BenchError> {
        let Some(server) = slot else {
            return result;
        };
        let result = result.map_err(|e| {
            BenchError::Setup(format!("{e}\nserver log tail:\n{}", server.log_tail()))
        });
        server.stop();
        result
    }

    /// The tail of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir)
    }
}

/// Stops a process group leader by PID: SIGTERM to its group, SIGKILL after 10 s.
pub fn stop_child(child: &mut Child, pid: u32, name: &str) {
    signal_group(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                eprintln!("{name} (pid {pid}) did not stop in 10 s; killing");
                signal_group(pid, "KILL");
                let _ = child.wait();
                break;
            }
        }
    }
}

/// A roomd node in cluster mode: the benchmark's config plus `cluster_toml` (the `[cluster]`
/// table), with a data directory of its own.
pub fn start_roomd_node(
    bins: &Binaries,
    durability: Durability,
    cluster_toml: &str,
) -> Result<Server, BenchError> {
    let dir = fresh_dir("roomd-node")?;
    start_roomd(bins, durability, dir, cluster_toml)
}

/// Sends `signal` to the process group the server leads.
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .status();
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A new directory under the system temp dir (on disk here, so fsync means something).
pub fn fresh_dir(name: &str) -> Result<PathBuf, BenchError> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roomd-bench.{}.{name}.{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create temp dir", e))?;
    Ok(dir)
}

/// The roomd configuration for a benchmark run: the defaults, except the durability mode and
/// a connection limit above the idle scenario's 10,000 (plus anything given with
/// `--roomd-extra-toml`).
pub fn roomd_config(durability: Durability, extra: &str, api_key: bool) -> String {
    format!(
        "# written by roomd-bench\n\
         [server]\nmax_connections = 15000\n\n\
         [storage]\ndurability = \"{}\"\n\n{}\n{extra}\n",
        durability.name(),
        if api_key {
            crate::http_client::KEY_TOML
        } else {
            ""
        }
    )
}

fn start_roomd(
    bins: &Binaries,
    durability: Durability,
    dir: PathBuf,
    cluster_toml: &str,
) -> Result<Server, BenchError> {
    start_roomd_on(bins, durability, dir, cluster_toml, "127.0.0.1:0")
}

fn start_roomd_on(
    bins: &Binaries,
    durability: Durability,
    dir: PathBuf,
    cluster_toml: &str,
    listen: &str,
) -> Result<Server, BenchError> {
    let bin = &bins.roomd;
    if !bin.exists() {
        return Err(BenchError::Setup(format!(
            "{} not found: build it with `cargo build --release --bin roomd`",
            bin.display()
        )));
    }
    let config = dir.join("roomd.toml");
    let toml = roomd_config(durability, &bins.roomd_extra_toml, bins.roomd_api_key);
    std::fs::write(&config, format!("{toml}{cluster_toml}"))
        .map_err(|e| BenchError::io("write config", e))?;
    let data = dir.join("data");
    let log =
        std::fs::File::create(dir.join("server.log")).map_err(|e| BenchError::io("log", e))?;
    let mut cmd = match bins.roomd_wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .arg("--config")
        .arg(&config)
        .args(["--listen", listen, "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::io("spawn roomd", e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout for the server's whole life, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.split("listening on http://").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(_) => {
            let tail = log_tail(&dir);
            signal_group(child.id(), "KILL");
            let _ = child.wait();
            return Err(BenchError::Setup(format!(
                "roomd did not print `listening on http://ADDR` within 60 s; log:\n{tail}"
            )));
        }
    };
    let ws_addr = addr
        .trim_end_matches('/')
        .parse()
        .map_err(|_| BenchError::Setup(format!("roomd printed an unparsable address {addr:?}")))?;
    Ok(Server {
        broker: Broker::Roomd,
        pid,
        ws_addr,
        ws_path: bins.roomd_ws_path,
        child,
        dir,
    })
}

pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind", e))?;
    Ok(l.local_addr()
        .map_err(|e| BenchError::io("bind", e))?
        .port())
}

fn start_nats(bin: &Path, dir: PathBuf) -> Result<Server, BenchError> {
    start_nats_on(bin, dir, None)
}

fn start_nats_on(bin: &Path, dir: PathBuf, ws_port: Option<u16>) -> Result<Server, BenchError> {
    let client_port = free_port()?;
    let ws_port = match ws_port {
        Some(p) => p,
        None => free_port()?,
    };
    let store = dir.join("jetstream");
    let conf = NATS_CONF
        .replace("{{CLIENT_PORT}}", &client_port.to_string())
        .replace("{{WS_PORT}}", &ws_port.to_string())
        .replace("{{STORE_DIR}}", &store.display().to_string());
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).map_err(|e| BenchError::io("write nats.conf", e))?;
    let log =
        std::fs::File::create(dir.join("server.log")).map_err(|e| BenchError::io("log", e))?;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::io("spawn nats-server (apt-get install nats-server)", e))?;
    let pid = child.id();
    let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws_port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&ws_addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let tail = log_tail(&dir);
            signal_group(child.id(), "KILL");
            let _ = child.wait();
            return Err(BenchError::Setup(format!(
                "nats-server did not open its websocket port; log:\n{tail}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server {
        broker: Broker::Nats,
        pid,
        ws_addr,
        ws_path: "/",
        child,
        dir,
    })
}
