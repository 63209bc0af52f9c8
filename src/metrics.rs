//! Prometheus metrics: names, units and the one global recorder.
//!
//! Every metric is recorded through the functions here so the names live in one place.
//! Histograms are rendered with explicit buckets (true Prometheus histograms).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use roomd_protocol::ErrorCode;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handles of the metrics recorded per message, looked up once instead of on every call.
struct Hot {
    delivered: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    published: Counter,
    ack_latency: Histogram,
    commit_seconds: Histogram,
    commit_entries: Histogram,
    room_logged: Counter,
}

static HOT: OnceLock<Hot> = OnceLock::new();

fn hot() -> &'static Hot {
    HOT.get_or_init(|| Hot {
        delivered: counter!("roomd_messages_delivered_total"),
        bytes_in: counter!("roomd_bytes_in_total"),
        bytes_out: counter!("roomd_bytes_out_total"),
        published: counter!("roomd_messages_published_total"),
        ack_latency: histogram!("roomd_publish_ack_seconds"),
        commit_seconds: histogram!("roomd_commit_seconds"),
        commit_entries: histogram!("roomd_commit_batch_entries"),
        room_logged: counter!("roomd_room_logged_batches_total"),
    })
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Installs the process-wide recorder once. Several servers in one process (tests, embedding)
/// share it; if the host application installed its own recorder, `/metrics` says so.
pub(crate) fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("roomd_commit_batch_entries".into()),
                    BATCH_BUCKETS,
                )
            });
        let handle = builder.ok().and_then(|b| b.install_recorder().ok());
        if handle.is_some() {
            describe();
            register_all();
            process().describe();
        }
        hot();
        handle
    });
}

/// The Prometheus text exposition of every metric.
pub(crate) fn render() -> String {
    match HANDLE.get() {
        Some(Some(h)) => {
            process().collect();
            h.run_upkeep();
            h.render()
        }
        _ => "# roomd metrics unavailable: another metrics recorder is installed in this process\n"
            .into(),
    }
}

/// The `process_*` metrics (CPU, memory, file descriptors, threads), read at each scrape.
fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Every metric exists from the start, at zero: a dashboard or an alert on a rate sees a series
/// before the first event (`rate()` of a counter that appears at its first increment misses
/// that increment).
fn register_all() {
    for name in [
        "roomd_connections_total",
        "roomd_messages_published_total",
        "roomd_messages_delivered_total",
        "roomd_bytes_in_total",
        "roomd_bytes_out_total",
        "roomd_room_logged_batches_total",
        "roomd_commit_failures_total",
        "roomd_slow_consumers_total",
        "roomd_tls_handshake_failures_total",
        "roomd_tls_reloads_total",
        "roomd_jwks_fetches_total",
        "roomd_jwks_fetch_failures_total",
        "roomd_cluster_gap_fills_total",
        "roomd_cluster_fence_trips_total",
        "roomd_cluster_pubsub_reconnects_total",
        "roomd_cluster_write_conflicts_total",
        "roomd_cluster_signals_dropped_total",
        "roomd_cluster_failovers_total",
        "roomd_presence_held_total",
        "roomd_presence_resumed_total",
    ] {
        counter!(name).increment(0);
    }
    for name in ["roomd_connections", "roomd_rooms_active"] {
        gauge!(name).set(0.0);
    }
    for name in [
        "roomd_publish_ack_seconds",
        "roomd_commit_seconds",
        "roomd_commit_batch_entries",
        "roomd_checkpoint_seconds",
        "roomd_apply_seconds",
        "roomd_cluster_engine_seconds",
    ] {
        // A registered histogram renders its buckets at zero.
        let _ = histogram!(name);
    }
    for code in ErrorCode::ALL {
        counter!("roomd_errors_total", "code" => code.as_u16().to_string(), "name" => code.name())
            .increment(0);
    }
    gauge!(
        "roomd_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("ROOMD_COMMIT")
    )
    .set(1.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("roomd_connections", "WebSocket connections open now");
    describe_counter!(
        "roomd_api_requests_total",
        "Server API requests answered, by operation and HTTP status"
    );
    describe_histogram!(
        "roomd_api_request_seconds",
        Unit::Seconds,
        "Server API requests: from the request head to the answer, by operation"
    );
    describe_counter!("roomd_connections_total", "WebSocket connections accepted");
    describe_gauge!("roomd_rooms_active", "rooms loaded in memory");
    describe_counter!(
        "roomd_messages_published_total",
        "publishes acknowledged (logged: durable mode after its fsync)"
    );
    describe_counter!(
        "roomd_messages_delivered_total",
        "log entries queued to subscribers (live and replay)"
    );
    describe_counter!(
        "roomd_bytes_in_total",
        Unit::Bytes,
        "WebSocket payload bytes received"
    );
    describe_counter!(
        "roomd_bytes_out_total",
        Unit::Bytes,
        "WebSocket payload bytes sent"
    );
    describe_histogram!(
        "roomd_publish_ack_seconds",
        Unit::Seconds,
        "time from receiving a publish to queuing its ack"
    );
    describe_histogram!(
        "roomd_commit_seconds",
        Unit::Seconds,
        "time of one group commit (durable mode: apply, write-ahead log append and fdatasync)"
    );
    describe_counter!(
        "roomd_room_logged_batches_total",
        "relaxed mode: batches a room appended to the write-ahead log itself instead of through the writer thread"
    );
    describe_histogram!(
        "roomd_checkpoint_seconds",
        Unit::Seconds,
        "time of one durable redb commit (durable mode's checkpoint, relaxed mode's flush)"
    );
    describe_histogram!(
        "roomd_apply_seconds",
        Unit::Seconds,
        "time of one non-durable apply of logged groups to redb (on its own thread, beside the writer)"
    );
    describe_histogram!(
        "roomd_commit_batch_entries",
        "log entries written by one group commit"
    );
    describe_counter!(
        "roomd_commit_failures_total",
        "group commits or checkpoints that failed (nothing in a failed group is stored)"
    );
    describe_counter!(
        "roomd_slow_consumers_total",
        "connections closed because their outbound queue was full"
    );
    describe_counter!("roomd_errors_total", "err frames sent, by code");
    describe_counter!(
        "roomd_tls_handshake_failures_total",
        "TLS handshakes on the main port that failed or timed out"
    );
    describe_counter!(
        "roomd_tls_reloads_total",
        "successful reloads of the TLS certificate and key (SIGHUP)"
    );
    describe_counter!(
        "roomd_jwks_fetches_total",
        "fetches of the JWKS at auth.jwks_url (at startup, periodic, for an unknown key id)"
    );
    describe_counter!(
        "roomd_jwks_fetch_failures_total",
        "JWKS fetches that failed (the keys already held stay in use)"
    );
    describe_counter!(
        "roomd_cluster_gap_fills_total",
        "cluster: reads of a room's log in Redis for entries this node's live feed missed"
    );
    describe_counter!(
        "roomd_cluster_fence_trips_total",
        "cluster: rooms whose epoch rotated because Redis lost acknowledged writes"
    );
    describe_counter!(
        "roomd_cluster_pubsub_reconnects_total",
        "cluster: reconnections of this node's Redis pub/sub connection"
    );
    describe_counter!(
        "roomd_cluster_write_conflicts_total",
        "cluster: room writes formed again because another node wrote to the room first"
    );
    describe_counter!(
        "roomd_cluster_failovers_total",
        "cluster: times this node moved to a new Redis primary named by Sentinel"
    );
    describe_counter!(
        "roomd_cluster_signals_dropped_total",
        "cluster: ephemeral messages not sent to the other nodes because this node's queue \
         for them was full"
    );
    describe_histogram!(
        "roomd_cluster_engine_seconds",
        Unit::Seconds,
        "cluster: round-trip time of the room operations sent to Redis"
    );
    describe_gauge!(
        "roomd_build_info",
        "always 1; the labels name the version and the git commit of the running binary"
    );
}

pub(crate) fn connection_opened() {
    counter!("roomd_connections_total").increment(1);
    gauge!("roomd_connections").increment(1.0);
}

pub(crate) fn connection_closed() {
    gauge!("roomd_connections").decrement(1.0);
}

pub(crate) fn cluster_gap_fill() {
    counter!("roomd_cluster_gap_fills_total").increment(1);
}

pub(crate) fn cluster_fence_trip() {
    counter!("roomd_cluster_fence_trips_total").increment(1);
}

pub(crate) fn cluster_pubsub_reconnect() {
    counter!("roomd_cluster_pubsub_reconnects_total").increment(1);
}

pub(crate) fn cluster_failover() {
    counter!("roomd_cluster_failovers_total").increment(1);
}

pub(crate) fn cluster_signal_dropped() {
    counter!("roomd_cluster_signals_dropped_total").increment(1);
}

pub(crate) fn cluster_write_conflict() {
    counter!("roomd_cluster_write_conflicts_total").increment(1);
}

pub(crate) fn cluster_engine(took: Duration) {
    histogram!("roomd_cluster_engine_seconds").record(took.as_secs_f64());
}

pub(crate) fn rooms_active(n: usize) {
    gauge!("roomd_rooms_active").set(n as f64);
}

pub(crate) fn published(latency: Duration) {
    let h = hot();
    h.published.increment(1);
    h.ack_latency.record(latency.as_secs_f64());
}

pub(crate) fn delivered(n: usize, _frame_len: usize) {
    if n > 0 {
        hot().delivered.increment(n as u64);
    }
}

pub(crate) fn frame_in(len: usize) {
    hot().bytes_in.increment(len as u64);
}

pub(crate) fn bytes_out(len: usize) {
    hot().bytes_out.increment(len as u64);
}

pub(crate) fn commit(entries: usize, _batches: usize, took: Duration) {
    let h = hot();
    h.commit_seconds.record(took.as_secs_f64());
    h.commit_entries.record(entries as f64);
}

/// A room logged its own batch (relaxed mode).
pub(crate) fn room_logged(entries: usize, took: Duration) {
    commit(entries, 1, took);
    hot().room_logged.increment(1);
}

pub(crate) fn applied(took: Duration) {
    histogram!("roomd_apply_seconds").record(took.as_secs_f64());
}

pub(crate) fn checkpoint(took: Duration) {
    histogram!("roomd_checkpoint_seconds").record(took.as_secs_f64());
}

pub(crate) fn commit_failed() {
    counter!("roomd_commit_failures_total").increment(1);
}

pub(crate) fn tls_handshake_failed() {
    counter!("roomd_tls_handshake_failures_total").increment(1);
}

pub(crate) fn tls_reloaded() {
    counter!("roomd_tls_reloads_total").increment(1);
}

pub(crate) fn jwks_fetch() {
    counter!("roomd_jwks_fetches_total").increment(1);
}

pub(crate) fn jwks_fetch_failed() {
    counter!("roomd_jwks_fetch_failures_total").increment(1);
}

/// A dropped connection's subscription held for the reconnect grace.
pub(crate) fn presence_held(n: usize) {
    counter!("roomd_presence_held_total").increment(n as u64);
}

/// Held subscriptions that a new subscription of their user took over within the grace.
pub(crate) fn presence_resumed(n: usize) {
    counter!("roomd_presence_resumed_total").increment(n as u64);
}

pub(crate) fn slow_consumer() {
    counter!("roomd_slow_consumers_total").increment(1);
}

pub(crate) fn error(code: ErrorCode) {
    counter!("roomd_errors_total", "code" => code.as_u16().to_string(), "name" => code.name())
        .increment(1);
}

/// The server API's operations exist from the start, at zero (as every other metric): a
/// success count and a latency histogram per operation.
pub(crate) fn api_operations<'a>(ops: impl IntoIterator<Item = &'a str>) {
    for op in ops {
        counter!("roomd_api_requests_total", "op" => op.to_string(), "code" => "200").increment(0);
        let _ = histogram!("roomd_api_request_seconds", "op" => op.to_string());
    }
}

/// A server API request was answered: `op` is its operation id (`unknown` for no route).
pub(crate) fn api_request(op: &str, status: u16, seconds: f64) {
    let op = op.to_string();
    counter!("roomd_api_requests_total", "op" => op.clone(), "code" => status.to_string())
        .increment(1);
    histogram!("roomd_api_request_seconds", "op" => op).record(seconds);
}

/// Every configured webhook endpoint's series exist from the start, at zero.
pub(crate) fn webhook_endpoints<'a>(names: impl IntoIterator<Item = &'a str>) {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "roomd_webhook_delivered_total",
        "webhook events delivered (answered 2xx), by endpoint"
    );
    describe_counter!(
        "roomd_webhook_failed_total",
        "webhook deliveries that failed (refused, timed out, or not answered 2xx), by endpoint"
    );
    describe_counter!(
        "roomd_webhook_retried_total",
        "webhook deliveries sent again after a failure, by endpoint"
    );
    describe_counter!(
        "roomd_webhook_dropped_total",
        "webhook events dropped, by endpoint and reason (outbox_full: past the endpoint's outbox_events or outbox_bytes; queue_full: past the queue into the outbox; store: the outbox write failed)"
    );
    describe_gauge!(
        "roomd_webhook_outbox_events",
        "webhook events held in an endpoint's durable outbox"
    );
    describe_gauge!(
        "roomd_webhook_outbox_bytes",
        Unit::Bytes,
        "bytes of webhook events held in an endpoint's durable outbox"
    );
    describe_histogram!(
        "roomd_webhook_delivery_seconds",
        Unit::Seconds,
        "time of one successful webhook delivery (connect, POST, answer), by endpoint"
    );
    for name in names {
        let e = name.to_string();
        for c in [
            "roomd_webhook_delivered_total",
            "roomd_webhook_failed_total",
            "roomd_webhook_retried_total",
        ] {
            counter!(c, "endpoint" => e.clone()).increment(0);
        }
        for reason in ["outbox_full", "queue_full", "store"] {
            counter!("roomd_webhook_dropped_total", "endpoint" => e.clone(), "reason" => reason)
                .increment(0);
        }
        let _ = histogram!("roomd_webhook_delivery_seconds", "endpoint" => e);
    }
}

pub(crate) fn webhook_delivered(endpoint: &str, events: usize, took: Duration) {
    let e = endpoint.to_string();
    counter!("roomd_webhook_delivered_total", "endpoint" => e.clone()).increment(events as u64);
    histogram!("roomd_webhook_delivery_seconds", "endpoint" => e).record(took.as_secs_f64());
}

pub(crate) fn webhook_failed(endpoint: &str) {
    counter!("roomd_webhook_failed_total", "endpoint" => endpoint.to_string()).increment(1);
}

pub(crate) fn webhook_retried(endpoint: &str) {
    counter!("roomd_webhook_retried_total", "endpoint" => endpoint.to_string()).increment(1);
}

pub(crate) fn webhook_dropped(endpoint: &str, reason: &'static str, events: u64) {
    counter!("roomd_webhook_dropped_total", "endpoint" => endpoint.to_string(), "reason" => reason)
        .increment(events);
}

pub(crate) fn webhook_outbox(endpoint: &str, events: u64, bytes: u64) {
    #[allow(clippy::cast_precision_loss)]
    {
        gauge!("roomd_webhook_outbox_events", "endpoint" => endpoint.to_string())
            .set(events as f64);
        gauge!("roomd_webhook_outbox_bytes", "endpoint" => endpoint.to_string()).set(bytes as f64);
    }
}

/// Outcomes of a proxy call, as `roomd_proxy_calls_total{outcome}` labels them.
const PROXY_OUTCOMES: [&str; 7] = [
    "allow",
    "replace",
    "deny",
    "error",
    "timeout",
    "breaker_open",
    "busy",
];

/// A configured proxy endpoint's series exist from the start, at zero.
pub(crate) fn proxy_endpoint(name: &str) {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "roomd_proxy_calls_total",
        "proxy hook decisions, by endpoint, call and outcome (allow, replace, deny; or no decision: error, timeout, breaker_open, busy)"
    );
    describe_counter!(
        "roomd_proxy_cache_hits_total",
        "proxy hook decisions taken from the decision cache instead of a call, by endpoint and call"
    );
    describe_gauge!(
        "roomd_proxy_breaker_open",
        "1 while a proxy endpoint's circuit breaker is open (calls fail at once), else 0"
    );
    describe_histogram!(
        "roomd_proxy_call_seconds",
        Unit::Seconds,
        "time of one answered proxy call (connect, POST, answer), by endpoint and call"
    );
    let p = name.to_string();
    for call in ["connect", "subscribe", "publish"] {
        for outcome in PROXY_OUTCOMES {
            counter!("roomd_proxy_calls_total", "proxy" => p.clone(), "call" => call, "outcome" => outcome)
                .increment(0);
        }
        counter!("roomd_proxy_cache_hits_total", "proxy" => p.clone(), "call" => call).increment(0);
        let _ = histogram!("roomd_proxy_call_seconds", "proxy" => p.clone(), "call" => call);
    }
    gauge!("roomd_proxy_breaker_open", "proxy" => p).set(0.0);
}

pub(crate) fn proxy_call(name: &str, call: &'static str, outcome: &'static str) {
    counter!("roomd_proxy_calls_total", "proxy" => name.to_string(), "call" => call, "outcome" => outcome)
        .increment(1);
}

pub(crate) fn proxy_latency(name: &str, call: &'static str, took: Duration) {
    histogram!("roomd_proxy_call_seconds", "proxy" => name.to_string(), "call" => call)
        .record(took.as_secs_f64());
}

pub(crate) fn proxy_breaker(name: &str, open: bool) {
    gauge!("roomd_proxy_breaker_open", "proxy" => name.to_string()).set(if open {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn proxy_cache_hit(name: &str, call: &'static str) {
    counter!("roomd_proxy_cache_hits_total", "proxy" => name.to_string(), "call" => call)
        .increment(1);
}
