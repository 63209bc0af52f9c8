//! Background retention: trims rooms past `retention.max_messages` or `max_age_secs`.
//!
//! Trimming goes through the room task (it owns the room's order and knows when a subscriber
//! is replaying, which defers the trim), so a room that needs trimming is loaded for it and
//! unloads again when idle. Rooms that need nothing are only looked at, not loaded.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RetentionConfig;
use crate::lifecycle::Lifecycle;
use crate::room::{model::now_ms, Command, Registry};
use crate::store::Store;

pub(crate) async fn sweep(
    registry: Arc<Registry>,
    store: Store,
    cfg: RetentionConfig,
    lifecycle: Lifecycle,
) {
    let every = Duration::from_secs(cfg.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = lifecycle.stopping() => return,
        }
        let (store, cfg) = (store.clone(), cfg.clone());
        let due = tokio::task::spawn_blocking(
            move || -> Result<Vec<String>, crate::store::StoreError> {
                let cutoff = now_ms().saturating_sub(cfg.max_age_secs * 1000);
                let mut due = Vec::new();
                for (name, id) in store.rooms()? {
                    let Some((first, first_ts, last)) = store.log_bounds(id)? else {
                        continue;
                    };
                    let too_many = cfg.max_messages > 0 && last - first + 1 > cfg.max_messages;
                    let too_old = cfg.max_age_secs > 0 && first < last && first_ts < cutoff;
                    if too_many || too_old {
                        due.push(name);
                    }
                }
                Ok(due)
            },
        )
        .await;
        match due {
            Ok(Ok(rooms)) => {
                for name in rooms {
                    if registry.send(&name, Command::Trim).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep could not read rooms"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}
