//! Socket I/O of one WebSocket connection: one task reads requests and writes the outbox.
//!
//! Writes are batched: everything queued in the outbox is fed to the socket and flushed once,
//! so a burst of broadcasts costs one syscall, not one per frame.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::{Sink, SinkExt, StreamExt};
use roomd_protocol::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::outbox::CloseReason;
use crate::session::{Proxied, Session};

/// Why the loop ended, for the log.
enum End {
    Closed(u16, &'static str),
    PeerGone,
    /// A write did not finish in time: the socket may hold part of a frame, so no close frame
    /// can follow; the connection is dropped (the client reconnects and resumes).
    Stuck,
}

pub(crate) struct Timing {
    pub ping: Duration,
    pub write_timeout: Duration,
    /// `limits.requests_in_flight`: at this many unanswered requests the socket is not read.
    pub requests_in_flight: usize,
    /// Nor at this many unanswered requests with large replies ([`crate::peer::LargeReply`]).
    pub large_in_flight: usize,
}

/// What woke the connection up. Kept small: it is what an idle connection's task holds.
enum Event {
    /// Frames may be queued in the outbox.
    Ready,
    Frame(Bytes),
    /// A request is back from the application's endpoint (proxy hooks).
    Proxied(Box<Proxied>),
    Text,
    Ping,
    Tick,
    End(End),
}

/// Serves the connection until it ends; `guard` is dropped last (it unregisters the
/// connection).
pub(crate) async fn run<S, G: Send>(
    mut ws: WebSocketStream<S>,
    mut session: Session,
    timing: Timing,
    guard: G,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outbox = session.peer.outbox.clone();
    let mut batch: Vec<Bytes> = Vec::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + timing.ping, timing.ping);
    let mut last_heard = Instant::now();
    let end = loop {
        let closing = outbox.drain(&mut batch);
        if !batch.is_empty() {
            match write_batch(&mut ws, &mut batch, timing.write_timeout).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break End::PeerGone,
                Err(_) => break End::Stuck,
            }
        }
        if let Some(reason) = closing {
            break End::Closed(reason.code(), reason.text());
        }
        // At the in-flight bound the socket is not read (TCP flow control pushes back on the
        // client) until a reply is queued, which wakes `ready`: a reply counts itself answered
        // before it is pushed, so the next turn sees the slot free.
        let full = session
            .peer
            .in_flight
            .full(timing.requests_in_flight, timing.large_in_flight)
            || session.proxy_full();
        let proxying = session.proxy_pending();
        let event = tokio::select! {
            biased;
            _ = outbox.ready() => Event::Ready,
            msg = ws.next(), if !full => classify(msg),
            p = session.next_proxied(), if proxying => Event::Proxied(p),
            _ = ping.tick() => Event::Tick,
        };
        match event {
            Event::Ready => {}
            Event::Frame(bytes) => {
                last_heard = Instant::now();
                session.peer.in_flight.start();
                crate::metrics::frame_in(bytes.len());
                // Shutdown: new requests get 503; the outbox is closed with 1001 once every
                // request taken before has been answered.
                if outbox.is_refusing() {
                    session.refuse(&bytes);
                } else if let Some(deferred) = session.on_frame(&bytes) {
                    // Boxed: the state of a wait for a full inbox (or a token check) lives on
                    // the heap only while it lasts, not in every idle connection.
                    Box::pin(session.complete(deferred)).await;
                }
            }
            Event::Proxied(p) => {
                if let Some(deferred) = session.on_proxied(*p) {
                    Box::pin(session.complete(deferred)).await;
                }
            }
            Event::Text => {
                last_heard = Instant::now();
                session.peer.in_flight.start();
                session.on_text();
            }
            Event::Ping => last_heard = Instant::now(),
            Event::Tick => {
                if full {
                    // Not reading, so the client's pongs are not seen: the wait is ours.
                    last_heard = Instant::now();
                }
                if last_heard.elapsed() > timing.ping * 3 {
                    break End::Closed(CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                }
                if Box::pin(ws.send(Message::Ping(Bytes::new())))
                    .await
                    .is_err()
                {
                    break End::PeerGone;
                }
            }
            Event::End(end) => break end,
        }
    };
    Box::pin(finish(ws, session, end, timing)).await;
    drop(guard);
}

fn classify(msg: Option<Result<Message, WsError>>) -> Event {
    match msg {
        Some(Ok(Message::Binary(bytes))) => Event::Frame(bytes),
        Some(Ok(Message::Text(text))) => {
            crate::metrics::frame_in(text.len());
            Event::Text
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Event::Ping,
        Some(Ok(Message::Close(_))) | None => Event::End(End::PeerGone),
        Some(Err(WsError::Capacity(_))) => Event::End(End::Closed(
            CloseCode::MESSAGE_TOO_BIG,
            "message larger than limits.frame",
        )),
        Some(Err(WsError::Utf8(_))) => Event::End(End::Closed(
            CloseCode::INVALID_PAYLOAD,
            "text frame is not valid UTF-8",
        )),
        Some(Err(WsError::Protocol(_))) => Event::End(End::Closed(
            CloseCode::PROTOCOL_ERROR,
            "websocket protocol violation",
        )),
        Some(Err(_)) => Event::End(End::PeerGone),
    }
}

/// Sends the close frame (if we close), completes the handshake and leaves every room.
async fn finish<S>(mut ws: WebSocketStream<S>, session: Session, end: End, timing: Timing)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = session.peer.id.clone();
    let outbox = session.peer.outbox.clone();
    match end {
        End::Closed(code, reason) => {
            tracing::debug!(%conn, code, reason, "closing connection");
            let frame = CloseFrame {
                code: WsCloseCode::from(code),
                reason: reason.into(),
            };
            let close = async {
                ws.send(Message::Close(Some(frame))).await?;
                ws.flush().await
            };
            if tokio::time::timeout(timing.write_timeout, close)
                .await
                .is_ok()
            {
                await_close_reply(&mut ws).await;
            }
        }
        End::PeerGone => tracing::debug!(%conn, "connection ended by peer"),
        End::Stuck => {
            crate::metrics::slow_consumer();
            tracing::debug!(%conn, "write timed out; dropping the connection");
        }
    }
    outbox.close(CloseReason::GoingAway);
    session.close().await;
}

/// Completes the closing handshake: reads (and drops) until the peer's close arrives, briefly.
/// Dropping the socket at once would let a late pong from the peer provoke a TCP reset that
/// discards our close frame, and with it the close code, before the peer reads it.
pub(crate) async fn await_close_reply<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let drain = async {
        loop {
            match ws.next().await {
                Some(Ok(msg)) if msg.is_close() => return,
                Some(Ok(_)) => {}
                None => return,
                // The stream is past a framing error (a message over the limit, say) and the
                // client may still be sending it: read and drop raw bytes, so our close frame
                // is not lost to a reset caused by unread data.
                Some(Err(_)) => break,
            }
        }
        let _ = tokio::io::copy(ws.get_mut(), &mut tokio::io::sink()).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Writes a batch, giving up after `limit` (the peer is not reading: a slow consumer). A batch
/// that the socket takes at once (the usual case) is written without arming a timer; only the
/// rest of one that has to wait for the peer is.
async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    batch: &mut Vec<Bytes>,
    limit: Duration,
) -> Result<Result<(), WsError>, tokio::time::error::Elapsed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let total: usize = batch.iter().map(Bytes::len).sum();
    let res = match std::future::poll_fn(|cx| Poll::Ready(write_ready(ws, cx, batch))).await {
        Ok(true) => Ok(Ok(())),
        Ok(false) => Box::pin(tokio::time::timeout(limit, write_rest(ws, batch))).await,
        Err(e) => Ok(Err(e)),
    };
    if let Ok(Ok(())) = res {
        crate::metrics::bytes_out(total);
    }
    res
}

/// Writes the rest of a batch as the socket drains.
async fn write_rest<S>(ws: &mut WebSocketStream<S>, batch: &mut Vec<Bytes>) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| match write_ready(ws, cx, batch) {
        Ok(true) => Poll::Ready(Ok(())),
        Ok(false) => Poll::Pending,
        Err(e) => Poll::Ready(Err(e)),
    })
    .await
}

/// Writes as much of the batch as the socket takes now, straight from the queued frames with
/// vectored writes (many frames, few syscalls, no copy into the WebSocket library's buffer),
/// and removes what went out. `Ok(true)` once all of it is written; `Ok(false)` means the
/// socket is full and `cx` will be woken when it drains.
fn write_ready<S>(
    ws: &mut WebSocketStream<S>,
    cx: &mut Context<'_>,
    batch: &mut Vec<Bytes>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Anything the library has buffered (a pong) goes first, so frames never interleave.
    match Pin::new(&mut *ws).poll_flush(cx) {
        Poll::Ready(res) => res?,
        Poll::Pending => return Ok(false),
    }
    let mut io = Pin::new(ws.get_mut());
    let mut sent = 0;
    let mut done = true;
    while sent < batch.len() {
        let mut slices = [IoSlice::new(&[]); IOV_PER_WRITE];
        let n = slices.len().min(batch.len() - sent);
        for (slice, frame) in slices.iter_mut().zip(&batch[sent..]) {
            *slice = IoSlice::new(frame);
        }
        let mut written = match io.as_mut().poll_write_vectored(cx, &slices[..n]) {
            Poll::Ready(Ok(0)) => return Err(WsError::Io(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(written)) => written,
            Poll::Ready(Err(e)) => return Err(e.into()),
            Poll::Pending => {
                done = false;
                break;
            }
        };
        while written > 0 {
            let frame = &mut batch[sent];
            if written >= frame.len() {
                written -= frame.len();
                sent += 1;
            } else {
                frame.advance(written);
                written = 0;
            }
        }
    }
    batch.drain(..sent);
    if done {
        if let Poll::Ready(res) = io.poll_flush(cx) {
            res?;
        } else {
            return Ok(false);
        }
    }
    Ok(done)
}

/// Frames per vectored write: an array of this many slices lives on the stack. A room's commit
/// is one frame however many messages it carries, so a batch rarely holds more.
const IOV_PER_WRITE: usize = 64;
