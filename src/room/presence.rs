//! Presence v2 (SPEC.md 4.12): the reconnect grace, one entry per user, counts-only rooms.
//!
//! Every change of who is present goes through [`Room::member_added`] and
//! [`Room::member_removed`] (local members and, on Redis, other nodes' alike), which tell the
//! presence subscribers in the shape the room's namespace asks for: one `join`/`leave` per
//! connection (v1), one per user as its first connection comes and its last goes, or only the
//! numbers, coalesced to one `count` per `count_interval_ms`.
//!
//! A connection that drops (closed, or cut as a slow consumer) with a user id does not leave
//! at once: its subscription is *held* for `rooms.presence_grace_ms`, its member staying in the
//! list (and in the cluster's presence, so other nodes keep counting the user too). A
//! subscription of the same user to the room within the grace ends the held one as
//! *resumed*: the new member is added before the old one is removed, so the user's entry never
//! reaches zero connections and its subscribers see neither a `leave` nor a `join`. Whatever the
//! path, a departure ends in one place, [`Room::departure_final`].
//!
//! Timers: one per room task. The grace is one length, so held departures are queued in the
//! order of their deadlines; the room's loop sleeps until the earliest of the first one's and
//! the owed `count`'s ([`Room::presence_wake`]).

use std::sync::Arc;
use std::time::Instant;

use roomd_protocol::ServerFrame;

use super::model::{Held, Room, Sub};
use super::snapshot::{Listed, Present};
use crate::config::PresenceMode;

impl Room {
    /// A member was added (to `members`, or to the cluster's remote list): its presence
    /// subscribers hear of it in the room's mode.
    pub(super) fn member_added(&mut self, conn: &Arc<str>, present: &Present) {
        let conns = self.count_user(present.user.as_ref(), true);
        match self.rules.presence_mode {
            PresenceMode::Counts => self.count_changed(),
            PresenceMode::Users if conns > 1 => {}
            mode => {
                let member = present.member(conn, (mode == PresenceMode::Users).then_some(conns));
                self.presence_event(&ServerFrame::Join {
                    room: String::from(&*self.name),
                    conn: member.conn,
                    user: member.user,
                    info: member.info,
                    conns: member.conns,
                });
            }
        }
    }

    /// A member was removed; see [`Room::member_added`].
    pub(super) fn member_removed(&mut self, conn: &Arc<str>, present: &Present) {
        let conns = self.count_user(present.user.as_ref(), false);
        match self.rules.presence_mode {
            PresenceMode::Counts => self.count_changed(),
            PresenceMode::Users if conns > 0 => {}
            _ => self.presence_event(&ServerFrame::Leave {
                room: String::from(&*self.name),
                conn: String::from(&**conn),
                user: present.user.as_deref().map(str::to_string),
            }),
        }
    }

    /// Counts a member of `user` in or out; returns the user's members now (a connection
    /// without a user is an entry of its own: 1 in, 0 out).
    fn count_user(&mut self, user: Option<&Arc<str>>, add: bool) -> u32 {
        let Some(user) = user else {
            return u32::from(add);
        };
        if add {
            let n = self.user_conns.entry(user.clone()).or_insert(0);
            *n += 1;
            *n
        } else {
            let Some(n) = self.user_conns.get_mut(user) else {
                return 0;
            };
            *n = n.saturating_sub(1);
            let left = *n;
            if left == 0 {
                self.user_conns.remove(user);
            }
            left
        }
    }

    /// The presence list a `subbed` carries, in the room's mode (`None` for counts-only: its
    /// subscriber gets a `count` instead).
    pub(super) fn presence_view(&self) -> Option<Vec<Listed>> {
        match self.rules.presence_mode {
            PresenceMode::Conns => Some(self.presence_list()),
            PresenceMode::Counts => None,
            PresenceMode::Users => {
                let mut seen = std::collections::HashSet::new();
                let entries = self
                    .presence_members()
                    .filter_map(|(conn, p)| match &p.user {
                        Some(u) if !seen.insert(u.clone()) => None,
                        Some(u) => Some(p.listed(conn, self.user_conns.get(u).copied())),
                        None => Some(p.listed(conn, Some(1))),
                    });
                Some(entries.collect())
            }
        }
    }

    /// Every member present: this node's (held ones included), then other nodes'.
    pub(super) fn presence_members(&self) -> impl Iterator<Item = (&Arc<str>, &Present)> {
        let remote = self.linked.iter().flat_map(|l| l.remote.iter());
        self.members.iter().chain(remote.map(|(c, (_, p))| (c, p)))
    }

    /// A subscription whose connection dropped (closed, or cut as a slow consumer): held for
    /// the grace when a connection of its user could take its place, else its departure is
    /// final now.
    pub(super) fn dropped(&mut self, conn: &Arc<str>, sub: Sub) {
        self.stop_sub(&sub);
        let grace = self.env.limits.presence_grace;
        let room_for_it = self.held.len() < self.env.limits.presence_grace_max;
        match sub.peer.user.clone() {
            Some(user) if !grace.is_zero() && room_for_it && !self.shutting_down => {
                self.held.push_back(Held {
                    conn: conn.clone(),
                    user,
                    presence: sub.presence,
                    deadline: Instant::now() + grace,
                });
                crate::metrics::presence_held(1);
            }
            user => self.departure_final(conn, user.as_ref(), sub.presence, false),
        }
    }

    /// The one place a subscription's departure becomes final: after the grace, when its
    /// user resumed (`resumed`), or at once when nothing holds it (an `unsub`, a removed
    /// user, a connection without a user id, grace off). Its member leaves and the
    /// webhook's `room.left` goes out. Whatever else must end with a member's presence
    /// (per-connection ephemeral state, say) belongs here. The caller then checks for
    /// `room.emptied` ([`Room::hook_emptied_if_so`]).
    pub(super) fn departure_final(
        &mut self,
        conn: &Arc<str>,
        user: Option<&Arc<str>>,
        presence: bool,
        resumed: bool,
    ) {
        self.hook_left(conn, user, presence, resumed);
        if let Some(member) = self.members.remove(conn) {
            if let Some(l) = &self.linked {
                l.cluster.set_presence(&self.name, conn, None);
            }
            self.presence_bytes = self.presence_bytes.saturating_sub(member.cost(conn));
            self.member_removed(conn, &member);
        }
        self.departed(conn);
    }

    /// Takes the held departures of `user`, which a new subscription of theirs resumes, and
    /// the presence bytes their members hold (the new member may use them).
    pub(super) fn take_resumed(&mut self, user: Option<&Arc<str>>) -> (Vec<Held>, usize) {
        let Some(user) = user else {
            return (Vec::new(), 0);
        };
        if !self.held.iter().any(|h| h.user == *user) {
            return (Vec::new(), 0);
        }
        let (theirs, others): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.user == *user);
        // Still in deadline order: a partition keeps each side's order.
        self.held = others.into();
        let freed = theirs
            .iter()
            .filter_map(|h| self.members.get(&h.conn).map(|m| m.cost(&h.conn)))
            .sum();
        crate::metrics::presence_resumed(theirs.len());
        (theirs, freed)
    }

    /// Ends resumed departures, after their successor is in: quietly in the per-user view.
    pub(super) fn end_resumed(&mut self, resumed: Vec<Held>) {
        for h in resumed {
            self.departure_final(&h.conn, Some(&h.user), h.presence, true);
        }
    }

    /// Ends the held departures of `user` now (the application removed the user); returns
    /// how many.
    pub(super) fn end_held_of(&mut self, user: &str) -> usize {
        let (theirs, _) = self.take_resumed(Some(&Arc::from(user)));
        let n = theirs.len();
        for h in theirs {
            self.departure_final(&h.conn, Some(&h.user), h.presence, false);
        }
        n
    }

    /// When the room's presence timer must fire next: the first held deadline, or the owed
    /// `count`, whichever is sooner.
    pub(super) fn presence_wake(&self) -> Option<Instant> {
        let held = self.held.front().map(|h| h.deadline);
        match (held, self.count_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The presence timer fired: departures whose grace ran out are final, and an owed
    /// `count` goes out.
    pub(super) fn presence_tick(&mut self, now: Instant) {
        let mut ended = false;
        while self.held.front().is_some_and(|h| h.deadline <= now) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.departure_final(&h.conn, Some(&h.user), h.presence, false);
            ended = true;
        }
        if ended {
            self.hook_emptied_if_so();
        }
        if self.count_due.is_some_and(|due| due <= now) {
            self.count_due = None;
            self.count_sent = Some(now);
            let count = self.count_frame();
            self.presence_event(&count);
        }
    }

    /// Owes the room's subscribers a `count`: at once, or as soon as `count_interval_ms` has
    /// passed since the last one. Changes meanwhile are folded into it.
    fn count_changed(&mut self) {
        if self.count_due.is_none() {
            let now = Instant::now();
            let next = self
                .count_sent
                .map_or(now, |s| s + self.rules.count_interval);
            self.count_due = Some(next.max(now));
        }
    }

    /// How many are present, as a `count` event.
    pub(super) fn count_frame(&self) -> ServerFrame {
        let conns = self.presence_members().count();
        let of_users: u32 = self.user_conns.values().sum();
        let anonymous = conns.saturating_sub(of_users as usize);
        ServerFrame::Count {
            room: String::from(&*self.name),
            members: (self.user_conns.len() + anonymous) as u64,
            conns: conns as u64,
        }
    }
}
