//! Results: one JSON line per cell as it finishes, then a side-by-side table with ratios
//! roomd / nats and a check of the targets.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

/// One measured cell of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    pub scenario: &'static str,
    /// The parameters that identify the cell across brokers (subs, pubs, size, ...).
    pub params: Vec<(&'static str, u64)>,
    /// `roomd`, `roomd-relaxed` or `nats`.
    pub broker: String,
    pub metrics: Vec<(&'static str, f64)>,
}

impl Cell {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    pub fn param(&self, name: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn key(&self) -> String {
        let p: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{} {}", self.scenario, p.join(" "))
    }

    pub fn json(&self) -> String {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(self.scenario));
        m.insert("broker".into(), json!(self.broker));
        for (k, v) in &self.params {
            m.insert((*k).into(), json!(v));
        }
        for (k, v) in &self.metrics {
            let v = if v.is_finite() {
                json!((v * 1000.0).round() / 1000.0)
            } else {
                Value::Null
            };
            m.insert((*k).into(), v);
        }
        Value::Object(m).to_string()
    }

    /// One human line with the cell's headline figures.
    pub fn human(&self) -> String {
        let figures: Vec<String> = headline(self.scenario)
            .iter()
            .filter_map(|m| self.metric(m).map(|v| format!("{m}={}", fmt(v))))
            .collect();
        format!(
            "{:<40} {:<14} {}",
            self.key(),
            self.broker,
            figures.join("  ")
        )
    }
}

/// Folds repeated runs of the same cell into one whose every figure is the median of the runs
/// (`runs` says how many); first-seen order is kept.
pub fn aggregate(cells: &[Cell]) -> Vec<Cell> {
    let mut out: Vec<Cell> = Vec::new();
    let mut groups: Vec<Vec<&Cell>> = Vec::new();
    for c in cells {
        match out
            .iter()
            .position(|o| o.key() == c.key() && o.broker == c.broker)
        {
            Some(i) => groups[i].push(c),
            None => {
                out.push(c.clone());
                groups.push(vec![c]);
            }
        }
    }
    for (cell, group) in out.iter_mut().zip(&groups) {
        for (name, value) in cell.metrics.iter_mut() {
            let mut vs: Vec<f64> = group.iter().filter_map(|c| c.metric(name)).collect();
            vs.sort_by(|a, b| a.total_cmp(b));
            *value = match vs.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => vs[n / 2],
                n => (vs[n / 2 - 1] + vs[n / 2]) / 2.0,
            };
        }
        cell.metrics.push(("runs", group.len() as f64));
    }
    out
}

/// The figures compared side by side, per scenario.
fn headline(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "fanout" | "latency" => &[
            "deliveries_per_s",
            "server_cpu_s_per_1m_deliveries",
            "p50_us",
            "p99_us",
            "p999_us",
            "lost",
        ],
        "idle" => &["rss_per_conn_kib", "server_rss_kib", "connect_s"],
        "cluster-fanout" => &[
            "deliveries_per_s",
            "server_cpu_s_per_1m_deliveries",
            "redis_cpu_us_per_publish",
            "write_conflicts_per_publish",
            "p99_us",
            "lost",
        ],
        "cluster-durable" => &[
            "acks_per_s",
            "server_cpu_us_per_ack",
            "redis_cpu_us_per_publish",
            "p50_us",
            "p99_us",
            "write_conflicts_per_ack",
            "errors",
        ],
        "cluster-floor" => &["calls_per_s", "redis_cpu_us_per_call"],
        "storm" => &[
            "caught_up_p50_s",
            "caught_up_p99_s",
            "caught_up_all_s",
            "resubbed_p99_s",
            "missed",
            "dups",
            "listen_overflows",
            "server_cpu_s",
            "server_peak_rss_mib",
        ],
        "catchup-load" => &[
            "all_live_s",
            "replayed_msgs_per_s",
            "live_p99_alone_us",
            "live_p99_during_us",
            "live_p99_ratio",
        ],
        "catchup" => &[
            "msgs_per_s",
            "payload_mb_s",
            "server_cpu_us_per_msg",
            "subbed_ms",
            "disk_read_mb_s",
        ],
        "durable" => &[
            "acks_per_s",
            "server_cpu_us_per_ack",
            "p50_us",
            "p99_us",
            "p999_us",
            "errors",
        ],
        _ => &[],
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100_000.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 100.0 {
        format!("{:.1}", v)
    } else if v == v.trunc() {
        format!("{:.0}", v)
    } else {
        format!("{:.3}", v)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The side-by-side table: every roomd cell against the nats cell with the same parameters.
pub fn side_by_side(cells: &[Cell]) -> String {
    let mut keys: Vec<String> = Vec::new();
    for c in cells {
        if !keys.contains(&c.key()) {
            keys.push(c.key());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| cell | figure | roomd variant | roomd | nats | roomd/nats |\n|---|---|---|---:|---:|---:|"
    );
    for key in keys.iter().filter(|k| !k.starts_with("cluster-")) {
        let group: Vec<&Cell> = cells.iter().filter(|c| &c.key() == key).collect();
        let nats = group.iter().find(|c| c.broker == "nats");
        for c in group.iter().filter(|c| c.broker != "nats") {
            for m in headline(c.scenario) {
                let r = c.metric(m).unwrap_or(f64::NAN);
                let n = nats.and_then(|n| n.metric(m)).unwrap_or(f64::NAN);
                let _ = writeln!(
                    out,
                    "| {key} | {m} | {} | {} | {} | {} |",
                    c.broker,
                    fmt(r),
                    fmt(n),
                    ratio(r, n)
                );
            }
        }
        if group.iter().all(|c| c.broker == "nats") {
            for c in &group {
                for m in headline(c.scenario) {
                    let n = c.metric(m).unwrap_or(f64::NAN);
                    let _ = writeln!(out, "| {key} | {m} | - | - | {} | - |", fmt(n));
                }
            }
        }
    }
    out
}

/// The cluster matrix: each cluster cell beside one roomd with the same parameters, and the
/// Redis floor. Empty without cluster cells.
pub fn cluster_tables(cells: &[Cell]) -> String {
    let mut out = String::new();
    let of = |scenario: &str, broker: &str| -> Vec<&Cell> {
        cells
            .iter()
            .filter(|c| c.scenario == scenario && c.broker == broker)
            .collect()
    };
    let twin = |c: &Cell| {
        cells
            .iter()
            .find(|o| o.scenario == c.scenario && o.broker == "roomd" && o.params == c.params)
    };
    let m = |c: Option<&Cell>, name: &str| c.and_then(|c| c.metric(name)).unwrap_or(f64::NAN);
    let fan = of("cluster-fanout", "roomd-cluster");
    if !fan.is_empty() {
        let _ = writeln!(
            out,
            "Cluster fan-out (subscribers and publishers spread over the nodes; CPU summed over the nodes)\n\n\
             | subs | pubs | size | deliveries/s 1 node | cluster | ratio | node CPU s / 1M deliveries 1 node | cluster | ratio | Redis CPU µs / publish | conflicts / publish | lost 1 node / cluster |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for c in fan {
            let one = twin(c);
            let (d1, dc) = (m(one, "deliveries_per_s"), m(Some(c), "deliveries_per_s"));
            let cpu = "server_cpu_s_per_1m_deliveries";
            let (c1, cc) = (m(one, cpu), m(Some(c), cpu));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                c.param("subs").unwrap_or(0),
                c.param("pubs").unwrap_or(0),
                c.param("size").unwrap_or(0),
                fmt(d1),
                fmt(dc),
                ratio(dc, d1),
                fmt(c1),
                fmt(cc),
                ratio(cc, c1),
                fmt(m(Some(c), "redis_cpu_us_per_publish")),
                fmt(m(Some(c), "write_conflicts_per_publish")),
                fmt(m(one, "lost")),
                fmt(m(Some(c), "lost")),
            );
        }
        out.push('\n');
    }
    let dur = of("cluster-durable", "roomd-cluster");
    let floor = |inflight: u64| {
        cells
            .iter()
            .filter(|c| c.scenario == "cluster-floor")
            .filter(|c| {
                c.param("clients").unwrap_or(0) * c.param("pipeline").unwrap_or(1)
                    >= inflight.min(64)
            })
            .filter(|c| inflight > 1 || c.param("clients") == Some(1))
            .filter_map(|c| c.metric("redis_cpu_us_per_call"))
            .min_by(|a, b| a.total_cmp(b))
            .unwrap_or(f64::NAN)
    };
    if !dur.is_empty() {
        let _ = writeln!(
            out,
            "Cluster durable publish (64 B, one publish in flight per publisher, publishers spread over the nodes)\n\n\
             | publishers | rooms | acks/s 1 node | cluster | ratio | p50 / p99 µs 1 node | cluster | node CPU µs / ack 1 node | cluster | Redis CPU µs / publish | floor | ratio | FCALLs / publish | conflicts / ack |\n\
             |---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in dur {
            let one = twin(c);
            let (a1, ac) = (m(one, "acks_per_s"), m(Some(c), "acks_per_s"));
            let redis = m(Some(c), "redis_cpu_us_per_publish");
            let fl = floor(c.param("concurrency").unwrap_or(1));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
                c.param("concurrency").unwrap_or(0),
                c.param("rooms").unwrap_or(0),
                fmt(a1),
                fmt(ac),
                ratio(ac, a1),
                fmt(m(one, "p50_us")),
                fmt(m(one, "p99_us")),
                fmt(m(Some(c), "p50_us")),
                fmt(m(Some(c), "p99_us")),
                fmt(m(one, "server_cpu_us_per_ack")),
                fmt(m(Some(c), "server_cpu_us_per_ack")),
                fmt(redis),
                fmt(fl),
                ratio(redis, fl),
                fmt(m(Some(c), "redis_fcalls_per_publish")),
                fmt(m(Some(c), "write_conflicts_per_ack")),
            );
        }
        out.push('\n');
    }
    let floors: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.scenario == "cluster-floor")
        .collect();
    if !floors.is_empty() {
        let _ = writeln!(
            out,
            "Redis floor: redis-benchmark running FCALL roomd_apply (one entry per call)\n\n\
             | connections | pipeline | record bytes | calls/s | Redis CPU µs / call |\n|---:|---:|---:|---:|---:|"
        );
        for c in floors {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.param("clients").unwrap_or(0),
                c.param("pipeline").unwrap_or(0),
                c.param("record").unwrap_or(0),
                fmt(m(Some(c), "calls_per_s")),
                fmt(m(Some(c), "redis_cpu_us_per_call")),
            );
        }
        out.push('\n');
    }
    // The goals for the cluster.
    for c in of("cluster-durable", "roomd-cluster") {
        let redis = m(Some(c), "redis_cpu_us_per_publish");
        let fl = floor(c.param("concurrency").unwrap_or(1));
        let ok = (redis.is_finite() && fl.is_finite()).then_some(redis <= 1.5 * fl);
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "- [{verdict}] {}: Redis CPU per publish <= 1.5x the floor: {:.1} vs {:.1} µs, ratio {}",
            c.key(),
            redis,
            fl,
            ratio(redis, fl)
        );
    }
    for c in of("cluster-fanout", "roomd-cluster") {
        let cpu = "server_cpu_s_per_1m_deliveries";
        let (c1, cc) = (m(twin(c), cpu), m(Some(c), cpu));
        let ok = (c1.is_finite() && cc.is_finite()).then_some(cc <= 1.3 * c1);
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "- [{verdict}] {}: node CPU per delivery <= 1.3x one roomd: ratio {}",
            c.key(),
            ratio(cc, c1)
        );
    }
    out
}

/// The targets, each with met / missed / not measured.
pub fn targets(cells: &[Cell]) -> String {
    let mut out = String::new();
    let mut line = |name: String, ok: Option<bool>, detail: String| {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "- [{verdict}] {name}: {detail}");
    };
    let find = |scenario: &str, broker: &str, params: &[(&str, u64)]| {
        cells.iter().find(|c| {
            c.scenario == scenario
                && c.broker == broker
                && params.iter().all(|(k, v)| c.param(k) == Some(*v))
        })
    };
    let pair_ratio = |scenario: &str, broker: &str, params: &[(&str, u64)], m: &str| {
        let r = find(scenario, broker, params)?.metric(m)?;
        let n = find(scenario, "nats", params)?.metric(m)?;
        (n != 0.0).then_some(r / n)
    };
    for c in cells
        .iter()
        .filter(|c| c.scenario == "fanout" && c.broker == "roomd")
    {
        let p: Vec<(&str, u64)> = c.params.clone();
        let cpu = pair_ratio("fanout", "roomd", &p, "server_cpu_s_per_1m_deliveries");
        let rate = pair_ratio("fanout", "roomd", &p, "deliveries_per_s");
        line(
            format!(
                "fan-out {}: server CPU per 1M deliveries <= 0.5x nats",
                c.key()
            ),
            cpu.map(|r| r <= 0.5),
            cpu.map_or("-".into(), |r| format!("ratio {r:.2}")),
        );
        line(
            format!("fan-out {}: deliveries/s >= nats", c.key()),
            rate.map(|r| r >= 1.0),
            rate.map_or("-".into(), |r| format!("ratio {r:.2}")),
        );
    }
    for c in cells
        .iter()
        .filter(|c| c.scenario == "catchup" && c.broker == "roomd")
    {
        let p: Vec<(&str, u64)> = c.params.clone();
        let rate = c.metric("msgs_per_s").unwrap_or(f64::NAN);
        let (size, cold) = (c.param("size"), c.param("cold") == Some(1));
        let floor = match (size, cold) {
            (Some(64), false) => Some(2e6),
            (Some(64), true) => Some(1e6),
            _ => None,
        };
        if let Some(floor) = floor {
            line(
                format!("catch-up {}: >= {:.0} M msgs/s", c.key(), floor / 1e6),
                Some(rate >= floor),
                format!("{:.2} M msgs/s", rate / 1e6),
            );
        }
        if size == Some(1024) && cold {
            let share = c.metric("payload_share_of_disk");
            line(
                format!(
                    "catch-up {}: >= 50% of the disk's sequential read rate",
                    c.key()
                ),
                share.map(|s| s >= 0.5),
                share.map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
            );
        }
        let vs = pair_ratio("catchup", "roomd", &p, "msgs_per_s");
        line(
            format!(
                "catch-up {}: msgs/s >= 2x the JetStream ordered consumer",
                c.key()
            ),
            vs.map(|r| r >= 2.0),
            vs.map_or("-".into(), |r| format!("ratio {r:.2}")),
        );
        let subbed = c.metric("subbed_ms");
        line(
            format!("catch-up {}: subbed after a restart within 50 ms", c.key()),
            subbed.map(|ms| ms <= 50.0),
            subbed.map_or("-".into(), |ms| format!("{ms:.1} ms")),
        );
    }
    let idle = cells
        .iter()
        .find(|c| c.scenario == "idle" && c.broker == "roomd");
    let kib = idle.and_then(|c| c.metric("rss_per_conn_kib"));
    line(
        "idle: server RSS per subscribed connection <= 6 KiB".into(),
        kib.map(|k| k <= 6.0),
        kib.map_or("-".into(), |k| format!("{k:.2} KiB")),
    );
    let c64 = [("concurrency", 64)];
    let acks = pair_ratio("durable", "roomd", &c64, "acks_per_s");
    line(
        "durable, 64 publishers: acks/s >= 2x nats JetStream".into(),
        acks.map(|r| r >= 2.0),
        acks.map_or("-".into(), |r| format!("ratio {r:.2}")),
    );
    let cpu = pair_ratio("durable", "roomd", &c64, "server_cpu_us_per_ack");
    line(
        "durable, 64 publishers: server CPU per ack <= 0.5x nats".into(),
        cpu.map(|r| r <= 0.5),
        cpu.map_or("-".into(), |r| format!("ratio {r:.2}")),
    );
    let p50 = find("durable", "roomd", &[("concurrency", 1)]).and_then(|c| c.metric("p50_us"));
    line(
        "durable, 1 publisher: publish->ack p50 < 1 ms (durable mode)".into(),
        p50.map(|v| v < 1000.0),
        p50.map_or("-".into(), |v| format!("{v:.0} us")),
    );
    let relaxed = pair_ratio(
        "durable",
        "roomd-relaxed",
        &[("concurrency", 1)],
        "acks_per_s",
    );
    line(
        "durable, 1 publisher, relaxed mode: acks/s >= nats".into(),
        relaxed.map(|r| r >= 1.0),
        relaxed.map_or("-".into(), |r| format!("ratio {r:.2}")),
    );
    for c in cells
        .iter()
        .filter(|c| c.scenario == "latency" && c.broker == "roomd")
    {
        let r = pair_ratio("latency", "roomd", &c.params, "p99_us");
        line(
            format!("{}: p99 <= nats", c.key()),
            r.map(|r| r <= 1.0),
            r.map_or("-".into(), |r| format!("ratio {r:.2}")),
        );
    }
    let lossy: Vec<String> = cells
        .iter()
        .filter(|c| c.broker.starts_with("roomd"))
        .filter(|c| c.metric("lost").is_some_and(|l| l != 0.0))
        .map(|c| {
            format!(
                "{} {} lost {}",
                c.key(),
                c.broker,
                fmt(c.metric("lost").unwrap_or(0.0))
            )
        })
        .collect();
    let measured = cells.iter().any(|c| c.metric("lost").is_some());
    line(
        "roomd loses nothing in any cell".into(),
        measured.then_some(lossy.is_empty()),
        if lossy.is_empty() {
            "0 lost everywhere".into()
        } else {
            lossy.join("; ")
        },
    );
    out
}
