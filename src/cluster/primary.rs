//! Where the Redis primary is: `cluster.redis_url`, or, with `cluster.sentinels`, the address
//! Redis Sentinel names for `cluster.sentinel_master`, followed across failovers.
//!
//! Every caller takes the current connection for each call ([`Primary::conn`]), so a failover
//! moves the node's writes, reads, presence and feed together. The node's health check asks
//! Sentinel on each tick ([`Primary::moved`]): a promoted replica is used as soon as Sentinel
//! names it, and a demoted primary that came back (now a replica) is left, even though it still
//! answers `PING`.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::ClusterError;
use crate::config::ClusterConfig;

/// The current primary: its address, a client for it (the feed's pub/sub connections) and the
/// shared connection every call uses.
struct Current {
    addr: (String, u16),
    client: redis::Client,
    conn: ConnectionManager,
}

pub(crate) struct Primary {
    /// `redis_url`: credentials, database and TLS for the primary, whose host and port Sentinel
    /// replaces.
    template: ConnectionInfo,
    sentinel: Option<Sentinels>,
    conn_cfg: ConnectionManagerConfig,
    current: RwLock<Current>,
}

/// The Sentinels to ask, the name of the primary they watch, and a connection to the last one
/// that answered.
struct Sentinels {
    addrs: Vec<ConnectionInfo>,
    master: String,
    timeout: Duration,
    last: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Primary {
    /// Connects to `redis_url`, or to the primary Sentinel names.
    pub(crate) async fn connect(
        cfg: &ClusterConfig,
        conn_cfg: ConnectionManagerConfig,
    ) -> Result<Primary, ClusterError> {
        let template = cfg.redis_url.as_str().into_connection_info()?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let sentinel = match cfg.sentinels.is_empty() {
            true => None,
            false => Some(Sentinels {
                addrs: cfg
                    .sentinels
                    .iter()
                    .map(|s| s.as_str().into_connection_info())
                    .collect::<Result<_, _>>()?,
                master: cfg.sentinel_master.clone(),
                timeout,
                last: tokio::sync::Mutex::new(None),
            }),
        };
        let addr = match &sentinel {
            Some(s) => s.primary().await.ok_or_else(|| {
                ClusterError::Sentinel(format!(
                    "no Sentinel in cluster.sentinels named a primary for \"{}\"",
                    s.master
                ))
            })?,
            None => host_port(&template),
        };
        let current = open(&template, &addr, conn_cfg.clone()).await?;
        Ok(Primary {
            template,
            sentinel,
            conn_cfg,
            current: RwLock::new(current),
        })
    }

    /// The connection to the current primary (cheap: a handle to a shared connection).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .conn
            .clone()
    }

    /// A client for the current primary, for connections of their own (pub/sub).
    pub(crate) fn client(&self) -> redis::Client {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .client
            .clone()
    }

    pub(crate) fn follows_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// Asks Sentinel where the primary is: its address if it moved (for the caller to connect,
    /// check and prepare it before [`Primary::switch`]). `None`: it did not move, or no
    /// Sentinel answered.
    pub(crate) async fn moved(&self) -> Option<(String, u16)> {
        let named = self.sentinel.as_ref()?.primary().await?;
        let now = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .addr
            .clone();
        (named != now).then_some(named)
    }

    /// A connection to `addr` with this node's credentials and settings.
    pub(crate) async fn open(
        &self,
        addr: &(String, u16),
    ) -> Result<ConnectionManager, ClusterError> {
        let c = open(&self.template, addr, self.conn_cfg.clone()).await?;
        Ok(c.conn)
    }

    /// From now on every call goes to `addr`, over `conn`.
    pub(crate) fn switch(
        &self,
        addr: (String, u16),
        conn: ConnectionManager,
    ) -> Result<(), ClusterError> {
        let client = redis::Client::open(with_addr(&self.template, &addr))?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Current { addr, client, conn };
        Ok(())
    }
}

impl Sentinels {
    /// The primary's address from the first Sentinel that answers.
    async fn primary(&self) -> Option<(String, u16)> {
        let mut last = self.last.lock().await;
        if let Some(conn) = last.as_mut() {
            if let Some(addr) = self.ask(conn).await {
                return Some(addr);
            }
            *last = None;
        }
        for info in &self.addrs {
            let Ok(client) = redis::Client::open(info.clone()) else {
                continue;
            };
            let connect = client.get_multiplexed_async_connection();
            let Ok(Ok(mut conn)) = tokio::time::timeout(self.timeout, connect).await else {
                continue;
            };
            if let Some(addr) = self.ask(&mut conn).await {
                *last = Some(conn);
                return Some(addr);
            }
        }
        None
    }

    async fn ask(&self, conn: &mut MultiplexedConnection) -> Option<(String, u16)> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.master);
        let reply =
            tokio::time::timeout(self.timeout, cmd.query_async::<Option<(String, u16)>>(conn));
        reply.await.ok()?.ok()?
    }
}

async fn open(
    template: &ConnectionInfo,
    addr: &(String, u16),
    conn_cfg: ConnectionManagerConfig,
) -> Result<Current, ClusterError> {
    let client = redis::Client::open(with_addr(template, addr))?;
    let conn = ConnectionManager::new_with_config(client.clone(), conn_cfg).await?;
    Ok(Current {
        addr: addr.clone(),
        client,
        conn,
    })
}

fn host_port(info: &ConnectionInfo) -> (String, u16) {
    match &info.addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => (h.clone(), *p),
        ConnectionAddr::Unix(path) => (path.display().to_string(), 0),
    }
}

/// `template` with its host and port replaced (TLS kept).
fn with_addr(template: &ConnectionInfo, addr: &(String, u16)) -> ConnectionInfo {
    let mut info = template.clone();
    info.addr = match &template.addr {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: addr.0.clone(),
            port: addr.1,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_) if addr.1 == 0 => template.addr.clone(),
        _ => ConnectionAddr::Tcp(addr.0.clone(), addr.1),
    };
    info
}
