//! roomd: a self-hosted realtime broker. Every room is a named, durable, ordered log with a
//! small key/value state, served over WebSocket + MessagePack (see `protocol/SPEC.md`).
//!
//! The map (ARCHITECTURE.md has the threads, tasks and queues):
//! - [`server`]: the listener and its routes, admission under the connection limits, the
//!   WebSocket upgrade, and the shutdown order; [`lifecycle`]: the phases and task trackers.
//! - [`connection`]: socket I/O of one WebSocket; [`session`]: its per-connection state;
//!   [`request`]: each request kind checked and turned into its room's command.
//! - [`outbox`]: the bounded per-connection queue; slow consumers are closed, never waited on.
//! - [`ratelimit`]: per-connection publish and state-write rates, per-user room loads.
//! - [`peer`]: where a room's replies go; [`error`]: what a client is told when a request fails.
//! - [`wire`]: outbound frames built once as complete WebSocket frames.
//! - [`room`]: one single-owner task per room: ordering, fan-out, resume, state, presence.
//! - [`store`]: the write-ahead log, its group-committing writer thread, and redb.
//! - [`engine`]: where rooms live, the embedded store or Redis; [`cluster`]: many nodes
//!   sharing rooms through Redis.
//! - [`retention`]: background trimming; [`metrics`]: Prometheus.
//! - [`wake`]: at start, loading the rooms whose keys have deadlines or are ephemeral.
//! - [`webhook`]: events for the app's backend, through a durable outbox, signed and retried.
//! - [`proxy`]: the app's endpoints deciding connects, subscribes and publishes (proxy hooks).
//! - [`auth`]: token verification (HMAC secret, PEM public key, JWKS file or URL);
//!   [`permissions`]: the capabilities a token's `rooms` claim grants; [`token`]: the
//!   `roomd token` command's development tokens.
//! - [`config`]: every limit, from `config/roomd.toml`; [`tls`]: the main port's certificate,
//!   reloadable.
//! - [`ui`]: the bundled web apps built on the SDK, embedded: the chat at `/`, the counter at
//!   `/counter`.
//!
//! Only [`Server`], [`ServerError`], [`Config`], [`backup`] (the backup and restore commands)
//! and [`token`] (the token command) are public: the embedding API.
//! `Server::start(config).await?` serves until `server.shutdown().await`.

// The map above links private modules: the docs are built with --document-private-items.
#![allow(rustdoc::private_intra_doc_links)]

mod api;
mod auth;
pub mod backup;
pub mod capability;
mod cluster;
pub mod config;
mod connection;
mod connections;
mod engine;
mod error;
mod expiry;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http_client;
mod lifecycle;
mod metrics;
mod outbox;
mod peer;
mod permissions;
mod proxy;
mod ratelimit;
mod request;
mod retention;
mod room;
mod server;
mod session;
mod store;
mod tls;
pub mod token;
mod ui;
mod wake;
mod webhook;
mod wire;

pub use config::Config;
pub use server::{Server, ServerError};
