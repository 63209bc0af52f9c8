//! roomd: a self-hosted realtime broker. Every room is a named, durable, ordered log with a
//! small key/value state, served over WebSocket + MessagePack (see `protocol/SPEC.md`).
//!
//! - [`server`]: the listener, HTTP routes (`/ws`, `/metrics`, `/healthz`, `/`) and shutdown.
//! - [`connection`]: socket I/O of one WebSocket; [`session`]: its requests and limits.
//! - [`outbox`]: the bounded per-connection queue; slow consumers are closed, never waited on.
//! - [`wire`]: outbound frames built once as complete WebSocket frames.
//! - [`room`]: one single-owner task per room: ordering, fan-out, resume, state, presence.
//! - [`store`]: redb storage with a group-committing writer thread.
//! - [`retention`]: background trimming; [`auth`]: JWT checks; [`metrics`]: Prometheus.
//! - [`config`]: every limit, from `config/roomd.toml`.
//!
//! Embedding: `Server::start(config).await?` serves until `server.shutdown().await`.

mod auth;
pub mod config;
mod connection;
mod error;
mod lifecycle;
mod metrics;
mod outbox;
mod peer;
mod request;
mod retention;
mod room;
mod server;
mod session;
mod store;
mod ui;
mod wire;

pub use config::Config;
pub use server::{Server, ServerError};
