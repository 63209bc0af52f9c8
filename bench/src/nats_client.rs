//! Core NATS and JetStream over nats-server's websocket listener: binary frames carrying the
//! NATS text protocol, parsed in place by [`crate::nats_proto`].

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::client::{DurableArgs, PubArgs, PubResult, SubArgs};
use crate::nats_proto::{put_pub, Event, Parser, CONNECT, CONNECT_HEADERS};
use crate::roomd_client::Replayed;
use crate::track::{self, SubTrack};
use crate::ws::{self, Frame, Target, Ws};
use crate::{clock, stats, BenchError};

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn proto(msg: impl Into<String>) -> BenchError {
    BenchError::Protocol(msg.into())
}

/// A NATS connection: the websocket and the parser state between frames.
struct Conn {
    ws: Ws,
    parser: Parser,
}

impl Conn {
    /// Reads frames until `want` accepts an event; answers server PINGs meanwhile.
    async fn wait_for<F: FnMut(&Event<'_>) -> Option<Result<(), String>>>(
        &mut self,
        what: &'static str,
        mut want: F,
    ) -> Result<(), BenchError> {
        let work = async {
            loop {
                let mut found = None;
                let mut ping = false;
                match self.ws.reader.next().await? {
                    Frame::Data(b) => self
                        .parser
                        .feed(b, |e| {
                            if found.is_none() {
                                found = match &e {
                                    Event::Err(text) => {
                                        Some(Err(String::from_utf8_lossy(text).into_owned()))
                                    }
                                    e => want(e),
                                };
                            }
                            ping |= e == Event::Ping;
                        })
                        .map_err(proto)?,
                    Frame::Close(code) => {
                        return Err(proto(format!("nats-server closed: {code:?}")))
                    }
                }
                self.ws.answer_ping().await?;
                if ping {
                    self.ws.writer.send(b"PONG\r\n").await?;
                }
                match found {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => return Err(proto(format!("nats-server: {e}"))),
                    None => continue,
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, work)
            .await
            .map_err(|_| BenchError::Timeout(what))?
    }

    /// Connects, reads INFO, sends CONNECT and waits for the PONG that confirms it.
    async fn open(target: &Target, src: Ipv4Addr) -> Result<Conn, BenchError> {
        Conn::open_with(target, src, CONNECT).await
    }

    /// [`Conn::open`] with a CONNECT line of the caller's.
    async fn open_with(target: &Target, src: Ipv4Addr, connect: &[u8]) -> Result<Conn, BenchError> {
        let mut c = Conn {
            ws: ws::connect(target, src).await?,
            parser: Parser::default(),
        };
        c.wait_for("nats INFO", |e| (*e == Event::Info).then_some(Ok(())))
            .await?;
        c.ws.writer.send(connect).await?;
        c.wait_for("nats CONNECT", |e| (*e == Event::Pong).then_some(Ok(())))
            .await?;
        Ok(c)
    }

    /// Subscribes `subject` as sid 1 and waits until the server has registered it (PING/PONG).
    async fn subscribe(&mut self, subject: &str) -> Result<(), BenchError> {
        self.ws
            .writer
            .send(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
            .await?;
        self.wait_for("nats SUB", |e| (*e == Event::Pong).then_some(Ok(())))
            .await
    }
}

pub async fn subscriber(args: SubArgs) {
    let SubArgs {
        target,
        src,
        room,
        flow,
        totals,
        mut stop,
        ready,
    } = args;
    let mut c = match Conn::open(&target, src).await {
        Ok(c) => c,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = c.subscribe(&room).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    let mut t = SubTrack::default();
    loop {
        let mut ping = false;
        let ok = tokio::select! {
            biased;
            f = c.ws.reader.next() => match f {
                Ok(Frame::Data(b)) => c
                    .parser
                    .feed(b, |e| match e {
                        Event::Msg { payload, .. } => t.on_payload(payload, &flow),
                        Event::Ping => ping = true,
                        _ => {}
                    })
                    .is_ok(),
                // Core NATS cannot resume: a slow-consumer disconnect loses messages.
                Ok(Frame::Close(_)) | Err(_) => false,
            },
            _ = stop.changed() => break,
        };
        let ok = ok && c.ws.answer_ping().await.is_ok();
        let ok = ok && !(ping && c.ws.writer.send(b"PONG\r\n").await.is_err());
        if !ok {
            totals.disconnects.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    totals.add(&t);
    c.ws.close().await;
}

pub async fn publisher(args: PubArgs) -> Result<PubResult, BenchError> {
    let Conn { ws, .. } = Conn::open(&args.target, args.src).await?;
    let Ws {
        mut reader,
        mut writer,
    } = ws;
    // The publisher gets no messages; drain whatever the server sends (INFO updates).
    let reader = tokio::spawn(async move { while let Ok(Frame::Data(_)) = reader.next().await {} });
    let p = args.index as u32;
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(64 * (args.size + 32));
    let mut sent: u64 = 0;
    tokio::time::sleep_until(args.start.into()).await;
    while let Some(batch) = args.next_batch(sent).await {
        // Like nats.ws, pending publishes go out together in one websocket frame.
        frame.clear();
        for _ in 0..batch {
            track::stamp(&mut payload, clock::now_ns(), p, sent as u32);
            put_pub(&mut frame, &args.room, None, &payload);
            sent += 1;
        }
        writer.send(&frame).await?;
    }
    writer.close().await;
    reader.abort();
    Ok(PubResult {
        sent,
        accepted: sent,
        errors: 0,
    })
}

/// Creates the file-storage stream `name` over `subjects` (JetStream API request/reply).
pub async fn create_stream(target: &Target, name: &str, subjects: &str) -> Result<(), BenchError> {
    let mut c = Conn::open(target, ws::source(0)).await?;
    c.subscribe("_INBOX.setup").await?;
    let config = format!(
        "{{\"name\":\"{name}\",\"subjects\":[\"{subjects}\"],\"storage\":\"file\",\
         \"retention\":\"limits\",\"discard\":\"old\",\"num_replicas\":1,\
         \"max_msgs\":-1,\"max_bytes\":-1}}"
    );
    let mut out = Vec::new();
    put_pub(
        &mut out,
        &format!("$JS.API.STREAM.CREATE.{name}"),
        Some("_INBOX.setup"),
        config.as_bytes(),
    );
    c.ws.writer.send(&out).await?;
    c.wait_for("JetStream stream create", |e| match e {
        Event::Msg { payload, .. } => Some(if contains(payload, b"\"error\"") {
            Err(String::from_utf8_lossy(payload).into_owned())
        } else {
            Ok(())
        }),
        _ => None,
    })
    .await?;
    c.ws.close().await;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A JetStream publisher: PUB with a reply inbox, one in flight, the ack is `{"stream","seq"}`.
pub async fn durable_publisher(args: DurableArgs) -> Result<PubResult, BenchError> {
    let inbox = format!("_INBOX.bench{}", args.index);
    let opened = async {
        let mut c = Conn::open(&args.target, args.src).await?;
        c.subscribe(&format!("{inbox}.*")).await?;
        Ok::<_, BenchError>(c)
    }
    .await;
    args.ready.wait().await;
    let mut c = opened?;
    let subjects: Vec<String> = (0..args.rooms)
        .map(|r| format!("bench.durable-{r}"))
        .collect();
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(args.size + 64);
    let mut r = PubResult::default();
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        let subject = &subjects[args.room_index(r.sent)];
        let reply = format!("{inbox}.{}", r.sent);
        let t0 = clock::now_ns();
        track::stamp(&mut payload, t0, args.index as u32, r.sent as u32);
        frame.clear();
        put_pub(&mut frame, subject, Some(&reply), &payload);
        c.ws.writer.send(&frame).await?;
        r.sent += 1;
        let mut ok = false;
        c.wait_for("JetStream ack", |e| match e {
            Event::Msg { payload, .. } => {
                ok = !contains(payload, b"\"error\"");
                Some(Ok(()))
            }
            _ => None,
        })
        .await?;
        if ok {
            stats::record(clock::now_ns() - t0);
            r.accepted += 1;
        } else {
            r.errors += 1;
        }
    }
    c.ws.close().await;
    Ok(r)
}

pub async fn idle(
    target: Target,
    src: Ipv4Addr,
    subject: String,
    ready: oneshot::Sender<Result<(), BenchError>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut c = match Conn::open(&target, src).await {
        Ok(c) => c,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = c.subscribe(&subject).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    loop {
        let mut ping = false;
        tokio::select! {
            f = c.ws.reader.next() => match f {
                Ok(Frame::Data(b)) => {
                    let _ = c.parser.feed(b, |e| ping |= e == Event::Ping);
                }
                _ => break,
            },
            _ = stop.changed() => break,
        }
        if ping && c.ws.writer.send(b"PONG\r\n").await.is_err() {
            break;
        }
    }
    c.ws.close().await;
}

/// Publishes `count` messages of `size` bytes to `subject` (in a JetStream stream) from one
/// connection, keeping up to `window` unacknowledged; counters as [`crate::roomd_client::fill`].
pub async fn fill_stream(
    target: &Target,
    subject: &str,
    count: u64,
    size: usize,
    window: u64,
) -> Result<u64, BenchError> {
    let mut c = Conn::open(target, ws::source(0)).await?;
    c.subscribe("_INBOX.fill").await?;
    let mut payload = vec![0u8; size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(64 * (size + 64));
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    while acked < count {
        frame.clear();
        while sent < count && sent - acked < window {
            track::stamp(&mut payload, clock::now_ns(), 0, sent as u32);
            put_pub(&mut frame, subject, Some("_INBOX.fill"), &payload);
            sent += 1;
        }
        if !frame.is_empty() {
            c.ws.writer.send(&frame).await?;
        }
        let read = tokio::time::timeout(SETUP_TIMEOUT, c.ws.reader.next())
            .await
            .map_err(|_| BenchError::Timeout("JetStream fill acks"))??;
        let mut ping = false;
        match read {
            Frame::Data(b) => c
                .parser
                .feed(b, |e| match e {
                    Event::Msg { payload, .. } if contains(payload, b"\"error\"") => errors += 1,
                    Event::Msg { .. } => acked += 1,
                    Event::Ping => ping = true,
                    _ => {}
                })
                .map_err(proto)?,
            Frame::Close(code) => return Err(proto(format!("nats-server closed: {code:?}"))),
        }
        if errors > 0 {
            return Err(proto("a JetStream fill publish was refused"));
        }
        c.ws.answer_ping().await?;
        if ping {
            c.ws.writer.send(b"PONG\r\n").await?;
        }
    }
    c.ws.close().await;
    Ok(acked)
}

/// Replays stream `stream` from its first message with an ordered push consumer, the way
/// nats.go's `OrderedConsumer` does (ephemeral, `ack_policy` none, in-memory consumer state,
/// flow control and heartbeats), until `count` messages have arrived.
pub async fn ordered_replay(
    target: &Target,
    stream: &str,
    count: u64,
) -> Result<Replayed, BenchError> {
    let mut c = Conn::open_with(target, ws::source(1), CONNECT_HEADERS).await?;
    c.ws.writer
        .send(b"SUB _INBOX.replay 1\r\nSUB _INBOX.setup 2\r\nPING\r\n")
        .await?;
    c.wait_for("nats SUB", |e| (*e == Event::Pong).then_some(Ok(())))
        .await?;
    let config = format!(
        "{{\"stream_name\":\"{stream}\",\"config\":{{\"deliver_subject\":\"_INBOX.replay\",\
         \"deliver_policy\":\"all\",\"ack_policy\":\"none\",\"max_deliver\":1,\
         \"replay_policy\":\"instant\",\"flow_control\":true,\"idle_heartbeat\":5000000000,\
         \"mem_storage\":true,\"num_replicas\":1}}}}"
    );
    let mut out = Vec::new();
    put_pub(
        &mut out,
        &format!("$JS.API.CONSUMER.CREATE.{stream}"),
        Some("_INBOX.setup"),
        config.as_bytes(),
    );
    let t0 = Instant::now();
    c.ws.writer.send(&out).await?;
    let mut subbed = None;
    let (mut received, mut out_of_order) = (0u64, 0u64);
    let mut replies: Vec<Vec<u8>> = Vec::new();
    let read = async {
        while received < count {
            let mut ping = false;
            let mut refused = None;
            match c.ws.reader.next().await? {
                Frame::Data(b) => c
                    .parser
                    .feed(b, |e| match e {
                        Event::Msg { sid, payload, .. } if sid == b"1" => {
                            let k = track::read(payload).map(|h| h.2);
                            if k != Some(received as u32) {
                                out_of_order += 1;
                            }
                            received += 1;
                        }
                        Event::Msg { payload, .. } => {
                            if contains(payload, b"\"error\"") {
                                refused = Some(String::from_utf8_lossy(payload).into_owned());
                            }
                            subbed = Some(t0.elapsed());
                        }
                        // A flow-control request: answered with an empty message to its reply.
                        Event::HMsg { reply: Some(r), .. } => replies.push(r.to_vec()),
                        Event::Ping => ping = true,
                        _ => {}
                    })
                    .map_err(proto)?,
                Frame::Close(code) => return Err(proto(format!("nats-server closed: {code:?}"))),
            }
            if let Some(e) = refused {
                return Err(proto(format!("consumer create refused: {e}")));
            }
            c.ws.answer_ping().await?;
            if ping {
                c.ws.writer.feed(b"PONG\r\n");
            }
            for r in replies.drain(..) {
                let mut m = Vec::with_capacity(r.len() + 16);
                put_pub(&mut m, std::str::from_utf8(&r).unwrap_or("_"), None, b"");
                c.ws.writer.feed(&m);
            }
            c.ws.writer.flush().await?;
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .map_err(|_| BenchError::Timeout("JetStream replay"))??;
    let done = t0.elapsed();
    c.ws.close().await;
    Ok(Replayed {
        subbed: subbed.unwrap_or(done),
        done,
        received,
        out_of_order,
    })
}

/// A restart-storm subscriber on core NATS: resubscribes after every disconnect (with the SDK's
/// backoff); what was published meanwhile is missed.
pub async fn storm_subscriber(
    args: crate::storm::SubSetup,
    mut backoff: crate::storm::Backoff,
) -> crate::storm::SubReport {
    let (target, src, room_idx, subject, mut marks, ready) = args;
    let mut r = crate::storm::SubReport::default();
    let mut ready = Some(ready);
    let attempt = || async {
        let mut c = Conn::open(&target, src).await?;
        c.subscribe(&subject).await?;
        Ok::<Conn, BenchError>(c)
    };
    loop {
        let Some(mut c) =
            crate::storm::connect(attempt, &mut r, &mut ready, &mut marks, &mut backoff).await
        else {
            break;
        };
        loop {
            let f = tokio::select! {
                biased;
                f = c.ws.reader.next() => f,
                _ = marks.stop.changed() => {
                    c.ws.close().await;
                    return r;
                }
            };
            let mut ping = false;
            let ok = match f {
                Ok(Frame::Data(b)) => {
                    let targets = marks.targets.borrow().clone();
                    c.parser
                        .feed(b, |e| match e {
                            Event::Msg { payload, .. } => {
                                if let Some((_, _, k)) = track::read(payload) {
                                    r.on_counter(u64::from(k));
                                    r.check_caught_up(room_idx, &targets);
                                }
                            }
                            Event::Ping => ping = true,
                            _ => {}
                        })
                        .is_ok()
                }
                _ => false,
            };
            let ok = ok && c.ws.answer_ping().await.is_ok();
            if !ok || (ping && c.ws.writer.send(b"PONG\r\n").await.is_err()) {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = marks.stop.changed() => break,
        }
    }
    r
}

/// The restart-storm publisher on core NATS: `s.rate` messages a second round the subjects.
/// While disconnected it buffers what it publishes (nats.go's reconnect buffer, 8 MB) and sends
/// it once connected again; `heads` counts every publish per subject.
pub async fn storm_publisher(
    target: Target,
    s: crate::storm::Storm,
    heads: std::sync::Arc<crate::storm::Heads>,
    mut stop: watch::Receiver<bool>,
    mut backoff: crate::storm::Backoff,
) -> Result<crate::storm::PubReport, BenchError> {
    const BUFFER: usize = 8 * 1024 * 1024;
    let subjects: Vec<String> = (0..s.rooms)
        .map(|r| crate::storm::room_name(crate::servers::Broker::Nats, r))
        .collect();
    let mut counters = vec![0u64; subjects.len()];
    let mut rep = crate::storm::PubReport::default();
    let mut payload = vec![0u8; 64];
    let mut buffered: Vec<u8> = Vec::new();
    let start = Instant::now();
    let src = ws::source(s.conns);
    let mut conn: Option<Conn> = None;
    let mut retry_at = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match Conn::open(&target, src).await {
                Ok(mut c) => {
                    backoff.reset();
                    if !buffered.is_empty() && c.ws.writer.send(&buffered).await.is_ok() {
                        buffered.clear();
                    }
                    conn = Some(c);
                }
                Err(_) => retry_at = Instant::now() + backoff.next_delay(),
            }
        }
        let due = start + Duration::from_secs_f64(rep.sent as f64 / s.rate);
        let read = async {
            match conn.as_mut() {
                Some(c) => match c.ws.reader.next().await {
                    Ok(Frame::Data(b)) => {
                        let mut ping = false;
                        let _ = c.parser.feed(b, |e| ping |= e == Event::Ping);
                        Ok(ping)
                    }
                    _ => Err(()),
                },
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            r = read => Some(r),
            _ = tokio::time::sleep_until(due.into()) => None,
            _ = stop.changed() => break,
        };
        match event {
            Some(Ok(ping)) => {
                if let Some(c) = conn.as_mut() {
                    if c.ws.answer_ping().await.is_err()
                        || (ping && c.ws.writer.send(b"PONG\r\n").await.is_err())
                    {
                        conn = None;
                    }
                }
            }
            Some(Err(())) => {
                conn = None;
                retry_at = Instant::now() + backoff.next_delay();
            }
            None => {
                let room = (rep.sent % u64::from(s.rooms)) as usize;
                let k = counters[room];
                counters[room] += 1;
                rep.sent += 1;
                heads.published[room].store(k + 1, Ordering::Release);
                track::stamp(&mut payload, clock::now_ns(), room as u32, k as u32);
                let mut m = Vec::with_capacity(128);
                put_pub(&mut m, &subjects[room], None, &payload);
                let sent = match conn.as_mut() {
                    Some(c) => c.ws.writer.send(&m).await.is_ok(),
                    None => false,
                };
                if !sent {
                    conn = None;
                    if buffered.len() + m.len() <= BUFFER {
                        buffered.extend_from_slice(&m);
                        rep.resent += 1;
                    }
                }
            }
        }
    }
    if let Some(c) = conn {
        c.ws.close().await;
    }
    Ok(rep)
}
