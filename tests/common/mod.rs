//! Test harness: runs the real `roomd` binary on an ephemeral port with a temp data dir, and a
//! small client that speaks real WebSocket + MessagePack to it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomd_protocol::{codec, decode_server, ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// An HS256 JWT of `claims`, signed with `secret`.
pub fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Runs roomd with `config` on any port and waits for it to exit (a config it refuses).
pub fn run_to_exit(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap()
}

pub struct Broker {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: String,
    /// Extra environment for the roomd process (fault injection).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Broker {
    /// Starts roomd with `extra` appended to a minimal config.
    pub fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        Broker::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Broker {
        Broker::start_env(dir, extra, &[])
    }

    /// Starts roomd with `extra` appended to a minimal config and `env` in its environment.
    pub fn start_env(dir: tempfile::TempDir, extra: &str, env: &[(&str, &str)]) -> Broker {
        let config = dir.path().join("roomd.toml");
        std::fs::write(&config, extra).unwrap();
        let mut b = Broker {
            dir,
            config,
            addr: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        b.spawn("127.0.0.1:0");
        b
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self, listen: &str) {
        let data = self.data_dir();
        self.spawn_with(listen, &data);
    }

    pub fn spawn_with(&mut self, listen: &str, data: &Path) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomd"))
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start roomd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.strip_prefix("http://").or(a.strip_prefix("https://")))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        self.addr = addr;
        self.child = Some(child);
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{}", self.addr, query)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: a crash at an arbitrary moment.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap().code()
    }

    /// Waits for an already-signalled broker to exit; returns the exit code.
    pub fn terminate_wait(&mut self) -> Option<i32> {
        self.child.take()?.wait().unwrap().code()
    }

    /// Starts again on the same port and data dir.
    pub fn restart(&mut self) {
        let listen = self.addr.clone();
        self.spawn(&listen);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(&self.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// One HTTP request with `body` (sent as `content_type` when given) on a fresh connection;
    /// returns the status, the response headers (lowercased names) and the body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        http_at(&self.addr, method, path, headers, body).await
    }

    /// A server API call with JSON in and out, authenticated with `key` (none: no header).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        api_at(&self.addr, method, path, key, body).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client that keeps events aside while it waits for a reply.
pub struct Client {
    pub ws: Ws,
    pub hello: ServerFrame,
    pub conn: String,
    next_id: u32,
    events: VecDeque<ServerFrame>,
}

impl Client {
    pub async fn connect(b: &Broker) -> Client {
        Client::connect_url(&b.ws_url("")).await
    }

    pub async fn connect_query(b: &Broker, query: &str) -> Client {
        Client::connect_url(&b.ws_url(query)).await
    }

    pub async fn connect_url(url: &str) -> Client {
        Client::connect_with(url, None).await
    }

    /// Connects to `wss://` URLs with `tls` (which trusts the test's CA).
    pub async fn connect_tls(url: &str, tls: std::sync::Arc<rustls::ClientConfig>) -> Client {
        Client::connect_with(url, Some(tokio_tungstenite::Connector::Rustls(tls))).await
    }

    async fn connect_with(url: &str, connector: Option<tokio_tungstenite::Connector>) -> Client {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "roomd.v1".parse().unwrap());
        let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector);
        let (mut ws, resp) = tokio::time::timeout(TIMEOUT, connect)
            .await
            .expect("connect timeout")
            .expect("connect");
        assert_eq!(
            resp.headers().get("sec-websocket-protocol").unwrap(),
            "roomd.v1"
        );
        let hello = read_frame(&mut ws).await.expect("hello");
        let ServerFrame::Hello { conn, .. } = &hello else {
            panic!("first frame {hello:?}")
        };
        let conn = conn.clone();
        Client {
            ws,
            hello,
            conn,
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    pub fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.ws
            .send(Message::Binary(codec::encode(frame).into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// Sends a request and waits for the frame that answers it.
    pub async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = frame.id();
        self.send(&frame).await;
        self.reply_to(id).await
    }

    pub async fn reply_to(&mut self, id: u32) -> ServerFrame {
        loop {
            let f = read_frame(&mut self.ws)
                .await
                .unwrap_or_else(|| panic!("closed while waiting for reply {id}"));
            if reply_id(&f) == Some(id) {
                return f;
            }
            self.events.push_back(f);
        }
    }

    /// The next frame without an id (or any buffered one).
    pub async fn event(&mut self) -> ServerFrame {
        if let Some(f) = self.events.pop_front() {
            return f;
        }
        read_frame(&mut self.ws)
            .await
            .expect("connection closed while waiting for an event")
    }

    /// The next frame, or `None` if nothing arrives within `wait`.
    pub async fn try_event(&mut self, wait: Duration) -> Option<ServerFrame> {
        if let Some(f) = self.events.pop_front() {
            return Some(f);
        }
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => Some(decode_server(&b).unwrap()),
            _ => None,
        }
    }

    pub async fn sub(&mut self, room: &str, since: Option<u64>) -> ServerFrame {
        let id = self.id();
        self.request(ClientFrame::Sub {
            id,
            room: room.into(),
            since,
            state: None,
            presence: None,
            info: None,
        })
        .await
    }

    pub async fn publish(&mut self, room: &str, data: &[u8]) -> ServerFrame {
        let id = self.id();
        self.request(ClientFrame::Pub {
            id,
            room: room.into(),
            data: data.to_vec(),
            mid: None,
        })
        .await
    }

    pub async fn publish_seq(&mut self, room: &str, data: &[u8]) -> u64 {
        match self.publish(room, data).await {
            ServerFrame::Ack { seq, .. } => seq,
            other => panic!("expected ack, got {other:?}"),
        }
    }

    /// Every entry of a room, oldest first, paged through `hist`. A 503 (a cluster node whose
    /// Redis just restarted) is retried for up to 10 s.
    pub async fn history_all(&mut self, room: &str) -> Vec<ServerFrame> {
        let mut out = Vec::new();
        let mut after = 0;
        let mut retries = 0;
        loop {
            let id = self.id();
            let reply = self
                .request(ClientFrame::Hist {
                    id,
                    room: room.into(),
                    after: Some(after),
                    before: None,
                    limit: None,
                })
                .await;
            let ServerFrame::Hist { items, more, .. } = reply else {
                assert_eq!(err_code(&reply), 503, "expected hist, got {reply:?}");
                retries += 1;
                assert!(retries < 100, "503 for 10 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for item in items {
                after = match &item {
                    ServerFrame::Msg { seq, .. }
                    | ServerFrame::State { seq, .. }
                    | ServerFrame::Del { seq, .. } => *seq,
                    other => panic!("not a log entry: {other:?}"),
                };
                out.push(item);
            }
            if !more {
                return out;
            }
        }
    }

    /// Waits for the next `msg` event and returns (seq, data).
    pub async fn msg(&mut self) -> (u64, Vec<u8>) {
        loop {
            match self.event().await {
                ServerFrame::Msg { seq, data, .. } => return (seq, data),
                ServerFrame::Join { .. } | ServerFrame::Leave { .. } => continue,
                other => panic!("expected msg, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("no close in time")
            {
                Some(Ok(Message::Close(Some(f)))) => return Some(f.code.into()),
                Some(Ok(Message::Close(None))) | None => return None,
                Some(Err(e)) => {
                    eprintln!("close_code: read error {e}");
                    return None;
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

pub fn reply_id(f: &ServerFrame) -> Option<u32> {
    match f {
        ServerFrame::Subbed { id, .. }
        | ServerFrame::Ok { id }
        | ServerFrame::Ack { id, .. }
        | ServerFrame::Hist { id, .. }
        | ServerFrame::Val { id, .. }
        | ServerFrame::Vals { id, .. }
        | ServerFrame::Done { id, .. }
        | ServerFrame::Who { id, .. }
        | ServerFrame::Pong { id } => Some(*id),
        ServerFrame::Err { id, .. } => *id,
        _ => None,
    }
}

pub async fn read_frame(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for a frame")?
        {
            Ok(Message::Binary(b)) => {
                return Some(decode_server(&b).expect("server frame decodes"))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The error code of an `err` frame, or a panic.
pub fn err_code(f: &ServerFrame) -> u16 {
    match f {
        ServerFrame::Err { code, .. } => *code,
        other => panic!("expected err, got {other:?}"),
    }
}

/// One HTTP/1.1 request on a fresh connection to `addr`.
pub async fn http_at(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413, 401) before reading the whole body and close.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("no answer in time");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = out[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
}

/// A server API call at `addr`: JSON in and out.
pub async fn api_at(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, out) = http_at(addr, method, path, &headers, body.as_bytes()).await;
    let json = if out.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)))
    };
    (status, json)
}
