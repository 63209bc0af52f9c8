//! Cluster mode against real processes: a redis-server of its own per test (temp dir, loopback
//! port; Debian's `redis-server`, installed by `.ci/run`) and three roomd nodes sharing it.

// Test code: a failed unwrap is a failed test, and helpers are shared by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    unreachable_pub
)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{err_code, Broker, Client};
use roomd_protocol::{ClientFrame, ServerFrame, Value};

/// A redis-server on a loopback port, its files in a temp dir.
struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    /// `appendfsync` and whether the append-only file is on.
    fsync: &'static str,
    aof: bool,
    /// The port of the primary this one replicates.
    replica_of: Option<u16>,
    child: Option<Child>,
}

impl Redis {
    /// Strict durability: `appendonly yes`, `appendfsync always`.
    fn start() -> Redis {
        Redis::start_with(true, "always")
    }

    fn start_with(aof: bool, fsync: &'static str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            port,
            fsync,
            aof,
            replica_of: None,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args([
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--daemonize",
                "no",
            ])
            .args(
                self.replica_of
                    .iter()
                    .flat_map(|p| ["--replicaof".to_string(), "127.0.0.1".into(), p.to_string()]),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A replica of `primary`, durable like it.
    fn start_replica(primary: &Redis) -> Redis {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            fsync: primary.fsync,
            aof: primary.aof,
            replica_of: Some(primary.port),
            child: None,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command over a plain socket; the first line of the reply.
    fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = StdTcp::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()?
                .to_string(),
        )
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }

    fn appendonly_dir(&self) -> PathBuf {
        self.dir.path().join("appendonlydir")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.kill9();
    }
}

fn node_config(redis: &Redis, extra: &str) -> String {
    format!(
        "[cluster]\nengine = \"redis\"\nredis_url = \"{}\"\nunreachable_grace_ms = 1500\nprobe_ms = 300\n{extra}",
        redis.url()
    )
}

fn nodes(redis: &Redis, n: usize) -> Vec<Broker> {
    (0..n)
        .map(|i| Broker::start(&node_config(redis, &format!("node_id = \"n{i}\"\n"))))
        .collect()
}

fn incr(c: &mut Client, room: &str, key: &str) -> ClientFrame {
    ClientFrame::Incr {
        id: c.id(),
        room: room.into(),
        key: key.into(),
        by: None,
    }
}

async fn publish_mid(c: &mut Client, room: &str, data: &[u8], mid: &str) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Pub {
        id,
        room: room.into(),
        data: data.to_vec(),
        mid: Some(mid.into()),
    })
    .await
}

/// Every stored message of `room` as (seq, data), oldest first, paged through `hist`.
async fn history(c: &mut Client, room: &str) -> Vec<(u64, Vec<u8>)> {
    c.history_all(room)
        .await
        .into_iter()
        .filter_map(|item| match item {
            ServerFrame::Msg { seq, data, .. } => Some((seq, data)),
            _ => None,
        })
        .collect()
}

fn epoch_of(f: &ServerFrame) -> u64 {
    match f {
        ServerFrame::Subbed { epoch, .. } => *epoch,
        other => panic!("expected subbed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_the_others_in_order() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let (mut a, mut b, mut c) = (
        Client::connect(&n[0]).await,
        Client::connect(&n[1]).await,
        Client::connect(&n[2]).await,
    );
    match &b.hello {
        ServerFrame::Hello { node, .. } => assert_eq!(node.as_deref(), Some("n1")),
        other => panic!("{other:?}"),
    }
    let (sb, sc) = (b.sub("r", None).await, c.sub("r", None).await);
    assert_eq!(
        epoch_of(&sb),
        epoch_of(&sc),
        "one room, one epoch on every node"
    );
    for i in 0..200u32 {
        let seq = a.publish_seq("r", &i.to_be_bytes()).await;
        assert_eq!(seq, u64::from(i) + 1);
    }
    for sub in [&mut b, &mut c] {
        for i in 0..200u32 {
            assert_eq!(
                sub.msg().await,
                (u64::from(i) + 1, i.to_be_bytes().to_vec())
            );
        }
    }
    // A node that loads the room afterwards sees the same log.
    let mut late = Client::connect(&n[2]).await;
    let hist = history(&mut late, "r").await;
    assert_eq!(hist.len(), 200);
    assert!(hist
        .iter()
        .enumerate()
        .all(|(i, (s, _))| *s == i as u64 + 1));
}

#[tokio::test]
async fn writers_on_every_node_share_one_dense_order() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let mut watcher = Client::connect(&n[0]).await;
    watcher.sub("r", None).await;
    let mut tasks = Vec::new();
    for (i, node) in n.iter().enumerate() {
        let mut c = Client::connect(node).await;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for j in 0..100u32 {
                let data = format!("{i}:{j}");
                seqs.push(c.publish_seq("r", data.as_bytes()).await);
            }
            seqs
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        for s in t.await.unwrap() {
            assert!(acked.insert(s), "seq {s} acked twice");
        }
    }
    assert_eq!(acked, (1..=300).collect());
    // The subscriber on node 0 saw every entry once, in seq order.
    let mut per_writer: BTreeMap<String, u32> = BTreeMap::new();
    for want in 1..=300 {
        let (seq, data) = watcher.msg().await;
        assert_eq!(seq, want);
        let text = String::from_utf8(data).unwrap();
        let (w, j) = text.split_once(':').unwrap();
        let next = per_writer.entry(w.into()).or_default();
        assert_eq!(
            j.parse::<u32>().unwrap(),
            *next,
            "a writer's messages keep their order"
        );
        *next += 1;
    }
}

#[tokio::test]
async fn concurrent_incr_on_three_nodes_sums_exactly() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let mut tasks = Vec::new();
    for node in &n {
        let mut c = Client::connect(node).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let f = incr(&mut c, "counter", "n");
                match c.request(f).await {
                    ServerFrame::Done { .. } => {}
                    other => panic!("expected done, got {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for node in &n {
        let mut c = Client::connect(node).await;
        let id = c.id();
        let reply = c
            .request(ClientFrame::Get {
                id,
                room: "counter".into(),
                key: "n".into(),
            })
            .await;
        match reply {
            ServerFrame::Val { value, ver, .. } => {
                assert_eq!(value, Some(Value::from(300)));
                assert_eq!(ver, 300, "every incr is one entry of the log");
            }
            other => panic!("expected val, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resume_on_another_node_has_no_gap_and_no_duplicate() {
    let redis = Redis::start();
    let n = nodes(&redis, 3);
    let mut publisher = Client::connect(&n[0]).await;
    let mut sub = Client::connect(&n[0]).await;
    sub.sub("r", None).await;
    for i in 0..50u32 {
        publisher.publish_seq("r", &i.to_be_bytes()).await;
    }
    let mut last = 0;
    for _ in 0..20 {
        last = sub.msg().await.0;
    }
    drop(sub);
    // The publisher goes on while the subscriber moves to another node.
    let publishing = tokio::spawn(async move {
        for i in 50..300u32 {
            publisher.publish_seq("r", &i.to_be_bytes()).await;
        }
    });
    let mut resumed = Client::connect(&n[1]).await;
    resumed.sub("r", Some(last)).await;
    publishing.await.unwrap();
    for want in last + 1..=300 {
        let (seq, data) = resumed.msg().await;
        assert_eq!(seq, want);
        assert_eq!(data, ((want - 1) as u32).to_be_bytes());
    }
    assert!(resumed
        .try_event(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test]
async fn a_mid_is_stored_once_across_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut a = Client::connect_query(&n[0], "client=c1").await;
    let mut b = Client::connect_query(&n[1], "client=c1").await;
    let first = publish_mid(&mut a, "r", b"x", "m1").await;
    let ServerFrame::Ack { seq, dup: None, .. } = first else {
        panic!("expected ack, got {first:?}");
    };
    // The retry goes to the other node, which has not loaded the room yet.
    match publish_mid(&mut b, "r", b"x", "m1").await {
        ServerFrame::Ack {
            seq: s,
            dup: Some(true),
            ..
        } => assert_eq!(s, seq),
        other => panic!("expected a dup ack, got {other:?}"),
    }
    // And when it has the room loaded and another node wrote the mid meanwhile.
    publish_mid(&mut b, "r", b"y", "m2").await;
    let ServerFrame::Ack { seq: s3, .. } = publish_mid(&mut a, "r", b"z", "m3").await else {
        panic!()
    };
    match publish_mid(&mut b, "r", b"z", "m3").await {
        ServerFrame::Ack {
            seq,
            dup: Some(true),
            ..
        } => assert_eq!(seq, s3),
        other => panic!("expected a dup ack, got {other:?}"),
    }
    assert_eq!(history(&mut a, "r").await.len(), 3);
}

#[tokio::test]
async fn kill9_of_a_node_during_idempotent_publishing_stores_each_mid_once() {
    let redis = Redis::start();
    let mut n = nodes(&redis, 2);
    let mut a = Client::connect_query(&n[0], "client=w").await;
    let mut acked = 0;
    for i in 0..100 {
        match publish_mid(&mut a, "r", format!("{i}").as_bytes(), &format!("m{i}")).await {
            ServerFrame::Ack { .. } => acked = i + 1,
            other => panic!("{other:?}"),
        }
    }
    // Requests in flight when the node dies: their outcome is unknown to the client.
    for i in 100..150 {
        let id = a.id();
        a.send(&ClientFrame::Pub {
            id,
            room: "r".into(),
            data: format!("{i}").into_bytes(),
            mid: Some(format!("m{i}")),
        })
        .await;
    }
    n[0].kill9();
    // The client retries everything unacknowledged on the other node.
    let mut b = Client::connect_query(&n[1], "client=w").await;
    for i in acked..200 {
        match publish_mid(&mut b, "r", format!("{i}").as_bytes(), &format!("m{i}")).await {
            ServerFrame::Ack { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let hist = history(&mut b, "r").await;
    let mut seen = HashSet::new();
    for (_, data) in &hist {
        assert!(
            seen.insert(data.clone()),
            "{:?} stored twice",
            String::from_utf8_lossy(data)
        );
    }
    assert_eq!(seen.len(), 200);
}

#[tokio::test]
async fn kill9_of_redis_under_load_loses_no_acknowledged_seq() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut writers = Vec::new();
    for (w, node) in n.iter().enumerate() {
        let mut c = Client::connect_query(node, &format!("client=w{w}")).await;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..400u32 {
                let id = c.id();
                let f = ClientFrame::Pub {
                    id,
                    room: "r".into(),
                    data: format!("{w}:{i}").into_bytes(),
                    mid: Some(format!("{i}")),
                };
                c.send(&f).await;
                match c.reply_to(id).await {
                    ServerFrame::Ack { seq, .. } => acked.push((seq, format!("{w}:{i}"))),
                    // Redis is down: 503, the client would retry later.
                    f @ ServerFrame::Err { .. } => assert_eq!(err_code(&f), 503),
                    other => panic!("{other:?}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.spawn();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(!acked.is_empty());
    let mut reader = Client::connect(&n[0]).await;
    // Whatever the nodes' connections went through, the reader gets the log from Redis.
    let stored: BTreeMap<u64, String> = history(&mut reader, "r")
        .await
        .into_iter()
        .map(|(s, d)| (s, String::from_utf8(d).unwrap()))
        .collect();
    for (seq, data) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(data),
            "acked seq {seq} lost or changed"
        );
    }
    let max = *stored.keys().max().unwrap();
    assert_eq!(stored.len() as u64, max, "no holes: seqs 1..={max}");
}

#[tokio::test]
async fn redis_losing_acknowledged_writes_rotates_the_epoch_and_never_reuses_a_seq() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut a = Client::connect(&n[0]).await;
    let mut watcher = Client::connect(&n[1]).await;
    let epoch = epoch_of(&watcher.sub("r", None).await);
    for i in 0..10u32 {
        a.publish_seq("r", &i.to_be_bytes()).await;
    }
    // A copy of Redis's files as of seq 10 stands for a replica that had replicated that far.
    let behind = tempfile::tempdir().unwrap();
    copy_dir(
        &redis.appendonly_dir(),
        &behind.path().join("appendonlydir"),
    );
    for i in 10..20u32 {
        a.publish_seq("r", &i.to_be_bytes()).await;
    }
    for want in 1..=20 {
        assert_eq!(watcher.msg().await.0, want);
    }
    // The "replica" is promoted: Redis comes back without seqs 11..=20.
    redis.kill9();
    std::fs::remove_dir_all(redis.appendonly_dir()).unwrap();
    copy_dir(
        &behind.path().join("appendonlydir"),
        &redis.appendonly_dir(),
    );
    redis.spawn();
    // The nodes notice by their probe (their last seq is past Redis's) and rotate the epoch:
    // subscribers are closed to resume, and are told their history is not complete.
    assert_eq!(watcher.close_code().await, Some(4005));
    let mut resumed = Client::connect(&n[1]).await;
    let subbed = resumed.sub("r", Some(20)).await;
    assert_ne!(epoch_of(&subbed), epoch, "a new epoch");
    // Seqs go on after the fence: 11..=20 are never given to other content.
    let seq = a.publish_seq("r", b"after").await;
    assert!(seq > 20, "seq {seq} reused");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test]
async fn killed_pubsub_connections_are_filled_from_the_log() {
    let redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut a = Client::connect(&n[0]).await;
    let mut b = Client::connect(&n[1]).await;
    b.sub("r", None).await;
    let publishing = tokio::spawn(async move {
        for i in 0..300u32 {
            a.publish_seq("r", &i.to_be_bytes()).await;
            if i % 50 == 25 {
                tokio::task::yield_now().await;
            }
        }
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    publishing.await.unwrap();
    for want in 1..=300 {
        assert_eq!(b.msg().await.0, want);
    }
}

#[tokio::test]
async fn a_node_without_redis_closes_its_clients_and_recovers() {
    let redis = Redis::start();
    let n = nodes(&redis, 1);
    let mut c = Client::connect(&n[0]).await;
    c.sub("r", None).await;
    assert_eq!(n[0].http_get("/readyz").await.0, 200);
    redis.signal("STOP");
    // Past the grace (1.5 s here) the node closes its connections with 4005.
    assert_eq!(c.close_code().await, Some(4005));
    assert_eq!(n[0].http_get("/readyz").await.0, 503);
    let mut d = Client::connect(&n[0]).await;
    let f = d.publish("r", b"x").await;
    assert_eq!(err_code(&f), 503, "{f:?}");
    redis.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while n[0].http_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready again after SIGCONT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut e = Client::connect(&n[0]).await;
    e.sub("r", None).await;
    let seq = d.publish_seq("r", b"y").await;
    // The publish answered 503 may still have been stored once Redis ran again (a 503 means
    // "retry with the same mid"): then it reaches `e` first, before `y`.
    let mut got = e.msg().await;
    if got.1 == b"x" {
        assert!(got.0 < seq, "{got:?} after {seq}");
        got = e.msg().await;
    }
    assert_eq!(got, (seq, b"y".to_vec()));
}

#[tokio::test]
async fn a_redis_without_fsync_on_every_write_is_refused_in_strict_mode() {
    let redis = Redis::start_with(true, "everysec");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(&config, node_config(&redis, "")).unwrap();
    let out = common::run_to_exit(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("appendfsync everysec"), "{err}");
    // Relaxed mode starts, with a warning.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let config = node_config(&redis, "durability = \"relaxed\"\n");
    let b = Broker::start(&format!("{config}[admin]\nlisten = \"{admin}\"\n"));
    let mut c = Client::connect(&b).await;
    assert_eq!(c.publish_seq("r", b"x").await, 1);
    // The rooms are not on this node's disk: no backup of it.
    let (status, _, _) = common::http_at(&admin, "GET", "/backup", &[], b"").await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_lagging_node_never_shows_an_entry_redis_did_not_keep() {
    let mut redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut a = Client::connect(&n[0]).await;
    let mut b = Client::connect(&n[1]).await;
    b.sub("r", None).await;
    a.publish_seq("r", b"first").await;
    assert_eq!(b.msg().await.0, 1);
    // Node B stops reading: what Redis sends it backs up (in Redis's output buffer and the
    // socket), as for a node under load.
    let kill = |sig: &str, pid: u32| {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
    };
    kill("STOP", n[1].pid());
    let mut acked = BTreeMap::new();
    for i in 0..300u32 {
        let seq = a.publish_seq("r", &i.to_be_bytes()).await;
        acked.insert(seq, i.to_be_bytes().to_vec());
    }
    redis.kill9();
    redis.spawn();
    kill("CONT", n[1].pid());
    // Every entry B hands its subscriber is one Redis kept, with the same content: B only
    // ever hears of entries after Redis acknowledged (and fsynced) them.
    let mut reader = Client::connect(&n[0]).await;
    let stored: BTreeMap<u64, Vec<u8>> = history(&mut reader, "r").await.into_iter().collect();
    let mut got = 0;
    while let Some(f) = b.try_event(Duration::from_secs(2)).await {
        if let ServerFrame::Msg { seq, data, .. } = f {
            assert_eq!(
                stored.get(&seq),
                Some(&data),
                "seq {seq} shown but not kept"
            );
            got += 1;
        }
    }
    assert_eq!(got, 300, "and B caught up");
    for (seq, data) in &acked {
        assert_eq!(stored.get(seq), Some(data));
    }
}

async fn sub_present(c: &mut Client, room: &str, name: &str) -> ServerFrame {
    let id = c.id();
    c.request(ClientFrame::Sub {
        id,
        room: room.into(),
        since: None,
        state: None,
        presence: Some(true),
        info: Some(Value::from(name)),
    })
    .await
}

fn members(f: &ServerFrame) -> Vec<Value> {
    let list = match f {
        ServerFrame::Subbed { presence, .. } => presence.clone().unwrap_or_default(),
        ServerFrame::Who { members, .. } => members.clone(),
        other => panic!("expected a member list, got {other:?}"),
    };
    let mut infos: Vec<Value> = list.into_iter().filter_map(|m| m.info).collect();
    infos.sort_by_key(|v| v.to_string());
    infos
}

/// The next join or leave: (joined, info or conn).
async fn presence_event(c: &mut Client) -> (bool, String) {
    loop {
        match c.event().await {
            ServerFrame::Join { info, .. } => return (true, info.unwrap().to_string()),
            ServerFrame::Leave { conn, .. } => return (false, conn),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn presence_spans_nodes_and_a_crashed_nodes_members_leave() {
    let redis = Redis::start();
    let mut n: Vec<Broker> = (0..2)
        .map(|i| {
            Broker::start(&node_config(
                &redis,
                &format!("node_id = \"p{i}\"\nnode_ttl_ms = 1000\n"),
            ))
        })
        .collect();
    let mut ada = Client::connect(&n[0]).await;
    let ada_conn = match &ada.hello {
        ServerFrame::Hello { conn, .. } => conn.clone(),
        other => panic!("{other:?}"),
    };
    sub_present(&mut ada, "room", "ada").await;
    let mut bob = Client::connect(&n[1]).await;
    // Bob, on the other node, sees Ada in his snapshot; Ada sees Bob join.
    let subbed = sub_present(&mut bob, "room", "bob").await;
    assert_eq!(members(&subbed), [Value::from("ada"), Value::from("bob")]);
    assert_eq!(presence_event(&mut ada).await, (true, "\"bob\"".into()));
    let mut cy = Client::connect(&n[1]).await;
    let id = cy.id();
    let who = cy
        .request(ClientFrame::Who {
            id,
            room: "room".into(),
        })
        .await;
    assert_eq!(members(&who), [Value::from("ada"), Value::from("bob")]);
    // Ada's node dies: within its heartbeat's lifetime Bob sees her leave.
    let killed = Instant::now();
    n[0].kill9();
    assert_eq!(presence_event(&mut bob).await, (false, ada_conn));
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "{:?}",
        killed.elapsed()
    );
    let id = cy.id();
    let who = cy
        .request(ClientFrame::Who {
            id,
            room: "room".into(),
        })
        .await;
    assert_eq!(members(&who), [Value::from("bob")]);
    // And a graceful leave on one node is seen on the other.
    let mut dan = Client::connect(&n[1]).await;
    n[0] = Broker::start(&node_config(
        &redis,
        "node_id = \"p0\"\nnode_ttl_ms = 1000\n",
    ));
    let mut eve = Client::connect(&n[0]).await;
    sub_present(&mut eve, "room", "eve").await;
    // Presence crosses nodes a moment after the `subbed`.
    assert_eq!(presence_event(&mut bob).await, (true, "\"eve\"".into()));
    let subbed = sub_present(&mut dan, "room", "dan").await;
    assert_eq!(
        members(&subbed),
        [Value::from("bob"), Value::from("dan"), Value::from("eve")]
    );
    let eve_conn = match &eve.hello {
        ServerFrame::Hello { conn, .. } => conn.clone(),
        other => panic!("{other:?}"),
    };
    drop(eve);
    loop {
        let (joined, who) = presence_event(&mut dan).await;
        if !joined {
            assert_eq!(who, eve_conn);
            break;
        }
    }
}

#[tokio::test]
async fn a_room_only_subscribed_to_leaves_nothing_in_redis_for_good() {
    let redis = Redis::start();
    let n = nodes(&redis, 1);
    let mut c = Client::connect(&n[0]).await;
    c.sub("made-up", None).await;
    // The key of the room's meta (its hash tag is its partition).
    let meta = redis.cmd(&["KEYS", "roomd:*:made-up:meta"]);
    assert!(
        meta.as_deref().is_some_and(|l| l.starts_with("*1")),
        "{meta:?}"
    );
    let key = {
        let mut s = StdTcp::connect(("127.0.0.1", redis.port)).unwrap();
        s.write_all(b"KEYS roomd:*:made-up:meta\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .nth(2)
            .unwrap()
            .to_string()
    };
    let ttl = redis.cmd(&["PTTL", &key]).unwrap();
    let ms: i64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(
        ms > 0 && ms <= 86_400_000,
        "a read-only room expires: {ttl}"
    );
    c.publish_seq("made-up", b"x").await;
    assert_eq!(
        redis.cmd(&["PTTL", &key]).as_deref(),
        Some(":-1"),
        "a write keeps it"
    );
}

/// The entries a subscriber from `since: 0` is sent, until `last`, as (seq, data, edited,
/// deleted, edits) for messages and (seq, target) for `del`s as `edits`.
async fn replayed(
    c: &mut Client,
    room: &str,
    last: u64,
) -> Vec<(u64, Vec<u8>, Option<u64>, Option<u64>, Option<u64>)> {
    c.sub(room, Some(0)).await;
    let mut out = Vec::new();
    while out.len() < last as usize {
        match c.event().await {
            ServerFrame::Msg {
                seq,
                data,
                edited,
                deleted,
                edits,
                ..
            } => out.push((seq, data, edited, deleted, edits)),
            ServerFrame::Del { seq, target, .. } => {
                out.push((seq, Vec::new(), None, None, Some(target)))
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn edits_deletions_and_signals_cross_nodes() {
    let redis = Redis::start();
    let n = nodes(&redis, 2);
    let mut ada = Client::connect_query(&n[0], "user=ada").await;
    let mut ada_too = Client::connect_query(&n[1], "user=ada").await;
    let mut bob = Client::connect_query(&n[1], "user=bob").await;
    for c in [&mut ada, &mut ada_too, &mut bob] {
        c.sub("r", None).await;
    }
    for (i, text) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        assert_eq!(ada.publish_seq("r", text).await, i as u64 + 1);
    }
    for _ in 0..3 {
        bob.msg().await;
        ada_too.msg().await;
    }

    // An edit through node 0 reaches node 1 live, and node 1's copy of the message is
    // rewritten: a subscriber there replaying from its cache sees the new content.
    let id = ada.id();
    let edit = |id, data: &[u8]| ClientFrame::Edit {
        id,
        room: "r".into(),
        target: 1,
        data: data.to_vec(),
    };
    assert!(matches!(
        ada.request(edit(id, b"one!")).await,
        ServerFrame::Ack { seq: 4, .. }
    ));
    let id = ada.id();
    assert!(matches!(
        ada.request(edit(id, b"one!!")).await,
        ServerFrame::Ack { seq: 5, .. }
    ));
    // Once node 1 has applied them (bob saw them live).
    loop {
        if let ServerFrame::Msg { seq: 5, .. } = bob.event().await {
            break;
        }
    }
    let mut late = Client::connect(&n[1]).await;
    let seen = replayed(&mut late, "r", 5).await;
    assert_eq!(seen[0], (1, b"one!!".to_vec(), Some(5), None, None));
    assert_eq!(
        seen[3],
        (4, Vec::new(), None, Some(5), Some(1)),
        "the superseded edit lost its content on node 1 too"
    );
    assert_eq!(seen[4], (5, b"one!!".to_vec(), None, None, Some(1)));

    // The same message deleted through both nodes at once: one `del`, the other a duplicate.
    let (ia, ib) = (ada.id(), ada_too.id());
    let del = |id| ClientFrame::Redact {
        id,
        room: "r".into(),
        target: 3,
    };
    let (ra, rb) = tokio::join!(ada.request(del(ia)), ada_too.request(del(ib)));
    let (
        ServerFrame::Ack {
            seq: sa, dup: da, ..
        },
        ServerFrame::Ack {
            seq: sb, dup: db, ..
        },
    ) = (&ra, &rb)
    else {
        panic!("{ra:?} {rb:?}");
    };
    assert_eq!(
        (sa, [da, db].iter().filter(|d| d.is_some()).count()),
        (sb, 1),
        "{ra:?} {rb:?}"
    );
    let log = ada.history_all("r").await;
    let dels: Vec<_> = log
        .iter()
        .filter(|f| matches!(f, ServerFrame::Del { target: 3, .. }))
        .collect();
    assert_eq!(dels.len(), 1, "{log:?}");
    // Bob, not the author, may not edit it through either node.
    let id = bob.id();
    assert_eq!(err_code(&bob.request(edit(id, b"mine")).await), 423);

    // An ephemeral message through node 0 reaches the live subscribers on node 1 (the
    // sender's other connection too), and not its sender.
    let id = ada.id();
    let reply = ada
        .request(ClientFrame::Signal {
            id,
            room: "r".into(),
            data: b"typing".to_vec(),
            ephemeral: true,
        })
        .await;
    assert!(matches!(reply, ServerFrame::Ok { .. }), "{reply:?}");
    for c in [&mut bob, &mut ada_too] {
        loop {
            match c.event().await {
                ServerFrame::Signal { data, uid, .. } => {
                    assert_eq!(
                        (data.as_slice(), uid.as_deref()),
                        (&b"typing"[..], Some("ada"))
                    );
                    break;
                }
                ServerFrame::Msg { .. } | ServerFrame::Del { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    while let Some(f) = ada.try_event(Duration::from_millis(300)).await {
        assert!(
            !matches!(f, ServerFrame::Signal { .. }),
            "the sender got its own signal"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Redis Sentinel on a loopback port watching `primary` as "m" (alone: a quorum of one),
/// quick to declare it down.
struct Sentinel {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Sentinel {
    fn start(primary: &Redis) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor m 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 4000\n",
                dir.path().display(),
                primary.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sentinel {
            _dir: dir,
            port,
            child,
        };
        let probe = Redis {
            dir: tempfile::tempdir().unwrap(),
            port,
            fsync: "always",
            aof: true,
            replica_of: None,
            child: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while probe.cmd(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn nodes_follow_a_sentinel_failover_with_no_gap() {
    let mut primary = Redis::start();
    let replica = Redis::start_replica(&primary);
    let sentinel = Sentinel::start(&primary);
    // redis_url gives only the scheme (and credentials, were there any): Sentinel names the
    // primary.
    let cfg = |i: usize| {
        format!(
            "[cluster]\nengine = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n\
             sentinels = [\"redis://127.0.0.1:{}\"]\nsentinel_master = \"m\"\n\
             unreachable_grace_ms = 30000\nprobe_ms = 300\nnode_id = \"n{i}\"\n",
            sentinel.port
        )
    };
    let n: Vec<Broker> = (0..2).map(|i| Broker::start(&cfg(i))).collect();
    let mut publisher = Client::connect(&n[0]).await;
    let mut sub = Client::connect(&n[1]).await;
    sub.sub("r", None).await;
    for i in 1..=20u32 {
        assert_eq!(
            publisher.publish_seq("r", &i.to_be_bytes()).await,
            u64::from(i)
        );
    }
    // The replica has all of it before the primary dies (replication is asynchronous: without
    // this, the loss fence would be the right outcome instead).
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary.cmd(&["WAIT", "1", "500"]).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "the replica did not catch up");
    }
    primary.kill9();
    // Publishes retried with their mid until the new primary takes them.
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 21..=40u32 {
        loop {
            match publish_mid(&mut publisher, "r", &i.to_be_bytes(), &format!("m{i}")).await {
                ServerFrame::Ack { seq, .. } => {
                    assert_eq!(seq, u64::from(i));
                    break;
                }
                other => {
                    assert_eq!(err_code(&other), 503, "{other:?}");
                    assert!(Instant::now() < deadline, "no new primary within 40 s");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    for want in 1..=40u64 {
        let (seq, data) = sub.msg().await;
        assert_eq!((seq, data), (want, ((want) as u32).to_be_bytes().to_vec()));
    }
    assert_eq!(
        history(&mut sub, "r").await.len(),
        40,
        "the new primary has every acknowledged entry"
    );
    for node in &n {
        assert_eq!(node.metric("roomd_cluster_failovers_total").await, 1.0);
    }
    drop(replica);
}

/// Presence v2 across nodes (SPEC.md 4.12): a user who drops on one node and resumes on the
/// other within the grace is never seen to leave, the held member counting until its grace
/// ends; after that the user's entry counts one connection.
#[tokio::test]
async fn a_resume_on_another_node_within_the_grace_is_no_leave() {
    let redis = Redis::start();
    let ns = "[rooms]\npresence_grace_ms = 1500\n[namespaces.chat]\npresence_mode = \"users\"\n";
    let n: Vec<Broker> = (0..2)
        .map(|i| Broker::start(&node_config(&redis, &format!("node_id = \"g{i}\"\n{ns}"))))
        .collect();
    let mut watcher = Client::connect(&n[1]).await;
    let id = watcher.id();
    watcher
        .request(ClientFrame::Sub {
            id,
            room: "chat:r".into(),
            since: None,
            state: None,
            presence: Some(true),
            info: None,
        })
        .await;
    let mut ann = Client::connect_query(&n[0], "user=ann").await;
    sub_present(&mut ann, "chat:r", "ann").await;
    assert_eq!(presence_event(&mut watcher).await, (true, "\"ann\"".into()));
    drop(ann);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ann = Client::connect_query(&n[1], "user=ann").await;
    sub_present(&mut ann, "chat:r", "ann").await;
    // Past the grace of the first connection: neither a leave nor a join.
    let until = Instant::now() + Duration::from_millis(2500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match watcher.try_event(left).await {
            Some(f @ (ServerFrame::Join { .. } | ServerFrame::Leave { .. })) => {
                panic!("the watcher saw {f:?}")
            }
            Some(_) => {}
            None => break,
        }
    }
    let mut late = Client::connect(&n[1]).await;
    let subbed = sub_present(&mut late, "chat:r", "late").await;
    let ServerFrame::Subbed {
        presence: Some(list),
        ..
    } = subbed
    else {
        panic!("{subbed:?}")
    };
    let ann_entry = list.iter().find(|m| m.user.as_deref() == Some("ann"));
    assert_eq!(ann_entry.and_then(|m| m.conns), Some(1), "{list:?}");
}

/// Ephemeral keys on Redis (SPEC.md 4.14): only with `ttl_ms` (406 without); the node that
/// accepted the connection deletes the key when the connection ends, and every node sees it.
#[tokio::test]
async fn an_ephemeral_key_needs_a_ttl_and_goes_with_its_connection_on_every_node() {
    let redis = Redis::start();
    let n = nodes(&redis, 2);
    let lock = |id: u32, ttl_ms: Option<u64>| ClientFrame::Cas {
        id,
        room: "lock".into(),
        key: "leader".into(),
        ver: 0,
        value: Value::from("n0"),
        ttl_ms,
        ephemeral: true,
    };
    let mut watch = Client::connect(&n[1]).await;
    watch.sub("lock", None).await;
    let mut holder = Client::connect(&n[0]).await;
    let id = holder.id();
    assert_eq!(err_code(&holder.request(lock(id, None)).await), 406);
    let id = holder.id();
    let taken = match holder.request(lock(id, Some(60_000))).await {
        ServerFrame::Done { seq: Some(s), .. } => s,
        other => panic!("{other:?}"),
    };
    drop(holder);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match watch.try_event(left).await {
            Some(ServerFrame::State {
                seq,
                from,
                ver: 0,
                key,
                ..
            }) => {
                assert_eq!((key.as_str(), from.as_str()), ("leader", "ephemeral"));
                assert!(seq > taken);
                break;
            }
            Some(_) => {}
            None => panic!("the key did not go with its connection (long before its ttl)"),
        }
    }
}
