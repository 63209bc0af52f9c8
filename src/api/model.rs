//! The server API's request and response documents. Their schemas in the OpenAPI document are
//! generated from these types, so the document cannot describe fields the code does not read.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use roomd_protocol::{ErrorCode, ServerFrame, Value};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;

/// The grammar of a room name (SPEC.md 4, with the default `limits.room_name_bytes`); the path
/// parameters repeat it, as an attribute takes a literal only.
const ROOM_PATTERN: &str = r"^[A-Za-z0-9\-_.:@/~]{1,128}$";

/// The largest seq, version or timestamp: JavaScript numbers hold integers exactly below 2^53.
pub(crate) const MAX_SAFE: u64 = (1 << 53) - 1;

/// A room's name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub(crate) struct RoomName(pub String);

impl utoipa::PartialSchema for RoomName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(ROOM_PATTERN))
            .description(Some("A room name: 1-128 of A-Z a-z 0-9 - _ . : @ / ~"))
            .into()
    }
}

impl ToSchema for RoomName {}

/// 406 for a seq or version past [`MAX_SAFE`] (no seq is that large).
pub(crate) fn safe(field: &str, v: Option<u64>) -> Result<Option<u64>, ApiError> {
    match v {
        Some(n) if n > MAX_SAFE => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{field} is above 2^53 - 1"),
        )),
        _ => Ok(v),
    }
}

/// A publish: the payload as `data`, any JSON value, stored as its MessagePack encoding (what
/// the SDK's `Message.value()` reads back); or as `data_b64`, bytes stored as they are.
/// Exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Publish {
    Value(PublishValue),
    Bytes(PublishBytes),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishValue {
    /// The payload as a value (stored as its MessagePack encoding).
    #[schema(value_type = Value)]
    pub data: Value,
    /// A message id for idempotent retry (SPEC.md 5.3): a second publish with the same `mid`
    /// through the same key stores nothing and answers the first one's seq with `dup: true`.
    /// At most `limits.mid_bytes` bytes.
    #[schema(min_length = 1)]
    pub mid: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBytes {
    /// The payload as base64 bytes (stored as they are).
    #[schema(
        content_encoding = "base64",
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    )]
    pub data_b64: String,
    /// As for `data`.
    #[schema(min_length = 1)]
    pub mid: Option<String>,
}

impl Publish {
    /// The payload's bytes and the `mid`.
    pub(crate) fn payload(self) -> Result<(Vec<u8>, Option<String>), ApiError> {
        match self {
            Publish::Value(p) => Ok((encode(&p.data), p.mid)),
            Publish::Bytes(p) => Ok((decode_b64(&p.data_b64)?, p.mid)),
        }
    }
}

/// A message's new content (SPEC.md 5.8): as `data`, any JSON value, stored as its MessagePack
/// encoding; or as `data_b64`, bytes stored as they are. Exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Edit {
    Value(EditValue),
    Bytes(EditBytes),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditValue {
    /// The new content as a value (stored as its MessagePack encoding).
    #[schema(value_type = Value)]
    pub data: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditBytes {
    /// The new content as base64 bytes (stored as they are).
    #[schema(
        content_encoding = "base64",
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    )]
    pub data_b64: String,
}

impl Edit {
    /// The new content's bytes.
    pub(crate) fn payload(self) -> Result<Vec<u8>, ApiError> {
        match self {
            Edit::Value(e) => Ok(encode(&e.data)),
            Edit::Bytes(e) => decode_b64(&e.data_b64),
        }
    }
}

/// An edit's result.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Edited {
    /// The seq of the edit entry.
    pub seq: u64,
}

/// One payload to many rooms, as a [`Publish`] gives it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Broadcast {
    Value(BroadcastValue),
    Bytes(BroadcastBytes),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastValue {
    /// The rooms, at most `api.broadcast_rooms` (default 1000), each published to in turn.
    pub rooms: Vec<RoomName>,
    #[schema(value_type = Value)]
    pub data: Value,
    /// De-duplicates per room: a retried broadcast stores nothing where the first one did.
    #[schema(min_length = 1)]
    pub mid: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBytes {
    pub rooms: Vec<RoomName>,
    #[schema(
        content_encoding = "base64",
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    )]
    pub data_b64: String,
    #[schema(min_length = 1)]
    pub mid: Option<String>,
}

/// A broadcast read: the payload as bytes.
pub(crate) struct Outgoing {
    pub rooms: Vec<RoomName>,
    pub data: Vec<u8>,
    pub mid: Option<String>,
}

impl Broadcast {
    pub(crate) fn parts(self) -> Result<Outgoing, ApiError> {
        let (rooms, data, mid) = match self {
            Broadcast::Value(b) => (b.rooms, encode(&b.data), b.mid),
            Broadcast::Bytes(b) => (b.rooms, decode_b64(&b.data_b64)?, b.mid),
        };
        Ok(Outgoing { rooms, data, mid })
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

fn decode_b64(b: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    // Lenient where being strict helps nobody: unpadded input, and set bits after the last
    // whole byte (which many encoders leave).
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(b.as_bytes()).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("data_b64 is not base64: {e}"),
        )
    })
}

/// A publish's result.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Published {
    /// The message's seq in the room's log.
    pub seq: u64,
    /// The `mid` was already stored: `seq` is the first publish's and nothing new was stored.
    pub dup: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BroadcastResult {
    /// One result per room, in the order of the request.
    pub results: Vec<RoomResult>,
}

/// A room's part of a broadcast: `seq` (and `dup`) when it was stored, `error` when not.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomResult {
    pub room: RoomName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dup: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// Paging through a room's log: forward from `after`, or backward from `before` (newest first
/// when neither is given); items are in ascending seq order either way.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Only entries with a greater seq (page forward).
    #[param(maximum = 9007199254740991_u64)]
    pub after: Option<u64>,
    /// Only entries with a smaller seq (page backward).
    #[param(maximum = 9007199254740991_u64)]
    pub before: Option<u64>,
    /// At most this many entries (default and maximum `limits.page`; more is read as that).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct History {
    pub items: Vec<Entry>,
    /// More entries exist in the paging direction.
    pub more: bool,
}

/// One entry of a room's log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Entry {
    /// `msg` (a message), `state` (a state change) or `del` (a message deletion).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// The writer's connection id (`api:KEY` for the server API).
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `msg`: the payload as base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
    /// `msg`: the payload read as one MessagePack value, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub data: Option<serde_json::Value>,
    /// `msg`: the payload as text, when it is valid UTF-8 (what the SDK's `publish(string)` and
    /// `publishJSON` store, the chat's messages among them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `msg`: the seq of the `del` entry that deleted it (its payload is gone); on an edit
    /// entry, the seq of the later edit or deletion that superseded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// `msg`: the seq of its latest edit; the payload is the edited content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited: Option<u64>,
    /// `msg`: this entry is an edit of the message with this seq, the payload its new content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edits: Option<u64>,
    /// `state`: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `state`: the key's new version (0: deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ver: Option<u64>,
    /// `state`: the key's new value (absent: deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub value: Option<serde_json::Value>,
    /// `del`: the seq of the deleted message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// `state`: when the key expires (Unix ms), if it was written with `ttl_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

impl Entry {
    fn blank(kind: &'static str, seq: u64, ts: u64, from: String, uid: Option<String>) -> Entry {
        Entry {
            kind,
            seq,
            ts,
            from,
            uid,
            data_b64: None,
            data: None,
            text: None,
            deleted: None,
            edited: None,
            edits: None,
            key: None,
            ver: None,
            value: None,
            target: None,
            exp: None,
        }
    }

    /// A log entry as its event frame has it; `None` for a frame that is not a log entry.
    pub(crate) fn from_frame(frame: ServerFrame) -> Option<Entry> {
        Some(match frame {
            ServerFrame::Msg {
                seq,
                ts,
                from,
                uid,
                data,
                deleted,
                edited,
                edits,
                ..
            } => Entry {
                data: decoded(&data),
                text: String::from_utf8(data.clone())
                    .ok()
                    .filter(|t| !t.is_empty()),
                data_b64: Some(BASE64.encode(&data)),
                deleted,
                edited,
                edits,
                ..Entry::blank("msg", seq, ts, from, uid)
            },
            ServerFrame::State {
                seq,
                ts,
                from,
                uid,
                key,
                ver,
                value,
                exp,
                ..
            } => Entry {
                key: Some(key),
                ver: Some(ver),
                value: value.as_ref().map(json),
                exp,
                ..Entry::blank("state", seq, ts, from, uid)
            },
            ServerFrame::Del {
                seq,
                ts,
                from,
                uid,
                target,
                ..
            } => Entry {
                target: Some(target),
                ..Entry::blank("del", seq, ts, from, uid)
            },
            _ => return None,
        })
    }
}

/// The payload read as exactly one MessagePack value, as JSON.
fn decoded(data: &[u8]) -> Option<serde_json::Value> {
    let mut rest = data;
    let value = rmpv::decode::read_value(&mut rest).ok()?;
    rest.is_empty().then(|| json(&value))
}

/// A MessagePack value as JSON: `bin` becomes an array of byte values, a map key that is not a
/// string its JSON text, an ext value and a float that JSON cannot hold (NaN, infinities) null.
pub(crate) fn json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil | Value::Ext(..) => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i
            .as_u64()
            .map(J::from)
            .or_else(|| i.as_i64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Array(a) => J::Array(a.iter().map(json).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => json(other).to_string(),
                    };
                    (key, json(v))
                })
                .collect(),
        ),
    }
}

/// Paging through keys or room names: those starting with `prefix`, after `after`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only names after this one (the last of the previous page).
    pub after: Option<String>,
    /// At most this many (default and maximum `limits.page`; more is read as that).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Put {
    /// Any JSON value (stored as MessagePack, at most `limits.value` bytes encoded).
    #[schema(value_type = Value)]
    pub value: Value,
    /// The key expires this many milliseconds after the write: a logged deletion (SPEC.md
    /// 4.13). Between `limits.ttl_min_ms` and `limits.ttl_max_ms`; absent: it never expires.
    #[serde(default, deserialize_with = "whole::opt_unsigned")]
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cas {
    /// The version the key must have (0: it must be absent).
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "whole::unsigned")]
    pub ver: u64,
    #[schema(value_type = Value)]
    pub value: Value,
    /// As for a put.
    #[serde(default, deserialize_with = "whole::opt_unsigned")]
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Incr {
    /// Added to the key's integer (default 1; an absent key counts as 0).
    #[serde(default, deserialize_with = "whole::signed")]
    pub by: Option<i64>,
}

/// A key's value and version (`ver` 0 and no `value`: absent).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Val {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub value: Option<serde_json::Value>,
    pub ver: u64,
    /// When the key expires (Unix ms), if it was written with `ttl_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Vals {
    pub items: Vec<Val>,
    pub more: bool,
}

/// A state change's result: the entry's seq (absent when deleting an absent key stored
/// nothing), the key's version, and for `incr` the new value.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Done {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub ver: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Presence {
    pub members: Vec<Member>,
}

/// A connection visible in a room's presence.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Member {
    pub conn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub info: Option<serde_json::Value>,
}

/// A room's numbers at the moment it answered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomInfo {
    pub room: String,
    /// Changes when the room's history was reset (SPEC.md 1).
    pub epoch: u64,
    /// The oldest retained seq (`last + 1` when the log is empty).
    pub first: u64,
    /// The last durable seq (0: empty log).
    pub last: u64,
    pub subscribers: u64,
    /// Subscribers visible in presence.
    pub members: u64,
    pub keys: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Rooms {
    /// Names of the rooms loaded in memory now (in use, or used recently), in name order.
    pub rooms: Vec<String>,
    pub more: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Disconnect {
    /// `true`: close with 4004, and the SDK reconnects; `false` (default): close with 4403,
    /// and it does not.
    pub reconnect: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Disconnected {
    /// How many connections of the user were closed.
    pub connections: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Unsubscribed {
    /// How many subscriptions of the user's connections were ended.
    pub subscriptions: u64,
}

/// A message deletion's result.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// The seq of the `del` entry.
    pub seq: u64,
    /// The message was already deleted: `seq` is the first deletion's.
    pub dup: bool,
}

/// Integers as JSON Schema reads them: `3.0` is the integer 3 (schema-valid, so a client's JSON
/// library may write it so), `3.5` is not an integer.
mod whole {
    use serde::de::{Deserializer, Error, Visitor};

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = i128;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i128, E> {
            Ok(i128::from(v))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i128, E> {
            Ok(i128::from(v))
        }

        #[allow(clippy::cast_possible_truncation)]
        fn visit_f64<E: Error>(self, v: f64) -> Result<i128, E> {
            // Within i64's range and whole: exact as an i128.
            if v.fract() == 0.0 && v.abs() < 9.3e18 {
                Ok(v as i128)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }

    pub(super) fn unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let v = d.deserialize_any(Whole)?;
        u64::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
    }

    pub(super) fn opt_unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        unsigned(d).map(Some)
    }

    pub(super) fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let v = d.deserialize_any(Whole)?;
        i64::try_from(v)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{v} is out of range")))
    }
}
