//! The outbox writer: takes emitted events in groups, gives each its id, and writes one row
//! per endpoint that wants it in one durable transaction. An event counts as emitted once
//! that commit returns; from then on a crash or `kill -9` cannot lose it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Event, Queued};
use crate::store::webhooks::{self, Row};
use crate::store::{Store, StoreError};

/// Events written in one transaction at most: one commit's rows stay a few MiB.
const GROUP: usize = 4096;

/// Where numbering stands: the node's source and the next event number.
#[derive(Clone, Copy)]
pub(super) struct Numbering {
    source: u64,
    next: u64,
}

impl Numbering {
    /// `source-number` in hex: unique across nodes and restarts, ordered within a node.
    fn id(&self, n: u64) -> String {
        format!("{:016x}-{n:016x}", self.source)
    }
}

/// At startup (blocking): removes what endpoints no longer configured left behind, counts what
/// each endpoint's outbox holds, and reads the numbering. Returns it with the count removed.
pub(super) fn open(
    store: &Store,
    endpoints: &[Arc<Endpoint>],
) -> Result<(Numbering, u64), StoreError> {
    let keep: Vec<String> = endpoints.iter().map(|e| e.key.clone()).collect();
    let forgotten = webhooks::forget_others(store, &keep)?;
    for e in endpoints {
        let (events, bytes) = webhooks::depth(store, &e.key)?;
        *e.held() = (events, bytes);
        crate::metrics::webhook_outbox(&e.key, events, bytes);
        if events > 0 {
            tracing::info!(endpoint = %e.key, events, "webhook outbox: events from before the restart are due");
        }
    }
    let (source, next) = webhooks::numbering(store)?;
    Ok((Numbering { source, next }, forgotten))
}

/// The writer task: until `stop`, then what is still queued.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Queued>,
    store: Store,
    endpoints: Arc<[Arc<Endpoint>]>,
    mut numbering: Numbering,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            ev = rx.recv() => ev,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(ev) => group.push(ev),
                Err(_) => break,
            }
        }
        numbering = write(&store, &endpoints, numbering, group).await;
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        rest.push(ev);
        if rest.len() == GROUP {
            numbering = write(&store, &endpoints, numbering, std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        write(&store, &endpoints, numbering, rest).await;
    }
}

/// Writes one group; returns the numbering after it.
async fn write(
    store: &Store,
    endpoints: &Arc<[Arc<Endpoint>]>,
    numbering: Numbering,
    group: Vec<Queued>,
) -> Numbering {
    let numbering = append(store, endpoints, numbering, &group).await;
    // Only now may the writes whose acks wait on these events be acknowledged.
    for q in group {
        if let Some(durable) = q.durable {
            let _ = durable.send(());
        }
    }
    numbering
}

/// Appends one group's rows; returns the numbering after it.
async fn append(
    store: &Store,
    endpoints: &Arc<[Arc<Endpoint>]>,
    numbering: Numbering,
    group: &[Queued],
) -> Numbering {
    let mut next = numbering.next;
    let mut rows: Vec<Row> = Vec::new();
    // Per endpoint: (index, bytes) of each row, to undo on failure.
    let mut placed: Vec<(usize, u64)> = Vec::new();
    for Queued { ev, .. } in group {
        let mut json: Option<Vec<u8>> = None;
        for (i, ep) in endpoints.iter().enumerate() {
            if !ep.wants(ev) {
                continue;
            }
            let body = json.get_or_insert_with(|| ev.to_json(&numbering.id(next)));
            let bytes = body.len() as u64;
            if ep.reserve(bytes) {
                rows.push((ep.key.clone(), next, body.clone()));
                placed.push((i, bytes));
            } else {
                full(ep, ev);
            }
        }
        if json.is_some() {
            next += 1;
        }
    }
    if rows.is_empty() {
        return Numbering { next, ..numbering };
    }
    let result = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || webhooks::append(&store, &rows, next)).await
    };
    match result {
        Ok(Ok(())) => {
            let mut woken = vec![false; endpoints.len()];
            for &(i, _) in &placed {
                woken[i] = true;
            }
            for (ep, _) in endpoints.iter().zip(woken).filter(|(_, w)| *w) {
                let (e, b) = *ep.held();
                crate::metrics::webhook_outbox(&ep.key, e, b);
                ep.wake.notify_one();
            }
            Numbering { next, ..numbering }
        }
        Ok(Err(e)) => failed(endpoints, &placed, &e.to_string(), numbering, next),
        Err(e) => failed(endpoints, &placed, &e.to_string(), numbering, next),
    }
}

/// The group could not be written (the disk is full, say): its events are dropped, counted
/// and logged, and their numbers skipped (ids need only be unique).
fn failed(
    endpoints: &[Arc<Endpoint>],
    placed: &[(usize, u64)],
    error: &str,
    numbering: Numbering,
    next: u64,
) -> Numbering {
    for &(i, bytes) in placed {
        let ep = &endpoints[i];
        ep.release(1, bytes);
        crate::metrics::webhook_dropped(&ep.key, "store", 1);
    }
    tracing::error!(
        events = placed.len(),
        error,
        "webhook outbox write failed: events dropped"
    );
    Numbering { next, ..numbering }
}

/// An endpoint's outbox is at its bound: this event is not written for it.
fn full(ep: &Endpoint, ev: &Event) {
    crate::metrics::webhook_dropped(&ep.key, "outbox_full", 1);
    // One line per event would flood the log exactly when an endpoint is down for long:
    // one per thousand drops, with the counter in /metrics for the exact figure.
    let n = ep.drops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n.is_multiple_of(1000) {
        tracing::warn!(
            endpoint = %ep.key,
            kind = ev.kind.as_str(),
            dropped = n + 1,
            max_events = ep.config.outbox_events,
            max_bytes = ep.config.outbox_bytes,
            "webhook outbox full: new events for this endpoint are dropped"
        );
    }
}
