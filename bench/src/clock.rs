//! One monotonic time base shared by publishers and subscribers (they live in one process), so a
//! send time embedded in a payload can be subtracted from a receive time.

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's time base.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
