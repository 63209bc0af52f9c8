//! The subset of MessagePack that state values and presence info may hold (SPEC.md section
//! 4.5): what every client's decoder reads without failing, so one client's value cannot make a
//! room unreadable for the others.
//!
//! Accepted: nil, bool, integers, floats, str (valid UTF-8), bin, arrays, and maps whose keys
//! are all str; recursively, with arrays and maps nested at most [`MAX_VALUE_DEPTH`] deep.
//! Refused: ext types (timestamps included), map keys of any other type, and deeper nesting.

use rmpv::Value;

/// How deep arrays and maps may nest in a value: `[[1]]` is depth 2, a scalar depth 0.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Why a value is outside the accepted subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeValue {
    #[error("ext type {0} is not allowed")]
    Ext(i8),
    #[error("a map key is {0}; map keys must be strings")]
    MapKey(&'static str),
    #[error("a string is not valid UTF-8")]
    Utf8,
    #[error("arrays and maps nest deeper than {MAX_VALUE_DEPTH}")]
    TooDeep,
}

/// Checks that `value` is in the accepted subset. Walks the value once, without allocating;
/// recursion is bounded by [`MAX_VALUE_DEPTH`].
pub fn check_value(value: &Value) -> Result<(), UnsafeValue> {
    check(value, 0)
}

/// `level`: how many arrays and maps enclose `value`.
fn check(value: &Value, level: usize) -> Result<(), UnsafeValue> {
    match value {
        Value::Nil
        | Value::Boolean(_)
        | Value::Integer(_)
        | Value::F32(_)
        | Value::F64(_)
        | Value::Binary(_) => Ok(()),
        Value::String(s) => s.as_str().map(|_| ()).ok_or(UnsafeValue::Utf8),
        Value::Array(items) => {
            if level >= MAX_VALUE_DEPTH {
                return Err(UnsafeValue::TooDeep);
            }
            items.iter().try_for_each(|v| check(v, level + 1))
        }
        Value::Map(entries) => {
            if level >= MAX_VALUE_DEPTH {
                return Err(UnsafeValue::TooDeep);
            }
            entries.iter().try_for_each(|(k, v)| {
                match k {
                    Value::String(s) if s.is_str() => {}
                    Value::String(_) => return Err(UnsafeValue::Utf8),
                    other => return Err(UnsafeValue::MapKey(type_name(other))),
                }
                check(v, level + 1)
            })
        }
        Value::Ext(t, _) => Err(UnsafeValue::Ext(*t)),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a bool",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bin",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an ext",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = Value::from(1);
        for i in 0..depth {
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Map(vec![(Value::from("k"), v)])
            };
        }
        v
    }

    #[test]
    fn the_subset_is_accepted() {
        let v = Value::Map(vec![
            ("n".into(), Value::Nil),
            ("b".into(), true.into()),
            ("i".into(), (-3).into()),
            ("u".into(), u64::MAX.into()),
            ("f".into(), Value::F32(1.5)),
            ("d".into(), 2.5.into()),
            ("s".into(), "x".into()),
            ("bin".into(), Value::Binary(vec![0xff])),
            ("a".into(), Value::Array(vec![Value::Map(vec![])])),
        ]);
        assert_eq!(check_value(&v), Ok(()));
        assert_eq!(check_value(&nested(MAX_VALUE_DEPTH)), Ok(()));
        assert_eq!(check_value(&Value::from(7)), Ok(()));
    }

    #[test]
    fn others_are_refused() {
        let key = |k: Value| Value::Map(vec![(k, 1.into())]);
        assert_eq!(
            check_value(&key(true.into())),
            Err(UnsafeValue::MapKey("a bool"))
        );
        assert_eq!(
            check_value(&Value::Array(vec![key(1.into())])),
            Err(UnsafeValue::MapKey("an integer"))
        );
        assert_eq!(
            check_value(&key(Value::Binary(b"k".to_vec()))),
            Err(UnsafeValue::MapKey("bin"))
        );
        assert_eq!(
            check_value(&key(Value::Nil)),
            Err(UnsafeValue::MapKey("nil"))
        );
        assert_eq!(
            check_value(&Value::Ext(-1, vec![0; 4])),
            Err(UnsafeValue::Ext(-1))
        );
        // A str of one invalid byte (rmpv has no constructor for one but its decoder).
        let bad_utf8 = rmpv::decode::read_value(&mut &[0xa1, 0xff][..]).unwrap();
        assert!(matches!(bad_utf8, Value::String(_)));
        assert_eq!(check_value(&bad_utf8), Err(UnsafeValue::Utf8));
        assert_eq!(check_value(&key(bad_utf8)), Err(UnsafeValue::Utf8));
        assert_eq!(
            check_value(&nested(MAX_VALUE_DEPTH + 1)),
            Err(UnsafeValue::TooDeep)
        );
    }
}
