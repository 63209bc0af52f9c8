//! WebSocket connections from chosen loopback source addresses.
//!
//! Ten thousand connections from one source address to one server port would need ten thousand
//! ephemeral ports from one range, and the TIME_WAIT ones of the previous run too; spreading them
//! over 127.0.0.1..127.0.0.N keeps every run within bounds.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::BenchError;

pub type Ws = WebSocketStream<TcpStream>;

/// How many loopback source addresses connections are spread over.
const SOURCES: u32 = 32;

/// The source address for the `i`-th connection of a run.
pub fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES) as u8)
}

/// Where to connect and how.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub subprotocol: Option<&'static str>,
    /// Read buffer per connection: small for idle connections, larger for busy ones.
    pub read_buffer: usize,
}

pub async fn connect(target: &Target, src: Ipv4Addr) -> Result<Ws, BenchError> {
    let sock = TcpSocket::new_v4().map_err(|e| BenchError::io("socket", e))?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| BenchError::io("bind source address", e))?;
    let stream = sock
        .connect(target.addr)
        .await
        .map_err(|e| BenchError::io("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("nodelay", e))?;
    let mut req = format!("ws://{}{}", target.addr, target.path)
        .into_client_request()
        .map_err(BenchError::Ws)?;
    if let Some(p) = target.subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(target.read_buffer)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(BenchError::Ws)?;
    Ok(ws)
}
