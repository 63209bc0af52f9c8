//! Error codes carried by `err` frames and the WebSocket close codes the server uses.
//!
//! Both are part of the contract (SPEC.md sections 6 and 7): clients decide whether to retry or
//! reconnect from the number alone.

/// Declares [`ErrorCode`] from one table: each row is a code's variant, number, SPEC.md name and
/// whether the same request may succeed when retried. One table rather than a match per property,
/// so a new code cannot get a number and no name.
macro_rules! error_codes {
    ($($variant:ident = $num:literal, $name:literal, $retry:literal;)*) => {
        /// The code of an `err` frame. The numbers follow HTTP where a close analogue exists.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation tests and metrics.
            pub const ALL: [ErrorCode; [$($num),*].len()] = [$(ErrorCode::$variant,)*];

            pub const fn as_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $num,)*
                }
            }

            /// The snake_case name used in SPEC.md and in metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// Whether sending the same request again later can succeed without changing it.
            pub const fn retryable(self) -> bool {
                match self {
                    $(ErrorCode::$variant => $retry,)*
                }
            }
        }
    };
}

error_codes! {
    Malformed = 400, "malformed", false;
    Unauthorized = 401, "unauthorized", false;
    Forbidden = 403, "forbidden", false;
    NotSubscribed = 404, "not_subscribed", false;
    UnknownRequest = 405, "unknown_request", false;
    BadRequest = 406, "bad_request", false;
    Conflict = 409, "conflict", true;
    AlreadySubscribed = 410, "already_subscribed", false;
    TooLarge = 413, "too_large", false;
    BadRoom = 414, "bad_room", false;
    NotInteger = 422, "not_integer", false;
    NotAuthor = 423, "not_author", false;
    Limit = 429, "limit", false;
    Unavailable = 503, "unavailable", true;
    Storage = 507, "storage", true;
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_u16() == code)
    }
}

/// WebSocket close codes sent by the server (SPEC.md section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode;

impl CloseCode {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SLOW_CONSUMER: u16 = 4000;
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    pub const AT_CAPACITY: u16 = 4002;
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The application disconnected the connection (for example to end a session); the client
    /// may reconnect.
    pub const DISCONNECTED: u16 = 4004;
    /// Cluster: the node lost its engine (Redis) past its grace, or a room's epoch changed
    /// under it; reconnect, to any node, and resume.
    pub const ENGINE_UNAVAILABLE: u16 = 4005;
    pub const UNAUTHORIZED: u16 = 4401;
    /// The application removed the user: reconnecting would be refused or removed again.
    pub const REMOVED: u16 = 4403;

    /// The SPEC.md rule: does a client reconnect after the server closed with `code`?
    pub const fn should_reconnect(code: u16) -> bool {
        !matches!(code, 1000 | 1002 | 1003 | 1007 | 1008 | 1010 | 4400..=4499)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_u16()), "duplicate code {}", c.as_u16());
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(c));
        }
        assert_eq!(ErrorCode::from_u16(418), None);
    }

    #[test]
    fn every_code_is_in_the_spec() {
        let spec = include_str!("../SPEC.md");
        for c in ErrorCode::ALL {
            let row = format!("| {} | {} |", c.as_u16(), c.name());
            assert!(spec.contains(&row), "SPEC.md lacks a row for {row}");
        }
        for code in [
            1001, 1002, 1007, 1009, 1011, 4000, 4001, 4002, 4003, 4004, 4005, 4401, 4403,
        ] {
            assert!(
                spec.contains(&format!("| {code} |")),
                "SPEC.md lacks close code {code}"
            );
        }
    }

    #[test]
    fn close_families() {
        assert!(CloseCode::should_reconnect(CloseCode::GOING_AWAY));
        assert!(CloseCode::should_reconnect(CloseCode::SLOW_CONSUMER));
        assert!(CloseCode::should_reconnect(1006));
        assert!(!CloseCode::should_reconnect(CloseCode::UNAUTHORIZED));
        assert!(!CloseCode::should_reconnect(CloseCode::PROTOCOL_ERROR));
        assert!(CloseCode::should_reconnect(CloseCode::DISCONNECTED));
        assert!(!CloseCode::should_reconnect(CloseCode::REMOVED));
    }
}
