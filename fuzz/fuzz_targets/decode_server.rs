//! `decode_server` never panics, and whatever it decodes re-encodes to bytes that decode to the
//! same frame (and re-encode to the same bytes: one round reaches the canonical encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomd_protocol::{decode_server, encode};

fuzz_target!(|data: &[u8]| {
    match decode_server(data) {
        Ok(frame) => {
            let _ = frame.seq();
            let bytes = encode(&frame);
            let again = decode_server(&bytes).unwrap_or_else(|e| {
                panic!("{frame:?} re-encoded as {bytes:02x?} does not decode: {e}")
            });
            // NaN floats in values compare unequal to themselves; their bytes still agree.
            assert!(
                again == frame || encode(&again) == bytes,
                "{frame:?} came back as {again:?}"
            );
            assert_eq!(encode(&again), bytes, "{frame:?}: encoding is not stable");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
