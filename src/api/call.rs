//! One API request's way into a room: the same [`Requests`] checks and the same room commands
//! as a WebSocket request, answered into a peer of its own whose outbox the request reads.
//!
//! So an API publish is ordered, de-duplicated, made durable and acknowledged exactly like a
//! WebSocket one (there is no second code path to drift), and its answer is the protocol's own
//! reply frame, decoded here.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use roomd_protocol::{decode_server, ErrorCode, ServerFrame};

use super::error::ApiError;
use super::Ctx;
use crate::error::ReplyError;
use crate::outbox::Outbox;
use crate::peer::{InFlight, Peer};
use crate::request::Requests;
use crate::room::Command;

/// Every API request has this id in its reply frames: one request per peer.
pub(crate) const ID: u32 = 1;

pub(crate) struct Call {
    pub peer: Arc<Peer>,
    ctx: Arc<Ctx>,
    /// Frames drained from the outbox and not yet read (a `who` and its `snap` frames).
    pending: VecDeque<Bytes>,
}

impl Call {
    /// A peer for one request by API key `key`: its id (the `from` of what it writes) and its
    /// de-duplication client are `api:KEY`, so a retried publish with the same `mid` through
    /// the same key is recognised (SPEC.md 5.3).
    pub(crate) fn new(ctx: &Arc<Ctx>, key: &str) -> Call {
        let id: Arc<str> = Arc::from(format!("api:{key}"));
        let config = &ctx.config;
        let peer = Arc::new(Peer {
            client: id.clone(),
            id,
            user: None,
            // A reply is at most one frame; a presence list may come in several, drained as
            // they come: the connection's bound is more than enough.
            outbox: Outbox::new(config.outbox.max_frames, config.outbox.max_bytes),
            refused: Default::default(),
            in_flight: InFlight::default(),
        });
        Call {
            peer,
            ctx: ctx.clone(),
            pending: VecDeque::new(),
        }
    }

    pub(crate) fn requests(&self) -> Requests<'_> {
        Requests {
            limits: &self.ctx.config.limits,
            frame: self.ctx.config.websocket.max_frame_bytes,
            peer: &self.peer,
        }
    }

    /// Checks `room`'s name, sends it `cmd` and returns its reply frame.
    pub(crate) async fn run(&mut self, room: &str, cmd: Command) -> Result<ServerFrame, ApiError> {
        self.send(room, cmd).await?;
        self.reply().await
    }

    pub(crate) async fn send(&self, room: &str, cmd: Command) -> Result<(), ApiError> {
        self.requests().check_room(room)?;
        self.ctx
            .registry
            .send(room, cmd)
            .await
            .map_err(|e| ApiError::from(ReplyError::new(ErrorCode::Unavailable, e.to_string())))
    }

    /// The next frame for this request; an `err` frame becomes the error it carries.
    pub(crate) async fn reply(&mut self) -> Result<ServerFrame, ApiError> {
        match self.next().await? {
            ServerFrame::Err {
                code,
                msg,
                ver,
                max,
                retry_after_ms,
                ..
            } => {
                let code = ErrorCode::from_u16(code).unwrap_or(ErrorCode::Storage);
                Err(ApiError::from(ReplyError {
                    ver,
                    max,
                    retry_after_ms,
                    ..ReplyError::new(code, msg)
                }))
            }
            frame => Ok(frame),
        }
    }

    async fn next(&mut self) -> Result<ServerFrame, ApiError> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return decode_server(crate::wire::payload(&frame))
                    .map_err(|e| ApiError::from(ReplyError::internal("decoding a reply", &e)));
            }
            let ready = self.peer.outbox.ready();
            let mut frames = Vec::new();
            let closed = self.peer.outbox.drain(&mut frames);
            self.pending.extend(frames);
            if !self.pending.is_empty() {
                continue;
            }
            if closed.is_some() {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the request was dropped; retry",
                ));
            }
            ready.await;
        }
    }
}
