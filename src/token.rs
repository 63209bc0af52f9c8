//! `roomd token`: a development token signed with the configured HMAC secret, to try an
//! authenticated server (or script against one) without an identity provider.
//!
//! The token is the one SPEC.md section 9 describes, made from the same config the server
//! verifies with: its `iss` and `aud` are the first configured ones, so the server accepts it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::auth;
use crate::capability::{Allow, Capability, Grant};
use crate::config::{AuthConfig, JwtAlgorithm};

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("auth.jwt_secret is not set: the server is open and takes no token (set auth.jwt_secret to require one)")]
    Open,
    #[error("auth.jwt_secret is not set: this config verifies tokens with public keys only, which are signed by whoever holds the private key, not by roomd (set auth.jwt_secret for development tokens)")]
    PublicKeysOnly,
    #[error("auth.algorithms accepts no HMAC algorithm (HS256, HS384, HS512): the server would refuse a token signed with auth.jwt_secret")]
    NoHmacAlgorithm,
    #[error("--user {0:?}: a user id is 1 to 64 bytes with no control or bidirectional formatting characters")]
    User(String),
    #[error("--room {spec:?}: {why}")]
    Room { spec: String, why: String },
    #[error("--ttl {0:?}: expected a positive number of seconds, or a number with s, m, h or d (90s, 15m, 1h, 7d)")]
    Ttl(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// The claims of a minted token.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    /// Absent without `--room`: the server's namespace defaults apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rooms: Vec<Grant>,
}

/// A token for `user`, valid for `ttl`, with a grant per `rooms` entry (`PATTERN=CAP,CAP`,
/// first match wins), signed with `auth.jwt_secret`.
pub fn mint(
    auth: &AuthConfig,
    user: &str,
    rooms: &[String],
    ttl: Duration,
) -> Result<String, TokenError> {
    if auth.jwt_secret.is_empty() {
        return Err(if auth.has_public_keys() {
            TokenError::PublicKeysOnly
        } else {
            TokenError::Open
        });
    }
    if !auth::valid_user_id(user) {
        return Err(TokenError::User(user.to_string()));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        iss: auth.issuer.first().map(String::as_str),
        aud: auth.audience.first().map(String::as_str),
        rooms: rooms
            .iter()
            .map(|r| parse_grant(r))
            .collect::<Result<_, _>>()?,
    };
    let key = EncodingKey::from_secret(auth.jwt_secret.as_bytes());
    jsonwebtoken::encode(&Header::new(hmac_algorithm(auth)?), &claims, &key)
        .map_err(|e| TokenError::Sign(e.to_string()))
}

/// HS256, or the first HMAC algorithm `auth.algorithms` accepts.
fn hmac_algorithm(auth: &AuthConfig) -> Result<Algorithm, TokenError> {
    if auth.algorithms.is_empty() {
        return Ok(Algorithm::HS256);
    }
    auth.algorithms
        .iter()
        .find_map(|a| match a {
            JwtAlgorithm::HS256 => Some(Algorithm::HS256),
            JwtAlgorithm::HS384 => Some(Algorithm::HS384),
            JwtAlgorithm::HS512 => Some(Algorithm::HS512),
            _ => None,
        })
        .ok_or(TokenError::NoHmacAlgorithm)
}

/// `PATTERN=CAP,CAP` (an empty list grants nothing: a deny entry, since the first match wins).
fn parse_grant(spec: &str) -> Result<Grant, TokenError> {
    let bad = |why: String| TokenError::Room {
        spec: spec.to_string(),
        why,
    };
    let (pattern, caps) = spec
        .rsplit_once('=')
        .ok_or_else(|| bad("expected PATTERN=CAP,CAP (e.g. 'chat:*=sub,pub,hist')".into()))?;
    auth::check_pattern(pattern).map_err(|why| bad(format!("the pattern {why}")))?;
    let caps = caps
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|name| {
            Capability::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| bad(format!("unknown capability {name:?} (known: {})", known())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grant {
        pattern: pattern.to_string(),
        allow: Allow::of(caps),
    })
}

fn known() -> String {
    Capability::ALL.map(Capability::name).join(", ")
}

/// A token lifetime: `3600`, `90s`, `15m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, TokenError> {
    let bad = || TokenError::Ttl(text.to_string());
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "0", "h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants() {
        let g = parse_grant("chat:*=sub, pub,hist").unwrap();
        assert_eq!(g.pattern, "chat:*");
        assert!(g.allow.has(Capability::Hist) && !g.allow.has(Capability::StateWrite));
        assert_eq!(parse_grant("secret:*=").unwrap().allow, Allow::NONE);
        let err = parse_grant("chat:*=sub,admin").unwrap_err().to_string();
        assert!(
            err.contains("admin") && err.contains("state.write"),
            "{err}"
        );
        assert!(parse_grant("chat:*").is_err());
        assert!(parse_grant("a*b=sub").is_err());
    }

    #[test]
    fn refuses_without_a_secret() {
        let open = AuthConfig::default();
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint(&open, "ada", &[], ttl),
            Err(TokenError::Open)
        ));
        let public = AuthConfig {
            jwks_url: Some("https://id.example/jwks".into()),
            ..AuthConfig::default()
        };
        assert!(matches!(
            mint(&public, "ada", &[], ttl),
            Err(TokenError::PublicKeysOnly)
        ));
        let secret = AuthConfig {
            jwt_secret: "s3cret".into(),
            algorithms: vec![JwtAlgorithm::RS256],
            ..AuthConfig::default()
        };
        assert!(matches!(
            mint(&secret, "ada", &[], ttl),
            Err(TokenError::NoHmacAlgorithm)
        ));
        assert!(matches!(
            mint(&secret, "a\u{202E}", &[], ttl),
            Err(TokenError::User(_))
        ));
    }
}
