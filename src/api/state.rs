//! Room state over HTTP (SPEC.md 4.5): get, list, put, delete, cas, incr. Each change is a log
//! entry like a WebSocket client's, ordered with the room's messages and answered once durable.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use roomd_protocol::ServerFrame;

use super::body::{Body, Params, Segments};
use super::call::{Call, ID};
use super::error::ApiError;
use super::keys::Caller;
use super::model::{json, Cas, Done, Incr, ListQuery, Put, Val, Vals};
use super::{unexpected, Ctx};
use crate::config::Scope;
use crate::room::Command;

/// Sends a state command to `room` and reads its reply.
async fn run(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    room: &str,
    build: impl FnOnce(&Call) -> Result<Command, crate::error::ReplyError>,
) -> Result<ServerFrame, ApiError> {
    caller.require(Scope::State)?;
    let mut call = Call::new(ctx, &caller.name);
    call.requests().check_room(room)?;
    let cmd = build(&call)?;
    call.run(room, cmd).await
}

fn done(frame: ServerFrame) -> Result<Json<Done>, ApiError> {
    match frame {
        ServerFrame::Done {
            seq, ver, value, ..
        } => Ok(Json(Done {
            seq,
            ver,
            value: value.as_ref().map(json),
        })),
        other => Err(unexpected(&other)),
    }
}

/// A key's value and version (`ver` 0 and no `value`: the key is absent).
#[utoipa::path(get, path = "/api/v1/rooms/{room}/state/{key}", operation_id = "state_get",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("key" = String, Path, description = "State key")),
    responses((status = 200, body = Val)))]
pub(crate) async fn get(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, key)): Segments<(String, String)>,
) -> Result<Json<Val>, ApiError> {
    match run(&ctx, &caller, &room, |c| c.requests().get(ID, key)).await? {
        ServerFrame::Val {
            key,
            value,
            ver,
            exp,
            ..
        } => Ok(Json(Val {
            key,
            value: value.as_ref().map(json),
            ver,
            exp,
        })),
        other => Err(unexpected(&other)),
    }
}

/// A page of a room's keys in key order, optionally those starting with `prefix`.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/state", operation_id = "state_list",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ListQuery),
    responses((status = 200, body = Vals)))]
pub(crate) async fn list(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments(room): Segments<String>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Vals>, ApiError> {
    let frame = run(&ctx, &caller, &room, |c| {
        c.requests().list(ID, q.prefix, q.after, q.limit)
    })
    .await?;
    match frame {
        ServerFrame::Vals { items, more, .. } => Ok(Json(Vals {
            items: items
                .into_iter()
                .map(|i| Val {
                    key: i.key,
                    value: Some(json(&i.value)),
                    ver: i.ver,
                    exp: i.exp,
                })
                .collect(),
            more,
        })),
        other => Err(unexpected(&other)),
    }
}

/// Set a key to a value.
#[utoipa::path(put, path = "/api/v1/rooms/{room}/state/{key}", operation_id = "state_put",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("key" = String, Path, description = "State key")),
    request_body = Put, responses((status = 200, body = Done)))]
pub(crate) async fn put(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, key)): Segments<(String, String)>,
    Body(body): Body<Put>,
) -> Result<Json<Done>, ApiError> {
    done(
        run(&ctx, &caller, &room, |c| {
            c.requests().put(ID, key, body.value, (body.ttl_ms, false))
        })
        .await?,
    )
}

/// Delete a key (deleting an absent key stores nothing and answers without `seq`).
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/state/{key}", operation_id = "state_delete",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("key" = String, Path, description = "State key")),
    responses((status = 200, body = Done)))]
pub(crate) async fn delete(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, key)): Segments<(String, String)>,
) -> Result<Json<Done>, ApiError> {
    done(run(&ctx, &caller, &room, |c| c.requests().del(ID, key)).await?)
}

/// Set a key only if its version is `ver` (0: only if absent); else 409 with the current
/// version.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/state/{key}/cas", operation_id = "state_cas",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("key" = String, Path, description = "State key")),
    request_body = Cas, responses((status = 200, body = Done)))]
pub(crate) async fn cas(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, key)): Segments<(String, String)>,
    Body(body): Body<Cas>,
) -> Result<Json<Done>, ApiError> {
    super::model::safe("ver", Some(body.ver))?;
    done(
        run(&ctx, &caller, &room, |c| {
            c.requests()
                .cas(ID, key, body.ver, body.value, (body.ttl_ms, false))
        })
        .await?,
    )
}

/// Add `by` (default 1) to a key's integer atomically; an absent key counts as 0. The body may
/// be empty.
#[utoipa::path(post, path = "/api/v1/rooms/{room}/state/{key}/incr", operation_id = "state_incr",
    tag = "state", params(("room" = String, Path, description = "Room name", pattern = r"^[A-Za-z0-9\-_.:@/~]{1,128}$"), ("key" = String, Path, description = "State key")),
    request_body(content = Option<Incr>), responses((status = 200, body = Done)))]
pub(crate) async fn incr(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segments((room, key)): Segments<(String, String)>,
    Body(body): Body<Incr>,
) -> Result<Json<Done>, ApiError> {
    done(
        run(&ctx, &caller, &room, |c| {
            c.requests().incr(ID, key, body.by)
        })
        .await?,
    )
}
