//! What a client is told when a request fails, and the one place internal failures become that.
//!
//! Client-caused errors carry their structured detail (the limit, the current version) so a
//! client can act on them, and are not logged as errors. Internal errors (storage, a task that
//! died) are logged here, once, with their detail; the client gets a fixed text, because the
//! detail is ours (paths, OS errors) and tells it nothing it can act on beyond "retry".

use roomd_protocol::ErrorCode;

use crate::store::StoreError;

/// The text every internal failure is answered with.
pub(crate) const INTERNAL_MSG: &str = "storage unavailable; retry";

/// An `err` frame's content (SPEC.md section 6).
#[derive(Debug, Clone)]
pub(crate) struct ReplyError {
    pub code: ErrorCode,
    pub msg: String,
    /// `conflict`: the key's current version.
    pub ver: Option<u64>,
    /// `too_large` and `limit`: the limit that was exceeded.
    pub max: Option<u64>,
    /// `limit` from a rate limit: milliseconds until the request would be admitted.
    pub retry_after_ms: Option<u64>,
}

impl ReplyError {
    pub(crate) fn new(code: ErrorCode, msg: impl Into<String>) -> ReplyError {
        ReplyError {
            code,
            msg: msg.into(),
            ver: None,
            max: None,
            retry_after_ms: None,
        }
    }

    pub(crate) fn too_large(what: &str, len: usize, max: usize) -> ReplyError {
        ReplyError {
            max: Some(max as u64),
            ..ReplyError::new(
                ErrorCode::TooLarge,
                format!("{what} is {len} bytes, limit {max}"),
            )
        }
    }

    /// An internal failure while serving `what`: logged with its detail, answered with
    /// [`INTERNAL_MSG`] and the retryable `storage` code.
    pub(crate) fn internal(what: &'static str, e: &dyn std::error::Error) -> ReplyError {
        tracing::error!(error = %e, request = what, "request failed inside the server");
        ReplyError::new(ErrorCode::Storage, INTERNAL_MSG)
    }

    /// A storage failure that was already logged where it happened (a failed group commit is
    /// logged once by the writer, not once per request in it).
    pub(crate) fn storage_logged() -> ReplyError {
        ReplyError::new(ErrorCode::Storage, INTERNAL_MSG)
    }
}

impl From<&StoreError> for ReplyError {
    fn from(e: &StoreError) -> ReplyError {
        match e {
            // Transient, and nothing was written: the client retries (with the same `mid`).
            StoreError::Engine(_) | StoreError::Behind { .. } | StoreError::EpochChanged { .. } => {
                tracing::warn!(error = %e, "cluster engine");
                ReplyError::new(
                    ErrorCode::Unavailable,
                    "the cluster's engine is unavailable; retry",
                )
            }
            _ => ReplyError::internal("storage", e),
        }
    }
}

impl From<tokio::task::JoinError> for ReplyError {
    fn from(e: tokio::task::JoinError) -> ReplyError {
        ReplyError::internal("blocking read", &e)
    }
}
