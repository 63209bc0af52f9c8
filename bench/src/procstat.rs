//! Server CPU time and resident memory, read from `/proc/PID/stat` and `/proc/PID/status`.

use std::sync::OnceLock;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

impl Sample {
    pub fn read(pid: u32) -> std::io::Result<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let bad =
            || std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc format");
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 3 (state) is fields[0]; utime is field 14 and stime field 15.
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(bad)
        };
        let cpu_ticks = num(11)? + num(12)?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?;
        Ok(Sample { cpu_ticks, rss_kib })
    }

    /// The sum over several processes (the nodes of a cluster).
    pub fn read_all(pids: &[u32]) -> std::io::Result<Sample> {
        let mut sum = Sample {
            cpu_ticks: 0,
            rss_kib: 0,
        };
        for &pid in pids {
            let s = Sample::read(pid)?;
            sum.cpu_ticks += s.cpu_ticks;
            sum.rss_kib += s.rss_kib;
        }
        Ok(sum)
    }

    /// CPU seconds used between `self` and a later sample.
    pub fn cpu_secs_until(&self, later: &Sample) -> f64 {
        later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / clk_tck() as f64
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know of).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Busy CPU time of the whole machine so far, in clock ticks (`/proc/stat`: everything but idle
/// and iowait). Subtracting the server's and the client's share shows how much of the two cores
/// something else took during a cell: the machine is shared, and a busy neighbour skews figures.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    get(0) + get(1) + get(2) + get(5) + get(6) + get(7)
}

/// The disk's current fsync latency: the median of 15 rounds of rewriting 4 KiB in a scratch
/// file under the temp dir and `fdatasync`ing it, in microseconds. Durable acks cannot beat it,
/// and on a shared machine it moves with the neighbours' writes, so cells that fsync report it.
pub fn fsync_probe_us() -> f64 {
    use std::io::{Seek, SeekFrom, Write};
    let path = std::env::temp_dir().join(format!("roomd-bench.{}.fsync-probe", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else {
        return f64::NAN;
    };
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(15);
    for _ in 0..16 {
        let t = std::time::Instant::now();
        let ok = f.seek(SeekFrom::Start(0)).is_ok()
            && f.write_all(&block).is_ok()
            && f.sync_data().is_ok();
        if ok {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = std::fs::remove_file(&path);
    // The first round allocates the block; leave it out.
    let mut times: Vec<f64> = times.into_iter().skip(1).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Waits (at most `max`) until the machine looks quiet: no other process using more than a fifth
/// of a core over 200 ms, and a 4 KiB fsync under 1.5 ms. The machine is shared, and a cell that
/// starts while a neighbour compiles or flushes its writes measures the neighbour. Returns how
/// long it waited.
pub fn settle(max: std::time::Duration) -> std::time::Duration {
    let start = std::time::Instant::now();
    let me = std::process::id();
    while start.elapsed() < max {
        let busy0 = machine_busy_ticks();
        let mine0 = Sample::read(me).map(|s| s.cpu_ticks).unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let busy = machine_busy_ticks().saturating_sub(busy0);
        let mine = Sample::read(me)
            .map(|s| s.cpu_ticks)
            .unwrap_or(0)
            .saturating_sub(mine0);
        let others_cores = busy.saturating_sub(mine) as f64 / clk_tck() as f64 / 0.2;
        if others_cores < 0.2 && fsync_probe_us() < 1500.0 {
            break;
        }
    }
    start.elapsed()
}
