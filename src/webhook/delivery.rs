//! One endpoint's delivery task: the oldest events of its outbox, POSTed as one batch, removed
//! once answered 2xx; after a failure the same batch (same ids) again, after a backoff.

use crate::http_client::{Call, HttpError};
use hyper::Method;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{signature, Endpoint};
use crate::lifecycle::Lifecycle;
use crate::store::{webhooks, Store};

/// The task: runs until shutdown begins. A delivery cut off by shutdown is sent again after
/// the restart (its events are still in the outbox).
pub(super) async fn run(ep: Arc<Endpoint>, store: Store, lifecycle: Lifecycle) {
    tokio::select! {
        () = deliver_forever(&ep, &store) => {}
        () = lifecycle.stopping() => {}
    }
}

async fn deliver_forever(ep: &Endpoint, store: &Store) {
    let mut failures: u32 = 0;
    loop {
        let page = {
            let (store, key) = (store.clone(), ep.key.clone());
            let (n, bytes) = (ep.config.batch_events, ep.config.batch_bytes);
            tokio::task::spawn_blocking(move || webhooks::page(&store, &key, n, bytes)).await
        };
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::error!(endpoint = %ep.key, error = %e, "webhook outbox read failed");
                failures += 1;
                tokio::time::sleep(backoff(ep, failures)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(endpoint = %ep.key, error = %e, "webhook outbox read failed");
                return;
            }
        };
        if page.is_empty() {
            ep.wake.notified().await;
            continue;
        }
        match send(ep, &page).await {
            Ok(took) => {
                if failures > 0 {
                    tracing::info!(endpoint = %ep.key, failures, "webhook endpoint answers again");
                }
                failures = 0;
                delivered(ep, store, &page, took).await;
            }
            Err(e) => {
                failures += 1;
                crate::metrics::webhook_failed(&ep.key);
                let wait = backoff(ep, failures);
                tracing::warn!(
                    endpoint = %ep.key,
                    error = %e,
                    events = page.len(),
                    failures,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "webhook delivery failed"
                );
                tokio::time::sleep(wait).await;
                crate::metrics::webhook_retried(&ep.key);
            }
        }
    }
}

/// POSTs the batch `{"events":[...]}` with its signature.
async fn send(ep: &Endpoint, page: &[(u64, Vec<u8>)]) -> Result<Duration, HttpError> {
    let size = page.iter().map(|(_, j)| j.len() + 1).sum::<usize>() + 12;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(b"{\"events\":[");
    for (i, (_, json)) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(b"]}");
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let headers = [(signature::HEADER, signature::header(&ep.secret, ts, &body))];
    let timeout = Duration::from_millis(ep.config.timeout_ms);
    let started = Instant::now();
    ep.target
        .send(Call {
            method: Method::POST,
            body: Some((Bytes::from(body), "application/json")),
            accept: None,
            headers: &headers,
            max_answer: MAX_ANSWER_BYTES,
            timeout,
        })
        .await?;
    Ok(started.elapsed())
}

/// The most of an answer's body read (and thrown away): receivers answer a few bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The batch was answered 2xx: its rows go.
async fn delivered(ep: &Endpoint, store: &Store, page: &[(u64, Vec<u8>)], took: Duration) {
    crate::metrics::webhook_delivered(&ep.key, page.len(), took);
    let numbers: Vec<u64> = page.iter().map(|(n, _)| *n).collect();
    let bytes: u64 = page.iter().map(|(_, j)| j.len() as u64).sum();
    let removed = {
        let (store, key) = (store.clone(), ep.key.clone());
        tokio::task::spawn_blocking(move || webhooks::remove(&store, &key, &numbers)).await
    };
    match removed {
        Ok(Ok(())) => ep.release(page.len() as u64, bytes),
        // They stay and are delivered again (the receiver dedupes by id).
        Ok(Err(e)) => {
            tracing::error!(endpoint = %ep.key, error = %e, "webhook outbox: cannot remove delivered events")
        }
        Err(e) => {
            tracing::error!(endpoint = %ep.key, error = %e, "webhook outbox: cannot remove delivered events")
        }
    }
}

/// Exponential from `retry_base_ms`, capped at `retry_max_ms`, with jitter: between half and
/// all of it, so endpoints that failed together do not retry in lockstep.
fn backoff(ep: &Endpoint, failures: u32) -> Duration {
    let full = ceiling(ep.config.retry_base_ms, ep.config.retry_max_ms, failures);
    let half = full / 2;
    Duration::from_millis(half + rand::random_range(0..=full - half))
}

/// The wait before retry number `failures` (from 1), before jitter, in ms.
fn ceiling(base: u64, max: u64, failures: u32) -> u64 {
    base.saturating_mul(1u64 << failures.saturating_sub(1).min(32))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::ceiling;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| ceiling(500, 60_000, n)).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000]);
        assert_eq!(ceiling(500, 60_000, u32::MAX), 60_000);
    }
}
