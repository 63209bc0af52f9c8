//! `roomd backup` and `roomd restore`: the command-line side of online backups.
//!
//! A backup is made by the running server (see `GET /backup` on its admin listener, which
//! copies one consistent snapshot of the database without pausing writers) and streamed to
//! the file named here; a restore checks a backup opens as a roomd database and installs it in
//! an empty data directory.

use std::net::SocketAddr;
use std::path::Path;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::store::StoreError;

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub rooms: u64,
    pub entries: u64,
    pub keys: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("cannot reach the admin listener at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("the server answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Fetches a backup from the server whose admin listener is at `admin` into `dest`, which is
/// written beside itself first and renamed into place only once complete and fsynced.
pub async fn fetch(admin: SocketAddr, dest: &Path) -> Result<Summary, BackupError> {
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|source| BackupError::Connect {
            addr: admin,
            source,
        })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get("/backup")
        .header(hyper::header::HOST, admin.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let summary = Summary {
        rooms: header("x-roomd-rooms"),
        entries: header("x-roomd-entries"),
        keys: header("x-roomd-keys"),
    };
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        return Err(BackupError::Refused {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).trim().to_string(),
        });
    }
    let partial = dest.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial).await?;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            file.write_all(&data).await?;
        }
    }
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&partial, dest).await?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    driver.abort();
    Ok(summary)
}

/// Installs the backup `src` as the database of the empty data directory `data_dir`.
pub fn restore(src: &Path, data_dir: &Path) -> Result<Summary, BackupError> {
    let stats = crate::store::backup::restore(src, data_dir)?;
    Ok(Summary {
        rooms: stats.rooms,
        entries: stats.entries,
        keys: stats.keys,
    })
}
