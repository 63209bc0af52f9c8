//! A `subbed` or `who` reply cut into frames that each fit in `limits.frame`.
//!
//! The room takes a [`Snapshot`] in one step of its loop (its state at the head and its
//! presence list, sharing the encoded values' bytes, so taking it copies only keys and ids).
//! The first part goes out in the `subbed` or `who` reply; if more remains, the reply says
//! `more: true` and [`Snapshot::send`] queues the rest as `snap` frames at the reader's pace
//! (each one waits until the outbox is at most half full, like a replay page), so a snapshot
//! larger than the outbox does not make its reader a slow consumer. Each frame is encoded only
//! when it is queued: a reader that stalls holds its outbox's bound, not a copy of the room.
//!
//! A subscriber is neither live nor replaying while its snapshot is sent: the room holds its
//! presence events and feeds it no log entries. When the last `snap` is queued the room is told
//! ([`super::Command::SnapshotSent`]) and the subscriber goes on exactly like a replay from
//! the snapshot's head + 1.

use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::{Member, ServerFrame, StateItem, Value};
use tokio_util::sync::CancellationToken;

use super::state::SharedKey;
use super::{Command, InboxSender};
use crate::outbox::Outbox;
use crate::wire;

/// What a frame spends besides its items: every other field of `subbed` (the largest of the
/// three), with the room name counted separately.
const FRAME_OVERHEAD: usize = 256;
/// What one item spends besides its key (or ids) and value: map and field names, lengths, ver.
const ITEM_OVERHEAD: usize = 32;
/// What a state item's `exp` adds: its field name and a 64-bit integer.
const EXP_BYTES: usize = 13;

/// One presence member as a room holds it: the `info` as its encoded bytes.
#[derive(Clone)]
pub(super) struct Present {
    pub user: Option<Arc<str>>,
    pub info: Bytes,
}

impl Present {
    /// What this member counts against `rooms.presence_bytes`, and its size in a frame at most.
    pub(super) fn cost(&self, conn: &str) -> usize {
        conn.len() + self.user.as_deref().map_or(0, str::len) + self.info.len() + ITEM_OVERHEAD
    }

    /// As a frame lists it; `conns`: the user's connections present, in the per-user view.
    pub(super) fn member(&self, conn: &str, conns: Option<u32>) -> Member {
        Member {
            conn: conn.to_string(),
            user: self.user.as_deref().map(str::to_string),
            info: Some(decode(&self.info)),
            conns,
        }
    }
}

/// One entry of a presence list: a member, and in the per-user view (SPEC.md 4.12) the count
/// of its user's connections.
pub(super) type Listed = (Arc<str>, Present, Option<u32>);

impl Present {
    /// This member as one entry of a list.
    pub(super) fn listed(&self, conn: &Arc<str>, conns: Option<u32>) -> Listed {
        (conn.clone(), self.clone(), conns)
    }
}

/// A room's state and presence as of one seq, handed out a frame at a time.
pub(super) struct Snapshot {
    id: u32,
    room: Arc<str>,
    /// `None`: not asked for.
    state: Option<std::vec::IntoIter<SharedKey>>,
    presence: Option<std::vec::IntoIter<Listed>>,
    /// Item bytes one frame may carry.
    budget: usize,
}

/// One frame's part of a snapshot, and whether more follows.
pub(super) struct Part {
    pub state: Option<Vec<StateItem>>,
    pub presence: Option<Vec<Member>>,
    pub more: bool,
}

impl Snapshot {
    pub(super) fn new(
        id: u32,
        room: Arc<str>,
        frame_bytes: usize,
        state: Option<Vec<SharedKey>>,
        presence: Option<Vec<Listed>>,
    ) -> Snapshot {
        Snapshot {
            id,
            budget: frame_bytes.saturating_sub(FRAME_OVERHEAD + room.len()),
            room,
            state: state.map(Vec::into_iter),
            presence: presence.map(Vec::into_iter),
        }
    }

    /// The next frame's items: state first, then presence, as many as fit (at least one).
    /// A part of an asked-for list is `Some`, possibly empty, so the first frame says what
    /// was asked for.
    pub(super) fn next_part(&mut self) -> Part {
        let mut left = self.budget;
        let mut full = false;
        let state = self.state.as_mut().map(|items| {
            let mut out = Vec::new();
            while let Some((key, _, exp, value)) = items.as_slice().first() {
                let cost = key.len() + value.len() + ITEM_OVERHEAD + exp.map_or(0, |_| EXP_BYTES);
                if cost > left && !(out.is_empty() && left == self.budget) {
                    full = true;
                    break;
                }
                left = left.saturating_sub(cost);
                if let Some((key, ver, exp, value)) = items.next() {
                    out.push(StateItem {
                        key,
                        value: decode(&value),
                        ver,
                        exp,
                    });
                }
            }
            out
        });
        let presence = self.presence.as_mut().map(|members| {
            let mut out = Vec::new();
            while !full {
                let Some((conn, p, conns)) = members.as_slice().first() else {
                    break;
                };
                let cost = p.cost(conn);
                if cost > left && !(out.is_empty() && left == self.budget) {
                    full = true;
                    break;
                }
                left = left.saturating_sub(cost);
                out.push(p.member(conn, *conns));
                members.next();
            }
            out
        });
        let more = self.state.as_ref().is_some_and(|s| s.len() > 0)
            || self.presence.as_ref().is_some_and(|p| p.len() > 0);
        Part {
            state,
            presence,
            more,
        }
    }

    /// Queues the rest as `snap` frames, each once the outbox has room for it; then, for a
    /// subscriber, tells the room. Ends early if the connection closes or `cancel` fires (the
    /// subscription ended).
    pub(super) async fn send(
        mut self,
        outbox: Outbox,
        cancel: CancellationToken,
        done: Option<(InboxSender, Arc<str>, u64)>,
    ) {
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let part = self.next_part();
            let frame = wire::encode(&ServerFrame::Snap {
                id: self.id,
                room: String::from(&*self.room),
                state: part.state.filter(|s| !s.is_empty()),
                presence: part.presence.filter(|p| !p.is_empty()),
                more: part.more,
            });
            let queued = tokio::select! {
                queued = outbox.push_paced(&frame) => queued,
                () = cancel.cancelled() => false,
            };
            if !queued {
                return;
            }
            if !part.more {
                break;
            }
        }
        if let Some((room_tx, conn, token)) = done {
            let _ = room_tx
                .send(Box::new(Command::SnapshotSent { conn, token }))
                .await;
        }
    }
}

/// Stored values and infos were checked when they came in; an unreadable one is sent as nil.
fn decode(bytes: &[u8]) -> Value {
    rmpv::decode::read_value(&mut &bytes[..]).unwrap_or(Value::Nil)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &Value) -> Bytes {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        Bytes::from(out)
    }

    fn state(n: u32, len: usize) -> Vec<SharedKey> {
        (0..n)
            .map(|i| {
                let v = Value::Binary(vec![u8::try_from(i).unwrap(); len]);
                // Every other key expires: its item carries `exp`.
                let exp = (i % 2 == 0).then_some(u64::MAX);
                (format!("k{i:03}"), u64::from(i) + 1, exp, encoded(&v))
            })
            .collect()
    }

    /// Every part's frame fits the bound, nothing is lost or reordered, and `more` is false
    /// exactly on the last part.
    #[test]
    fn parts_fit_the_frame_and_cover_everything_in_order() {
        let frame = 16 * 1024;
        let members: Vec<Listed> = (0..30)
            .map(|i| {
                let p = Present {
                    user: Some(Arc::from(format!("u{i}"))),
                    info: encoded(&Value::from("x".repeat(900))),
                };
                (Arc::from(format!("conn{i:02}")), p, None)
            })
            .collect();
        let mut s = Snapshot::new(
            7,
            Arc::from("room"),
            frame,
            Some(state(50, 3000)),
            Some(members),
        );
        let (mut keys, mut conns, mut parts) = (Vec::new(), Vec::new(), 0);
        loop {
            let part = s.next_part();
            parts += 1;
            let f = wire::encode(&ServerFrame::Snap {
                id: 7,
                room: "room".into(),
                state: part.state.clone(),
                presence: part.presence.clone(),
                more: part.more,
            });
            assert!(
                wire::payload(&f).len() <= frame,
                "part {parts}: {}",
                f.len()
            );
            keys.extend(part.state.unwrap().into_iter().map(|i| i.key));
            conns.extend(part.presence.unwrap().into_iter().map(|m| m.conn));
            if !part.more {
                break;
            }
        }
        assert!(parts > 10, "{parts}");
        let want: Vec<String> = (0..50).map(|i| format!("k{i:03}")).collect();
        assert_eq!(keys, want);
        assert_eq!(conns.len(), 30);
    }

    /// An item larger than a frame's budget still goes out, alone.
    #[test]
    fn an_item_over_the_budget_goes_alone() {
        let mut s = Snapshot::new(1, Arc::from("r"), 1024, Some(state(3, 2000)), None);
        for left in [true, true, false] {
            let part = s.next_part();
            assert_eq!(part.state.unwrap().len(), 1);
            assert_eq!(part.more, left);
        }
    }

    /// Nothing asked for, or nothing there: one part, lists present only when asked for.
    #[test]
    fn an_empty_snapshot_is_one_part() {
        let part = Snapshot::new(1, Arc::from("r"), 1024, Some(Vec::new()), None).next_part();
        assert_eq!(
            (part.state, part.presence.is_none(), part.more),
            (Some(Vec::new()), true, false)
        );
    }
}
