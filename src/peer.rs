//! What a room knows about a connection: who it is and where its frames go.

use std::sync::Arc;

use roomd_protocol::{ErrorCode, ServerFrame};

use crate::outbox::Outbox;

pub struct Peer {
    /// Connection id, unique while the server runs.
    pub id: Arc<str>,
    /// Authenticated (or, without auth, self-declared) user id.
    pub user: Option<Arc<str>>,
    /// Stable client-instance id for publish de-duplication; the connection id if not given.
    pub client: Arc<str>,
    pub outbox: Outbox,
}

impl Peer {
    /// Encodes and queues a frame for this connection only.
    pub fn send(&self, frame: &ServerFrame) {
        let _ = self.outbox.push(crate::wire::encode(frame));
    }

    pub fn send_err(&self, id: Option<u32>, err: impl Into<ReplyError>) {
        let err = err.into();
        crate::metrics::error(err.code);
        self.send(&ServerFrame::Err {
            id,
            code: err.code.as_u16(),
            msg: err.msg,
            ver: err.ver,
            max: err.max,
        });
    }
}

/// An `err` frame's content (SPEC.md section 6).
#[derive(Debug, Clone)]
pub struct ReplyError {
    pub code: ErrorCode,
    pub msg: String,
    pub ver: Option<u64>,
    pub max: Option<u64>,
}

impl ReplyError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> ReplyError {
        ReplyError {
            code,
            msg: msg.into(),
            ver: None,
            max: None,
        }
    }

    pub fn too_large(what: &str, len: usize, max: usize) -> ReplyError {
        ReplyError {
            max: Some(max as u64),
            ..ReplyError::new(
                ErrorCode::TooLarge,
                format!("{what} is {len} bytes, limit {max}"),
            )
        }
    }
}
