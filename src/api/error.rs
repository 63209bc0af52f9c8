//! The server API's errors: the protocol's error codes (SPEC.md section 6) as JSON, with the
//! HTTP status that says the same to an HTTP client.

use axum::response::{IntoResponse, Response};
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use roomd_protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ReplyError;

/// An error answer: `code` and `error` are the protocol's number and name for it (SPEC.md 6).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ApiError {
    /// The protocol's error code (`406`, `413`, ...).
    pub code: u16,
    /// The code's name (`bad_request`, `too_large`, ...).
    pub error: &'static str,
    /// What went wrong, for a human.
    pub message: String,
    /// `409`: the key's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ver: Option<u64>,
    /// `413` and `429`: the limit that was exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `429` from a rate limit: milliseconds until the request would be admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(skip)]
    pub status: StatusCode,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::from(ReplyError::new(code, message))
    }

    /// An HTTP-only refusal (a route or method that does not exist, a body that is not JSON):
    /// the status says it, the code is the protocol's nearest.
    pub(crate) fn http(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            ..ApiError::new(code, message)
        }
    }
}

/// The HTTP status of a protocol error code. Codes that are HTTP statuses with the same meaning
/// keep their number; the others become the HTTP status an HTTP client expects for them.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Malformed | ErrorCode::BadRequest | ErrorCode::BadRoom => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotSubscribed | ErrorCode::UnknownRequest => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::AlreadySubscribed => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotInteger => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Limit => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Storage => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ReplyError> for ApiError {
    fn from(e: ReplyError) -> ApiError {
        ApiError {
            code: e.code.as_u16(),
            error: e.code.name(),
            message: e.msg,
            ver: e.ver,
            max: e.max,
            retry_after_ms: e.retry_after_ms,
            status: status_of(e.code),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.retry_after_ms;
        let status = self.status;
        let mut r = (status, axum::Json(self)).into_response();
        if let Some(ms) = retry {
            // Whole seconds, rounded up: `Retry-After` has no finer unit.
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        r
    }
}
