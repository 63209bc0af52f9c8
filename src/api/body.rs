//! What a request carries, read strictly: a JSON or MessagePack body bounded in bytes, path
//! segments and a query string, each refused with a protocol error code when it does not parse
//! (`400 malformed` for a body that is not JSON/MessagePack at all, `406 bad_request` for a
//! field that is missing, unknown or of the wrong type, `413 too_large` over the bound).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use http_body_util::{BodyExt, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode};
use roomd_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::Ctx;

pub(crate) const JSON: &str = "application/json";
pub(crate) const MSGPACK: &str = "application/msgpack";

/// A request body of type `T`: JSON, or MessagePack when the request says
/// `Content-Type: application/msgpack`. An empty body reads as `{}`, so operations whose fields
/// are all optional take no body at all.
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Ctx>> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, ctx: &Arc<Ctx>) -> Result<Self, ApiError> {
        let msgpack = is_msgpack(req.headers())?;
        let max = ctx.body_bytes;
        let bytes = match Limited::new(req.into_body(), max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(ApiError {
                    max: Some(max as u64),
                    ..ApiError::new(ErrorCode::TooLarge, format!("the body is over {max} bytes"))
                });
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::Malformed,
                    format!("reading the body failed: {e}"),
                ))
            }
        };
        // No body, or JSON's `null`, is no fields at all.
        let bytes: &[u8] = if bytes.is_empty() || (!msgpack && bytes.trim_ascii() == b"null") {
            if msgpack {
                &[0x80]
            } else {
                b"{}"
            }
        } else {
            &bytes
        };
        // A struct would also read from an array of its fields: a body is an object, always.
        let is_map = if msgpack {
            matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
        } else {
            bytes.trim_ascii_start().first() == Some(&b'{')
        };
        if !is_map {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "the body must be an object (a map)",
            ));
        }
        if msgpack {
            rmp_serde::from_slice(bytes).map(Body).map_err(|e| {
                let code = match e {
                    rmp_serde::decode::Error::Syntax(_)
                    | rmp_serde::decode::Error::Uncategorized(_) => ErrorCode::BadRequest,
                    _ => ErrorCode::Malformed,
                };
                ApiError::new(code, format!("the MessagePack body does not read: {e}"))
            })
        } else {
            serde_json::from_slice(bytes).map(Body).map_err(|e| {
                let code = match e.classify() {
                    serde_json::error::Category::Data => ErrorCode::BadRequest,
                    _ => ErrorCode::Malformed,
                };
                ApiError::new(code, format!("the JSON body does not read: {e}"))
            })
        }
    }
}

/// Whether the body is MessagePack (else JSON); any other declared type is refused with 415.
fn is_msgpack(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Ok(false);
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        JSON => Ok(false),
        MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => Ok(true),
        other => Err(ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Malformed,
            format!("the body must be {JSON} or {MSGPACK}, not {other:?}"),
        )),
    }
}

/// Whether the answer should be MessagePack: asked by `Accept`, or implied by a MessagePack
/// request body.
pub(crate) fn wants_msgpack(headers: &HeaderMap) -> bool {
    let says = |name| {
        headers
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.split(';').next().unwrap_or("").trim() == MSGPACK)
            })
    };
    says(ACCEPT) || says(CONTENT_TYPE)
}

/// Path segments, percent-decoded; a segment that does not decode is a bad request.
pub(crate) struct Segments<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<Ctx>> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, ctx)
            .await
            .map(|Path(t)| Segments(t))
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))
    }
}

/// A query string of type `T`; unknown parameters are refused (`T` denies them).
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<Ctx>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, ctx)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))
    }
}
