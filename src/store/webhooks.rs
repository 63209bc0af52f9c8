//! The webhook outbox's rows in redb (table `tables::WEBHOOK_EVENTS`). Blocking: callers run
//! these on tokio's blocking pool.
//!
//! These transactions are the webhook module's own, beside the writer's groups: an event
//! append is committed durably (fsynced, with quick repair so a restart stays fast) before the
//! event counts as emitted; a removal after delivery is not (a crash before the next durable
//! commit only delivers those events again, which their ids make harmless). redb has one write
//! transaction at a time, so an append waits for an apply job in flight and vice versa; the
//! write-ahead log, which acknowledges writes, never waits for either.

use redb::{ReadableDatabase, ReadableTable};

use super::db::Store;
use super::error::StoreError;
use super::tables::{META, WEBHOOK_EVENTS, WEBHOOK_NEXT, WEBHOOK_SOURCE};

/// One row to append: (endpoint, event number, the event's JSON).
pub(crate) type Row = (String, u64, Vec<u8>);

/// Where event numbering stands: (source, next number). Draws the source on first use.
pub(crate) fn numbering(store: &Store) -> Result<(u64, u64), StoreError> {
    let db = store.db()?;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let out = {
        let mut meta = txn.open_table(META)?;
        txn.open_table(WEBHOOK_EVENTS)?;
        let stored = meta.get(WEBHOOK_SOURCE)?.map(|v| v.value());
        let source = match stored {
            Some(s) => s,
            None => {
                let s = rand::random::<u64>();
                meta.insert(WEBHOOK_SOURCE, s)?;
                s
            }
        };
        let next = meta.get(WEBHOOK_NEXT)?.map_or(1, |v| v.value());
        (source, next)
    };
    txn.commit()?;
    Ok(out)
}

/// Stores `rows` and the next event number in one durable transaction.
pub(crate) fn append(store: &Store, rows: &[Row], next: u64) -> Result<(), StoreError> {
    let db = store.db()?;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    {
        let mut table = txn.open_table(WEBHOOK_EVENTS)?;
        for (endpoint, n, json) in rows {
            table.insert((endpoint.as_str(), *n), json.as_slice())?;
        }
        txn.open_table(META)?.insert(WEBHOOK_NEXT, next)?;
    }
    txn.commit()?;
    Ok(())
}

/// The oldest events held for `endpoint`: at most `max_events`, and at most `max_bytes` of
/// JSON unless the first alone is larger.
pub(crate) fn page(
    store: &Store,
    endpoint: &str,
    max_events: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let txn = store.db()?.begin_read()?;
    let table = txn.open_table(WEBHOOK_EVENTS)?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for row in table.range((endpoint, 0)..=(endpoint, u64::MAX))? {
        let (k, v) = row?;
        let json = v.value();
        if out.len() == max_events || (!out.is_empty() && bytes + json.len() > max_bytes) {
            break;
        }
        bytes += json.len();
        out.push((k.value().1, json.to_vec()));
    }
    Ok(out)
}

/// Removes delivered events; not fsynced (see the module's comment).
pub(crate) fn remove(store: &Store, endpoint: &str, numbers: &[u64]) -> Result<(), StoreError> {
    let db = store.db()?;
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::None)?;
    {
        let mut table = txn.open_table(WEBHOOK_EVENTS)?;
        for n in numbers {
            table.remove((endpoint, *n))?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// How many events, and bytes of them, are held for `endpoint`.
pub(crate) fn depth(store: &Store, endpoint: &str) -> Result<(u64, u64), StoreError> {
    let txn = store.db()?.begin_read()?;
    let table = txn.open_table(WEBHOOK_EVENTS)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for row in table.range((endpoint, 0)..=(endpoint, u64::MAX))? {
        let (_, v) = row?;
        count += 1;
        bytes += v.value().len() as u64;
    }
    Ok((count, bytes))
}

/// Removes the rows of endpoints no longer configured; returns how many there were.
pub(crate) fn forget_others(store: &Store, keep: &[String]) -> Result<u64, StoreError> {
    let db = store.db()?;
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    let mut removed = 0;
    {
        let mut table = txn.open_table(WEBHOOK_EVENTS)?;
        let gone: Vec<(String, u64)> = table
            .iter()?
            .filter_map(Result::ok)
            .map(|(k, _)| (k.value().0.to_string(), k.value().1))
            .filter(|(e, _)| !keep.contains(e))
            .collect();
        for (e, n) in &gone {
            table.remove((e.as_str(), *n))?;
            removed += 1;
        }
    }
    txn.commit()?;
    Ok(removed)
}
