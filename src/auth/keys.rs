//! The keys tokens are verified with: the HMAC secret, a PEM public key, the keys of a JWKS
//! document (file or URL), and which of them may verify a given token.
//!
//! Every key belongs to one algorithm family (HMAC, RSA, EC, Ed) and a token is only ever
//! checked against keys of its `alg`'s family: an HMAC token is never checked with a public key
//! as its secret (the classic algorithm confusion), nor an RSA token with an EC key.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::JwtAlgorithm;

/// A key that cannot be loaded: the server does not start (like a bad TLS file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} holds a private key: give roomd the public key only (openssl pkey -in KEY -pubout)"
    )]
    PrivateKey(PathBuf),
    #[error("{0} is not a PEM public key of a supported kind (RSA, EC P-256 or P-384, Ed25519)")]
    NotPublicKey(PathBuf),
    #[error("{path}: {source}")]
    Jwks { path: PathBuf, source: JwksError },
    #[error("auth.jwks_url {0:?} is not a URL")]
    Url(String),
    #[error("cannot set up https for auth.jwks_url: {0}")]
    Tls(String),
}

/// A JWKS document roomd cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no usable signing key (RSA, EC P-256 or P-384, Ed25519{})", if *.oct { ", oct" } else { "" })]
    NoKeys {
        /// Whether symmetric keys were acceptable.
        oct: bool,
    },
}

/// One verification key.
pub(crate) struct Key {
    /// The JWK's `kid`; none for the configured secret and PEM key.
    pub(super) kid: Option<String>,
    /// The one algorithm this key verifies (a JWK's `alg`, an EC key's curve); `None`: any of
    /// its family.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl Key {
    /// The HMAC secret `auth.jwt_secret`.
    pub(super) fn secret(secret: &str) -> Key {
        Key {
            kid: None,
            alg: None,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub(super) fn accepts(&self, alg: Algorithm) -> bool {
        self.decoding.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }

    pub(super) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The algorithms this key may verify.
    pub(super) fn algorithms(&self) -> Vec<Algorithm> {
        match self.alg {
            Some(alg) => vec![alg],
            None => self.decoding.family().algorithms().to_vec(),
        }
    }
}

/// The keys that may verify a token with this `alg` and `kid`: those with its `kid`, or when
/// none has it, those without a `kid` (the configured secret and PEM key); a token without a
/// `kid` may be verified by any key of its algorithm.
pub(super) fn candidates<'k>(
    keys: impl Iterator<Item = &'k Key> + Clone,
    alg: Algorithm,
    kid: Option<&str>,
) -> Vec<&'k Key> {
    let usable = keys.filter(move |k| k.accepts(alg));
    let Some(kid) = kid else {
        return usable.collect();
    };
    let named: Vec<&Key> = usable
        .clone()
        .filter(|k| k.kid.as_deref() == Some(kid))
        .collect();
    if named.is_empty() {
        usable.filter(|k| k.kid.is_none()).collect()
    } else {
        named
    }
}

/// Reads `auth.public_key`. PEM reading is quick and happens once, at startup.
pub(super) fn read_pem(path: &Path) -> Result<Key, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(KeyError::PrivateKey(path.to_owned()));
    }
    let key = |decoding, alg| Key {
        kid: None,
        alg,
        decoding,
    };
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(key(k, None));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok(key(k, Some(Algorithm::EdDSA)));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        // An uncompressed SEC1 point: 1 + 2 × the coordinate size names the curve.
        let alg = match k.as_bytes().len() {
            65 => Algorithm::ES256,
            97 => Algorithm::ES384,
            _ => return Err(KeyError::NotPublicKey(path.to_owned())),
        };
        return Ok(key(k, Some(alg)));
    }
    Err(KeyError::NotPublicKey(path.to_owned()))
}

/// Reads `auth.jwks_file`, which may hold symmetric (`oct`) keys: it is as private as the
/// config file.
pub(super) fn read_jwks_file(path: &Path) -> Result<Vec<Key>, KeyError> {
    let text = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_jwks(&text, true).map_err(|source| KeyError::Jwks {
        path: path.to_owned(),
        source,
    })
}

/// The usable keys of a JWKS document. Keys roomd cannot use (encryption keys, other curves,
/// unknown types, `oct` when not `oct_allowed`) are skipped, as RFC 7517 section 5 asks; a
/// document with no usable key is an error.
pub(super) fn parse_jwks(doc: &[u8], oct_allowed: bool) -> Result<Vec<Key>, JwksError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(doc)?;
    let keys: Vec<Key> = doc
        .keys
        .into_iter()
        .filter_map(|value| {
            let key = serde_json::from_value::<Jwk>(value)
                .map_err(|e| e.to_string())
                .and_then(|jwk| from_jwk(&jwk, oct_allowed).map_err(str::to_string));
            key.map_err(|why| tracing::debug!(%why, "JWKS key skipped"))
                .ok()
        })
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoKeys { oct: oct_allowed });
    }
    Ok(keys)
}

/// One JWK as a verification key, or why it is skipped.
fn from_jwk(jwk: &Jwk, oct_allowed: bool) -> Result<Key, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let declared = jwk
        .common
        .key_algorithm
        .map(signing_algorithm)
        .transpose()?;
    // An EC or Ed key verifies exactly one algorithm, named by its curve.
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => Some(match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("an unsupported curve"),
        }),
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            _ => return Err("an unsupported curve"),
        },
        AlgorithmParameters::OctetKey(_) if !oct_allowed => {
            return Err("a symmetric key, which is not taken from a URL")
        }
        AlgorithmParameters::RSA(_) | AlgorithmParameters::OctetKey(_) => None,
    };
    if declared.is_some() && implied.is_some() && declared != implied {
        return Err("its `alg` does not fit its curve");
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|_| "malformed key parameters")?;
    let alg = declared.or(implied);
    if alg.is_some_and(|a| a.family() != decoding.family()) {
        return Err("its `alg` does not fit its key type");
    }
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        decoding,
    })
}

/// A JWK `alg` that is a signature algorithm roomd verifies.
fn signing_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, &'static str> {
    Ok(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return Err("not a signature algorithm roomd verifies"),
    })
}

/// The library's name for a configured algorithm.
pub(super) fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::EncodingKey;

    fn ec_jwk(kid: &str) -> serde_json::Value {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    #[test]
    fn jwks_skips_what_it_cannot_use() {
        let doc = serde_json::json!({"keys": [
            ec_jwk("ec"),
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "kid": "big", "x": "AA", "y": "AA"},
            {"kty": "RSA", "use": "enc", "kid": "e", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "RSA-OAEP", "kid": "o", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird"},
        ]});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let kids = |keys: Vec<Key>| keys.into_iter().filter_map(|k| k.kid).collect::<Vec<_>>();
        assert_eq!(kids(parse_jwks(&bytes, false).unwrap()), ["ec"]);
        assert_eq!(kids(parse_jwks(&bytes, true).unwrap()), ["ec", "h"]);
        let empty = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        assert!(matches!(
            parse_jwks(empty, false),
            Err(JwksError::NoKeys { oct: false })
        ));
        assert!(matches!(parse_jwks(b"{}", true), Err(JwksError::Json(_))));
    }

    #[test]
    fn keys_are_picked_by_family_and_kid() {
        let doc = serde_json::json!({"keys": [ec_jwk("a"), ec_jwk("b")]});
        let mut keys = parse_jwks(&serde_json::to_vec(&doc).unwrap(), false).unwrap();
        keys.push(Key::secret("s3cret"));
        let kids = |alg, kid| {
            candidates(keys.iter(), alg, kid)
                .into_iter()
                .map(|k| k.kid.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(Algorithm::ES256, Some("b")), [Some("b".into())]);
        // An unknown kid finds no public key (and no secret: wrong family).
        assert!(kids(Algorithm::ES256, Some("z")).is_empty());
        // Not an HMAC key for an HMAC token, whatever the kid says.
        assert_eq!(kids(Algorithm::HS256, Some("a")), [None]);
        assert!(kids(Algorithm::ES384, None).is_empty());
        assert!(kids(Algorithm::RS256, None).is_empty());
        assert_eq!(kids(Algorithm::ES256, None).len(), 2);
    }
}
