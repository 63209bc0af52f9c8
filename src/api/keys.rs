//! API keys: who is calling, and whether the key grants the scope an operation needs.
//!
//! Keys are kept as SHA-256 digests and a presented key is hashed and compared with every
//! configured digest in constant time, so neither the comparison's duration nor which entry
//! matched tells an attacker how much of a guess was right.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use roomd_protocol::ErrorCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::Ctx;
use crate::config::{ApiConfig, Scope};

struct Key {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

pub(crate) struct Keys(Vec<Key>);

impl Keys {
    pub(crate) fn new(config: &ApiConfig) -> Keys {
        Keys(
            config
                .keys
                .iter()
                .map(|k| Key {
                    name: Arc::from(k.name.as_str()),
                    digest: Sha256::digest(k.key.as_bytes()).into(),
                    scopes: k.scopes.clone(),
                })
                .collect(),
        )
    }

    /// The key named by an `Authorization: Bearer KEY` header.
    fn find(&self, header: Option<&str>) -> Result<&Key, ApiError> {
        if self.0.is_empty() {
            return Err(unauthorized(
                "the server API has no keys: configure [[api.keys]]",
            ));
        }
        let presented = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| unauthorized("send the API key as `Authorization: Bearer KEY`"))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every entry is compared, whichever matches.
        let mut found = None;
        for key in &self.0 {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.ok_or_else(|| unauthorized("unknown API key"))
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The key a request came with.
pub(crate) struct Caller {
    pub name: Arc<str>,
    scopes: Vec<Scope>,
}

impl Caller {
    /// 403 unless the key has `scope`.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "API key {:?} lacks the scope `{}`",
                    &*self.name,
                    scope.name()
                ),
            ))
        }
    }
}

impl FromRequestParts<Arc<Ctx>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let key = ctx.keys.find(header)?;
        Ok(Caller {
            name: key.name.clone(),
            scopes: key.scopes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn keys() -> Keys {
        Keys::new(&ApiConfig {
            keys: vec![
                ApiKeyConfig {
                    name: "a".into(),
                    key: "aaaaaaaaaaaaaaaaaaaa".into(),
                    scopes: vec![Scope::Publish],
                },
                ApiKeyConfig {
                    name: "b".into(),
                    key: "bbbbbbbbbbbbbbbbbbbb".into(),
                    scopes: vec![Scope::Admin],
                },
            ],
            ..ApiConfig::default()
        })
    }

    #[test]
    fn finds_the_key_by_its_secret_with_any_case_of_bearer() {
        let keys = keys();
        let found = |h: &str| keys.find(Some(h)).map(|k| k.name.to_string());
        assert_eq!(
            found("Bearer bbbbbbbbbbbbbbbbbbbb").ok().as_deref(),
            Some("b")
        );
        assert_eq!(
            found("bearer aaaaaaaaaaaaaaaaaaaa").ok().as_deref(),
            Some("a")
        );
        assert_eq!(
            found("Bearer aaaaaaaaaaaaaaaaaaa").map_err(|e| e.code),
            Err(401)
        );
        assert_eq!(
            found("Basic aaaaaaaaaaaaaaaaaaaa").map_err(|e| e.code),
            Err(401)
        );
        assert_eq!(keys.find(None).map(|_| ()).map_err(|e| e.code), Err(401));
        assert!(Keys::new(&ApiConfig::default())
            .find(Some("Bearer aaaaaaaaaaaaaaaaaaaa"))
            .is_err());
    }
}
