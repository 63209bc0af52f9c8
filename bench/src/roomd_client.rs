//! roomd over its wire protocol (protocol/SPEC.md): hello, sub, pub/ack, msg deliveries.
//! Deliveries and acks are read in place with [`crate::mpack::scan`]; the hot path allocates
//! nothing.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomd_protocol::{encode, ClientFrame, ServerFrame};
use tokio::sync::{oneshot, watch};

use crate::client::{DurableArgs, PubArgs, PubResult, SubArgs};
use crate::mpack::{encode_pub, scan};
use crate::track::{self, SubTrack};
use crate::ws::{self, Frame, Target, Ws};
use crate::{clock, stats, BenchError};

/// How long setup steps (hello, subbed) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a subscriber resumes with `since` after being disconnected.
const MAX_RESUMES: u32 = 5;

fn proto(msg: impl Into<String>) -> BenchError {
    BenchError::Protocol(msg.into())
}

/// The next frame decoded in full (setup path only).
async fn next_decoded(ws: &mut Ws) -> Result<ServerFrame, BenchError> {
    let frame = match ws.reader.next().await? {
        Frame::Data(b) => roomd_protocol::decode_server(b),
        Frame::Close(code) => return Err(proto(format!("closed by roomd: {code:?}"))),
    };
    ws.answer_ping().await?;
    frame.map_err(|e| proto(format!("undecodable frame from roomd: {e}")))
}

/// Connects and waits for `hello`.
async fn open(target: &Target, src: Ipv4Addr) -> Result<Ws, BenchError> {
    let mut ws = ws::connect(target, src).await?;
    let first = tokio::time::timeout(SETUP_TIMEOUT, next_decoded(&mut ws))
        .await
        .map_err(|_| BenchError::Timeout("roomd hello"))??;
    match first {
        ServerFrame::Hello { .. } => Ok(ws),
        ServerFrame::Err { code, msg, .. } => Err(proto(format!("roomd refused: {code} {msg}"))),
        other => Err(proto(format!("expected hello, got {other:?}"))),
    }
}

/// Sends `sub` and waits for `subbed`.
async fn subscribe(ws: &mut Ws, room: &str, since: Option<u64>) -> Result<(), BenchError> {
    let frame = ClientFrame::Sub {
        id: 1,
        room: room.to_string(),
        since,
        state: None,
        presence: None,
        info: None,
    };
    ws.writer.send(&encode(&frame)).await?;
    let wait = async {
        loop {
            match next_decoded(ws).await? {
                ServerFrame::Subbed { .. } => return Ok(()),
                ServerFrame::Err { code, msg, .. } => {
                    return Err(proto(format!("sub refused: {code} {msg}")))
                }
                _ => continue,
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, wait)
        .await
        .map_err(|_| BenchError::Timeout("roomd subbed"))?
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
    let mut ws = match open(&target, src).await {
        Ok(ws) => ws,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = subscribe(&mut ws, &room, None).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    let mut t = SubTrack::default();
    let mut resumes = 0;
    loop {
        let ended = tokio::select! {
            biased;
            f = ws.reader.next() => match f {
                Ok(Frame::Data(b)) => {
                    if let Some(s) = scan(b) {
                        if s.t == b"msg" {
                            t.on_seq(s.seq.unwrap_or(0));
                            if let Some(d) = s.data {
                                t.on_payload(d, &flow);
                            }
                        }
                    }
                    false
                }
                Ok(Frame::Close(_)) | Err(_) => true,
            },
            _ = stop.changed() => break,
        };
        let ended = ended || ws.answer_ping().await.is_err();
        if ended {
            totals.disconnects.fetch_add(1, Ordering::Relaxed);
            if *stop.borrow() || resumes >= MAX_RESUMES {
                break;
            }
            // A slow-consumer close (4000) loses nothing if the client resumes from its last seq.
            resumes += 1;
            let resumed = async {
                let mut ws = open(&target, src).await?;
                subscribe(&mut ws, &room, Some(t.last_seq)).await?;
                Ok::<Ws, BenchError>(ws)
            };
            match resumed.await {
                Ok(new) => {
                    ws = new;
                    totals.resumes.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
    }
    totals.add(&t);
    ws.close().await;
}

pub async fn publisher(args: PubArgs) -> Result<PubResult, BenchError> {
    let Ws {
        mut reader,
        mut writer,
    } = open(&args.target, args.src).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reader = {
        let (acked, errors) = (acked.clone(), errors.clone());
        tokio::spawn(async move {
            while let Ok(Frame::Data(b)) = reader.next().await {
                match scan(b).map(|s| s.t) {
                    Some(b"ack") => acked.fetch_add(1, Ordering::Relaxed),
                    Some(b"err") => errors.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        })
    };
    let p = args.index as u32;
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(args.size + 64);
    let mut sent: u64 = 0;
    tokio::time::sleep_until(args.start.into()).await;
    while let Some(batch) = args.next_batch(sent).await {
        // One websocket message per publish (the protocol's framing), one write for the batch.
        for _ in 0..batch {
            track::stamp(&mut payload, clock::now_ns(), p, sent as u32);
            encode_pub(
                &mut frame,
                (sent as u32).wrapping_add(2),
                &args.room,
                &payload,
            );
            writer.feed(&frame);
            sent += 1;
        }
        writer.flush().await?;
    }
    // Every publish gets exactly one reply: wait for them all (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.close().await;
    reader.abort();
    Ok(PubResult {
        sent,
        accepted: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    })
}

pub async fn durable_publisher(args: DurableArgs) -> Result<PubResult, BenchError> {
    let opened = open(&args.target, args.src).await;
    args.ready.wait().await;
    let mut ws = opened?;
    let rooms: Vec<String> = (0..args.rooms).map(|r| format!("durable-{r}")).collect();
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(args.size + 64);
    let mut r = PubResult::default();
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        let id = (r.sent as u32).wrapping_add(2);
        let room = &rooms[args.room_index(r.sent)];
        let t0 = clock::now_ns();
        track::stamp(&mut payload, t0, args.index as u32, r.sent as u32);
        encode_pub(&mut frame, id, room, &payload);
        ws.writer.send(&frame).await?;
        r.sent += 1;
        loop {
            let acked = match ws.reader.next().await? {
                Frame::Data(b) => match scan(b) {
                    Some(s) if s.id == Some(u64::from(id)) => Some(s.t == b"ack"),
                    _ => None,
                },
                Frame::Close(code) => return Err(proto(format!("closed by roomd: {code:?}"))),
            };
            ws.answer_ping().await?;
            match acked {
                Some(true) => {
                    stats::record(clock::now_ns() - t0);
                    r.accepted += 1;
                }
                Some(false) => r.errors += 1,
                None => continue,
            }
            break;
        }
    }
    ws.close().await;
    Ok(r)
}

pub async fn idle(
    target: Target,
    src: Ipv4Addr,
    room: String,
    ready: oneshot::Sender<Result<(), BenchError>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ws = match open(&target, src).await {
        Ok(ws) => ws,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = subscribe(&mut ws, &room, None).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    // Reading keeps answering the server's pings.
    loop {
        tokio::select! {
            f = ws.reader.next() => if !matches!(f, Ok(Frame::Data(_))) { break },
            _ = stop.changed() => break,
        }
        if ws.answer_ping().await.is_err() {
            break;
        }
    }
    ws.close().await;
}

/// Publishes `count` messages of `size` bytes into `room` from one connection, keeping up to
/// `window` unacknowledged (below `limits.requests_in_flight`); payload counters run 0..count
/// from publisher 0, so a replay can check order and completeness. Returns the acks.
pub async fn fill(
    target: &Target,
    room: &str,
    count: u64,
    size: usize,
    window: u64,
) -> Result<u64, BenchError> {
    let Ws {
        mut reader,
        mut writer,
    } = open(target, ws::source(0)).await?;
    let mut payload = vec![0u8; size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(size + 64);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        while sent < count && sent - acked < window {
            track::stamp(&mut payload, clock::now_ns(), 0, sent as u32);
            encode_pub(&mut frame, (sent as u32).wrapping_add(2), room, &payload);
            writer.feed(&frame);
            sent += 1;
        }
        writer.flush().await?;
        let frame = tokio::time::timeout(SETUP_TIMEOUT, reader.next())
            .await
            .map_err(|_| BenchError::Timeout("roomd fill acks"))??;
        match frame {
            Frame::Data(b) => match scan(b).map(|s| s.t) {
                Some(b"ack") => acked += 1,
                Some(b"err") => return Err(proto("a fill publish was refused")),
                _ => {}
            },
            Frame::Close(code) => return Err(proto(format!("closed by roomd: {code:?}"))),
        }
    }
    writer.close().await;
    Ok(acked)
}

/// What a resuming subscriber saw.
#[derive(Debug, Clone, Copy)]
pub struct Replayed {
    /// From sending `sub` to its answer (`subbed` for roomd, the consumer's creation for NATS).
    pub subbed: Duration,
    /// From sending `sub` to the last message of the history.
    pub done: Duration,
    pub received: u64,
    /// Messages out of order or missing (payload counters not 0, 1, 2, ... in turn).
    pub out_of_order: u64,
}

/// Subscribes to `room` with `since: 0` and reads until the message with seq `head` arrives.
pub async fn replay(target: &Target, room: &str, head: u64) -> Result<Replayed, BenchError> {
    let mut ws = open(target, ws::source(1)).await?;
    let frame = ClientFrame::Sub {
        id: 1,
        room: room.to_string(),
        since: Some(0),
        state: None,
        presence: None,
        info: None,
    };
    let t0 = Instant::now();
    ws.writer.send(&encode(&frame)).await?;
    let mut subbed = None;
    let (mut received, mut out_of_order) = (0u64, 0u64);
    let read = async {
        loop {
            let last = match ws.reader.next().await? {
                Frame::Data(b) => match scan(b) {
                    Some(s) if s.t == b"msg" => {
                        let k = s.data.and_then(track::read).map(|h| h.2);
                        if k != Some(received as u32) {
                            out_of_order += 1;
                        }
                        received += 1;
                        s.seq == Some(head)
                    }
                    Some(s) if s.t == b"subbed" => {
                        subbed = Some(t0.elapsed());
                        false
                    }
                    Some(s) if s.t == b"err" => {
                        return Err(proto(format!("sub refused: code {:?}", s.code)))
                    }
                    _ => false,
                },
                Frame::Close(code) => return Err(proto(format!("closed by roomd: {code:?}"))),
            };
            ws.answer_ping().await?;
            if last {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .map_err(|_| BenchError::Timeout("roomd replay"))??;
    let done = t0.elapsed();
    ws.close().await;
    Ok(Replayed {
        subbed: subbed.unwrap_or(done),
        done,
        received,
        out_of_order,
    })
}

/// A subscriber resuming with `since` while the room is written: sends `sub`, reads its
/// `subbed` (whose `last` is the head when the replay started) and the replay, reports (on
/// `live`) how long it took to receive that head, then keeps reading live messages until
/// `stop`, as a client that caught up would. Its deliveries are not counted in the latency
/// histograms, which are the live subscribers'.
pub async fn resume_to_live(
    target: Target,
    src: Ipv4Addr,
    room: String,
    since: u64,
    live: oneshot::Sender<Result<(Duration, u64), BenchError>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ws = match open(&target, src).await {
        Ok(ws) => ws,
        Err(e) => return drop(live.send(Err(e))),
    };
    let frame = ClientFrame::Sub {
        id: 1,
        room,
        since: Some(since),
        state: None,
        presence: None,
        info: None,
    };
    let t0 = Instant::now();
    if let Err(e) = ws.writer.send(&encode(&frame)).await {
        return drop(live.send(Err(e)));
    }
    let mut head = None;
    let mut live = Some(live);
    loop {
        let f = tokio::select! {
            biased;
            f = ws.reader.next() => f,
            _ = stop.changed() => break,
        };
        let caught_up = match f {
            Ok(Frame::Data(b)) => match scan(b) {
                Some(s) if s.t == b"subbed" => {
                    head = roomd_protocol::decode_server(b).ok().and_then(|f| match f {
                        ServerFrame::Subbed { last, .. } => Some(last),
                        _ => None,
                    });
                    head.is_some_and(|h| h <= since)
                }
                Some(s) if s.t == b"msg" => head.is_some_and(|h| s.seq.unwrap_or(0) >= h),
                Some(s) if s.t == b"err" => {
                    let e = proto(format!("sub refused: code {:?}", s.code));
                    if let Some(tx) = live.take() {
                        let _ = tx.send(Err(e));
                    }
                    break;
                }
                _ => false,
            },
            Ok(Frame::Close(code)) => {
                if let Some(tx) = live.take() {
                    let _ = tx.send(Err(proto(format!("closed by roomd: {code:?}"))));
                }
                break;
            }
            Err(e) => {
                if let Some(tx) = live.take() {
                    let _ = tx.send(Err(e));
                }
                break;
            }
        };
        if caught_up {
            if let Some(tx) = live.take() {
                let behind = head.unwrap_or(0).saturating_sub(since);
                let _ = tx.send(Ok((t0.elapsed(), behind)));
            }
        }
        if ws.answer_ping().await.is_err() {
            break;
        }
    }
    ws.close().await;
}

/// A restart-storm subscriber (see [`crate::storm`]): subscribes, reports ready, and from then
/// on resumes with `since` after every disconnect, with the SDK's backoff between attempts.
pub async fn storm_subscriber(
    args: crate::storm::SubSetup,
    mut backoff: crate::storm::Backoff,
) -> crate::storm::SubReport {
    let (target, src, room_idx, room, mut marks, ready) = args;
    let mut r = crate::storm::SubReport::default();
    let mut ready = Some(ready);
    let mut last_seq: Option<u64> = None;
    loop {
        let attempt = || async {
            let mut ws = open(&target, src).await?;
            subscribe(&mut ws, &room, last_seq).await?;
            Ok::<Ws, BenchError>(ws)
        };
        let Some(mut ws) =
            crate::storm::connect(attempt, &mut r, &mut ready, &mut marks, &mut backoff).await
        else {
            break;
        };
        last_seq = Some(last_seq.unwrap_or(0));
        loop {
            let f = tokio::select! {
                biased;
                f = ws.reader.next() => f,
                _ = marks.stop.changed() => {
                    ws.close().await;
                    return r;
                }
            };
            match f {
                Ok(Frame::Data(b)) => {
                    if let Some(s) = scan(b).filter(|s| s.t == b"msg") {
                        let seq = s.seq.unwrap_or(0);
                        if let Some((_, _, k)) = s.data.and_then(track::read) {
                            if u64::from(k) + 1 != seq {
                                r.misplaced += 1;
                            }
                            r.on_counter(u64::from(k));
                        }
                        last_seq = last_seq.max(Some(seq));
                        let targets = marks.targets.borrow().clone();
                        r.check_caught_up(room_idx, &targets);
                    }
                }
                _ => break,
            }
            if ws.answer_ping().await.is_err() {
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

/// The restart-storm publisher: `s.rate` publishes a second round the rooms, each with a `mid`;
/// after a disconnect it reconnects with backoff and resends every unacknowledged publish with
/// its `mid`. Records each room's highest acknowledged seq in `heads`. After `stop` it publishes
/// nothing more and waits (at most 10 s) for its acks.
pub async fn storm_publisher(
    target: Target,
    s: crate::storm::Storm,
    heads: Arc<crate::storm::Heads>,
    mut stop: watch::Receiver<bool>,
    mut backoff: crate::storm::Backoff,
) -> Result<crate::storm::PubReport, BenchError> {
    use std::collections::BTreeMap;
    let rooms: Vec<String> = (0..s.rooms)
        .map(|r| crate::storm::room_name(crate::servers::Broker::Roomd, r))
        .collect();
    let mut counters = vec![0u64; rooms.len()];
    let mut pending: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    let mut rep = crate::storm::PubReport::default();
    let mut next_id: u32 = 2;
    let mut payload = vec![0u8; 64];
    let mut frame = Vec::with_capacity(160);
    let encode_one = |frame: &mut Vec<u8>, payload: &mut Vec<u8>, id: u32, room: u32, k: u64| {
        track::stamp(payload, clock::now_ns(), room, k as u32);
        let mid = format!("{room}-{k}");
        crate::mpack::encode_pub_mid(frame, id, &rooms[room as usize], payload, &mid);
    };
    let start = Instant::now();
    let mut stopping: Option<Instant> = None;
    let src = ws::source(s.conns);
    loop {
        let Ok(mut ws) = open(&target, src).await else {
            if stopping.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                break;
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        backoff.reset();
        for (&id, &(room, k)) in &pending {
            encode_one(&mut frame, &mut payload, id, room, k);
            ws.writer.feed(&frame);
            rep.resent += 1;
        }
        if ws.writer.flush().await.is_err() {
            continue;
        }
        loop {
            if stopping.is_some() && pending.is_empty() {
                ws.writer.close().await;
                rep.unacked = 0;
                return Ok(rep);
            }
            if stopping.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                rep.unacked = pending.len() as u64;
                return Ok(rep);
            }
            let due = start + Duration::from_secs_f64(rep.sent as f64 / s.rate);
            let publish_now = tokio::select! {
                biased;
                f = ws.reader.next() => match f {
                    Ok(Frame::Data(b)) => {
                        if let Some(a) = scan(b).filter(|a| a.t == b"ack") {
                            let id = a.id.unwrap_or(0) as u32;
                            if let Some((room, _)) = pending.remove(&id) {
                                heads.published[room as usize]
                                    .fetch_max(a.seq.unwrap_or(0), Ordering::AcqRel);
                            }
                        }
                        false
                    }
                    _ => break,
                },
                _ = stop.changed(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    false
                }
                _ = tokio::time::sleep_until(due.into()), if stopping.is_none() => true,
                _ = tokio::time::sleep(Duration::from_millis(100)), if stopping.is_some() => false,
            };
            if publish_now {
                let room = (rep.sent % u64::from(s.rooms)) as u32;
                let k = counters[room as usize];
                counters[room as usize] += 1;
                let id = next_id;
                next_id = next_id.wrapping_add(1).max(2);
                pending.insert(id, (room, k));
                rep.sent += 1;
                encode_one(&mut frame, &mut payload, id, room, k);
                if ws.writer.send(&frame).await.is_err() {
                    break;
                }
            }
            if ws.answer_ping().await.is_err() {
                break;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    rep.unacked = pending.len() as u64;
    Ok(rep)
}
