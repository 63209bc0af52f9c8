//! Operations on a room's log and on rooms as a whole: publish, broadcast, history, info, the
//! list of loaded rooms, presence.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use roomd_protocol::{ErrorCode, ServerFrame};

use super::body::{Body, Params, Segments};
use super::call::{Call, ID};
use super::error::ApiError;
use super::keys::Caller;
use super::model::{
    json, safe, Broadcast, BroadcastResult, Entry, History, HistoryQuery, ListQuery, Member,
    Presence, Publish, Published, RoomInfo, RoomResult, Rooms,
};
use super::{unexpected, Ctx};
use crate::config::Scope;

/// Publish a message. Answered once the message is durable (fsynced, in the default durable
/// mode), with its seq; subscribers receive it in seq order with WebSocket publishes.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/messages", operation_id = "publish",
    tag = "messages", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$")),
    request_body = Publish, responses((status = 200, body = Published)))]
pub(crate) async fn publish(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(room): Segments<String>,
    Body(body): Body<Publish>,
) -> Result<Json<Published>, ApiError> {
    caller.require(Scope::Publish)?;
    let (data, mid) = body.payload()?;
    let mut call = Call::new(&ctx, &caller.name);
    publish_one(&mut call, &room, data, mid).await.map(Json)
}

async fn publish_one(
    call: &mut Call,
    room: &str,
    data: Vec<u8>,
    mid: Option<String>,
) -> Result<Published, ApiError> {
    let cmd = call.requests().publish(ID, data, mid)?;
    match call.run(room, cmd).await? {
        ServerFrame::Ack { seq, dup, .. } => Ok(Published {
            seq,
            dup: dup.unwrap_or(false),
        }),
        other => Err(unexpected(&other)),
    }
}

/// Publish one payload to many rooms, one after the other; each room's result is its own (a
/// room that refuses, over a rate limit or a full disk, does not stop the others). A bad room
/// name refuses the whole request before anything is published.
#[utoipa::path(post, path = "/api/v1/broadcast", operation_id = "broadcast", tag = "messages",
    request_body = Broadcast, responses((status = 200, body = BroadcastResult)))]
pub(crate) async fn broadcast(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Body(body): Body<Broadcast>,
) -> Result<Json<BroadcastResult>, ApiError> {
    caller.require(Scope::Publish)?;
    let max = ctx.config.api.broadcast_rooms;
    let super::model::Outgoing { rooms, data, mid } = body.parts()?;
    if rooms.len() > max {
        return Err(ApiError {
            max: Some(max as u64),
            ..ApiError::new(
                ErrorCode::TooLarge,
                format!("{} rooms, limit {max}", rooms.len()),
            )
        });
    }
    // Checked before anything is published: a bad name, payload or mid is the request's fault.
    let check = Call::new(&ctx, &caller.name);
    check.requests().check_publish(data.len(), mid.as_deref())?;
    for super::model::RoomName(room) in &rooms {
        check.requests().check_room(room)?;
    }
    let mut results = Vec::with_capacity(rooms.len());
    for super::model::RoomName(room) in rooms {
        let mut call = Call::new(&ctx, &caller.name);
        let result = publish_one(&mut call, &room, data.clone(), mid.clone()).await;
        results.push(match result {
            Ok(p) => RoomResult {
                room: super::model::RoomName(room),
                seq: Some(p.seq),
                dup: Some(p.dup),
                error: None,
            },
            Err(e) => RoomResult {
                room: super::model::RoomName(room),
                seq: None,
                dup: None,
                error: Some(e),
            },
        });
    }
    Ok(Json(BroadcastResult { results }))
}

/// Read a room's log a page at a time (SPEC.md 4.4): forward with `after`, backward with
/// `before`. Deleted messages come without their payload and with `deleted`.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/messages", operation_id = "history",
    tag = "messages", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), HistoryQuery),
    responses((status = 200, body = History)))]
pub(crate) async fn history(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(room): Segments<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    caller.require(Scope::Read)?;
    let mut call = Call::new(&ctx, &caller.name);
    call.requests().check_room(&room)?;
    let (after, before) = (safe("after", q.after)?, safe("before", q.before)?);
    let read = call
        .requests()
        .history(ctx.engine.clone(), ID, room, after, before, q.limit)?;
    read.await;
    match call.reply().await? {
        ServerFrame::Hist { items, more, .. } => Ok(Json(History {
            items: items.into_iter().filter_map(Entry::from_frame).collect(),
            more,
        })),
        other => Err(unexpected(&other)),
    }
}

/// A room's epoch, first and last seq, and how many subscribers, members and keys it has.
#[utoipa::path(get, path = "/api/v1/rooms/{room}", operation_id = "room_info", tag = "rooms",
    params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$")),
    responses((status = 200, body = RoomInfo)))]
pub(crate) async fn info(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(room): Segments<String>,
) -> Result<Json<RoomInfo>, ApiError> {
    caller.require(Scope::Read)?;
    let call = Call::new(&ctx, &caller.name);
    let (tx, rx) = tokio::sync::oneshot::channel();
    call.send(&room, crate::room::Command::Info { reply: tx })
        .await?;
    let info = rx
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the room stopped; retry"))?;
    Ok(Json(RoomInfo {
        room,
        epoch: info.epoch,
        first: info.first,
        last: info.last,
        subscribers: info.subscribers as u64,
        members: info.members as u64,
        keys: info.keys as u64,
    }))
}

/// The rooms loaded in memory now, by name: those in use and those used recently.
#[utoipa::path(get, path = "/api/v1/rooms", operation_id = "list_rooms", tag = "rooms",
    params(ListQuery), responses((status = 200, body = Rooms)))]
pub(crate) async fn list(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Rooms>, ApiError> {
    caller.require(Scope::Read)?;
    let limit = crate::request::page_limit(&ctx.config.limits, q.limit)?;
    let (rooms, more) =
        ctx.registry
            .loaded(q.prefix.as_deref().unwrap_or(""), q.after.as_deref(), limit);
    Ok(Json(Rooms { rooms, more }))
}

/// Who is in a room: the connections that subscribed with presence info.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/presence", operation_id = "presence",
    tag = "rooms", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$")),
    responses((status = 200, body = Presence)))]
pub(crate) async fn presence(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(room): Segments<String>,
) -> Result<Json<Presence>, ApiError> {
    caller.require(Scope::Presence)?;
    let mut call = Call::new(&ctx, &caller.name);
    let cmd = call.requests().who(ID);
    let (mut members, mut more) = match call.run(&room, cmd).await? {
        ServerFrame::Who { members, more, .. } => (members, more),
        other => return Err(unexpected(&other)),
    };
    // A list larger than a frame continues in `snap` frames (SPEC.md 4.8).
    while more {
        match call.reply().await? {
            ServerFrame::Snap {
                presence, more: m, ..
            } => {
                members.extend(presence.unwrap_or_default());
                more = m;
            }
            other => return Err(unexpected(&other)),
        }
    }
    Ok(Json(Presence {
        members: members
            .into_iter()
            .map(|m| Member {
                conn: m.conn,
                user: m.user,
                info: m.info.as_ref().map(json),
            })
            .collect(),
    }))
}
