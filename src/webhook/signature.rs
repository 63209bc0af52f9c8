//! The signature every delivery carries, so an endpoint can tell roomd's requests from
//! forgeries and replays (README "Webhooks" has a verification snippet).
//!
//! Header [`HEADER`]: `t=<ms since the Unix epoch>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
//! the endpoint's secret as the key. The timestamp is signed with the body, so a receiver that
//! rejects old timestamps rejects replayed deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub(crate) const HEADER: &str = "roomd-signature";

/// The header's value for `body` sent at `ts`.
pub(crate) fn header(secret: &[u8], ts: u64, body: &[u8]) -> String {
    format!("t={ts},v1={}", hex(&mac(secret, ts, body)))
}

fn mac(secret: &[u8], ts: u64, body: &[u8]) -> Vec<u8> {
    // Any key length is valid for HMAC: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected value comes from openssl, not from this code:
    /// `printf '1700000000000.{"events":[]}' | openssl dgst -sha256 -hmac secret`.
    #[test]
    fn header_is_hmac_sha256_hex_of_timestamp_dot_body() {
        let h = header(b"secret", 1_700_000_000_000, br#"{"events":[]}"#);
        assert_eq!(
            h,
            "t=1700000000000,v1=cc8bd2655edad324dc4cadeb832556332fea28e5264fac1b75526ab2b6d2f16a"
        );
    }
}
