//! The room task: the single owner of a room's order, state, subscribers and presence.
//!
//! This file is the task's life (load, run loop, idle unload, stop) and the dispatch of its
//! commands. What a command does lives by concern: forming writes in [`super::batch`], their
//! commits in [`super::commit`], subscribers and presence in [`super::subscribers`], the `mid`
//! window in [`super::dedup`].
//!
//! Writes are pipelined through the store writer with at most one batch in flight per room:
//! requests that arrive while a batch is being committed wait in `pending` and go out together
//! as the next batch. Nothing is delivered or acknowledged before its batch is durable.
//! Subscribers are fed with `try`-pushes into their outboxes; a full outbox closes that
//! connection, never this task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use roomd_protocol::{ErrorCode, ServerFrame};
use tokio::sync::oneshot;

use super::commit::{recv_commit, Flushed};
use super::deadlines::{Deadlines, Due};
use super::dedup::Dedup;
use super::model::{Linked, Pending, Room};
use super::owners::Owners;
use super::state::RoomState;
use super::{ChangeRequest, Command, Inbox, InboxSender, RoomEnv, RoomInfo};
use crate::peer::{Peer, ReplyError};
use crate::store::reader::RoomSnapshot;
use crate::store::{CommitResult, StoreError};

/// Most commands taken from the inbox at once before a batch is formed.
const DRAIN_MAX: usize = 1024;

/// What a room task needs from whoever loaded it (the registry): its environment, its own
/// handle, and the moments of its life the loader must hear of. A trait, so that the room does
/// not import the registry that spawns it.
pub(crate) trait RoomHost: Send + Sync + 'static {
    fn env(&self) -> &Arc<RoomEnv>;
    /// The room's handle, while the host still lists it.
    fn sender(&self, name: &str) -> Option<InboxSender>;
    /// Unlists an idle room, unless something waits in its inbox.
    fn remove_if_idle(&self, name: &str, rx: &Inbox) -> bool;
    /// Sends a command that reached the room as it unloaded on to its next incarnation.
    fn forward(self: Arc<Self>, name: Arc<str>, cmd: Box<Command>);
    /// The room task's last act.
    fn stopped(&self, name: &str, rx_closed: bool);
}

/// The room task: loads the room, runs it, and tells the registry when it stops.
pub(crate) async fn run<H: RoomHost>(name: Arc<str>, mut rx: Inbox, registry: Arc<H>) {
    let env = registry.env().clone();
    let cluster = env.engine.cluster().cloned();
    if let (Some(c), Some(tx)) = (&cluster, registry.sender(&name)) {
        // Before the load: nothing stored after it can pass unseen.
        super::cluster::watch(c, &name, tx).await;
    }
    // The handle was inserted before this task was spawned; a clone lets replay tasks reach us.
    let loaded = Box::pin(load(&env, &name)).await;
    let unloaded = match (registry.sender(&name), loaded) {
        (Some(tx), Ok(snap)) => {
            let mut room = Room::new(name.clone(), env, tx, snap);
            room.load_remote().await;
            room.run(&mut rx, &registry).await
        }
        (_, Err(e)) => {
            tracing::error!(room = %name, error = %e, "room load failed");
            let err = match e {
                // Redis did not answer: a retry may succeed.
                StoreError::Engine(_) => ReplyError::from(&e),
                _ => ReplyError::storage_logged(),
            };
            fail_all(&mut rx, &err);
            false
        }
        (None, _) => false,
    };
    if let Some(c) = &cluster {
        super::cluster::unwatch(c, &name);
    }
    if unloaded {
        super::hooks::unloaded(&registry.env().webhooks, &name);
    }
    // Closing first lets the registry see this inbox is dead and drop its entry, so the next
    // command for the room starts a fresh task instead of hitting a closed channel forever.
    rx.close();
    if !unloaded {
        fail_all(
            &mut rx,
            &ReplyError::new(
                ErrorCode::Unavailable,
                "room stopped; the server is shutting down",
            ),
        );
    }
    registry.stopped(&name, unloaded);
}

/// Reads the room from disk, with as much of its recent log as the cache and the `mid` window
/// want.
pub(super) async fn load(env: &RoomEnv, name: &Arc<str>) -> Result<RoomSnapshot, StoreError> {
    let lim = env.load_limits(super::model::now_ms());
    // Below 2^53 so JavaScript numbers hold it exactly; taken only by a room new to the engine.
    let epoch = rand::random::<u64>() >> 11;
    let snap = env.engine.load_room(name, epoch, lim).await?;
    tracing::debug!(room = %name, head = snap.head, entries_read = snap.walked, mids = snap.dedup.len(), "room loaded");
    Ok(snap)
}

/// Answers every command still queued for a room that stops without running them.
fn fail_all(rx: &mut Inbox, err: &ReplyError) {
    while let Ok(cmd) = rx.try_recv() {
        if let Some((peer, id)) = requester(&cmd) {
            peer.send_err(Some(id), err.clone());
        }
    }
}

fn requester(cmd: &Command) -> Option<(&Arc<Peer>, u32)> {
    match cmd {
        Command::Subscribe { peer, id, .. }
        | Command::Unsubscribe { peer, id }
        | Command::Publish { peer, id, .. }
        | Command::Mutate { peer, id, .. }
        | Command::Change { peer, id, .. }
        | Command::Signal { peer, id, .. }
        | Command::Get { peer, id, .. }
        | Command::List { peer, id, .. }
        | Command::Who { peer, id } => Some((peer, *id)),
        Command::ChangeRead { req, .. } => Some((&req.peer, req.id)),
        _ => None,
    }
}

impl Room {
    pub(super) fn new(
        name: Arc<str>,
        env: Arc<RoomEnv>,
        tx: InboxSender,
        snap: RoomSnapshot,
    ) -> Room {
        let epoch = match snap.id {
            Some(_) => snap.epoch,
            // Below 2^53 so JavaScript numbers hold it exactly.
            None => rand::random::<u64>() >> 11,
        };
        Room {
            rules: env.limits.rules(&name),
            name,
            tx,
            id: snap.id,
            epoch,
            head: snap.head,
            earliest: snap.earliest,
            deadlines: Deadlines::default(),
            owners: Owners::default(),
            state: RoomState::load(snap.state),
            cache: snap.recent.into(),
            dedup: Dedup::load(snap.dedup),
            subs: HashMap::new(),
            members: HashMap::new(),
            presence_bytes: 0,
            pending: Vec::new(),
            redacting: HashMap::new(),
            in_flight: Vec::new(),
            trim_wanted: false,
            replays: 0,
            next_token: 0,
            shutting_down: false,
            linked: env.engine.cluster().map(|c| Linked::new(c.clone())),
            held: VecDeque::new(),
            user_conns: HashMap::new(),
            count_due: None,
            count_sent: None,
            env,
        }
    }

    /// The room's main loop; returns whether the inbox was closed by an idle unload.
    async fn run<H: RoomHost>(&mut self, rx: &mut Inbox, registry: &Arc<H>) -> bool {
        let idle_after = self.env.limits.idle_unload;
        let mut commit: Option<oneshot::Receiver<CommitResult>> = None;
        let mut idle_since = Instant::now();
        // One timer for the room's life, re-armed only when it fires: arming a fresh one each
        // time the room goes quiet (after every commit of a room nobody subscribes to) would
        // cost a timer-wheel insert and removal per batch.
        let idle_timer = tokio::time::sleep(idle_after);
        tokio::pin!(idle_timer);
        // The reconnect grace's and the coalesced `count`'s timer (super::presence), re-armed
        // only when its deadline changes.
        let presence_timer = tokio::time::sleep(idle_after);
        tokio::pin!(presence_timer);
        let mut presence_armed: Option<Instant> = None;
        // The room's one timer for its deadlines (SPEC.md 4.13), re-armed when the next one
        // moves. Overdue ones (a restart passed them) fire at once.
        self.deadlines = Deadlines::of(&self.state);
        self.orphans_loaded();
        let deadline_timer = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(deadline_timer);
        let mut armed: Option<u64> = None;
        loop {
            let wake = self.presence_wake();
            if let Some(at) = wake.filter(|at| presence_armed != Some(*at)) {
                presence_timer.as_mut().reset(at.into());
            }
            presence_armed = wake;
            if self.deadlines.next() != armed {
                armed = self.deadlines.next();
                if let Some(at) = armed {
                    let wait = at.saturating_sub(super::model::now_ms());
                    deadline_timer.as_mut().reset(
                        tokio::time::Instant::now() + std::time::Duration::from_millis(wait),
                    );
                }
            }
            // A deletion reading its target from disk is answered through the inbox: wait
            // for it before going idle or stopping.
            let quiet = commit.is_none() && self.pending.is_empty() && self.redacting.is_empty();
            if quiet && self.shutting_down {
                // Nobody can resume here any more: held departures are final now, so their
                // webhooks are written with the rest of the shutdown's.
                self.presence_tick(Instant::now() + self.env.limits.presence_grace);
                return false;
            }
            // A room with a pending deadline stays loaded to meet it.
            let idle = quiet
                && self.subs.is_empty()
                && self.replays == 0
                && wake.is_none()
                && self.deadlines.is_empty()
                && self.owners.is_empty();
            tokio::select! {
                biased;
                res = recv_commit(&mut commit) => {
                    commit = None;
                    self.on_commit(res);
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(*cmd),
                    None => return false,
                },
                () = &mut presence_timer, if wake.is_some() => {
                    self.presence_tick(Instant::now());
                }
                () = &mut deadline_timer, if armed.is_some() && !self.shutting_down => {
                    self.fire_deadlines();
                    // Re-armed below, also when nothing was due yet (the system clock lagged
                    // the timer's): a fired timer left as it is would fire again at once.
                    armed = None;
                }
                () = &mut idle_timer, if idle => {
                    let due = idle_since + idle_after;
                    if Instant::now() >= due && self.unload(rx, registry) {
                        return true;
                    }
                    // Busy since the timer was armed, or a command just came in.
                    idle_timer.as_mut().reset(due.into());
                }
            }
            if commit.is_none()
                && self.may_write()
                && (!self.pending.is_empty() || self.trim_wanted)
            {
                self.drain_inbox(rx);
                commit = match self.flush() {
                    Flushed::Settled => None,
                    Flushed::Queued(wait) => Some(wait),
                    // Boxed: the state of a wait for the writer's queue is on the heap only
                    // while the queue is full.
                    Flushed::QueueFull(batch, wait) => Box::pin(self.submit(batch, wait)).await,
                };
            }
            if !idle {
                idle_since = Instant::now();
            }
        }
    }

    /// Whatever else is already waiting joins the batch about to be formed: one commit and one
    /// broadcast for all of it.
    pub(super) fn drain_inbox(&mut self, rx: &mut Inbox) {
        for _ in 0..DRAIN_MAX {
            match rx.try_recv() {
                Ok(cmd) => self.handle(*cmd),
                Err(_) => break,
            }
        }
    }

    /// Leaves the registry if nothing is waiting in the inbox; the inbox is closed and anything
    /// that slipped in goes to the room's successor.
    fn unload<H: RoomHost>(&mut self, rx: &mut Inbox, registry: &Arc<H>) -> bool {
        if !registry.remove_if_idle(&self.name, rx) {
            return false;
        }
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            // What the cluster feed brought concerns this incarnation only.
            if !matches!(
                *cmd,
                Command::Feed(_) | Command::Filled(_) | Command::Reloaded(_)
            ) {
                registry.clone().forward(self.name.clone(), cmd);
            }
        }
        true
    }

    pub(super) fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe {
                peer,
                id,
                since,
                state,
                presence,
                info,
                allow,
            } => self.subscribe(peer, id, since, (state, presence), info, allow),
            Command::Unsubscribe { peer, id } => self.unsubscribe(&peer, id),
            Command::Leave { conn } => self.left(&conn),
            Command::Publish {
                peer,
                id,
                data,
                mid,
                received,
            } => self.publish(peer, id, data, mid, received),
            Command::Mutate { peer, id, op } => self.pending.push(Pending::Mutate { peer, id, op }),
            Command::Change {
                peer,
                id,
                target,
                change,
                author_only,
            } => {
                let req = ChangeRequest {
                    peer,
                    id,
                    change,
                    author_only,
                };
                self.change(req, target);
            }
            Command::ChangeRead { req, target, read } => self.change_read(req, target, read),
            Command::Signal { peer, id, data } => self.signal(&peer, id, data),
            Command::RemoveUser { user, reply } => {
                let _ = reply.send(self.remove_user(&user));
            }
            // On Redis, from Redis: a write acknowledged by another node may not have reached
            // this one's copy yet.
            Command::Get { peer, id, key } if self.linked.is_some() => {
                self.get_from_redis(peer, id, key);
            }
            Command::Get { peer, id, key } => self.get(&peer, id, key),
            Command::List {
                peer,
                id,
                prefix,
                after,
                limit,
                large,
            } => {
                // The reply fits in `limits.frame` (SPEC.md 4.5): the frame without items, plus
                // the item count's header growing to at most 5 bytes, leaves the rest for items.
                let empty = ServerFrame::Vals {
                    id,
                    items: Vec::new(),
                    more: true,
                };
                let overhead = roomd_protocol::codec::encode(&empty).len() + 4;
                let budget = self.env.limits.frame_bytes.saturating_sub(overhead);
                let (items, more) = self.state.list(&prefix, after.as_deref(), limit, budget);
                peer.send(&ServerFrame::Vals { id, items, more });
                drop(large);
            }
            Command::Who { peer, id } => self.who(&peer, id),
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::SnapshotSent { conn, token } => self.snapshot_sent(&conn, token),
            Command::ReplayPage {
                conn,
                token,
                frames,
                next,
            } => {
                let _ = next.send(self.replay_page(&conn, token, frames));
            }
            Command::Feed(ev) => self.on_feed(ev),
            Command::Filled(read) => self.filled(read),
            Command::Reloaded(snap) => self.reloaded(snap),
            Command::Trim => self.trim_wanted = self.id.is_some() && self.replays == 0,
            Command::Shutdown => self.shutting_down = true,
        }
    }

    /// Everything due now goes into the next batch as the room's own conditional operation.
    fn fire_deadlines(&mut self) {
        for due in self.deadlines.take_due(super::model::now_ms()) {
            match due {
                Due::Key(key) => self.pending.push(Pending::Expire { key }),
                Due::Release(key, owner) => self.pending.push(Pending::Release { key, owner }),
            }
        }
    }

    fn info(&self) -> RoomInfo {
        RoomInfo {
            epoch: self.epoch,
            first: self.earliest.min(self.head + 1),
            last: self.head,
            subscribers: self.subs.len(),
            members: self.members.len(),
            keys: self.state.len(),
        }
    }

    /// Answers from the committed state: never a value a crash could take back.
    fn get(&self, peer: &Peer, id: u32, key: String) {
        let entry = self.state.get(&key);
        peer.send(&ServerFrame::Val {
            id,
            ver: entry.map_or(0, |e| e.ver),
            value: entry.map(|e| e.value.clone()),
            exp: entry.and_then(|e| e.exp),
            key,
        });
    }
}
