//! Admission at accept: every TCP connection takes a slot before a byte of it is read, so
//! sockets that never finish their HTTP request (or never upgrade) count against
//! `server.max_connections` and `server.max_connections_per_ip` like WebSockets do.
//!
//! A connection that finds no slot is not dropped at once: it gets a brief answer of its own
//! (a WebSocket upgrade is closed with 4002, as the protocol documents; `/healthz` and
//! `/metrics` answer, so an operator can see the server at its limit). At most
//! [`REFUSALS`] such answers run at a time, each for at most [`REFUSAL_LIFETIME`]; beyond that a
//! connection is closed without a word. So the file descriptors roomd holds stay below
//! `max_connections + REFUSALS`, whatever clients do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Over-limit connections being answered at once.
pub(super) const REFUSALS: usize = 64;

/// How long an over-limit connection may last in all: time for a client on a slow link to
/// send its request and read the answer, short enough that over-limit sockets turn over.
pub(super) const REFUSAL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct Admission {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    /// Connections per client address; only kept when a per-address limit is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// What an accepted connection may do.
pub(super) enum Admitted {
    /// Served in full; the slot is held by the HTTP connection and, after an upgrade, by the
    /// WebSocket.
    Slot(Arc<Slot>),
    /// Over a limit: answered briefly, then closed.
    Refused(OwnedSemaphorePermit),
    /// Over a limit while [`REFUSALS`] answers are already running: close at once.
    Dropped,
}

/// One connection's place under the limits; released when dropped.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    admission: Arc<Admission>,
}

impl Admission {
    pub(super) fn new(max_connections: usize, max_per_ip: usize) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSALS)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
        })
    }

    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admitted {
        match self.take_slot(ip) {
            Some(slot) => Admitted::Slot(Arc::new(slot)),
            None => match self.refusals.clone().try_acquire_owned() {
                Ok(permit) => Admitted::Refused(permit),
                Err(_) => Admitted::Dropped,
            },
        }
    }

    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        if self.max_per_ip == 0 {
            return Some(Slot {
                _permit: permit,
                ip: None,
                admission: self.clone(),
            });
        }
        let mut per_ip = self.lock();
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            _permit: permit,
            ip: Some(ip),
            admission: self.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut per_ip = self.admission.lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}
