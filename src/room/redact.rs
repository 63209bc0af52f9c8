//! Deleting (SPEC.md 5.6) and editing (5.8) a message: one mechanism. Each is a log entry of
//! its own (a `del`, or a `msg` with `edits`), and the target rewritten to point at it.
//!
//! A change is a log entry like a publish: it gets the next seq (so seqs stay dense and every
//! subscriber learns of it in order), goes out in the room's next batch and is acknowledged
//! once durable. The same write carries *rewrites*: the target's stored frame replaced by a
//! stub without its payload (deletion) or by the message with its new content and `edited`
//! (edit), and the target's previous edit entry, if any, by a stub without payload (so no
//! superseded or deleted content stays in the log). They are applied to redb in log order with
//! the entry (and again, harmlessly, by recovery). The room's cache gets them when the batch is
//! durable.
//!
//! Checking the target needs its frame (and its latest edit's): from the cache when it is
//! there, else read on the blocking pool, the answer coming back through the room's inbox
//! ([`Command::ChangeRead`]). While a change is under way (read, pending or in flight) its
//! target is in `Room::redacting`, and later requests to change the same message wait there;
//! once it is done they are decided in order against the frames it wrote, never against a
//! stale read: two deletions racing yield one `del` and one duplicate, two edits two entries.

use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::{codec, ErrorCode, ServerFrame};

use super::model::{EditStub, Pending, Room, Stub};
use super::{Change, ChangeRequest, Command, Targeted};
use crate::engine::Engine;
use crate::peer::ReplyError;
use crate::store::StoreError;
use crate::wire;

/// What a target's stored frames say about a change request.
enum Verdict {
    /// Write it.
    Write(Stub),
    /// A deletion of a message already deleted by the entry with this seq.
    Deleted(u64),
    /// Refused.
    Refused(ReplyError),
}

impl Room {
    /// Deletes or edits message `target` for `req`.
    pub(super) fn change(&mut self, req: ChangeRequest, target: u64) {
        if let Some(waiters) = self.redacting.get_mut(&target) {
            waiters.push(req);
            return;
        }
        if target == 0 || target > self.head || target < self.earliest {
            return req.peer.send_err(Some(req.id), not_stored(target));
        }
        if let Some(frames) = self.cached_target(target) {
            return self.decide(target, &frames, vec![req]);
        }
        let Some(room_id) = self.id else {
            // A room with a head has an id; without one there is nothing to change.
            return req.peer.send_err(Some(req.id), not_stored(target));
        };
        self.redacting.insert(target, Vec::new());
        let (engine, tx, name) = (self.env.engine.clone(), self.tx.clone(), self.name.clone());
        self.env.background.spawn(async move {
            let read = read_target(&engine, (room_id, &name), target)
                .await
                .map_err(Arc::new);
            let back = Command::ChangeRead { req, target, read };
            // The room waits for this answer before it goes idle or stops (`redacting` is not
            // empty), so its inbox is open; were it not, the requester still gets an answer.
            if let Err(e) = tx.send(Box::new(back)).await {
                if let Command::ChangeRead { req, .. } = *e.0 {
                    req.peer.send_err(
                        Some(req.id),
                        ReplyError::new(ErrorCode::Unavailable, "room stopped"),
                    );
                }
            }
        });
    }

    /// The target's frames, read from disk for a change, are back.
    pub(super) fn change_read(
        &mut self,
        req: ChangeRequest,
        target: u64,
        read: Result<Option<Targeted>, Arc<StoreError>>,
    ) {
        let waiters = self.redacting.remove(&target).unwrap_or_default();
        let all = std::iter::once(req).chain(waiters);
        match read {
            Ok(Some(frames)) => self.decide(target, &frames, all.collect()),
            Ok(None) => {
                for r in all {
                    r.peer.send_err(Some(r.id), not_stored(target));
                }
            }
            Err(e) => {
                let err = ReplyError::from(&*e);
                for r in all {
                    r.peer.send_err(Some(r.id), err.clone());
                }
            }
        }
    }

    /// Decides the requests for `target`, in order, against its current frames: the first one
    /// that writes goes pending and the rest wait for it.
    fn decide(&mut self, target: u64, frames: &Targeted, requests: Vec<ChangeRequest>) {
        let mut queue = requests.into_iter();
        while let Some(req) = queue.next() {
            match verdict(target, frames, &req) {
                Verdict::Write(stub) => {
                    self.redacting.insert(target, queue.collect());
                    self.pending.push(Pending::Change { req, stub });
                    return;
                }
                Verdict::Deleted(seq) => req.peer.send(&ServerFrame::Ack {
                    id: req.id,
                    seq,
                    dup: Some(true),
                }),
                Verdict::Refused(e) => req.peer.send_err(Some(req.id), e),
            }
        }
    }

    /// The change of `target` was not written (trimmed meanwhile, or the commit failed):
    /// those waiting on it get `err`.
    pub(super) fn redaction_failed(&mut self, target: u64, err: &ReplyError) {
        if let Some(linked) = &mut self.linked {
            linked.stale_changes.remove(&target);
        }
        for r in self.redacting.remove(&target).unwrap_or_default() {
            r.peer.send_err(Some(r.id), err.clone());
        }
    }

    /// The change of `target` by entry `seq` is durable: the cache holds the rewritten frames
    /// from now on, and those waiting on the same target are decided against them.
    pub(super) fn changed(&mut self, target: u64, seq: u64, rewrites: Vec<(u64, Bytes)>) {
        let mut written = None;
        for (at, frame) in rewrites {
            if let Ok(i) = self.cache.binary_search_by_key(&at, |(s, _)| *s) {
                self.cache[i].1 = frame.clone();
            }
            if at == target {
                written = Some(frame);
            }
        }
        let waiters = self.redacting.remove(&target).unwrap_or_default();
        if waiters.is_empty() {
            return;
        }
        let Some(target_frame) = written else {
            return;
        };
        // An edit's own entry is the target's latest edit now (a `del` is not an edit).
        let latest_edit = self.cached(seq).filter(|f| {
            matches!(
                codec::decode_server(wire::payload(f)),
                Ok(ServerFrame::Msg { edits: Some(_), .. })
            )
        });
        let frames = Targeted {
            target: target_frame,
            latest_edit,
        };
        self.decide(target, &frames, waiters);
    }

    /// The target's frames from the cache, when it holds them (the cache is the newest
    /// entries, so a cached message's later edit is cached too).
    fn cached_target(&self, target: u64) -> Option<Targeted> {
        let frame = self.cached(target)?;
        let latest_edit = match edited(&frame) {
            Some(e) => Some(self.cached(e)?),
            None => None,
        };
        Some(Targeted {
            target: frame,
            latest_edit,
        })
    }

    /// A change stored by another node (cluster), as [`ChangeEntry`] `entry` of `target`: the
    /// cached frames it rewrote are rewritten here the same way. A change of the same message
    /// under way here is decided again before it is written (`Linked::stale_changes`).
    pub(super) fn changed_elsewhere(&mut self, entry: ChangeEntry, change: Change, target: u64) {
        let seq = entry.seq;
        if self.redacting.contains_key(&target) {
            if let Some(linked) = &mut self.linked {
                linked.stale_changes.insert(target);
            }
        }
        let stub = self
            .cached_target(target)
            .and_then(|frames| stub_of(target, &frames));
        let rewritten = match stub {
            Some(stub) => rewrites(&self.name, entry, change, stub).1,
            // The target is older than the cache; its earlier edits may be cached all the same.
            None => self
                .cache
                .iter()
                .filter_map(|(at, f)| superseded(f, target, seq).map(|f| (*at, f)))
                .collect(),
        };
        for (at, frame) in rewritten {
            if let Ok(i) = self.cache.binary_search_by_key(&at, |(s, _)| *s) {
                self.cache[i].1 = frame;
            }
        }
    }

    /// A change whose target another node changed since it was decided: it and those waiting
    /// behind it are decided again, against the target as it is now.
    pub(super) fn change_again(&mut self, req: ChangeRequest, target: u64) {
        let waiters = self.redacting.remove(&target).unwrap_or_default();
        for r in std::iter::once(req).chain(waiters) {
            self.change(r, target);
        }
    }

    fn cached(&self, seq: u64) -> Option<Bytes> {
        let i = self.cache.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(self.cache[i].1.clone())
    }
}

/// Reads a change's target and its latest edit from the engine.
async fn read_target(
    engine: &Engine,
    room: (u64, &str),
    target: u64,
) -> Result<Option<Targeted>, StoreError> {
    let Some(frame) = engine.read_entry(room, target).await? else {
        return Ok(None);
    };
    let latest_edit = match edited(&frame) {
        Some(e) => engine.read_entry(room, e).await?,
        None => None,
    };
    Ok(Some(Targeted {
        target: frame,
        latest_edit,
    }))
}

/// A change entry's own header: its seq, time and who made it.
pub(super) struct ChangeEntry {
    pub(super) seq: u64,
    pub(super) ts: u64,
    pub(super) from: String,
    pub(super) uid: Option<String>,
}

/// A change's entry frame, and the rewrites it carries: the target as a stub without payload
/// (deletion) or with the new content and `edited` (edit), and the target's previous edit
/// entry, if any, superseded: without its payload, so a deleted or re-edited message's old
/// content is nowhere in the log.
pub(super) fn rewrites(
    room: &str,
    entry: ChangeEntry,
    change: Change,
    stub: Stub,
) -> (Bytes, Vec<(u64, Bytes)>) {
    let seq = entry.seq;
    let room = String::from(room);
    let target_as = |data, deleted, edited| ServerFrame::Msg {
        room: room.clone(),
        seq: stub.target,
        ts: stub.ts,
        from: stub.from.clone(),
        uid: stub.uid.clone(),
        data,
        deleted,
        edited,
        edits: None,
    };
    let (frame, rewritten) = match change {
        Change::Delete => (
            ServerFrame::Del {
                room: room.clone(),
                seq,
                ts: entry.ts,
                from: entry.from,
                uid: entry.uid,
                target: stub.target,
            },
            target_as(Vec::new(), Some(seq), None),
        ),
        Change::Edit(data) => (
            ServerFrame::Msg {
                room: room.clone(),
                seq,
                ts: entry.ts,
                from: entry.from,
                uid: entry.uid,
                data: data.clone(),
                deleted: None,
                edited: None,
                edits: Some(stub.target),
            },
            target_as(data, None, Some(seq)),
        ),
    };
    let mut rewrites = vec![(stub.target, wire::encode(&rewritten))];
    if let Some(edit) = stub.latest_edit {
        let superseded = ServerFrame::Msg {
            room,
            seq: edit.seq,
            ts: edit.ts,
            from: edit.from,
            uid: edit.uid,
            data: Vec::new(),
            deleted: Some(seq),
            edited: None,
            edits: Some(stub.target),
        };
        rewrites.push((edit.seq, wire::encode(&superseded)));
    }
    (wire::encode(&frame), rewrites)
}

/// The seq of a stored message's latest edit, if it was edited.
fn edited(frame: &[u8]) -> Option<u64> {
    match codec::decode_server(wire::payload(frame)) {
        Ok(ServerFrame::Msg { edited, .. }) => edited,
        _ => None,
    }
}

/// An edit entry of `target`, cached as `frame`, superseded by change entry `seq`: without
/// its payload (`None`: not an edit of `target`).
fn superseded(frame: &[u8], target: u64, seq: u64) -> Option<Bytes> {
    match codec::decode_server(wire::payload(frame)) {
        Ok(ServerFrame::Msg {
            room,
            seq: at,
            ts,
            from,
            uid,
            edits: Some(of),
            ..
        }) if of == target && at != seq => Some(wire::encode(&ServerFrame::Msg {
            room,
            seq: at,
            ts,
            from,
            uid,
            data: Vec::new(),
            deleted: Some(seq),
            edited: None,
            edits: Some(target),
        })),
        _ => None,
    }
}

/// What a change keeps of a target that is a live message (`None`: it is not one).
fn stub_of(target: u64, frames: &Targeted) -> Option<Stub> {
    let Ok(ServerFrame::Msg {
        ts,
        from,
        uid,
        deleted: None,
        edited,
        edits: None,
        ..
    }) = codec::decode_server(wire::payload(&frames.target))
    else {
        return None;
    };
    let latest_edit = edited.and_then(|seq| {
        let frame = frames.latest_edit.as_ref()?;
        match codec::decode_server(wire::payload(frame)) {
            Ok(ServerFrame::Msg { ts, from, uid, .. }) => Some(EditStub { seq, ts, from, uid }),
            _ => None,
        }
    });
    Some(Stub {
        target,
        ts,
        from,
        uid,
        latest_edit,
    })
}

/// Reads a target's stored frames against a request.
fn verdict(target: u64, frames: &Targeted, req: &ChangeRequest) -> Verdict {
    let Ok(ServerFrame::Msg {
        uid,
        deleted,
        edits,
        ..
    }) = codec::decode_server(wire::payload(&frames.target))
    else {
        return Verdict::Refused(not_a_message(target));
    };
    if let Some(of) = edits {
        return Verdict::Refused(an_edit(target, of));
    }
    // Before anything else is told about the message: a deleted one keeps its author too.
    if req.author_only && (uid.is_none() || uid.as_deref() != req.peer.user.as_deref()) {
        return Verdict::Refused(ReplyError::new(
            ErrorCode::NotAuthor,
            format!("message {target} is not yours: only its author may change it"),
        ));
    }
    if let Some(seq) = deleted {
        return match req.change {
            Change::Delete => Verdict::Deleted(seq),
            Change::Edit(_) => Verdict::Refused(ReplyError::new(
                ErrorCode::BadRequest,
                format!("message {target} was deleted (by entry {seq}): it cannot be edited"),
            )),
        };
    }
    match stub_of(target, frames) {
        Some(stub) => Verdict::Write(stub),
        None => Verdict::Refused(not_a_message(target)),
    }
}

pub(super) fn not_stored(target: u64) -> ReplyError {
    ReplyError::new(
        ErrorCode::BadRequest,
        format!("seq {target} is not a stored entry of this room"),
    )
}

fn not_a_message(target: u64) -> ReplyError {
    ReplyError::new(
        ErrorCode::BadRequest,
        format!("seq {target} is not a message: only messages can be deleted or edited"),
    )
}

fn an_edit(target: u64, of: u64) -> ReplyError {
    ReplyError::new(
        ErrorCode::BadRequest,
        format!("seq {target} is an edit of message {of}: change message {of} itself"),
    )
}
