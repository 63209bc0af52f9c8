//! What the scenarios ask of a broker client, with one implementation per broker
//! ([`crate::roomd_client`], [`crate::nats_client`]). Every connection is one task.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::servers::Broker;
use crate::track::{Flow, Totals};
use crate::ws::Target;
use crate::{nats_client, roomd_client, BenchError};

/// A subscriber: connect, subscribe to `room`, report ready, then count deliveries until stopped.
pub struct SubArgs {
    pub target: Target,
    pub src: Ipv4Addr,
    pub room: String,
    pub flow: Arc<Flow>,
    pub totals: Arc<Totals>,
    pub stop: watch::Receiver<bool>,
    pub ready: oneshot::Sender<Result<(), BenchError>>,
}

/// How a fan-out publisher paces itself.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// At most this many messages not yet delivered to every subscriber.
    Window(u64),
    /// An open loop at a fixed rate (messages per second); the send time stamped into each
    /// payload is the intended one, so a stalled sender shows up as latency.
    Rate(f64),
}

pub struct PubArgs {
    pub target: Target,
    pub src: Ipv4Addr,
    pub room: String,
    pub index: usize,
    pub size: usize,
    pub flow: Arc<Flow>,
    pub pacing: Pacing,
    pub start: Instant,
    pub duration: Duration,
}

impl PubArgs {
    /// How many messages to send now, after `sent`, waiting as the pacing says; `None` once the
    /// run's time is up. The same for every broker, so the clients differ only in their wire.
    pub async fn next_batch(&self, sent: u64) -> Option<u64> {
        let end = self.start + self.duration;
        loop {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            match self.pacing {
                Pacing::Window(w) => {
                    let pf = self.flow.publisher(self.index);
                    let room_left = (pf.completed.load(Ordering::Acquire) + w).saturating_sub(sent);
                    if room_left > 0 {
                        return Some(room_left.min(64));
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), pf.notify.notified()).await;
                }
                Pacing::Rate(rate) => {
                    let due = self.start + Duration::from_secs_f64(sent as f64 / rate);
                    if due > now {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    return Some(1);
                }
            }
        }
    }
}

/// What a publisher got done.
#[derive(Debug, Default, Clone, Copy)]
pub struct PubResult {
    pub sent: u64,
    /// Publishes the broker took on: acked ones for roomd, all sent ones for core NATS.
    pub accepted: u64,
    pub errors: u64,
}

/// A durable publisher with one publish in flight over `rooms` rooms, recording publish→ack
/// latency.
pub struct DurableArgs {
    pub target: Target,
    pub src: Ipv4Addr,
    pub index: usize,
    pub rooms: usize,
    /// Publisher i keeps to room i (mod `rooms`) instead of going round the rooms.
    pub own_room: bool,
    pub size: usize,
    pub ready: Arc<tokio::sync::Barrier>,
    pub duration: Duration,
}

impl DurableArgs {
    /// The room of this publisher's `sent`-th publish.
    pub fn room_index(&self, sent: u64) -> usize {
        let step = if self.own_room { 0 } else { sent as usize };
        (self.index + step) % self.rooms.max(1)
    }
}

pub async fn subscriber(broker: Broker, args: SubArgs) {
    match broker {
        Broker::Roomd => roomd_client::subscriber(args).await,
        Broker::Nats => nats_client::subscriber(args).await,
    }
}

pub async fn publisher(broker: Broker, args: PubArgs) -> Result<PubResult, BenchError> {
    match broker {
        Broker::Roomd => roomd_client::publisher(args).await,
        Broker::Nats => nats_client::publisher(args).await,
    }
}

pub async fn durable_publisher(broker: Broker, args: DurableArgs) -> Result<PubResult, BenchError> {
    match broker {
        Broker::Roomd => roomd_client::durable_publisher(args).await,
        Broker::Nats => nats_client::durable_publisher(args).await,
    }
}

/// An idle subscriber: connect, subscribe, report ready, then only answer pings until stopped.
pub async fn idle(
    broker: Broker,
    target: Target,
    src: Ipv4Addr,
    room: String,
    ready: oneshot::Sender<Result<(), BenchError>>,
    stop: watch::Receiver<bool>,
) {
    match broker {
        Broker::Roomd => roomd_client::idle(target, src, room, ready, stop).await,
        Broker::Nats => nats_client::idle(target, src, room, ready, stop).await,
    }
}

/// The websocket endpoint of a broker, with the read buffer a connection of this kind needs.
pub fn target(broker: Broker, server: &crate::servers::Server, read_buffer: usize) -> Target {
    Target {
        addr: server.ws_addr,
        path: server.ws_path,
        subprotocol: match broker {
            Broker::Roomd => Some(roomd_protocol::SUBPROTOCOL),
            Broker::Nats => None,
        },
        read_buffer,
    }
}
