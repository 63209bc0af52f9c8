//! Moderation: acting on other clients. Disconnect a user, remove a user from a room, delete a
//! message. All need the `admin` scope.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use roomd_protocol::{ErrorCode, ServerFrame};

use super::body::{Body, Segments};
use super::call::{Call, ID};
use super::error::ApiError;
use super::keys::Caller;
use super::model::{Deleted, Disconnect, Disconnected, Edit, Edited, Unsubscribed};
use super::{unexpected, Ctx};
use crate::config::Scope;
use crate::outbox::CloseReason;
use crate::room::{Change, Command};

/// Close every connection of a user: with 4403 (the SDK does not reconnect) or, with
/// `reconnect: true`, 4004 (it does). Frames already queued for them are sent first.
#[utoipa::path(post, path = "/api/v1/users/{user}/disconnect", operation_id = "disconnect_user",
    tag = "users", params(("user" = String, Path, description = "User id (a token's `sub`)")),
    request_body(content = Option<Disconnect>), responses((status = 200, body = Disconnected)))]
pub(crate) async fn disconnect(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(user): Segments<String>,
    Body(body): Body<Disconnect>,
) -> Result<Json<Disconnected>, ApiError> {
    caller.require(Scope::Admin)?;
    let reason = if body.reconnect.unwrap_or(false) {
        CloseReason::Disconnected
    } else {
        CloseReason::Removed
    };
    let n = ctx.conns.close_user(&user, reason);
    tracing::info!(key = %caller.name, %user, connections = n, ?reason, "user disconnected through the API");
    Ok(Json(Disconnected {
        connections: n as u64,
    }))
}

/// End a user's subscriptions to a room (every connection of theirs): each gets `unsubbed`
/// and the SDK does not subscribe again by itself.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/users/{user}/unsubscribe",
    operation_id = "unsubscribe_user", tag = "users",
    params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("user" = String, Path, description = "User id")),
    responses((status = 200, body = Unsubscribed)))]
pub(crate) async fn unsubscribe(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, user)): Segments<(String, String)>,
) -> Result<Json<Unsubscribed>, ApiError> {
    caller.require(Scope::Admin)?;
    let call = Call::new(&ctx, &caller.name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cmd = Command::RemoveUser {
        user: Arc::from(user.as_str()),
        reply: tx,
    };
    call.send(&room, cmd).await?;
    let n = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the room stopped; retry"))?;
    Ok(Json(Unsubscribed {
        subscriptions: n as u64,
    }))
}

/// Delete a message: its payload is removed from the log and a `del` entry (with its own seq)
/// tells subscribers, history and resuming clients (SPEC.md 5).
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/messages/{seq}", operation_id = "delete_message",
    tag = "messages", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("seq" = u64, Path, description = "The message's seq", maximum = 9007199254740991_u64)),
    responses((status = 200, body = Deleted)))]
pub(crate) async fn delete_message(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, seq)): Segments<(String, u64)>,
) -> Result<Json<Deleted>, ApiError> {
    caller.require(Scope::Admin)?;
    super::model::safe("seq", Some(seq))?;
    let mut call = Call::new(&ctx, &caller.name);
    let cmd = Command::Change {
        peer: call.peer.clone(),
        id: ID,
        target: seq,
        change: Change::Delete,
        author_only: false,
    };
    match call.run(&room, cmd).await? {
        ServerFrame::Ack { seq, dup, .. } => Ok(Json(Deleted {
            seq,
            dup: dup.unwrap_or(false),
        })),
        other => Err(unexpected(&other)),
    }
}

/// Edit a message: an edit entry (a `msg` with `edits`, its own seq) carries the new content to
/// subscribers, history and resuming clients, and the message is rewritten with it and marked
/// `edited` (SPEC.md 5.8). Any message of the room, whoever wrote it.
#[utoipa::path(patch, path = "/api/v1/rooms/{room}/messages/{seq}", operation_id = "edit_message",
    tag = "messages", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("seq" = u64, Path, description = "The message's seq", maximum = 9007199254740991_u64)),
    request_body = Edit, responses((status = 200, body = Edited)))]
pub(crate) async fn edit_message(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, seq)): Segments<(String, u64)>,
    Body(body): Body<Edit>,
) -> Result<Json<Edited>, ApiError> {
    caller.require(Scope::Admin)?;
    super::model::safe("seq", Some(seq))?;
    let data = body.payload()?;
    let mut call = Call::new(&ctx, &caller.name);
    let cmd = call.requests().change(ID, seq, Change::Edit(data), false)?;
    match call.run(&room, cmd).await? {
        ServerFrame::Ack { seq, .. } => Ok(Json(Edited { seq })),
        other => Err(unexpected(&other)),
    }
}
