//! The JSON of a proxy call: what roomd asks ([`Ask`]) and how an answer is read.

use base64::Engine as _;
use roomd_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use super::{failed, Call, Verdict};

/// A call's body. Fields that do not apply to the call are left out.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ask {
    #[serde(serialize_with = "call_name")]
    pub call: Call,
    /// The connection's id (as in `hello`).
    pub conn: String,
    /// The user id: a token's `sub`, or on an open server the `user` the client declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether `user` comes from a verified token (false: a declared name, or anonymous).
    pub verified: bool,
    /// The `client` query parameter, at `connect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The client's address (`server.trusted_proxies` applied), at `connect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A publish's payload, base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// `true` for an ephemeral publish (SPEC.md 4.10).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// For an edit: the seq of the message it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit: Option<u64>,
    /// A subscribe's `since`, `state`, `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub state: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
}

fn call_name<S: serde::Serializer>(call: &Call, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(call.name())
}

impl Ask {
    /// An ask with only the connection's fields set.
    pub(crate) fn new(call: Call, conn: &str, user: Option<&str>, verified: bool) -> Ask {
        Ask {
            call,
            conn: conn.to_string(),
            user: user.map(str::to_string),
            verified,
            client: None,
            addr: None,
            room: None,
            data: None,
            mid: None,
            ephemeral: false,
            edit: None,
            since: None,
            state: false,
            presence: false,
        }
    }

    pub(crate) fn with_data(mut self, data: &[u8]) -> Ask {
        self.data = Some(base64::engine::general_purpose::STANDARD.encode(data));
        self
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and bools always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An endpoint's answer (README "Proxy hooks").
#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    /// A publish's replacement payload, base64.
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// Reads an answer to `call`. An answer that is not one (bad JSON, bad base64, a replacement
/// larger than `payload_max`) is a failed call: the endpoint's fault, like a timeout.
pub(super) fn read_answer(body: &[u8], call: Call, payload_max: usize) -> Verdict {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return failed("error", format!("the answer is not a decision: {e}")),
    };
    if !answer.allow {
        return deny(call, answer);
    }
    let data = match (call, answer.data) {
        (Call::Publish, Some(b64)) => {
            match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
                Ok(d) if d.len() <= payload_max => Some(d),
                Ok(d) => {
                    return failed(
                        "error",
                        format!(
                            "the replacement data is {} bytes, limit {payload_max}",
                            d.len()
                        ),
                    )
                }
                Err(e) => return failed("error", format!("the replacement data: {e}")),
            }
        }
        _ => None,
    };
    Verdict::Allow { data }
}

/// A deny: its code if the call's request may carry it (else `403`), its reason (bounded: it
/// goes to the client in one frame).
fn deny(call: Call, answer: Answer) -> Verdict {
    const MAX_REASON: usize = 256;
    let code = answer
        .code
        .and_then(ErrorCode::from_u16)
        .filter(|c| call.allowed_codes().contains(c))
        .unwrap_or(ErrorCode::Forbidden);
    let mut reason = answer
        .reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "refused by the application".into());
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    let retry_after_ms = answer
        .retry_after_ms
        .filter(|ms| *ms >= 1 && code == ErrorCode::Limit);
    Verdict::Deny {
        code,
        reason,
        retry_after_ms,
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_keeps_a_code_its_request_may_get_and_maps_others_to_403() {
        let v = read_answer(
            br#"{"allow":false,"code":413,"reason":"big"}"#,
            Call::Publish,
            10,
        );
        assert!(
            matches!(v, Verdict::Deny { code: ErrorCode::TooLarge, ref reason, .. } if reason == "big")
        );
        let v = read_answer(br#"{"allow":false,"code":413}"#, Call::Subscribe, 10);
        assert!(matches!(
            v,
            Verdict::Deny {
                code: ErrorCode::Forbidden,
                ..
            }
        ));
        let v = read_answer(br#"{"allow":false,"code":507}"#, Call::Publish, 10);
        assert!(matches!(
            v,
            Verdict::Deny {
                code: ErrorCode::Forbidden,
                ..
            }
        ));
        let v = read_answer(
            br#"{"allow":false,"code":429,"retry_after_ms":50}"#,
            Call::Publish,
            10,
        );
        assert!(matches!(
            v,
            Verdict::Deny {
                code: ErrorCode::Limit,
                retry_after_ms: Some(50),
                ..
            }
        ));
    }

    #[test]
    fn a_replacement_is_bounded_and_only_for_publishes() {
        let v = read_answer(br#"{"allow":true,"data":"aGk="}"#, Call::Publish, 10);
        assert!(matches!(v, Verdict::Allow { data: Some(ref d) } if d == b"hi"));
        let v = read_answer(br#"{"allow":true,"data":"aGk="}"#, Call::Subscribe, 10);
        assert!(matches!(v, Verdict::Allow { data: None }));
        let v = read_answer(br#"{"allow":true,"data":"aGk="}"#, Call::Publish, 1);
        assert!(matches!(v, Verdict::Failed { .. }));
        let v = read_answer(br#"{"allow":true,"data":"!!"}"#, Call::Publish, 10);
        assert!(matches!(v, Verdict::Failed { .. }));
        let v = read_answer(b"yes", Call::Publish, 10);
        assert!(matches!(v, Verdict::Failed { .. }));
    }

    #[test]
    fn the_ask_leaves_out_what_does_not_apply() {
        let a = Ask::new(Call::Publish, "c1", None, false).with_data(b"hi");
        let json: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"call": "publish", "conn": "c1", "verified": false, "data": "aGk="})
        );
    }
}
