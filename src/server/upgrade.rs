//! The WebSocket upgrade: checks the handshake, authenticates, admits the connection under the
//! connection limit, greets it with `hello`, and hands it to [`crate::connection`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use roomd_protocol::{codec, ServerFrame};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::admission::Slot;
use super::{text, Shared};
use crate::auth::{self, AuthError, Identity};
use crate::config::Config;
use crate::connection::{self, Timing};
use crate::connections::Conn;
use crate::error::ReplyError;
use crate::lifecycle::Phase;
use crate::outbox::Outbox;
use crate::peer::{InFlight, Peer};
use crate::permissions::Access;
use crate::session::{Session, Token};
use crate::webhook::{Event, Kind};

/// A WebSocket over TLS, when the port speaks TLS.
type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// What a valid handshake request selects.
struct Handshake {
    accept_key: String,
    /// The client offered `roomd.v1`, so the reply names it.
    subprotocol: bool,
}

/// A refused handshake: its HTTP status and a one-line reason.
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = text(self.0, self.1);
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            // RFC 6455 4.4: name the versions this server speaks.
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        r
    }
}

/// Checks an upgrade request against RFC 6455 section 4.2.1.
fn check_handshake(req: &Request<Incoming>) -> Result<Handshake, Refusal> {
    let bad = |body| Err(Refusal(StatusCode::BAD_REQUEST, body));
    let h = req.headers();
    // An upgrade is a GET over HTTP/1.1 (a HEAD has no body to upgrade into).
    if req.method() != Method::GET || req.version() < Version::HTTP_11 {
        return bad("a WebSocket upgrade is a GET over HTTP/1.1\n");
    }
    let is_upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return bad("expected a WebSocket upgrade (version 13)\n");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: this server speaks 13\n",
        ));
    }
    // The key is 16 random bytes, base64-encoded.
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).filter(|k| {
        STANDARD
            .decode(k.as_bytes())
            .is_ok_and(|raw| raw.len() == 16)
    }) else {
        return bad("Sec-WebSocket-Key must be 16 bytes in base64\n");
    };
    let offered: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    let subprotocol = offered.iter().any(|p| p == roomd_protocol::SUBPROTOCOL);
    if !offered.is_empty() && !subprotocol {
        return bad("unsupported subprotocol: this server speaks roomd.v1\n");
    }
    Ok(Handshake {
        accept_key: derive_accept_key(key.as_bytes()),
        subprotocol,
    })
}

/// Validates the WebSocket handshake, answers 101 and hands the upgraded socket to a task.
/// Without a `slot` (the server is at a connection limit) the socket is closed with 4002
/// right after the upgrade.
pub(super) fn upgrade(
    mut req: Request<Incoming>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    slot: Option<Arc<Slot>>,
) -> Response<Full<Bytes>> {
    let Handshake {
        accept_key,
        subprotocol: select,
    } = match check_handshake(&req) {
        Ok(handshake) => handshake,
        Err(refusal) => return refusal.into_response(),
    };
    let h = req.headers();
    if !origin_allowed(h, &shared.config.server.allowed_origins) {
        tracing::debug!(%addr, origin = ?h.get(header::ORIGIN), "upgrade refused: origin not allowed");
        return text(
            StatusCode::FORBIDDEN,
            "origin not allowed: add it to server.allowed_origins\n",
        );
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer_token)
        .map(str::to_string);
    let client_addr = client_addr(addr, h, &shared.config.server.trusted_proxies);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let setup = Setup {
        addr: client_addr,
        shared: shared.clone(),
        slot,
        token: query.token.or(bearer),
        declared_user: query.user,
        client: query.client,
    };
    shared
        .lifecycle
        .spawn_connection(serve_upgraded(on_upgrade, setup));
    switching_protocols(&accept_key, select)
}

/// Whether a browser page from the request's `Origin` may open a WebSocket here: the server's
/// own origin (the `Origin`'s host and port are the `Host` header's), one listed in `allowed`,
/// or any with `"*"`. Without the check any web page a user visits could open a connection with
/// the user's cookies and network position. Requests without `Origin` (not from a browser) pass.
fn origin_allowed(headers: &hyper::HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|h| !authority.is_empty() && h.eq_ignore_ascii_case(authority))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not itself a trusted proxy (the ones before it are the client's
/// own claims, which anyone can forge).
fn client_addr(peer: SocketAddr, headers: &hyper::HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer.ip()) {
        return peer.ip();
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer.ip())
}

/// What the upgraded connection's setup needs from its handshake.
struct Setup {
    /// The client's address, for logs (see [`client_addr`]).
    addr: IpAddr,
    shared: Arc<Shared>,
    /// `None`: over a connection limit; the socket is closed with 4002.
    slot: Option<Arc<Slot>>,
    /// From the query's `token` or the `Authorization` header; verified once the socket is
    /// open, since a verification may wait for a JWKS fetch.
    token: Option<String>,
    /// The query's `user`, honoured only on an open server.
    declared_user: Option<String>,
    client: Option<String>,
}

/// The connection task: waits for hyper to hand over the socket, sets the connection up, and
/// serves it.
async fn serve_upgraded(on_upgrade: hyper::upgrade::OnUpgrade, setup: Setup) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
    };
    // The setup runs boxed and ends; the task then holds only the connection's own future.
    // The connection gets the socket itself when it can, rather than hyper's layers between it
    // and every read and write.
    let serve = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => Box::pin(accept(parts.io.into_inner(), parts.read_buf, setup)).await,
        Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream>>() {
            Ok(parts) => Box::pin(accept(parts.io.into_inner(), parts.read_buf, setup)).await,
            Err(upgraded) => Box::pin(accept(TokioIo::new(upgraded), Bytes::new(), setup)).await,
        },
    };
    if let Some(serve) = serve {
        serve.await;
    }
}

/// The 101 answer.
fn switching_protocols(accept_key: &str, subprotocol: bool) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hm = r.headers_mut();
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hm.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept_key).unwrap_or_else(|_| HeaderValue::from_static("")),
    );
    if subprotocol {
        hm.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(roomd_protocol::SUBPROTOCOL),
        );
    }
    r
}

/// The query parameters of `/ws` (SPEC.md section 2).
struct Query {
    token: Option<String>,
    user: Option<String>,
    client: Option<String>,
}

impl Query {
    fn parse(q: &str) -> Query {
        let mut out = Query {
            token: None,
            user: None,
            client: None,
        };
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = (!v.is_empty()).then(|| v.into_owned());
            match &*k {
                "token" => out.token = v,
                // Ids over 64 bytes, or with control or bidi-override characters, are ignored
                // rather than trusted.
                "user" => out.user = v.filter(|v| roomd_protocol::valid_id(v, 64)),
                "client" => out.client = v.filter(|v| roomd_protocol::valid_id(v, 64)),
                _ => {}
            }
        }
        out
    }
}

/// A connection's future, boxed so a connection's task holds only the state it needs while
/// idle (the setup's locals die with the setup).
type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Sets up a WebSocket connection (hello, limits, auth); returns the future that serves it.
/// `read` holds what the client sent after its handshake and the HTTP layer already read.
async fn accept<S>(io: S, read: Bytes, setup: Setup) -> Option<ConnFuture>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Setup {
        addr,
        shared,
        slot,
        token,
        declared_user,
        client,
    } = setup;
    let cfg = ws_config(&shared.config);
    let ws = if read.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await
    } else {
        WebSocketStream::from_partially_read(io, read.to_vec(), Role::Server, Some(cfg)).await
    };
    let identity = shared
        .auth
        .identify(token.as_deref(), declared_user.as_deref())
        .await;
    let identity = match identity {
        Ok(identity) => identity,
        // Admitted without a token, as anonymous (SPEC.md 9.2).
        Err(AuthError::Missing) if shared.config.permissions.allow_anonymous => {
            Identity::anonymous()
        }
        Err(e) => {
            tracing::info!(%addr, error = %e, "connection refused: authentication failed");
            refuse(ws, e).await;
            return None;
        }
    };
    let Some(slot) = slot else {
        close_now(
            ws,
            roomd_protocol::CloseCode::AT_CAPACITY,
            "server at its connection limit",
        )
        .await;
        return None;
    };
    let n = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let id: Arc<str> = Arc::from(format!("{:08x}{:08x}", shared.boot, n));
    let outbox = Outbox::new(
        shared.config.outbox.max_frames,
        shared.config.outbox.max_bytes,
    );
    let user: Option<Arc<str>> = identity.user.map(Arc::from);
    if let Err((e, close, reason)) = ask_connect(
        &shared,
        &id,
        user.as_deref(),
        identity.verified,
        &client,
        addr,
    )
    .await
    {
        tracing::info!(%addr, code = e.code.as_u16(), reason = %e.msg, "connection refused by the application");
        refuse_with(ws, e, close, reason).await;
        return None;
    }
    // A verified user gets the `authenticated` defaults and its `{sub}` templates; a name
    // declared on an open server grants nothing.
    let access = Access::new(user.clone().filter(|_| identity.verified), identity.rooms);
    let peer = Arc::new(Peer {
        client: client.map_or_else(|| id.clone(), Arc::from),
        id: id.clone(),
        user,
        outbox: outbox.clone(),
        refused: Default::default(),
        in_flight: InFlight::default(),
    });
    let node = shared.registry.engine();
    greet(&peer, &shared.config, node.cluster().map(|c| c.node_id()));
    register(&shared, n, peer.user.clone(), outbox);
    crate::metrics::connection_opened();
    shared
        .webhooks
        .emit(Event::new(Kind::ConnectionOpened).by(&id, peer.user.as_ref()));
    tracing::debug!(
        conn = %id,
        %addr,
        user = ?peer.user,
        verified = identity.verified,
        expires_at = identity.expires_at,
        "connection opened"
    );
    let session = Session::new(
        peer,
        shared.registry.clone(),
        shared.registry.engine(),
        shared.config.clone(),
        shared.lifecycle.clone(),
    )
    .with_access(access)
    .with_proxies(shared.proxies.clone());
    let session = if identity.verified {
        let token = Token {
            auth: shared.auth.clone(),
            expiries: shared.expiries.clone(),
            ticket: None,
            window: Duration::from_secs(shared.config.auth.refresh_window_secs),
            leeway: Duration::from_secs(shared.config.auth.leeway_secs),
        };
        session.with_token(token, identity.expires_at)
    } else {
        session
    };
    let timing = Timing {
        ping: shared.config.ping_interval(),
        write_timeout: Duration::from_millis(shared.config.websocket.write_timeout_ms),
        requests_in_flight: shared.config.limits.requests_in_flight,
        large_in_flight: (shared.config.outbox.max_bytes
            / (2 * shared.config.websocket.max_frame_bytes))
            .max(1),
    };
    let guard = ConnGuard {
        conn: id,
        user: session.peer.user.clone(),
        shared,
        n,
        _slot: slot,
    };
    Some(Box::pin(connection::run(ws, session, timing, guard)))
}

/// The tungstenite limits of every connection, from `[websocket]`.
fn ws_config(config: &Config) -> WebSocketConfig {
    let ws = &config.websocket;
    WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_bytes)
        .write_buffer_size(ws.write_buffer_bytes)
        .max_write_buffer_size(ws.write_buffer_bytes.max(ws.max_frame_bytes) * 4)
        .max_message_size(Some(ws.max_frame_bytes))
        .max_frame_size(Some(ws.max_frame_bytes))
}

/// The first frame of every connection (SPEC.md section 3).
fn greet(peer: &Peer, config: &Config, node: Option<&str>) {
    peer.send(&ServerFrame::Hello {
        v: roomd_protocol::VERSION,
        server: format!("roomd/{}", env!("CARGO_PKG_VERSION")),
        conn: peer.id.to_string(),
        user: peer.user.as_deref().map(str::to_string),
        ping: config.websocket.ping_interval_secs,
        limits: config.wire_limits(),
        node: node.map(str::to_string),
    });
}

/// Makes the connection's outbox reachable by shutdown.
fn register(shared: &Shared, n: u64, user: Option<Arc<str>>, outbox: Outbox) {
    let mut conns = shared.conns.lock();
    // Checked under the lock that the shutdown's walk over the connections takes: one that
    // registers after the walk refuses requests from the start.
    if shared.lifecycle.phase() >= Phase::LameDuck {
        outbox.refuse_requests();
    }
    conns.insert(n, Conn { user, outbox });
}

/// Unregisters a connection when its task ends, however it ends.
struct ConnGuard {
    shared: Arc<Shared>,
    n: u64,
    /// For `connection.closed`.
    conn: Arc<str>,
    user: Option<Arc<str>>,
    /// The connection's place under the connection limits, taken at accept.
    _slot: Arc<Slot>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
        self.shared.conns.remove(self.n);
        self.shared
            .webhooks
            .emit(Event::new(Kind::ConnectionClosed).by(&self.conn, self.user.as_ref()));
    }
}

/// The application's `connect` decision (README "Proxy hooks"), when a proxy takes it: a
/// refusal is the `err` to send, the close code and its reason.
async fn ask_connect(
    shared: &Shared,
    conn: &str,
    user: Option<&str>,
    verified: bool,
    client: &Option<String>,
    addr: IpAddr,
) -> Result<(), (ReplyError, u16, &'static str)> {
    use crate::proxy::{Ask, Call};
    use roomd_protocol::{CloseCode, ErrorCode};
    let Some(endpoint) = shared.proxies.route(Call::Connect, None) else {
        return Ok(());
    };
    let mut ask = Ask::new(Call::Connect, conn, user, verified);
    ask.client.clone_from(client);
    ask.addr = Some(addr.to_string());
    // Anonymous connections are not cached: each is its own.
    let key = user.map(|u| format!("connect\0{verified}\0{u}"));
    let e = match endpoint.settle(endpoint.decide(&ask, key).await) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    Err(match e.code {
        ErrorCode::Unauthorized => (e, CloseCode::UNAUTHORIZED, "refused by the application"),
        ErrorCode::Unavailable => (
            e,
            CloseCode::INTERNAL,
            "the application's check is unavailable",
        ),
        _ => (e, CloseCode::REMOVED, "refused by the application"),
    })
}

/// Authentication failed: an `err` 401 frame, then close 4401.
async fn refuse<S>(ws: WebSocketStream<S>, e: AuthError)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let err = ReplyError::new(roomd_protocol::ErrorCode::Unauthorized, e.to_string());
    refuse_with(
        ws,
        err,
        roomd_protocol::CloseCode::UNAUTHORIZED,
        "authentication failed",
    )
    .await;
}

/// A connection that may not go on: an `err` frame without `id`, then the close.
async fn refuse_with<S>(
    mut ws: WebSocketStream<S>,
    err: ReplyError,
    close: u16,
    reason: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    crate::metrics::error(err.code);
    let frame = codec::encode(&ServerFrame::Err {
        id: None,
        code: err.code.as_u16(),
        msg: err.msg,
        ver: None,
        max: None,
        retry_after_ms: None,
    });
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            Bytes::from(frame),
        ))
        .await;
    close_now(ws, close, reason).await;
}

async fn close_now<S>(mut ws: WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let frame = CloseFrame {
        code: WsCloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&["1.2.3.4, 203.0.113.9", "10.0.0.7"]);
        // The last hop that is not a trusted proxy: earlier ones are the client's claims.
        assert_eq!(
            client_addr(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // From an untrusted peer the header is ignored.
        let direct: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        assert_eq!(client_addr(direct, &h, &trusted), direct.ip());
        // No usable header: the proxy's own address.
        assert_eq!(
            client_addr(proxy, &headers(&["junk"]), &trusted),
            proxy.ip()
        );
    }
}
