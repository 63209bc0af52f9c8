use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::JwtAlgorithm;

const FAR: u64 = 4_000_000_000;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(secret: &str, claims: &serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

fn secret_config(secret: &str) -> AuthConfig {
    AuthConfig {
        jwt_secret: secret.into(),
        ..AuthConfig::default()
    }
}

async fn auth(config: &AuthConfig) -> Auth {
    Auth::new(config).await.unwrap()
}

/// A key pair made with rcgen: the private key for jsonwebtoken, the public key's PEM file.
struct Pair {
    encoding: EncodingKey,
    public_pem: PathBuf,
    _dir: tempfile::TempDir,
}

fn pair(alg: &'static rcgen::SignatureAlgorithm) -> Pair {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    let private = kp.serialize_pem();
    let encoding = if alg == &rcgen::PKCS_RSA_SHA256 {
        EncodingKey::from_rsa_pem(private.as_bytes())
    } else if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(private.as_bytes())
    } else {
        EncodingKey::from_ec_pem(private.as_bytes())
    }
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_pem = dir.path().join("key.pub.pem");
    std::fs::write(&public_pem, kp.public_key_pem()).unwrap();
    Pair {
        encoding,
        public_pem,
        _dir: dir,
    }
}

#[tokio::test]
async fn open_server_takes_a_valid_declared_user() {
    let open = auth(&AuthConfig::default()).await;
    assert!(!open.enabled());
    assert_eq!(open_user(Some("ada")).await, Some("ada".into()));
    assert_eq!(open_user(Some("a\u{202E}b")).await, None);
    assert_eq!(open_user(Some(&"x".repeat(65))).await, None);
    assert_eq!(open_user(None).await, None);
    assert_eq!(open.verify("a.b.c").await, Err(AuthError::Open));
}

async fn open_user(user: Option<&str>) -> Option<String> {
    let open = auth(&AuthConfig::default()).await;
    let id = open.identify(None, user).await.unwrap();
    assert!(!id.verified && id.expires_at.is_none() && id.rooms.is_none());
    id.user
}

#[tokio::test]
async fn hmac_tokens_are_checked() {
    let auth = auth(&secret_config("s3cret")).await;
    let good = hs("s3cret", &json!({"sub": "ada", "exp": FAR}));
    let id = auth.identify(Some(&good), Some("eve")).await.unwrap();
    assert_eq!(id.user.as_deref(), Some("ada"));
    assert!(id.verified);
    assert_eq!(id.expires_at, Some(FAR));
    assert_eq!(id.rooms, None);
    assert_eq!(auth.identify(None, None).await, Err(AuthError::Missing));
    let wrong = hs("other", &json!({"sub": "ada", "exp": FAR}));
    assert_eq!(auth.verify(&wrong).await, Err(AuthError::Signature));
    let expired = hs("s3cret", &json!({"sub": "ada", "exp": 1}));
    assert_eq!(auth.verify(&expired).await, Err(AuthError::Expired));
    let no_exp = hs("s3cret", &json!({"sub": "ada"}));
    assert_eq!(
        auth.verify(&no_exp).await,
        Err(AuthError::MissingClaim("exp".into()))
    );
    let no_sub = hs("s3cret", &json!({"exp": FAR}));
    assert_eq!(
        auth.verify(&no_sub).await,
        Err(AuthError::MissingClaim("sub".into()))
    );
    let float_exp = hs("s3cret", &json!({"sub": "ada", "exp": 4_000_000_000.5}));
    assert_eq!(auth.verify(&float_exp).await.unwrap().expires_at, Some(FAR));
    assert!(matches!(
        auth.verify("garbage").await,
        Err(AuthError::Invalid(_))
    ));
    // HS384 and HS512 with the same secret.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let key = EncodingKey::from_secret(b"s3cret");
        let t = sign(alg, &key, &json!({"sub": "ada", "exp": FAR}));
        assert!(auth.verify(&t).await.is_ok(), "{alg:?}");
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = auth(&secret_config("s3cret")).await;
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = part(json!({"sub": "ada", "exp": FAR}));
    for alg in ["none", "None", "NONE"] {
        let header = part(json!({"alg": alg, "typ": "JWT"}));
        for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(
                matches!(auth.verify(&token).await, Err(AuthError::Invalid(_))),
                "{token}"
            );
        }
    }
}

#[tokio::test]
async fn only_configured_algorithms_are_accepted() {
    let mut config = secret_config("s3cret");
    config.algorithms = vec![JwtAlgorithm::HS512];
    let auth = auth(&config).await;
    let t = hs("s3cret", &json!({"sub": "ada", "exp": FAR}));
    assert_eq!(
        auth.verify(&t).await,
        Err(AuthError::Algorithm("HS256".into()))
    );
}

#[tokio::test]
async fn public_keys_from_pem_verify_their_algorithm_only() {
    for (kind, alg) in [
        (&rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
        (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
    ] {
        let p = pair(kind);
        let config = AuthConfig {
            public_key: Some(p.public_pem.clone()),
            ..AuthConfig::default()
        };
        let auth = auth(&config).await;
        let claims = json!({"sub": "ada", "exp": FAR});
        assert!(auth.verify(&sign(alg, &p.encoding, &claims)).await.is_ok());
        // Another key of the same kind does not verify.
        let other = pair(kind);
        assert_eq!(
            auth.verify(&sign(alg, &other.encoding, &claims)).await,
            Err(AuthError::Signature),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn an_hmac_token_never_verifies_against_a_public_key() {
    let p = pair(&rcgen::PKCS_RSA_SHA256);
    let pem = std::fs::read(&p.public_pem).unwrap();
    let claims = json!({"sub": "mallory", "exp": FAR});
    // The classic attack: the public key's own bytes as the HMAC secret.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(&pem), &claims);
    // With a public key only, HMAC algorithms are not even accepted.
    let config = AuthConfig {
        public_key: Some(p.public_pem.clone()),
        ..AuthConfig::default()
    };
    assert!(matches!(
        auth(&config).await.verify(&forged).await,
        Err(AuthError::Algorithm(_))
    ));
    // Allowed by name, it still finds no HMAC key.
    let config = AuthConfig {
        algorithms: vec![JwtAlgorithm::HS256, JwtAlgorithm::RS256],
        ..config
    };
    assert!(matches!(
        auth(&config).await.verify(&forged).await,
        Err(AuthError::NoKey { .. })
    ));
    // Beside a secret, it is checked with the secret only.
    let config = AuthConfig {
        jwt_secret: "s3cret".into(),
        ..config
    };
    assert_eq!(
        auth(&config).await.verify(&forged).await,
        Err(AuthError::Signature)
    );
}

#[tokio::test]
async fn a_private_key_is_not_taken_for_a_public_one() {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    std::fs::write(&path, kp.serialize_pem()).unwrap();
    let config = AuthConfig {
        public_key: Some(path.clone()),
        ..AuthConfig::default()
    };
    assert!(matches!(
        Auth::new(&config).await,
        Err(KeyError::PrivateKey(_))
    ));
    std::fs::write(&path, "not a key").unwrap();
    assert!(matches!(
        Auth::new(&config).await,
        Err(KeyError::NotPublicKey(_))
    ));
}

#[tokio::test]
async fn time_claims_and_leeway() {
    let strict = auth(&secret_config("s3cret")).await;
    let t = now();
    let future_nbf = hs("s3cret", &json!({"sub": "a", "exp": FAR, "nbf": t + 30}));
    assert_eq!(
        strict.verify(&future_nbf).await,
        Err(AuthError::NotYetValid)
    );
    let just_expired = hs("s3cret", &json!({"sub": "a", "exp": t - 30}));
    assert_eq!(strict.verify(&just_expired).await, Err(AuthError::Expired));
    let lenient = auth(&AuthConfig {
        leeway_secs: 60,
        ..secret_config("s3cret")
    })
    .await;
    assert!(lenient.verify(&future_nbf).await.is_ok());
    assert!(lenient.verify(&just_expired).await.is_ok());
    let long_expired = hs("s3cret", &json!({"sub": "a", "exp": t - 120}));
    assert_eq!(lenient.verify(&long_expired).await, Err(AuthError::Expired));
}

#[tokio::test]
async fn issuer_and_audience() {
    let auth = auth(&AuthConfig {
        issuer: vec!["https://id.example".into()],
        audience: vec!["roomd".into(), "chat".into()],
        ..secret_config("s3cret")
    })
    .await;
    let t = |c: serde_json::Value| hs("s3cret", &c);
    let ok = t(json!({"sub": "a", "exp": FAR, "iss": "https://id.example", "aud": "chat"}));
    assert!(auth.verify(&ok).await.is_ok());
    let ok = t(json!({"sub": "a", "exp": FAR, "iss": "https://id.example", "aud": ["x", "roomd"]}));
    assert!(auth.verify(&ok).await.is_ok());
    let bad_iss = t(json!({"sub": "a", "exp": FAR, "iss": "https://evil", "aud": "roomd"}));
    assert_eq!(auth.verify(&bad_iss).await, Err(AuthError::Issuer));
    let bad_aud = t(json!({"sub": "a", "exp": FAR, "iss": "https://id.example", "aud": "x"}));
    assert_eq!(auth.verify(&bad_aud).await, Err(AuthError::Audience));
    let no_aud = t(json!({"sub": "a", "exp": FAR, "iss": "https://id.example"}));
    assert_eq!(
        auth.verify(&no_aud).await,
        Err(AuthError::MissingClaim("aud".into()))
    );
    let no_iss = t(json!({"sub": "a", "exp": FAR, "aud": "roomd"}));
    assert_eq!(
        auth.verify(&no_iss).await,
        Err(AuthError::MissingClaim("iss".into()))
    );
}

#[tokio::test]
async fn sub_and_rooms_are_checked() {
    let auth = auth(&secret_config("s3cret")).await;
    let t = |c: serde_json::Value| hs("s3cret", &c);
    for sub in ["", "a\u{202E}b", "a\u{2067}", "tab\there", &"x".repeat(65)] {
        let token = t(json!({"sub": sub, "exp": FAR}));
        assert_eq!(
            auth.verify(&token).await,
            Err(AuthError::Subject),
            "{sub:?}"
        );
    }
    let rooms = json!([{"match": "chat:*", "allow": ["sub", "pub"]}, {"match": "inbox:{sub}", "allow": ["sub"]}]);
    let id = auth
        .verify(&t(json!({"sub": "ada", "exp": FAR, "rooms": rooms})))
        .await
        .unwrap();
    let grants = id.rooms.unwrap();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[1].pattern, "inbox:{sub}");
    let bad = json!([{"match": "chat:*", "allow": ["sub", "admin"]}]);
    match auth
        .verify(&t(json!({"sub": "ada", "exp": FAR, "rooms": bad})))
        .await
    {
        Err(AuthError::Rooms(msg)) => assert!(msg.contains("admin"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearerabc"), None);
}

#[test]
fn token_text_is_made_printable() {
    assert_eq!(printable("a\nb\u{1b}[31m"), "a?b?[31m");
    assert_eq!(printable(&"x".repeat(500)).len(), 200);
}
