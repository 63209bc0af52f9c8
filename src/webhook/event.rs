//! What happened, as the webhook endpoints receive it (README "Webhooks" has the fields).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

/// The event types, named as in `[[webhooks]] events` ([`crate::config::EVENT_TYPES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ConnectionOpened,
    ConnectionClosed,
    RoomJoined,
    RoomLeft,
    RoomCreated,
    RoomEmptied,
    RoomUnloaded,
    MessagePublished,
    StateChanged,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::ConnectionOpened => "connection.opened",
            Kind::ConnectionClosed => "connection.closed",
            Kind::RoomJoined => "room.joined",
            Kind::RoomLeft => "room.left",
            Kind::RoomCreated => "room.created",
            Kind::RoomEmptied => "room.emptied",
            Kind::RoomUnloaded => "room.unloaded",
            Kind::MessagePublished => "message.published",
            Kind::StateChanged => "state.changed",
        }
    }
}

/// One event, as emitted; its id is given when it is written to the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub kind: Kind,
    /// When it happened, ms since the Unix epoch.
    pub ts: u64,
    pub room: Option<Arc<str>>,
    pub conn: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    /// The type's own fields (`seq`, `data`, `key`, ...), as JSON.
    pub fields: Map<String, Value>,
}

impl Event {
    pub(crate) fn new(kind: Kind) -> Event {
        Event {
            kind,
            ts: now_ms(),
            room: None,
            conn: None,
            user: None,
            fields: Map::new(),
        }
    }

    pub(crate) fn room(mut self, room: &Arc<str>) -> Event {
        self.room = Some(room.clone());
        self
    }

    /// The connection and its user.
    pub(crate) fn by(mut self, conn: &Arc<str>, user: Option<&Arc<str>>) -> Event {
        self.conn = Some(conn.clone());
        self.user = user.cloned();
        self
    }

    pub(crate) fn field(mut self, name: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(name.to_string(), value.into());
        self
    }

    /// A payload (opaque bytes to roomd) as base64, the standard alphabet with padding.
    pub(crate) fn bytes(self, name: &str, data: &[u8]) -> Event {
        let text = base64::engine::general_purpose::STANDARD.encode(data);
        self.field(name, text)
    }

    /// The JSON object sent: `{id, type, ts, room?, conn?, user?, ...fields}`.
    pub(crate) fn to_json(&self, id: &str) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(id));
        obj.insert("type".into(), json!(self.kind.as_str()));
        obj.insert("ts".into(), json!(self.ts));
        for (name, v) in [
            ("room", &self.room),
            ("conn", &self.conn),
            ("user", &self.user),
        ] {
            if let Some(v) = v {
                obj.insert(name.into(), json!(&**v));
            }
        }
        for (k, v) in &self.fields {
            obj.insert(k.clone(), v.clone());
        }
        serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A state value (MessagePack in roomd) as JSON: binary becomes an array of byte values.
pub(crate) fn value_json(v: &rmpv::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_common_fields_and_the_type_s_own() {
        let room: Arc<str> = "chat:a".into();
        let conn: Arc<str> = "c1".into();
        let user: Arc<str> = "ann".into();
        let ev = Event::new(Kind::MessagePublished)
            .room(&room)
            .by(&conn, Some(&user))
            .field("seq", 7)
            .bytes("data", b"hi");
        let v: Value = serde_json::from_slice(&ev.to_json("x.1")).unwrap();
        assert_eq!(v["id"], "x.1");
        assert_eq!(v["type"], "message.published");
        assert_eq!(v["room"], "chat:a");
        assert_eq!(v["conn"], "c1");
        assert_eq!(v["user"], "ann");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["data"], "aGk=");
        assert!(v["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
