//! A whole session: fuzzer-chosen frames into one connection of a real server (room registry,
//! store on a temporary directory, writer thread). The server must not panic, must answer every
//! request, and every frame it sends must decode as a server frame.
//!
//! Input: frames, each a 2-byte big-endian length then that many bytes (the last one takes
//! whatever is left). Each input is one new connection; the server, its rooms and their data
//! live on across inputs, and are replaced by a fresh one every `INPUTS_PER_SERVER` inputs so
//! the temporary directory stays small. The last server's directory (`roomd-fuzz*` under
//! `$TMPDIR`) is left behind when libFuzzer exits the process; `fuzz/ci.sh` removes it.
//!
//! Since the server outlives inputs, a failure may need the inputs before it: replay the
//! corpus in order (`-runs=` over the corpus directory) if one input alone does not reproduce.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use roomd::fuzzing::SessionHarness;
use roomd_protocol::decode_server;

const INPUTS_PER_SERVER: u32 = 20_000;
const MAX_FRAMES: usize = 64;

static HARNESS: Mutex<Option<(SessionHarness, u32)>> = Mutex::new(None);

fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let len = match data {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        let rest = data.get(2..).unwrap_or_default();
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some(frame)
    })
    .take(MAX_FRAMES)
}

fuzz_target!(|data: &[u8]| {
    let mut guard = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|(_, n)| *n >= INPUTS_PER_SERVER) {
        // The old server stops (and its directory goes) before the new one starts.
        *guard = None;
        *guard = Some((SessionHarness::new().expect("start a server"), 0));
    }
    let Some((harness, n)) = guard.as_mut() else {
        return;
    };
    *n += 1;
    harness.reconnect();
    for frame in frames(data) {
        let fed = harness.feed(frame);
        for out in &fed.frames {
            if let Err(e) = decode_server(out) {
                panic!("the server sent {out:02x?}, which does not decode: {e}\n(in answer to {frame:02x?})");
            }
        }
        assert!(
            fed.answered,
            "no answer within {:?} to {frame:02x?}",
            roomd::fuzzing::REPLY_TIMEOUT
        );
    }
});
