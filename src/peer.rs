//! What a room knows about a connection: who it is and where its frames go.

use std::sync::Arc;

use roomd_protocol::ServerFrame;

pub(crate) use crate::error::ReplyError;
use crate::outbox::Outbox;

pub(crate) struct Peer {
    /// Connection id, unique while the server runs.
    pub id: Arc<str>,
    /// Authenticated (or, without auth, self-declared) user id.
    pub user: Option<Arc<str>>,
    /// Stable client-instance id for publish de-duplication; the connection id if not given.
    pub client: Arc<str>,
    pub outbox: Outbox,
    /// Rooms that refused this connection's `sub` (with its id) after the connection counted
    /// it (presence full): the connection forgets them at its next `sub` or `unsub`.
    pub refused: std::sync::Mutex<Vec<(Arc<str>, u32)>>,
}

impl Peer {
    /// Encodes and queues a frame for this connection only.
    pub(crate) fn send(&self, frame: &ServerFrame) {
        let _ = self.outbox.push(crate::wire::encode(frame));
    }

    /// A room refused a subscription the connection had counted; tells the connection.
    pub(crate) fn refuse_sub(&self, room: &Arc<str>, id: u32) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.push((room.clone(), id));
    }

    /// The rooms (and `sub` ids) that refused a subscription since the last call.
    pub(crate) fn take_refused(&self) -> Vec<(Arc<str>, u32)> {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *refused)
    }

    pub(crate) fn send_err(&self, id: Option<u32>, err: impl Into<ReplyError>) {
        let err = err.into();
        crate::metrics::error(err.code);
        self.send(&ServerFrame::Err {
            id,
            code: err.code.as_u16(),
            msg: err.msg,
            ver: err.ver,
            max: err.max,
            retry_after_ms: err.retry_after_ms,
        });
    }
}
