//! The room name grammar (SPEC.md section 4): 1 to `max` bytes of `A-Z a-z 0-9 - _ . : @ / ~`.
//!
//! Names are kept to a URL- and path-safe alphabet so they can appear in links (the chat UI puts
//! them in the URL fragment) and in logs without escaping.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is {len} bytes, longer than {max}")]
    TooLong { len: usize, max: usize },
    #[error("room name has a character outside A-Z a-z 0-9 - _ . : @ / ~ at byte {at}")]
    BadChar { at: usize },
}

pub fn validate_room_name(name: &str, max: usize) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > max {
        return Err(RoomNameError::TooLong {
            len: name.len(),
            max,
        });
    }
    match name.bytes().position(|b| !is_room_byte(b)) {
        Some(at) => Err(RoomNameError::BadChar { at }),
        None => Ok(()),
    }
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'/' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        assert!(validate_room_name("lobby", 128).is_ok());
        assert!(validate_room_name("org/team-1:chat@eu.~x_", 128).is_ok());
        assert_eq!(validate_room_name("", 128), Err(RoomNameError::Empty));
        assert_eq!(
            validate_room_name("a b", 128),
            Err(RoomNameError::BadChar { at: 1 })
        );
        assert!(validate_room_name("é", 128).is_err());
        assert_eq!(
            validate_room_name(&"a".repeat(129), 128),
            Err(RoomNameError::TooLong { len: 129, max: 128 })
        );
    }
}
