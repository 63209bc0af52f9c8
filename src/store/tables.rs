//! The redb tables and the named counters kept in `META`.
//!
//! Layout: entry keys are `(room id, seq)`, so one room's entries are adjacent and a commit
//! touches few pages per room; state keys are `(room id, key)`.

use redb::TableDefinition;

/// Room name → (room id, epoch).
pub(crate) const ROOMS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("rooms");
/// (room id, seq) → the room's message log entry (see [`super::record`]). Named `ENTRIES` here
/// so it is not confused with the write-ahead log; the table is called "log" on disk.
pub(crate) const ENTRIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("log");
/// (room id, seq) → `ts (u64 BE) | dedup key`, one row for each entry stored with a dedup key
/// (a `pub` with `mid`): a room loads its `mid` window from here instead of walking back
/// through its log, which may hold any number of entries without one inside the window.
pub(crate) const MIDS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("mids");
/// (room id, key) → state record (see [`super::record`]).
pub(crate) const STATE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("state");
/// (webhook endpoint name, event number) → the event as a JSON object: the durable outbox of
/// `[[webhooks]]`, one row per event and endpoint that wants it, removed once delivered.
pub(crate) const WEBHOOK_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("webhook_events");
/// Small named counters, e.g. the next room id.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const NEXT_ROOM_ID: &str = "next_room_id";
/// Since when (ms since the Unix epoch) `MIDS` holds every dedup key: 0 for a database created
/// with it, the first start of a build that has it for an older database. Until a room's `mid`
/// window lies wholly after it, loads walk the log for the window as before.
pub(crate) const MIDS_SINCE: &str = "mids_since";
/// The number of the last write-ahead log group applied (see [`super::wal`]).
pub(crate) const WAL_COMMIT: &str = "wal_commit";
/// The salt of the write-ahead log's current cycle (see [`super::wal`]).
pub(crate) const WAL_SALT: &str = "wal_salt";
/// Which of the two write-ahead log files the current cycle is in, 0 or 1 (see [`super::wal`]).
pub(crate) const WAL_FILE: &str = "wal_file";
/// The number of the next webhook event (event ids never repeat within a data directory).
pub(crate) const WEBHOOK_NEXT: &str = "webhook_next";
/// A random number drawn when the data directory first sends webhooks: the first half of
/// every event id, so two nodes of a cluster never send the same id.
pub(crate) const WEBHOOK_SOURCE: &str = "webhook_source";
