//! The room's events for `[[webhooks]]`. Each is emitted by one call from the code where the
//! thing happens, so the room's logic stays where it was and the events cannot disagree with
//! it: a join where a subscription is taken, a leave where one ends, a message or state change
//! where its commit is answered (durable, seq known), the room's creation at its first commit.
//! Emitting never waits ([`crate::webhook::Webhooks::emit`]).

use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::ServerFrame;

use super::model::{Reply, Room};
use crate::peer::Peer;
use crate::webhook::event::value_json;
use crate::webhook::{Durable, Event, Kind, Webhooks};
use crate::wire;

impl Room {
    /// A subscription was taken; `member`: it is visible in presence.
    pub(super) fn hook_joined(&self, peer: &Peer, member: bool) {
        self.env.webhooks.emit(
            Event::new(Kind::RoomJoined)
                .room(&self.name)
                .by(&peer.id, peer.user.as_ref())
                .field("presence", member),
        );
    }

    /// A subscription's departure is final (unsubscribed, user removed, or its connection
    /// gone and the reconnect grace over); `resumed`: a new subscription of its user took its
    /// place within the grace.
    pub(super) fn hook_left(
        &self,
        conn: &Arc<str>,
        user: Option<&Arc<str>>,
        presence: bool,
        resumed: bool,
    ) {
        self.env.webhooks.emit(
            Event::new(Kind::RoomLeft)
                .room(&self.name)
                .by(conn, user)
                .field("presence", presence)
                .field("resumed", resumed),
        );
    }

    /// Called after subscriptions ended: `room.emptied` once the last one is gone, held
    /// departures included (SPEC.md 4.12): not while a reconnect grace runs.
    pub(super) fn hook_emptied_if_so(&self) {
        if self.subs.is_empty() && self.held.is_empty() {
            self.env
                .webhooks
                .emit(Event::new(Kind::RoomEmptied).room(&self.name));
        }
    }

    /// The room's first commit gave it its place in the store.
    pub(super) fn hook_created(&self) {
        self.env
            .webhooks
            .emit(Event::new(Kind::RoomCreated).room(&self.name));
    }

    /// An entry of a durable batch, before its writer is answered: the answer waits for the
    /// returned event to be durable too (README "Webhooks": an acknowledged write's event is
    /// never lost).
    pub(super) fn hook_written(&self, seq: u64, frame: &Bytes, reply: &Reply) -> Option<Durable> {
        let hooks = &self.env.webhooks;
        match reply {
            Reply::Ack { peer, .. } if hooks.wants(Kind::MessagePublished, &self.name) => {
                // Decoded back from the frame: only when an endpoint wants it.
                if let Ok(ServerFrame::Msg { ts, from, data, .. }) =
                    roomd_protocol::codec::decode_server(wire::payload(frame))
                {
                    return hooks.emit_before_ack(
                        Event::new(Kind::MessagePublished)
                            .room(&self.name)
                            .by(&peer.id, peer.user.as_ref())
                            .field("seq", seq)
                            .field("at", ts)
                            .field("from", from)
                            .bytes("data", &data),
                    );
                }
                None
            }
            Reply::Mutated { peer, effect, .. } if hooks.wants(Kind::StateChanged, &self.name) => {
                let value = effect
                    .entry
                    .as_ref()
                    .map_or(serde_json::Value::Null, |e| value_json(&e.value));
                hooks.emit_before_ack(
                    Event::new(Kind::StateChanged)
                        .room(&self.name)
                        .by(&peer.id, peer.user.as_ref())
                        .field("seq", seq)
                        .field("key", effect.key.clone())
                        .field("ver", effect.ver)
                        .field("deleted", effect.entry.is_none())
                        .field("value", value),
                )
            }
            // A key's expiry (SPEC.md 4.13): a state change by nobody's connection, with no ack
            // to hold.
            Reply::Expired { effect } if hooks.wants(Kind::StateChanged, &self.name) => {
                hooks.emit(
                    Event::new(Kind::StateChanged)
                        .room(&self.name)
                        .by(&Arc::from(super::model::EXPIRY_FROM), None)
                        .field("seq", seq)
                        .field("key", effect.key.clone())
                        .field("ver", 0)
                        .field("deleted", true)
                        .field("value", serde_json::Value::Null)
                        .field("expired", true),
                );
                None
            }
            // An ephemeral key's connection ended (SPEC.md 4.14): likewise, from `ephemeral`.
            Reply::Released { effect, .. } if hooks.wants(Kind::StateChanged, &self.name) => {
                hooks.emit(
                    Event::new(Kind::StateChanged)
                        .room(&self.name)
                        .by(&Arc::from(super::model::RELEASE_FROM), None)
                        .field("seq", seq)
                        .field("key", effect.key.clone())
                        .field("ver", 0)
                        .field("deleted", true)
                        .field("value", serde_json::Value::Null)
                        .field("released", true),
                );
                None
            }
            _ => None,
        }
    }
}

/// The room unloaded after being idle (`rooms.idle_unload_secs`); not at shutdown.
pub(super) fn unloaded(hooks: &Webhooks, room: &Arc<str>) {
    hooks.emit(Event::new(Kind::RoomUnloaded).room(room));
}
