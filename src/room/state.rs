//! A room's key/value state and its atomic operations.
//!
//! Mutations are evaluated by the room task when it forms a write batch, against the committed
//! state plus the batch's earlier effects (the overlay). Only after the batch is durable are the
//! effects applied, so `get` and `list` never show a value a crash could take back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use roomd_protocol::{ErrorCode, StateItem, Value};

use super::Mutation;
use crate::peer::ReplyError;
use crate::store::reader::StoredKey;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub ver: u64,
    pub value: Value,
    /// The value as stored and sent: shared by every snapshot that holds it.
    pub encoded: Bytes,
    /// When the key expires (Unix ms): it was written with `ttl_ms` (SPEC.md 4.13).
    pub exp: Option<u64>,
    /// The connection the key belongs to: it was written with `ephemeral` (SPEC.md 4.14).
    /// [`ORPHAN`] for one loaded from disk, whose connection ended with its process.
    pub owner: Option<Arc<str>>,
}

/// The owner of an ephemeral key loaded from disk: no connection outlives the process that
/// accepted it, and no connection id is empty.
pub(crate) const ORPHAN: &str = "";

/// A key as a snapshot holds it: (key, version, deadline in Unix ms, encoded value shared with
/// the state).
pub(crate) type SharedKey = (String, u64, Option<u64>, Bytes);

#[derive(Debug, Default)]
pub(crate) struct RoomState {
    map: BTreeMap<String, Entry>,
}

/// The outcome of one mutation: the key's new version and value (`None`: deleted).
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    pub key: String,
    pub ver: u64,
    pub entry: Option<Entry>,
    /// Whether the reply carries the value (incr).
    pub reply_value: bool,
}

impl RoomState {
    pub(crate) fn load(items: Vec<StoredKey>) -> RoomState {
        let mut map = BTreeMap::new();
        let orphan: Arc<str> = Arc::from(ORPHAN);
        for (key, ver, exp, ephemeral, encoded) in items {
            match rmpv::decode::read_value(&mut encoded.as_slice()) {
                Ok(value) => {
                    map.insert(
                        key,
                        Entry {
                            ver,
                            value,
                            encoded: Bytes::from(encoded),
                            exp,
                            owner: ephemeral.then(|| orphan.clone()),
                        },
                    );
                }
                Err(e) => tracing::error!(%key, error = %e, "unreadable state value skipped"),
            }
        }
        RoomState { map }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.map.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every key with its version, deadline and encoded value: a consistent snapshot that
    /// shares the values' bytes with the state.
    pub(crate) fn shared(&self) -> Vec<SharedKey> {
        self.map
            .iter()
            .map(|(k, e)| (k.clone(), e.ver, e.exp, e.encoded.clone()))
            .collect()
    }

    /// The keys that expire, with their deadlines (Unix ms).
    pub(crate) fn expiring(&self) -> impl Iterator<Item = (&str, u64)> {
        self.map
            .iter()
            .filter_map(|(k, e)| e.exp.map(|exp| (k.as_str(), exp)))
    }

    /// The keys written with `ephemeral`, with the connections they belong to.
    pub(crate) fn owned(&self) -> impl Iterator<Item = (&str, &Arc<str>)> {
        self.map
            .iter()
            .filter_map(|(k, e)| e.owner.as_ref().map(|o| (k.as_str(), o)))
    }

    /// Keys with `prefix`, strictly after `after`, at most `limit` and at most `max_bytes` of
    /// encoded items (but at least one); and whether more exist.
    pub(crate) fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<StateItem>, bool) {
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        let mut items = Vec::new();
        let mut more = false;
        let mut bytes = 0;
        for (k, e) in self
            .map
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            let size = item_bytes(k, e);
            if items.len() == limit || (!items.is_empty() && bytes + size > max_bytes) {
                more = true;
                break;
            }
            bytes += size;
            items.push(item(k, e));
        }
        (items, more)
    }

    pub(crate) fn apply(&mut self, effect: Effect) {
        match effect.entry {
            Some(e) => self.map.insert(effect.key, e),
            None => self.map.remove(&effect.key),
        };
    }
}

/// At most the encoded size of `{key, value, ver, exp}`: the map and field-name bytes, the
/// longest string header and integers, the key and the value's encoding.
fn item_bytes(k: &str, e: &Entry) -> usize {
    1 + 4 + 5 + k.len() + 6 + e.encoded.len() + 4 + 9 + 4 + 9
}

fn item(k: &str, e: &Entry) -> StateItem {
    StateItem {
        key: k.to_string(),
        value: e.value.clone(),
        ver: e.ver,
        exp: e.exp,
    }
}

/// The committed state seen through one batch's uncommitted effects.
pub(crate) struct Overlay<'a> {
    base: &'a RoomState,
    changes: HashMap<String, Option<Entry>>,
    len: usize,
    max_keys: usize,
    /// The batch's time (Unix ms): deadlines count from it, and expiries are checked against it.
    now: u64,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a RoomState, max_keys: usize, now: u64) -> Overlay<'a> {
        Overlay {
            base,
            changes: HashMap::new(),
            len: base.len(),
            max_keys,
            now,
        }
    }

    fn current(&self, key: &str) -> Option<&Entry> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.base.get(key),
        }
    }

    /// Evaluates a mutation; `Ok(None)` means it changes nothing (delete of an absent key).
    pub(crate) fn apply(&mut self, op: Mutation) -> Result<Option<Effect>, ReplyError> {
        let (key, cur_ver) = {
            let key = match &op {
                Mutation::Put { key, .. }
                | Mutation::Del { key }
                | Mutation::Cas { key, .. }
                | Mutation::Incr { key, .. }
                | Mutation::Expire { key }
                | Mutation::Release { key, .. } => key.clone(),
            };
            let ver = self.current(&key).map_or(0, |e| e.ver);
            (key, ver)
        };
        let deadline = |ttl_ms: Option<u64>| ttl_ms.map(|t| self.now.saturating_add(t));
        let (new, reply_value) = match op {
            Mutation::Put {
                value,
                encoded,
                ttl_ms,
                owner,
                ..
            } => (Some((value, encoded, deadline(ttl_ms), owner)), false),
            Mutation::Del { .. } if cur_ver == 0 => return Ok(None),
            Mutation::Del { .. } => (None, false),
            // Only while the key still holds a deadline that has passed: a write since the
            // deadline was set moved or removed it.
            Mutation::Expire { .. } => match self.current(&key).and_then(|e| e.exp) {
                Some(exp) if exp <= self.now => (None, false),
                _ => return Ok(None),
            },
            // Only while the key still belongs to the connection that is gone: a write since
            // (by anyone, or without `ephemeral`) took it over.
            Mutation::Release { owner, .. } => {
                match self.current(&key).and_then(|e| e.owner.as_ref()) {
                    Some(o) if *o == owner => (None, false),
                    _ => return Ok(None),
                }
            }
            Mutation::Cas {
                ver,
                value,
                encoded,
                ttl_ms,
                owner,
                ..
            } => {
                if ver != cur_ver {
                    return Err(ReplyError {
                        ver: Some(cur_ver),
                        ..ReplyError::new(
                            ErrorCode::Conflict,
                            format!("version of {key:?} is {cur_ver}, not {ver}"),
                        )
                    });
                }
                (Some((value, encoded, deadline(ttl_ms), owner)), false)
            }
            Mutation::Incr { by, .. } => {
                let cur = match self.current(&key) {
                    None => 0,
                    Some(e) => e.value.as_i64().ok_or_else(|| {
                        ReplyError::new(
                            ErrorCode::NotInteger,
                            format!("value of {key:?} is not an integer"),
                        )
                    })?,
                };
                let sum = cur.checked_add(by).ok_or_else(|| {
                    ReplyError::new(
                        ErrorCode::NotInteger,
                        format!("{cur} + {by} overflows a signed 64-bit integer"),
                    )
                })?;
                let value = Value::from(sum);
                let mut encoded = Vec::with_capacity(9);
                // Writing to a Vec cannot fail.
                let _ = rmpv::encode::write_value(&mut encoded, &value);
                // A counter keeps its key's deadline (a window counted with `incr`) and its
                // owner.
                let exp = self.current(&key).and_then(|e| e.exp);
                let owner = self.current(&key).and_then(|e| e.owner.clone());
                (Some((value, encoded, exp, owner)), true)
            }
        };
        if cur_ver == 0 && new.is_some() && self.len >= self.max_keys {
            return Err(ReplyError {
                max: Some(self.max_keys as u64),
                ..ReplyError::new(
                    ErrorCode::Limit,
                    format!("room holds {} keys, the limit", self.max_keys),
                )
            });
        }
        let entry = new.map(|(value, encoded, exp, owner)| Entry {
            ver: cur_ver + 1,
            value,
            encoded: Bytes::from(encoded),
            exp,
            owner,
        });
        match (cur_ver, &entry) {
            (0, Some(_)) => self.len += 1,
            (v, None) if v > 0 => self.len -= 1,
            _ => {}
        }
        self.changes.insert(key.clone(), entry.clone());
        Ok(Some(Effect {
            ver: entry.as_ref().map_or(0, |e| e.ver),
            key,
            entry,
            reply_value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: i64) -> Mutation {
        let value = Value::from(v);
        let mut encoded = Vec::new();
        rmpv::encode::write_value(&mut encoded, &value).unwrap();
        Mutation::Put {
            key: key.into(),
            value,
            encoded,
            ttl_ms: None,
            owner: None,
        }
    }

    #[test]
    fn overlay_sees_earlier_effects_in_the_batch() {
        let base = RoomState::default();
        let mut o = Overlay::new(&base, 10, 0);
        let e = o.apply(put("a", 1)).unwrap().unwrap();
        assert_eq!(e.ver, 1);
        let e = o
            .apply(Mutation::Incr {
                key: "a".into(),
                by: 2,
            })
            .unwrap()
            .unwrap();
        assert_eq!((e.ver, e.entry.unwrap().value.as_i64()), (2, Some(3)));
        let err = o
            .apply(Mutation::Cas {
                key: "a".into(),
                ver: 1,
                value: Value::Nil,
                encoded: vec![0xc0],
                ttl_ms: None,
                owner: None,
            })
            .unwrap_err();
        assert_eq!((err.code, err.ver), (ErrorCode::Conflict, Some(2)));
        assert!(o
            .apply(Mutation::Del { key: "zz".into() })
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_expiry_deletes_only_a_key_whose_deadline_passed() {
        let mut base = RoomState::default();
        let mut o = Overlay::new(&base, 10, 1000);
        let Mutation::Put {
            key,
            value,
            encoded,
            ..
        } = put("a", 1)
        else {
            unreachable!()
        };
        let timed = Mutation::Put {
            key,
            value,
            encoded,
            ttl_ms: Some(500),
            owner: None,
        };
        let e = o.apply(timed).unwrap().unwrap();
        assert_eq!(e.entry.as_ref().unwrap().exp, Some(1500));
        let counted = Mutation::Incr {
            key: "a".into(),
            by: 1,
        };
        let e = o.apply(counted).unwrap().unwrap();
        assert_eq!(e.entry.as_ref().unwrap().exp, Some(1500), "incr keeps it");
        base.apply(e);
        let expire = || Mutation::Expire { key: "a".into() };
        let mut early = Overlay::new(&base, 10, 1499);
        assert!(early.apply(expire()).unwrap().is_none());
        let mut due = Overlay::new(&base, 10, 1500);
        let e = due.apply(expire()).unwrap().unwrap();
        assert_eq!((e.ver, e.entry.is_none()), (0, true));
        // A put without ttl_ms since: the key no longer expires.
        let mut later = Overlay::new(&base, 10, 2000);
        later.apply(put("a", 5)).unwrap();
        assert!(later.apply(expire()).unwrap().is_none());
    }

    #[test]
    fn a_release_deletes_only_a_key_its_owner_still_holds() {
        let mut base = RoomState::default();
        let owned = |owner: Option<&str>| {
            let Mutation::Put {
                key,
                value,
                encoded,
                ..
            } = put("lock", 1)
            else {
                unreachable!()
            };
            Mutation::Put {
                key,
                value,
                encoded,
                ttl_ms: None,
                owner: owner.map(Arc::from),
            }
        };
        let release = |owner: &str| Mutation::Release {
            key: "lock".into(),
            owner: Arc::from(owner),
        };
        let mut o = Overlay::new(&base, 10, 0);
        let e = o.apply(owned(Some("c1"))).unwrap().unwrap();
        base.apply(e);
        let mut o = Overlay::new(&base, 10, 0);
        let counted = Mutation::Incr {
            key: "lock".into(),
            by: 1,
        };
        let e = o.apply(counted).unwrap().unwrap();
        assert_eq!(
            e.entry.as_ref().unwrap().owner.as_deref(),
            Some("c1"),
            "incr keeps it"
        );
        assert!(o.apply(release("c2")).unwrap().is_none(), "not c2's");
        let e = o.apply(release("c1")).unwrap().unwrap();
        assert_eq!((e.ver, e.entry.is_none()), (0, true));
        // Taken over by c2 (or written without `ephemeral`): c1's end changes nothing.
        for next in [Some("c2"), None] {
            let mut o = Overlay::new(&base, 10, 0);
            o.apply(owned(next)).unwrap();
            assert!(o.apply(release("c1")).unwrap().is_none());
        }
    }

    #[test]
    fn key_limit_and_incr_errors() {
        let base = RoomState::default();
        let mut o = Overlay::new(&base, 1, 0);
        o.apply(put("a", 1)).unwrap();
        assert_eq!(o.apply(put("b", 1)).unwrap_err().code, ErrorCode::Limit);
        o.apply(put("a", i64::MAX)).unwrap();
        let e = o
            .apply(Mutation::Incr {
                key: "a".into(),
                by: 1,
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotInteger);
    }

    #[test]
    fn list_pages_by_prefix() {
        let mut s = RoomState::default();
        for k in ["a", "u:1", "u:2", "u:3", "v"] {
            s.apply(Effect {
                key: k.into(),
                ver: 1,
                entry: Some(Entry {
                    ver: 1,
                    value: Value::Nil,
                    encoded: Bytes::from_static(&[0xc0]),
                    exp: None,
                    owner: None,
                }),
                reply_value: false,
            });
        }
        let (items, more) = s.list("u:", None, 2, usize::MAX);
        assert_eq!((items.len(), more), (2, true));
        let (items, more) = s.list("u:", Some("u:2"), 2, usize::MAX);
        assert_eq!(
            (items[0].key.as_str(), items.len(), more),
            ("u:3", 1, false)
        );
    }
}
