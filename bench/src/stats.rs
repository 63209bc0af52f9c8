//! Delivery counters and latency histograms, kept per worker thread.
//!
//! Each runtime thread records into its own histogram behind an uncontended mutex, so thousands
//! of subscriber tasks never share a cache line on the hot path; the totals are merged between
//! phases, when nothing records.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

struct ThreadStats {
    hist: Histogram<u64>,
    count: u64,
}

static ALL: Mutex<Vec<Arc<Mutex<ThreadStats>>>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: Arc<Mutex<ThreadStats>> = {
        let s = Arc::new(Mutex::new(ThreadStats { hist: new_hist(), count: 0 }));
        ALL.lock().expect("stats registry").push(s.clone());
        s
    };
}

/// Latencies in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Counts one event (a delivery or an ack) with its latency.
pub fn record(latency_ns: u64) {
    LOCAL.with(|s| {
        let mut s = s.lock().expect("thread stats");
        s.count += 1;
        s.hist.saturating_record(latency_ns.max(1));
    });
}

/// Clears every thread's counters (between cells).
pub fn reset() {
    for s in ALL.lock().expect("stats registry").iter() {
        let mut s = s.lock().expect("thread stats");
        s.count = 0;
        s.hist.reset();
    }
}

/// The merged histogram and count.
pub fn merged() -> (Histogram<u64>, u64) {
    let mut hist = new_hist();
    let mut count = 0;
    for s in ALL.lock().expect("stats registry").iter() {
        let s = s.lock().expect("thread stats");
        count += s.count;
        hist.add(&s.hist).expect("same bounds");
    }
    (hist, count)
}

/// p50, p99, p99.9 in microseconds.
pub fn percentiles_us(h: &Histogram<u64>) -> [f64; 3] {
    if h.is_empty() {
        return [f64::NAN; 3];
    }
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1000.0)
}
