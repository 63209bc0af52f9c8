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

/// Whether a user or client id may hold `c`: not a control character, and not one of the
/// Unicode bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E,
/// U+2066..U+2069), which reorder the text shown around them and so let one id pose as another
/// (SPEC.md 9).
pub fn is_unsafe_id_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A user or client id the server accepts: 1 to `max` bytes of safe characters.
pub fn valid_id(id: &str, max: usize) -> bool {
    !id.is_empty() && id.len() <= max && !id.chars().any(is_unsafe_id_char)
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

    #[test]
    fn ids_refuse_control_and_bidi_characters() {
        assert!(valid_id("ada", 64));
        assert!(valid_id("Ada Lovelace (she/her) ✓", 64));
        assert!(!valid_id("", 64));
        assert!(!valid_id(&"a".repeat(65), 64));
        for bad in [
            "a\u{0}b",
            "a\nb",
            "a\u{7f}",
            "\u{202e}eve",
            "x\u{2066}y",
            "\u{200f}",
        ] {
            assert!(!valid_id(bad, 64), "{bad:?}");
        }
    }
}
