//! The claims roomd reads from a verified token, and the rules for user ids and room grants.
//!
//! `exp`, `nbf`, `iss` and `aud` are checked by `jsonwebtoken` before these are read; here are
//! the claims that become the connection's [`Identity`].

use serde::Deserialize;

use super::{AuthError, Identity};
use crate::capability::Grant;

/// The longest user id, in bytes (SPEC.md section 2).
pub(crate) const MAX_USER_BYTES: usize = 64;

/// The claims of a token, as signed. `sub` and `exp` are required, but by the library's
/// checks (which run after this is read), so a token without one is told which it lacks.
#[derive(Deserialize)]
pub(super) struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// A NumericDate: seconds since the epoch, possibly with a fraction (RFC 7519 section 2).
    #[serde(default)]
    exp: Option<serde_json::Number>,
    /// Read after the signature is checked, so a bad grant gets its own message.
    #[serde(default)]
    rooms: Option<serde_json::Value>,
}

impl Claims {
    /// The identity a verified token carries, or why its claims are unusable.
    pub(super) fn into_identity(self) -> Result<Identity, AuthError> {
        let sub = self
            .sub
            .filter(|s| valid_user_id(s))
            .ok_or(AuthError::Subject)?;
        let exp = self
            .exp
            .ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
        let rooms = self.rooms.map(parse_rooms).transpose()?;
        Ok(Identity {
            user: Some(sub),
            verified: true,
            expires_at: Some(numeric_date(&exp)),
            rooms,
        })
    }
}

/// Whole seconds of a NumericDate (the library has already checked that `exp` is one).
fn numeric_date(n: &serde_json::Number) -> u64 {
    // A float `exp` is truncated; `as` saturates, and `exp` is in the future, so not negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    n.as_u64()
        .unwrap_or_else(|| n.as_f64().map_or(0, |f| f as u64))
}

/// The `rooms` claim: a list of `{match, allow}` with known capabilities and valid patterns.
fn parse_rooms(value: serde_json::Value) -> Result<Vec<Grant>, AuthError> {
    let grants: Vec<Grant> =
        serde_json::from_value(value).map_err(|e| AuthError::Rooms(e.to_string()))?;
    for grant in &grants {
        check_pattern(&grant.pattern)
            .map_err(|why| AuthError::Rooms(format!("match {:?}: {why}", grant.pattern)))?;
    }
    Ok(grants)
}

/// A grant's `match`: an exact room name or a prefix ending in `*`, either of which may hold
/// `{sub}` (the token's user id). Anything else is refused rather than guessed at, so a typo in
/// an issuer's grant cannot widen it.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("is empty");
    }
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err("a `*` may only end the pattern");
    }
    if body.replace("{sub}", "").contains(['{', '}']) {
        return Err("the only template is `{sub}`");
    }
    Ok(())
}

/// A user id: 1 to 64 bytes with no control characters and no bidirectional formatting
/// characters (which would let a name display as another, or reorder the text around it).
/// The same rule as a `client` id's (`roomd_protocol::valid_id`).
pub(crate) fn valid_user_id(user: &str) -> bool {
    roomd_protocol::valid_id(user, MAX_USER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for good in ["ada", "Ada Lovelace", "名前", &"x".repeat(64)] {
            assert!(valid_user_id(good), "{good:?}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a\nb",
            "a\u{0}",
            "a\u{7f}",
            "a\u{85}",
            "evil\u{202E}txt.exe",
            "\u{2066}x\u{2069}",
            "a\u{200F}",
            "a\u{061C}",
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        for good in ["chat:lobby", "chat:*", "*", "inbox:{sub}", "dm:{sub}:*"] {
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        for bad in ["", "a*b", "**", "x:{user}", "x:{sub", "x:}"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rooms_claim() {
        let ok = serde_json::json!([{"match": "chat:*", "allow": ["sub", "pub", "state.read"]}]);
        let grants = parse_rooms(ok).unwrap();
        assert_eq!(grants[0].pattern, "chat:*");
        let err = |v| match parse_rooms(v) {
            Err(AuthError::Rooms(msg)) => msg,
            other => panic!("{other:?}"),
        };
        let msg = err(serde_json::json!([{"match": "a", "allow": ["publish"]}]));
        assert!(
            msg.contains("publish") && msg.contains("state.write"),
            "{msg}"
        );
        let msg = err(serde_json::json!([{"match": "a", "allow": [], "deny": ["sub"]}]));
        assert!(msg.contains("deny"), "{msg}");
        let msg = err(serde_json::json!([{"match": "a*b", "allow": []}]));
        assert!(msg.contains("a*b"), "{msg}");
        assert!(parse_rooms(serde_json::json!({"match": "a"})).is_err());
    }
}
