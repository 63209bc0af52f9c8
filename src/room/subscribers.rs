//! A room's subscribers: subscribe, the replay-to-live switch, fan-out, presence.
//!
//! A subscriber that resumes from `since` must see every entry after it exactly once, in order,
//! then live entries. It is either *live* (receives every commit's broadcast) or *replaying*
//! (its `next` seq is still to be queued). A replaying subscriber catches up from the room's
//! cache when the cache holds everything it misses, or is paged through history from disk by a
//! replay task ([`super::replay`]). Each page comes back through the room's inbox, so the room
//! queues it and decides whether the subscriber is now live in one step of its single-owner
//! loop: no commit can slip between the last page and the switch, and nothing is queued twice.

use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::{ErrorCode, ServerFrame};
use tokio_util::sync::CancellationToken;

use super::model::{Room, Sub};
use super::replay::Replay;
use super::snapshot::{Listed, Present, Snapshot};
use crate::config::PresenceMode;
use crate::peer::{Peer, ReplyError};
use crate::wire::{self, Page};

impl Room {
    pub(super) fn subscribe(
        &mut self,
        peer: Arc<Peer>,
        id: u32,
        since: Option<u64>,
        (want_state, want_presence): (bool, bool),
        info: Option<Bytes>,
        allow: Option<Vec<String>>,
    ) {
        if self.subs.contains_key(&peer.id) {
            return peer.send_err(
                Some(id),
                ReplyError::new(
                    ErrorCode::AlreadySubscribed,
                    "already subscribed to this room",
                ),
            );
        }
        let max = self.rules.max_subscribers;
        if max > 0 && self.subs.len() >= max {
            peer.refuse_sub(&self.name, id);
            return peer.send_err(
                Some(id),
                ReplyError {
                    max: Some(max as u64),
                    ..ReplyError::new(
                        ErrorCode::Limit,
                        format!("room has {max} subscribers, its namespace's limit"),
                    )
                },
            );
        }
        let last = self.head;
        let (first, complete) = self.resume_from(since);
        // Held departures of the same user end only once this subscription is in: its
        // member is added before theirs leave, so the user's entry never empties.
        let (resumed, freed) = self.take_resumed(peer.user.as_ref());
        if let Some(info) = info {
            if let Err(e) = self.join(&peer, info, freed) {
                if !resumed.is_empty() {
                    self.end_resumed(resumed);
                    self.hook_emptied_if_so();
                }
                // Before the reply: the connection forgets the subscription before it reads
                // the client's next request.
                peer.refuse_sub(&self.name, id);
                return peer.send_err(Some(id), e);
            }
        }
        let mut snapshot = Snapshot::new(
            id,
            self.name.clone(),
            self.env.limits.frame_bytes,
            want_state.then(|| self.state.shared()),
            want_presence.then(|| self.presence_view()).flatten(),
        );
        let part = snapshot.next_part();
        let counts = want_presence && self.rules.presence_mode == PresenceMode::Counts;
        peer.send(&ServerFrame::Subbed {
            id,
            room: String::from(&*self.name),
            epoch: self.epoch,
            last,
            first,
            earliest: self.earliest.min(last + 1),
            complete,
            state: part.state,
            presence: part.presence,
            more: part.more,
            allow,
        });
        if counts && !part.more {
            peer.send(&self.count_frame());
        }
        self.next_token += 1;
        let mut sub = Sub {
            peer,
            id,
            live: false,
            next: first,
            presence: want_presence,
            token: self.next_token,
            held: None,
            snapshot: None,
        };
        if part.more {
            // Neither live nor replaying until the snapshot is out; retention waits for it as
            // for a replay.
            sub.held = Some(if counts {
                vec![wire::encode(&self.count_frame())]
            } else {
                Vec::new()
            });
            self.replays += 1;
            let cancel = CancellationToken::new();
            sub.snapshot = Some(cancel.clone());
            let done = (self.tx.clone(), sub.peer.id.clone(), sub.token);
            let send = snapshot.send(sub.peer.outbox.clone(), cancel, Some(done));
            self.env.background.spawn(send);
        } else if !self.catch_up_from_cache(&mut sub) {
            self.start_replay(&sub);
        }
        self.hook_joined(&sub.peer, self.members.contains_key(&sub.peer.id));
        self.subs.insert(sub.peer.id.clone(), sub);
        self.end_resumed(resumed);
    }

    /// The last `snap` of a subscriber's snapshot is queued: its held presence events follow,
    /// then it continues from the snapshot's head + 1 like any resuming subscriber.
    pub(super) fn snapshot_sent(&mut self, conn: &Arc<str>, token: u64) {
        let Some(mut sub) = self.subs.remove(conn) else {
            return;
        };
        // A later subscription of the same connection has its own snapshot.
        let Some(held) = sub.held.take_if(|_| sub.token == token) else {
            self.subs.insert(conn.clone(), sub);
            return;
        };
        self.replays = self.replays.saturating_sub(1);
        sub.snapshot = None;
        let slow = held.into_iter().any(|f| sub.peer.outbox.push(f).is_err());
        if !slow && !self.catch_up_from_cache(&mut sub) {
            self.start_replay(&sub);
        }
        self.subs.insert(conn.clone(), sub);
        if slow {
            self.drop_sub(conn);
        }
    }

    /// Who is here, one entry per connection, sharing the infos' bytes.
    pub(super) fn presence_list(&self) -> Vec<Listed> {
        self.presence_members()
            .map(|(c, p)| p.listed(c, None))
            .collect()
    }

    /// Answers `who`: the list in as many frames as it needs, the rest paced like a snapshot.
    /// Per connection whatever the room's mode (the detail behind the per-user view); refused
    /// in a counts-only room, whose lists are what it exists to avoid.
    pub(super) fn who(&self, peer: &Peer, id: u32) {
        if self.rules.presence_mode == PresenceMode::Counts {
            return peer.send_err(
                Some(id),
                ReplyError::new(
                    ErrorCode::Forbidden,
                    "presence in this room's namespace is counts only: see the `count` events",
                ),
            );
        }
        let mut snapshot = Snapshot::new(
            id,
            self.name.clone(),
            self.env.limits.frame_bytes,
            None,
            Some(self.presence_list()),
        );
        let part = snapshot.next_part();
        peer.send(&ServerFrame::Who {
            id,
            room: String::from(&*self.name),
            members: part.presence.unwrap_or_default(),
            more: part.more,
        });
        if part.more {
            self.env.background.spawn(snapshot.send(
                peer.outbox.clone(),
                CancellationToken::new(),
                None,
            ));
        }
    }

    /// The first seq a subscriber resuming after `since` gets, and whether that is everything
    /// it missed (retention may have removed the start of it).
    fn resume_from(&self, since: Option<u64>) -> (u64, bool) {
        match since {
            Some(s) if s < self.head => {
                let start = s + 1;
                if start < self.earliest {
                    (self.earliest, false)
                } else {
                    (start, true)
                }
            }
            _ => (self.head + 1, true),
        }
    }

    /// Adds a member to the room's presence, within `rooms.presence_bytes` (of which the
    /// resumed members it replaces hold `freed`), and tells the presence subscribers.
    fn join(&mut self, peer: &Peer, info: Bytes, freed: usize) -> Result<(), ReplyError> {
        let present = Present {
            user: peer.user.clone(),
            info,
        };
        let cost = present.cost(&peer.id);
        let max = self.env.limits.presence_bytes;
        if (self.presence_bytes + cost).saturating_sub(freed) > max {
            return Err(ReplyError {
                max: Some(max as u64),
                ..ReplyError::new(
                    ErrorCode::Limit,
                    format!("room presence is full ({max} bytes); subscribe without info"),
                )
            });
        }
        self.presence_bytes += cost;
        if let Some(l) = &self.linked {
            l.cluster.set_presence(
                &self.name,
                &peer.id,
                Some(super::cluster::member_of(l, &present)),
            );
        }
        self.member_added(&peer.id, &present);
        self.members.insert(peer.id.clone(), present);
        Ok(())
    }

    pub(super) fn unsubscribe(&mut self, peer: &Arc<Peer>, id: u32) {
        if self.remove_sub(&peer.id) {
            peer.send(&ServerFrame::Ok { id });
        } else {
            peer.send_err(
                Some(id),
                ReplyError::new(ErrorCode::NotSubscribed, "not subscribed"),
            );
        }
    }

    /// Queues the entries from `sub.next` to the head from the cache and makes the subscriber
    /// live, if the cache holds them all and they are at most one page.
    fn catch_up_from_cache(&self, sub: &mut Sub) -> bool {
        if sub.next > self.head {
            sub.live = true;
            return true;
        }
        let missing = self.head - sub.next + 1;
        let cached_from = self.cache.front().map_or(u64::MAX, |(s, _)| *s);
        if cached_from > sub.next || missing > self.env.limits.page as u64 {
            return false;
        }
        let skip = usize::try_from(sub.next - cached_from).unwrap_or(usize::MAX);
        let bytes: usize = self.cache.iter().skip(skip).map(|(_, f)| f.len()).sum();
        if bytes > self.env.limits.outbox_max_bytes / 2 {
            return false;
        }
        for (_, frame) in self.cache.iter().skip(skip) {
            let _ = sub.peer.outbox.push(frame.clone());
        }
        crate::metrics::delivered(usize::try_from(missing).unwrap_or(usize::MAX), 0);
        sub.next = self.head + 1;
        sub.live = true;
        true
    }

    fn start_replay(&mut self, sub: &Sub) {
        let Some(room_id) = self.id else { return };
        self.replays += 1;
        let replay = Replay {
            engine: self.env.engine.clone(),
            room_tx: self.tx.clone(),
            room_id,
            room: self.name.clone(),
            conn: sub.peer.id.clone(),
            token: sub.token,
            outbox: sub.peer.outbox.clone(),
            from: sub.next,
            page: self.env.limits.replay_page(),
            page_bytes: self.env.limits.frame_bytes,
        };
        self.env.background.spawn(replay.run());
    }

    /// Queues one replayed page; returns where the replay continues, or `None` once live.
    pub(super) fn replay_page(&mut self, conn: &Arc<str>, token: u64, frames: Page) -> Option<u64> {
        let head = self.head;
        let sub = self
            .subs
            .get_mut(conn)
            .filter(|s| s.token == token && !s.live)?;
        let read_any = !frames.is_empty();
        let n = queue_page(sub, &frames, head);
        crate::metrics::delivered(n, 0);
        if sub.peer.outbox.is_closed() {
            self.drop_sub(conn);
            return None;
        }
        let mut sub = self.subs.remove(conn)?;
        if !self.catch_up_from_cache(&mut sub) && !read_any && n == 0 {
            // Nothing readable at `next` although the head is past it. Retention cannot run
            // during a replay, so this would be a bug: go live rather than loop forever.
            tracing::warn!(room = %self.name, next = sub.next, head, "replay found no entries; going live");
            sub.next = head + 1;
            sub.live = true;
        }
        let (live, next) = (sub.live, sub.next);
        self.subs.insert(conn.clone(), sub);
        if live {
            self.replays -= 1;
            None
        } else {
            Some(next)
        }
    }

    /// Ends every subscription held by a connection of `user`, as its `unsub` would (presence
    /// `leave` to the others, replay and snapshot stopped), and tells each connection with
    /// `unsubbed` (SPEC.md 5.7); returns how many were ended.
    pub(super) fn remove_user(&mut self, user: &str) -> usize {
        let conns: Vec<Arc<str>> = self
            .subs
            .iter()
            .filter(|(_, s)| s.peer.user.as_deref() == Some(user))
            .map(|(conn, _)| conn.clone())
            .collect();
        // All out first, so the user's connections are not sent each other's `leave`.
        let theirs: Vec<(Arc<str>, Sub)> = conns
            .into_iter()
            .filter_map(|c| self.subs.remove(&c).map(|s| (c, s)))
            .collect();
        let n = theirs.len();
        let held = self.end_held_of(user);
        for (conn, sub) in theirs {
            let (peer, id) = (sub.peer.clone(), sub.id);
            self.ended(&conn, sub);
            // Before the event: the connection forgets the subscription before it reads the
            // client's next request, so an `unsub` gets 404 and a new `sub` is taken.
            peer.refuse_sub(&self.name, id);
            peer.send(&ServerFrame::Unsubbed {
                room: String::from(&*self.name),
            });
        }
        if n + held > 0 {
            self.hook_emptied_if_so();
        }
        n
    }

    /// Ends a subscription its client asked to end (`unsub`): final at once.
    pub(super) fn remove_sub(&mut self, conn: &Arc<str>) -> bool {
        let Some(sub) = self.subs.remove(conn) else {
            return false;
        };
        self.ended(conn, sub);
        self.hook_emptied_if_so();
        true
    }

    /// Ends a subscription whose connection is gone (closed, or cut as a slow consumer): held
    /// for the reconnect grace when it may be resumed ([`Room::dropped`]).
    pub(super) fn drop_sub(&mut self, conn: &Arc<str>) -> bool {
        let Some(sub) = self.subs.remove(conn) else {
            return false;
        };
        self.dropped(conn, sub);
        self.hook_emptied_if_so();
        true
    }

    /// A subscription taken out of `subs`, its departure final now.
    fn ended(&mut self, conn: &Arc<str>, sub: Sub) {
        self.stop_sub(&sub);
        self.departure_final(conn, sub.peer.user.as_ref(), sub.presence, false);
    }

    /// A subscription taken out of `subs`: its replay and snapshot stop counting (and the
    /// snapshot task stops).
    pub(super) fn stop_sub(&mut self, sub: &Sub) {
        if !sub.live {
            self.replays = self.replays.saturating_sub(1);
        }
        if let Some(snapshot) = &sub.snapshot {
            snapshot.cancel();
        }
    }

    /// Queues `frames` (one or more complete WebSocket frames, `entries` log entries) to every
    /// live subscriber.
    pub(super) fn broadcast(&mut self, frames: &Bytes, entries: usize) {
        let mut slow = Vec::new();
        let mut n = 0;
        for (conn, sub) in &self.subs {
            if sub.live {
                n += entries;
                if sub.peer.outbox.push(frames.clone()).is_err() {
                    slow.push(conn.clone());
                }
            }
        }
        crate::metrics::delivered(n, 0);
        for conn in slow {
            self.drop_sub(&conn);
        }
    }

    /// An ephemeral publish (SPEC.md 4.10): encoded once and queued at once to every live
    /// subscriber but the sender, through the same bounded outboxes as log entries (a full one
    /// is a slow consumer, closed as always). A subscriber still being replayed or sent its
    /// snapshot misses it: it was not live yet. Nothing is stored; the sender gets `ok`.
    pub(super) fn signal(&mut self, peer: &Peer, id: u32, data: Vec<u8>) {
        let bytes = wire::encode(&ServerFrame::Signal {
            room: String::from(&*self.name),
            ts: super::model::now_ms(),
            from: String::from(&*peer.id),
            uid: peer.user.as_deref().map(str::to_string),
            data,
        });
        if let Some(linked) = &self.linked {
            linked.cluster.signal(&self.name, wire::payload(&bytes));
        }
        self.deliver_signal(&bytes, Some(&peer.id));
        peer.send(&ServerFrame::Ok { id });
    }

    /// Queues an ephemeral message to every live subscriber but its sender.
    pub(super) fn deliver_signal(&mut self, bytes: &Bytes, sender: Option<&Arc<str>>) {
        let mut slow = Vec::new();
        for (conn, sub) in &self.subs {
            let live = sub.live && sub.held.is_none() && Some(conn) != sender;
            if live && sub.peer.outbox.push(bytes.clone()).is_err() {
                slow.push(conn.clone());
            }
        }
        for conn in slow {
            self.drop_sub(&conn);
        }
    }

    /// Queues a join or leave to every subscriber that asked for presence.
    pub(super) fn presence_event(&mut self, frame: &ServerFrame) {
        let bytes = wire::encode(frame);
        let mut slow = Vec::new();
        for (conn, sub) in &mut self.subs {
            if !sub.presence {
                continue;
            }
            if let Some(held) = &mut sub.held {
                held.push(bytes.clone());
            } else if sub.peer.outbox.push(bytes.clone()).is_err() {
                slow.push(conn.clone());
            }
        }
        for conn in slow {
            self.drop_sub(&conn);
        }
    }
}

/// Queues a page's entries from `sub.next` up to `head` as one item if the outbox has room for
/// replay; returns how many. Entries past the head are committed but not yet broadcast: they
/// come live.
fn queue_page(sub: &mut Sub, page: &Page, head: u64) -> usize {
    let Some((frames, n, last)) = page.span(sub.next, head) else {
        return 0;
    };
    match sub.peer.outbox.push_replay(&frames) {
        Ok(true) => {
            sub.next = last + 1;
            n
        }
        // No room now: the page is read again once the outbox drains. Closed: the caller
        // removes the subscriber.
        Ok(false) | Err(_) => 0,
    }
}
