//! Connection authentication: HS256 JWTs when a secret is configured (SPEC.md section 9).
//!
//! Without a secret the broker is open and a connection may name itself with `user`; with one,
//! the token's `sub` is the user id and the self-declared name is ignored.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("a token is required (query parameter `token` or an Authorization: Bearer header)")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub(crate) struct Auth {
    key: Option<DecodingKey>,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Auth {
    pub(crate) fn new(secret: &str) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // SPEC.md: an expired token is refused, with no grace period.
        validation.leeway = 0;
        Auth {
            key: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            validation,
        }
    }

    /// The user id of a new connection, or why it is refused.
    pub(crate) fn identify(
        &self,
        token: Option<&str>,
        declared_user: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        let Some(key) = &self.key else {
            return Ok(declared_user.map(str::to_string));
        };
        let token = token.ok_or(AuthError::Missing)?;
        let data = decode::<Claims>(token, key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > 64 {
            return Err(AuthError::Invalid("sub must be 1 to 64 bytes".into()));
        }
        Ok(Some(sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &str, sub: &str, exp: u64) -> String {
        #[derive(serde::Serialize)]
        struct C<'a> {
            sub: &'a str,
            exp: u64,
        }
        encode(
            &Header::default(),
            &C { sub, exp },
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn open_server_takes_declared_user() {
        assert_eq!(
            Auth::new("").identify(None, Some("ada")),
            Ok(Some("ada".into()))
        );
    }

    #[test]
    fn tokens_are_checked() {
        let auth = Auth::new("s3cret");
        let far = 4_000_000_000;
        assert_eq!(
            auth.identify(Some(&token("s3cret", "ada", far)), Some("eve")),
            Ok(Some("ada".into()))
        );
        assert_eq!(auth.identify(None, None), Err(AuthError::Missing));
        assert!(auth
            .identify(Some(&token("other", "ada", far)), None)
            .is_err());
        assert!(auth
            .identify(Some(&token("s3cret", "ada", 1)), None)
            .is_err());
        assert!(auth.identify(Some("garbage"), None).is_err());
    }
}
