//! Where rooms' logs and state live: the embedded store (one node, the default) or Redis
//! shared by many nodes ([`crate::cluster`]). Rooms, history requests and the server API read
//! through this; a room's writes go to the writer thread or to Redis (`room::commit`).

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::Cluster;
use crate::store::reader::{LoadLimits, RoomSnapshot};
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub(crate) enum Engine {
    Embedded(Store),
    Redis(Arc<Cluster>),
}

impl Engine {
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Engine::Redis(c) => Some(c),
            Engine::Embedded(_) => None,
        }
    }

    /// Loads a room; a new room on Redis gets `epoch`.
    pub(crate) async fn load_room(
        &self,
        name: &Arc<str>,
        epoch: u64,
        lim: LoadLimits,
    ) -> Result<RoomSnapshot, StoreError> {
        match self {
            Engine::Embedded(store) => {
                let (store, room) = (store.clone(), name.clone());
                tokio::task::spawn_blocking(move || store.load_room(&room, &lim)).await?
            }
            Engine::Redis(c) => c.load(name, epoch, &lim).await,
        }
    }

    /// A replay page from `from` on (the embedded store knows the room by its id, Redis by its
    /// name).
    pub(crate) async fn read_forward(
        &self,
        room: (u64, &str),
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<crate::wire::Page, StoreError> {
        match self {
            Engine::Embedded(store) => {
                let (store, id) = (store.clone(), room.0);
                tokio::task::spawn_blocking(move || store.read_forward(id, from, limit, max_bytes))
                    .await?
            }
            Engine::Redis(c) => c.read_forward(room.1, from, limit, max_bytes).await,
        }
    }

    pub(crate) async fn read_entry(
        &self,
        room: (u64, &str),
        seq: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        match self {
            Engine::Embedded(store) => {
                let (store, id) = (store.clone(), room.0);
                tokio::task::spawn_blocking(move || store.read_entry(id, seq)).await?
            }
            Engine::Redis(c) => c.read_entry(room.1, seq).await,
        }
    }

    /// A history page (SPEC.md 4.4): frames ascending, and whether more exist.
    pub(crate) async fn history(
        &self,
        room: String,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        match self {
            Engine::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    store.history(&room, after, before, limit, max_bytes)
                })
                .await?
            }
            Engine::Redis(c) => c.history(&room, after, before, limit, max_bytes).await,
        }
    }
}
