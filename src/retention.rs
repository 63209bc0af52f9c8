//! Background retention: trims rooms past their `max_messages` or `max_age_secs` (their
//! namespace's, else `[retention]`'s).
//!
//! Trimming goes through the room task (it owns the room's order and knows when a subscriber
//! is replaying, which defers the trim), so a room that needs trimming is loaded for it and
//! unloads again when idle. Rooms that need nothing are only looked at, not loaded.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::room::{model::now_ms, Command, Registry};
use crate::store::Store;

pub(crate) async fn sweep(
    registry: Arc<Registry>,
    store: Store,
    cfg: Arc<Config>,
    lifecycle: Lifecycle,
) {
    let every = Duration::from_secs(cfg.retention.sweep_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = lifecycle.stopping() => return,
        }
        let (store, cfg) = (store.clone(), cfg.clone());
        let due = tokio::task::spawn_blocking(
            move || -> Result<Vec<String>, crate::store::StoreError> {
                let now = now_ms();
                let mut due = Vec::new();
                for (name, id) in store.rooms()? {
                    let (max_messages, max_age_secs) = cfg.retention_of(&name);
                    if max_messages == 0 && max_age_secs == 0 {
                        continue;
                    }
                    let Some((first, first_ts, last)) = store.log_bounds(id)? else {
                        continue;
                    };
                    let cutoff = now.saturating_sub(max_age_secs * 1000);
                    let too_many = max_messages > 0 && last - first + 1 > max_messages;
                    let too_old = max_age_secs > 0 && first < last && first_ts < cutoff;
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
