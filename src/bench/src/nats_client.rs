//! Core NATS and JetStream over nats-server's websocket listener: binary frames carrying the
//! NATS text protocol, parsed in place by [`crate::nats_proto`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{send_time, DurableArgs, Pacing, PubArgs, PubResult, SubArgs};
use crate::nats_proto::{put_pub, Event, Parser, CONNECT};
use crate::track::{self, SubTrack};
use crate::ws::{self, Target, Ws};
use crate::{clock, stats, BenchError};

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn proto(msg: impl Into<String>) -> BenchError {
    BenchError::Protocol(msg.into())
}

/// The bytes of a data frame (nats-server sends binary; text is accepted too).
fn frame_bytes(m: Message) -> Option<Bytes> {
    match m {
        Message::Binary(b) => Some(b),
        Message::Text(t) => Some(Bytes::copy_from_slice(t.as_bytes())),
        _ => None,
    }
}

/// Reads frames until `want` accepts an event; answers server PINGs meanwhile.
async fn wait_for<F: FnMut(&Event<'_>) -> Option<Result<(), String>>>(
    ws: &mut Ws,
    parser: &mut Parser,
    what: &'static str,
    mut want: F,
) -> Result<(), BenchError> {
    let work = async {
        loop {
            let m = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(BenchError::Ws(e)),
                None => return Err(proto("nats-server closed the connection")),
            };
            let Some(b) = frame_bytes(m) else { continue };
            let mut found = None;
            let mut ping = false;
            parser
                .feed(&b, |e| {
                    if found.is_none() {
                        if let Event::Err(text) = &e {
                            found = Some(Err(String::from_utf8_lossy(text).into_owned()));
                        } else {
                            found = want(&e);
                        }
                    }
                    ping |= e == Event::Ping;
                })
                .map_err(proto)?;
            if ping {
                send(ws, b"PONG\r\n".to_vec()).await?;
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

async fn send(ws: &mut Ws, bytes: Vec<u8>) -> Result<(), BenchError> {
    ws.send(Message::Binary(bytes.into()))
        .await
        .map_err(BenchError::Ws)
}

/// Connects, reads INFO, sends CONNECT and waits for the PONG that confirms it.
async fn open(target: &Target, src: Ipv4Addr) -> Result<(Ws, Parser), BenchError> {
    let mut ws = ws::connect(target, src).await?;
    let mut parser = Parser::default();
    wait_for(&mut ws, &mut parser, "nats INFO", |e| {
        (*e == Event::Info).then_some(Ok(()))
    })
    .await?;
    send(&mut ws, CONNECT.to_vec()).await?;
    wait_for(&mut ws, &mut parser, "nats CONNECT", |e| {
        (*e == Event::Pong).then_some(Ok(()))
    })
    .await?;
    Ok((ws, parser))
}

/// Subscribes `subject` as sid 1 and waits until the server has registered it (PING/PONG).
async fn subscribe(ws: &mut Ws, parser: &mut Parser, subject: &str) -> Result<(), BenchError> {
    send(ws, format!("SUB {subject} 1\r\nPING\r\n").into_bytes()).await?;
    wait_for(ws, parser, "nats SUB", |e| {
        (*e == Event::Pong).then_some(Ok(()))
    })
    .await
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
    let (mut ws, mut parser) = match open(&target, src).await {
        Ok(x) => x,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = subscribe(&mut ws, &mut parser, &room).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    let mut t = SubTrack::default();
    loop {
        tokio::select! {
            biased;
            m = ws.next() => match m {
                Some(Ok(m)) => {
                    let Some(b) = frame_bytes(m) else { continue };
                    let mut ping = false;
                    let ok = parser.feed(&b, |e| match e {
                        Event::Msg { payload, .. } => t.on_payload(payload, &flow),
                        Event::Ping => ping = true,
                        _ => {}
                    });
                    if ok.is_err() {
                        totals.disconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                    if ping && send(&mut ws, b"PONG\r\n".to_vec()).await.is_err() {
                        break;
                    }
                }
                // Core NATS cannot resume: a slow-consumer disconnect loses messages.
                _ => {
                    totals.disconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    totals.add(&t);
    let _ = ws.close(None).await;
}

pub async fn publisher(args: PubArgs) -> Result<PubResult, BenchError> {
    let (ws, _parser) = open(&args.target, args.src).await?;
    let (mut sink, mut stream) = ws.split();
    // The publisher gets no messages; drain whatever the server sends (INFO updates).
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let pf = args.flow.publisher(args.index);
    let p = args.index as u32;
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(64 * (args.size + 32));
    let mut sent: u64 = 0;
    let end = args.start + args.duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let batch = match args.pacing {
            Pacing::Window(w) => {
                let room_left = (pf.completed.load(std::sync::atomic::Ordering::Acquire) + w)
                    .saturating_sub(sent);
                if room_left == 0 {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), pf.notify.notified()).await;
                    continue;
                }
                room_left.min(64)
            }
            Pacing::Rate(rate) => {
                let due = args.start + Duration::from_secs_f64(sent as f64 / rate);
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                1
            }
        };
        // Like nats.ws, pending publishes go out together in one websocket frame.
        frame.clear();
        for _ in 0..batch {
            track::stamp(
                &mut payload,
                send_time(args.pacing, args.start, sent),
                p,
                sent as u32,
            );
            put_pub(&mut frame, &args.room, None, &payload);
            sent += 1;
        }
        sink.send(Message::Binary(Bytes::copy_from_slice(&frame)))
            .await
            .map_err(BenchError::Ws)?;
    }
    let _ = sink.close().await;
    reader.abort();
    Ok(PubResult {
        sent,
        accepted: sent,
        errors: 0,
    })
}

/// Creates the file-storage stream `name` over `subjects` (JetStream API request/reply).
pub async fn create_stream(target: &Target, name: &str, subjects: &str) -> Result<(), BenchError> {
    let (mut ws, mut parser) = open(target, ws::source(0)).await?;
    subscribe(&mut ws, &mut parser, "_INBOX.setup").await?;
    let config = format!(
        "{{\"name\":\"{name}\",\"subjects\":[\"{subjects}\"],\"storage\":\"file\",\"retention\":\"limits\",\"discard\":\"old\",\"num_replicas\":1,\"max_msgs\":-1,\"max_bytes\":-1}}"
    );
    let mut out = Vec::new();
    put_pub(
        &mut out,
        &format!("$JS.API.STREAM.CREATE.{name}"),
        Some("_INBOX.setup"),
        config.as_bytes(),
    );
    send(&mut ws, out).await?;
    wait_for(
        &mut ws,
        &mut parser,
        "JetStream stream create",
        |e| match e {
            Event::Msg { payload, .. } => Some(if contains(payload, b"\"error\"") {
                Err(String::from_utf8_lossy(payload).into_owned())
            } else {
                Ok(())
            }),
            _ => None,
        },
    )
    .await?;
    let _ = ws.close(None).await;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A JetStream publisher: PUB with a reply inbox, one in flight, the ack is `{"stream","seq"}`.
pub async fn durable_publisher(args: DurableArgs) -> Result<PubResult, BenchError> {
    let inbox = format!("_INBOX.bench{}", args.index);
    let opened = async {
        let (mut ws, mut parser) = open(&args.target, args.src).await?;
        subscribe(&mut ws, &mut parser, &format!("{inbox}.*")).await?;
        Ok::<_, BenchError>((ws, parser))
    }
    .await;
    args.ready.wait().await;
    let (mut ws, mut parser) = opened?;
    let subjects: Vec<String> = (0..args.rooms)
        .map(|r| format!("bench.durable-{r}"))
        .collect();
    let mut payload = vec![0u8; args.size.max(track::HEADER)];
    let mut frame = Vec::with_capacity(args.size + 64);
    let mut r = PubResult::default();
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        let subject = &subjects[(args.index + r.sent as usize) % subjects.len()];
        let reply = format!("{inbox}.{}", r.sent);
        let t0 = clock::now_ns();
        track::stamp(&mut payload, t0, args.index as u32, r.sent as u32);
        frame.clear();
        put_pub(&mut frame, subject, Some(&reply), &payload);
        ws.send(Message::Binary(Bytes::copy_from_slice(&frame)))
            .await
            .map_err(BenchError::Ws)?;
        r.sent += 1;
        let mut ok = false;
        wait_for(&mut ws, &mut parser, "JetStream ack", |e| match e {
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
    let _ = ws.close(None).await;
    Ok(r)
}

pub async fn idle(
    target: Target,
    src: Ipv4Addr,
    subject: String,
    ready: oneshot::Sender<Result<(), BenchError>>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut ws, mut parser) = match open(&target, src).await {
        Ok(x) => x,
        Err(e) => return drop(ready.send(Err(e))),
    };
    if let Err(e) = subscribe(&mut ws, &mut parser, &subject).await {
        return drop(ready.send(Err(e)));
    }
    let _ = ready.send(Ok(()));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(m)) => {
                    let Some(b) = frame_bytes(m) else { continue };
                    let mut ping = false;
                    let _ = parser.feed(&b, |e| ping |= e == Event::Ping);
                    if ping && send(&mut ws, b"PONG\r\n".to_vec()).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}
