//! The server API: what a backend calls over HTTP, the way a Worker calls its Durable Object.
//!
//! `/api/v1/...` on the main port and on the admin listener, JSON in and out (MessagePack when
//! the request says so), authenticated by the keys in `[[api.keys]]`, each with scopes. Every
//! operation goes through the same [`crate::request::Requests`] checks and room commands as its
//! WebSocket counterpart ([`call`]), so ordering, de-duplication and durability are the same.
//! `/api/openapi.json` is the OpenAPI 3.1 document, generated from the handlers and types here.
//!
//! - [`keys`]: API keys and scopes. [`body`]: reading bodies, paths and queries strictly.
//! - [`rooms`], [`state`], [`users`]: the operations. [`model`]: their documents.
//! - [`error`]: protocol error codes as JSON and HTTP statuses.

mod body;
mod call;
mod error;
mod keys;
mod model;
mod rooms;
mod state;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use roomd_protocol::{ErrorCode, ServerFrame};
use tower::ServiceExt;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::ApiError;
use crate::config::Config;
use crate::connections::Connections;
use crate::engine::Engine;
use crate::lifecycle::{Lifecycle, Phase};
use crate::room::Registry;

/// What every API request may reach.
pub(crate) struct Ctx {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub engine: Engine,
    pub conns: Arc<Connections>,
    pub lifecycle: Lifecycle,
    keys: keys::Keys,
    /// The most bytes a request body may have: twice `websocket.max_frame_bytes`, room for a
    /// payload of `limits.payload_bytes` as base64 or JSON, or a broadcast's list of rooms.
    body_bytes: usize,
}

/// The API's router and its document.
pub(crate) struct Api {
    router: axum::Router,
}

impl Api {
    pub(crate) fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        engine: Engine,
        conns: Arc<Connections>,
        lifecycle: Lifecycle,
    ) -> Api {
        let ctx = Arc::new(Ctx {
            keys: keys::Keys::new(&config.api),
            body_bytes: 2 * config.websocket.max_frame_bytes,
            config,
            registry,
            engine,
            conns,
            lifecycle,
        });
        let (router, doc) = routes();
        let ops = Arc::new(operations(&doc));
        crate::metrics::api_operations(ops.values().map(String::as_str));
        let doc = Bytes::from(doc.to_json().unwrap_or_default());
        let router = router
            .route(
                "/api/openapi.json",
                axum::routing::get(move || async move {
                    ([(CONTENT_TYPE, body::JSON)], doc.clone()).into_response()
                }),
            )
            .fallback(|| async {
                ApiError::http(
                    StatusCode::NOT_FOUND,
                    ErrorCode::UnknownRequest,
                    "no such operation: see /api/openapi.json",
                )
            })
            .method_not_allowed_fallback(|| async {
                ApiError::http(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorCode::UnknownRequest,
                    "this path has no operation for this method: see /api/openapi.json",
                )
            })
            .layer(axum::middleware::from_fn_with_state(
                (ctx.clone(), ops),
                around,
            ))
            .with_state(ctx);
        Api { router }
    }

    /// Serves one request under `/api/`.
    pub(crate) async fn serve<B>(&self, req: hyper::Request<B>) -> Response
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let req = req.map(AxumBody::new);
        match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// The operations and the OpenAPI document they generate.
fn routes() -> (axum::Router<Arc<Ctx>>, OpenApi) {
    let (router, mut doc) = OpenApiRouter::<Arc<Ctx>>::new()
        .routes(routes!(rooms::publish, rooms::history))
        .routes(routes!(rooms::broadcast))
        .routes(routes!(rooms::info))
        .routes(routes!(rooms::list))
        .routes(routes!(rooms::presence))
        .routes(routes!(state::get, state::put, state::delete))
        .routes(routes!(state::list))
        .routes(routes!(state::cas))
        .routes(routes!(state::incr))
        .routes(routes!(users::disconnect))
        .routes(routes!(users::unsubscribe))
        .routes(routes!(users::delete_message, users::edit_message))
        .split_for_parts();
    document(&mut doc);
    (router, doc)
}

/// The document's parts that no handler states: title, authentication, and the error answers
/// every operation may give.
fn document(doc: &mut OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    doc.info.title = "roomd server API".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.contact = None;
    doc.info.license = Some(utoipa::openapi::License::new(env!("CARGO_PKG_LICENSE")));
    doc.info.description = Some(
        "What a backend calls: publish, history, state, presence and moderation in roomd's \
         rooms. Authenticate with `Authorization: Bearer KEY` (a key from `[[api.keys]]`). \
         Bodies and answers are JSON; send `Content-Type: application/msgpack` (or \
         `Accept: application/msgpack`) for the same documents as MessagePack. Errors carry \
         the protocol's error `code` and `error` name (roomd SPEC.md section 6)."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.schemas.insert(
        "ApiError".into(),
        <ApiError as utoipa::PartialSchema>::schema(),
    );
    doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "api_key",
        Vec::<String>::new(),
    )]);
    let errors = [
        (
            400,
            "Malformed body, bad field or bad room name (`code` 400, 406 or 414)",
        ),
        (401, "No key, or an unknown one"),
        (403, "The key lacks the operation's scope"),
        (404, "No such operation"),
        (
            409,
            "`cas`: the key's version differs (`ver` is the current one)",
        ),
        (
            413,
            "A payload, value, key, mid or the body over its limit (`max`)",
        ),
        (415, "The body is neither JSON nor MessagePack"),
        (422, "`incr` on a value that is not an integer, or overflow"),
        (429, "A limit (`max`): too many keys in the room"),
        (
            503,
            "Shutting down, or the request timed out: retry (a publish with the same `mid`)",
        ),
        (
            507,
            "The disk write failed: nothing was stored; retry later",
        ),
    ];
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations_of(item) {
            // OpenAPI requires a description of every response.
            for r in op.responses.responses.values_mut() {
                if let utoipa::openapi::RefOr::T(r) = r {
                    if r.description.is_empty() {
                        r.description = "Done".into();
                    }
                }
            }
            for (status, text) in errors {
                let response = ResponseBuilder::new()
                    .description(text)
                    .content(
                        body::JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ApiError")))
                            .build(),
                    )
                    .build();
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert(response.into());
            }
        }
    }
}

/// (method, path template) → operation id, for metrics.
type Operations = HashMap<(Method, String), String>;

fn operations(doc: &OpenApi) -> Operations {
    let mut out = HashMap::new();
    for (path, item) in &doc.paths.paths {
        let mut item = item.clone();
        for (method, op) in operations_of(&mut item) {
            if let Some(id) = &op.operation_id {
                out.insert((method, path.clone()), id.clone());
            }
        }
    }
    out
}

/// A path's operations, by method.
fn operations_of(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (Method, &mut utoipa::openapi::path::Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// Around every request: refused while shutting down, bounded in time, counted in the
/// metrics, and transcoded to MessagePack when asked.
async fn around(
    State((ctx, ops)): State<(Arc<Ctx>, Arc<Operations>)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let op = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ops.get(&(req.method().clone(), p.as_str().to_string())))
        .map_or("unknown", String::as_str)
        .to_string();
    let msgpack = body::wants_msgpack(req.headers());
    let response = if ctx.lifecycle.phase() >= Phase::LameDuck {
        ApiError::new(
            ErrorCode::Unavailable,
            "server shutting down; retry on another node or later",
        )
        .into_response()
    } else {
        let limit = Duration::from_millis(ctx.config.api.request_timeout_ms);
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                ErrorCode::Unavailable,
                "timed out; the request may still take effect: retry (a publish with the same mid)",
            )
            .into_response(),
        }
    };
    let response = if msgpack {
        to_msgpack(response).await
    } else {
        response
    };
    crate::metrics::api_request(
        &op,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A JSON answer as the same document in MessagePack.
async fn to_msgpack(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(body::JSON.as_bytes()));
    if !is_json {
        return response;
    }
    let (mut parts, b) = response.into_parts();
    // Our own answers, each bounded by a frame's worth of entries.
    let Ok(bytes) = axum::body::to_bytes(b, usize::MAX).await else {
        return ApiError::new(ErrorCode::Storage, crate::error::INTERNAL_MSG).into_response();
    };
    let packed = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| rmp_serde::to_vec_named(&v).ok());
    let Some(packed) = packed else {
        return ApiError::new(ErrorCode::Storage, crate::error::INTERNAL_MSG).into_response();
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(body::MSGPACK));
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(packed.len()));
    Response::from_parts(parts, AxumBody::from(packed))
}

/// A room answered with a frame its request never gets: a bug, logged, answered as internal.
fn unexpected(frame: &ServerFrame) -> ApiError {
    tracing::error!(?frame, "the server API got an unexpected reply frame");
    ApiError::new(ErrorCode::Storage, crate::error::INTERNAL_MSG)
}
