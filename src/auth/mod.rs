//! Connection authentication (SPEC.md section 9): JWTs verified with an HMAC secret, a PEM
//! public key, or the keys of a JWKS document (a file, or a URL fetched and cached).
//!
//! Without any key the broker is open and a connection may name itself with `user`; with one,
//! every connection needs a token, and its verified `sub` is the user id.
//!
//! - [`keys`]: the keys, and which of them may verify a token (its `alg`'s family, its `kid`).
//! - [`jwks`]: the JWKS of `auth.jwks_url`: cached, refetched for unknown key ids, bounded.
//! - [`claims`]: what a verified token says: the user id, its expiry, its room grants.

mod claims;
mod jwks;
mod keys;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};

use self::claims::Claims;
use self::jwks::{RemoteJwks, Snapshot};
use self::keys::Key;
use crate::capability::Grant;
use crate::config::AuthConfig;

pub(crate) use self::claims::{check_pattern, valid_user_id};
pub(crate) use self::keys::KeyError;

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The user id: the token's verified `sub`, or on an open server the self-declared `user`
    /// (unverified).
    pub(crate) user: Option<String>,
    /// True when `user` comes from a verified token.
    pub(crate) verified: bool,
    /// The token's `exp` as Unix seconds (None on an open server).
    pub(crate) expires_at: Option<u64>,
    /// The token's `rooms` claim, None when the claim is absent (namespace defaults apply).
    pub(crate) rooms: Option<Vec<Grant>>,
}

impl Identity {
    /// A connection admitted without a token on a server that checks them
    /// (`permissions.allow_anonymous`).
    pub(crate) fn anonymous() -> Identity {
        Identity {
            user: None,
            verified: false,
            expires_at: None,
            rooms: None,
        }
    }

    /// A connection on an open server: the user it names, if that is a valid user id (an
    /// invalid one is ignored, as a missing one is).
    fn declared(user: Option<&str>) -> Identity {
        Identity {
            user: user.filter(|u| valid_user_id(u)).map(str::to_string),
            verified: false,
            expires_at: None,
            rooms: None,
        }
    }
}

/// Why a token is refused; the message goes to the client in its `err` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("a token is required (query parameter `token` or an Authorization: Bearer header)")]
    Missing,
    #[error("this server is open: it verifies no tokens")]
    Open,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("invalid token: algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("invalid token: no key{} for its algorithm", kid.as_ref().map(|k| format!(" with id {k:?}")).unwrap_or_default())]
    NoKey { kid: Option<String> },
    #[error("invalid token: bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    #[error("token issuer (iss) not accepted")]
    Issuer,
    #[error("token audience (aud) not accepted")]
    Audience,
    #[error("invalid token: the claim `{0}` is required")]
    MissingClaim(String),
    #[error("invalid token: sub must be 1 to 64 bytes with no control or bidirectional formatting characters")]
    Subject,
    #[error("invalid token: bad `rooms` claim: {0}")]
    Rooms(String),
}

/// The token checks of one server.
pub(crate) struct Auth {
    /// Whether a token is required (some key source is configured).
    enabled: bool,
    /// The configured secret and PEM key, and the keys of the JWKS file.
    keys: Vec<Key>,
    remote: Option<Arc<RemoteJwks>>,
    /// The checks for each accepted algorithm (the library checks one family at a time).
    validations: Vec<(Algorithm, Validation)>,
}

impl Auth {
    /// Loads every configured key; with `auth.jwks_url`, fetches it once (see
    /// [`RemoteJwks::start`] for a failed first fetch). A key that cannot be loaded is an error:
    /// the server does not start with less authentication than its config asks for.
    pub(crate) async fn new(config: &AuthConfig) -> Result<Auth, KeyError> {
        let mut keys = Vec::new();
        if !config.jwt_secret.is_empty() {
            keys.push(Key::secret(&config.jwt_secret));
        }
        if let Some(path) = &config.public_key {
            keys.push(keys::read_pem(path)?);
        }
        if let Some(path) = &config.jwks_file {
            keys.extend(keys::read_jwks_file(path)?);
        }
        let remote = match &config.jwks_url {
            Some(url) => Some(RemoteJwks::start(url, config).await?),
            None => None,
        };
        let accepted = accepted(config, &keys, remote.is_some());
        warn_keyless(&accepted, &keys, remote.is_some());
        let validations = accepted
            .into_iter()
            .map(|alg| (alg, validation(alg, config)))
            .collect();
        Ok(Auth {
            enabled: config.enabled(),
            keys,
            remote,
            validations,
        })
    }

    /// Whether connections need a token.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The identity of a new connection: its token (from the query or the header) or, on an
    /// open server, the user it declares.
    pub(crate) async fn identify(
        &self,
        token: Option<&str>,
        declared_user: Option<&str>,
    ) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Ok(Identity::declared(declared_user));
        }
        self.verify(token.ok_or(AuthError::Missing)?).await
    }

    /// Verifies a token: its signature with a key of its `alg`'s family (and its `kid`), then
    /// `exp`, `nbf`, `iss`, `aud`, `sub` and `rooms`. Awaits a JWKS fetch only when the token
    /// names a key id no key has (bounded: see [`jwks`]).
    pub(crate) async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if !self.enabled {
            return Err(AuthError::Open);
        }
        // The header's `alg` must parse as a signature algorithm: `none` never does.
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        let (alg, kid) = (header.alg, header.kid.as_deref());
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthError::Algorithm(format!("{alg:?}")))?;
        let remote = self.remote_keys(alg, kid).await;
        let candidates = keys::candidates(self.keys.iter().chain(remote.keys.iter()), alg, kid);
        if candidates.is_empty() {
            return Err(AuthError::NoKey {
                kid: kid.map(printable),
            });
        }
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key.decoding(), validation) {
                Ok(data) => return data.claims.into_identity(),
                // Several keys may share a family and have no `kid`: try the next.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(from_library(&e)),
            }
        }
        Err(AuthError::Signature)
    }

    /// The JWKS keys to verify a token with: the cached ones, or when the token's `kid` is
    /// held by no key at all, the ones after a refetch (which may not happen: see [`jwks`]).
    async fn remote_keys(&self, alg: Algorithm, kid: Option<&str>) -> Snapshot {
        let Some(remote) = &self.remote else {
            return Snapshot::default();
        };
        let cached = remote.current();
        let Some(kid) = kid else {
            return cached;
        };
        let known = self
            .keys
            .iter()
            .chain(cached.keys.iter())
            .any(|k| k.kid.as_deref() == Some(kid));
        if known || !RemoteJwks::serves(alg) {
            return cached;
        }
        remote.refetch(cached.generation).await
    }

    /// The JWKS refresh, for the server to run as a background task (see
    /// [`RemoteJwks::refresher`]); `None` without `auth.jwks_url`.
    pub(crate) fn refresher(
        &self,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.remote.as_ref().map(RemoteJwks::refresher)
    }
}

/// The token of an `Authorization` header value: the scheme `Bearer` in any case (RFC 7235
/// section 2.1: auth schemes are case-insensitive), then the token.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The algorithms tokens may use: `auth.algorithms`, or every algorithm of the keys configured
/// (for a JWKS URL, every public-key algorithm: its keys may change).
fn accepted(config: &AuthConfig, keys: &[Key], remote: bool) -> Vec<Algorithm> {
    if !config.algorithms.is_empty() {
        return config
            .algorithms
            .iter()
            .map(|a| keys::algorithm(*a))
            .collect();
    }
    let public = [
        AlgorithmFamily::Rsa,
        AlgorithmFamily::Ec,
        AlgorithmFamily::Ed,
    ];
    let from_remote = public
        .iter()
        .filter(|_| remote)
        .flat_map(|f| f.algorithms().iter().copied());
    let mut out: Vec<Algorithm> = Vec::new();
    for alg in keys.iter().flat_map(Key::algorithms).chain(from_remote) {
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    out
}

/// Logs each accepted algorithm that no key can verify (`auth.algorithms` naming, say, ES256
/// beside an RSA public key): its tokens would all be refused.
fn warn_keyless(accepted: &[Algorithm], keys: &[Key], remote: bool) {
    for alg in accepted {
        let from_remote = remote && RemoteJwks::serves(*alg);
        if !from_remote && !keys.iter().any(|k| k.accepts(*alg)) {
            tracing::warn!("auth.algorithms lists {alg:?}, but no configured key verifies it");
        }
    }
}

/// The claim checks of one algorithm.
fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    // The library checks `iss` and `aud` only when present, unless they are required.
    let mut required = vec!["exp", "sub"];
    if !config.issuer.is_empty() {
        v.set_issuer(&config.issuer);
        required.push("iss");
    }
    if !config.audience.is_empty() {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// The library's verdict as the client is told it.
fn from_library(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        _ => invalid(e),
    }
}

fn invalid(e: &impl std::fmt::Display) -> AuthError {
    AuthError::Invalid(printable(&e.to_string()))
}

/// Text from a token, made safe to log and to send back: at most 200 characters, control
/// characters replaced (a token's header is anyone's to write).
fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
