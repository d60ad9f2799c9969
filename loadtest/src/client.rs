//! One virtual Socket.IO client: Engine.IO v4 over WebSocket, HTTP long-polling, or polling
//! upgraded to WebSocket; Socket.IO v5 on the root namespace. Each client is a couple of tokio
//! tasks with small buffers — no thread per client.
//!
//! [`connect`] returns once the Socket.IO CONNECT is acknowledged: a [`Session`] to send
//! Socket.IO packets with, and a receiver of [`Inbound`] events. Heartbeats are answered inside.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::cookies::CookieJar;
use crate::protocol::{self, EioPacket, SEPARATOR, SioPacket};

/// Which transport a client uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket from the first request.
    Websocket,
    /// HTTP long-polling only.
    Polling,
    /// Polling handshake, then upgrade to WebSocket (socket.io-client's default).
    Upgrade,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` of the server.
    pub addr: SocketAddr,
    /// Host header value.
    pub host: String,
    /// Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// Extra query string (without `?`), e.g. `room=a`.
    pub query: String,
    /// `https://` / `wss://`: TLS (the URL's host is the SNI name and the name checked).
    pub tls: bool,
}

/// What a client hears.
#[derive(Debug)]
pub enum Inbound {
    /// A Socket.IO packet.
    Packet(SioPacket),
    /// The session ended (reason).
    Closed(String),
}

/// The CA certificates a run trusts for `https://` and `wss://` targets (`--ca`).
#[derive(Clone)]
pub struct TlsTrust {
    /// For WebSocket connects: ring provider, TLS 1.2 and 1.3, ALPN http/1.1.
    pub connector: Connector,
    /// For the polling HTTP clients.
    pub certs: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTrust")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl TlsTrust {
    /// Trust the CA certificates in `pem` (PEM, one or more).
    pub fn from_pem(pem: &[u8]) -> Result<TlsTrust, String> {
        let roots = iogate_shared::tls::roots_from_pem(pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every connect is a full handshake, as from distinct browsers: a resumed session would
        // measure the server's session cache, not its handshakes.
        config.resumption = rustls::client::Resumption::disabled();
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        Ok(TlsTrust {
            connector: Connector::Rustls(Arc::new(config)),
            certs,
        })
    }
}

/// Why a connect failed (low-cardinality reason for the summary, plus detail).
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// Short reason: `tcp`, `http`, `handshake`, `timeout`, `refused`, `protocol`.
    pub reason: &'static str,
    /// Detail.
    pub detail: String,
}

impl ConnectError {
    fn new(reason: &'static str, detail: impl ToString) -> Self {
        Self {
            reason,
            detail: detail.to_string(),
        }
    }
}

/// Sends Socket.IO packets on an open session.
#[derive(Debug, Clone)]
pub struct Session {
    out: mpsc::UnboundedSender<Out>,
    /// The Socket.IO socket id.
    pub sid: String,
    /// The private session id of connection state recovery, when the server sent one.
    pub pid: Option<String>,
}

#[derive(Debug)]
enum Out {
    Text(String),
    Close { abrupt: bool },
}

impl Session {
    /// Send a Socket.IO packet (already encoded, without the Engine.IO `4`).
    pub fn send(&self, sio: String) -> bool {
        self.out.send(Out::Text(sio)).is_ok()
    }

    /// Close politely (Socket.IO DISCONNECT + Engine.IO close).
    pub fn close(&self) {
        let _ = self.out.send(Out::Close { abrupt: false });
    }

    /// Drop the connection without a goodbye (a network failure, for `storm`).
    pub fn drop_abruptly(&self) {
        let _ = self.out.send(Out::Close { abrupt: true });
    }
}

/// Options shared by every client of a run.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Transport.
    pub transport: Transport,
    /// Bound on the whole connect.
    pub connect_timeout: Duration,
    /// HTTP client for polling (one per local address).
    pub http: reqwest::Client,
    /// Source address to bind, if any.
    pub local_addr: Option<IpAddr>,
    /// This client's cookie jar (`--cookies`); `None` sends no cookies, like socket.io-client in
    /// Node.js by default.
    pub cookies: Option<Arc<CookieJar>>,
    /// The CA trusted for `wss://` targets (`--ca`); `None`: the webpki roots.
    pub tls: Option<TlsTrust>,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: 10,000 clients must fit in a few hundred MB.
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = 4 * 1024;
    c.write_buffer_size = 0;
    c.max_write_buffer_size = 1 << 20;
    c.max_message_size = Some(16 << 20);
    c
}

async fn tcp(addr: SocketAddr, local: Option<IpAddr>) -> Result<TcpStream, ConnectError> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ConnectError::new("tcp", e))?;
    if let Some(ip) = local {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| ConnectError::new("tcp", e))?;
    }
    let s = sock
        .connect(addr)
        .await
        .map_err(|e| ConnectError::new("tcp", e))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws_open(t: &Target, o: &ClientOptions, sid: Option<&str>) -> Result<Ws, ConnectError> {
    let stream = tcp(t.addr, o.local_addr).await?;
    let mut req = eio_url(true, t, sid)
        .into_client_request()
        .map_err(|e| ConnectError::new("handshake", e))?;
    if let Some(c) = o.cookies.as_ref().and_then(|j| j.header())
        && let Ok(v) = http::HeaderValue::from_str(&c)
    {
        req.headers_mut().insert(http::header::COOKIE, v);
    }
    let (ws, resp) = if t.tls {
        tokio_tungstenite::client_async_tls_with_config(
            req,
            stream,
            Some(ws_config()),
            o.tls.as_ref().map(|t| t.connector.clone()),
        )
        .await
    } else {
        tokio_tungstenite::client_async_with_config(
            req,
            MaybeTlsStream::Plain(stream),
            Some(ws_config()),
        )
        .await
    }
    .map_err(|e| ConnectError::new("handshake", e))?;
    if let Some(j) = &o.cookies {
        j.store(resp.headers());
    }
    if resp.status().as_u16() != 101 {
        return Err(ConnectError::new(
            "handshake",
            format!("HTTP {}", resp.status()),
        ));
    }
    Ok(ws)
}

async fn ws_next_text(ws: &mut Ws) -> Result<String, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(ConnectError::new("protocol", "closed during connect"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ConnectError::new("protocol", e)),
        }
    }
}

fn poll_url(t: &Target, sid: Option<&str>) -> String {
    eio_url(false, t, sid)
}

/// `scheme://host/path?EIO=4&transport=…[&sid=…][&extra query]`: `ws`/`wss` for the WebSocket
/// transport, `http`/`https` for polling.
fn eio_url(websocket: bool, t: &Target, sid: Option<&str>) -> String {
    let (scheme, transport) = match (websocket, t.tls) {
        (true, false) => ("ws", "websocket"),
        (true, true) => ("wss", "websocket"),
        (false, false) => ("http", "polling"),
        (false, true) => ("https", "polling"),
    };
    let mut url = format!(
        "{scheme}://{}{}?EIO=4&transport={transport}",
        t.host, t.path
    );
    if let Some(sid) = sid {
        url.push_str("&sid=");
        url.push_str(sid);
    }
    if !t.query.is_empty() {
        url.push('&');
        url.push_str(&t.query);
    }
    url
}

/// Add the client's cookies to a request, and keep the ones its response sets.
async fn send_with_cookies(
    o: &ClientOptions,
    mut req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ConnectError> {
    if let Some(c) = o.cookies.as_ref().and_then(|j| j.header()) {
        req = req.header(http::header::COOKIE, c);
    }
    let r = req.send().await.map_err(|e| ConnectError::new("http", e))?;
    if let Some(j) = &o.cookies {
        j.store(r.headers());
    }
    Ok(r)
}

async fn poll_get(o: &ClientOptions, url: &str) -> Result<String, ConnectError> {
    let r = send_with_cookies(o, o.http.get(url)).await?;
    let status = r.status();
    let body = r.text().await.map_err(|e| ConnectError::new("http", e))?;
    if !status.is_success() {
        return Err(ConnectError::new("http", format!("HTTP {status}: {body}")));
    }
    Ok(body)
}

async fn poll_post(o: &ClientOptions, url: &str, body: String) -> Result<(), ConnectError> {
    let req = o
        .http
        .post(url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body);
    let r = send_with_cookies(o, req).await?;
    let status = r.status();
    if !status.is_success() {
        let body = r.text().await.unwrap_or_default();
        return Err(ConnectError::new("http", format!("HTTP {status}: {body}")));
    }
    Ok(())
}

/// Connect one client and wait for the Socket.IO CONNECT acknowledgement.
pub async fn connect(
    t: &Target,
    o: &ClientOptions,
    auth: &Value,
) -> Result<(Session, mpsc::UnboundedReceiver<Inbound>), ConnectError> {
    match tokio::time::timeout(o.connect_timeout, connect_inner(t, o, auth)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::new(
            "timeout",
            format!("no CONNECT within {:?}", o.connect_timeout),
        )),
    }
}

async fn connect_inner(
    t: &Target,
    o: &ClientOptions,
    auth: &Value,
) -> Result<(Session, mpsc::UnboundedReceiver<Inbound>), ConnectError> {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (sid, pid) = match o.transport {
        Transport::Websocket => {
            let mut ws = ws_open(t, o, None).await?;
            let open = match protocol::decode_eio(&ws_next_text(&mut ws).await?) {
                Some(EioPacket::Open(open)) => open,
                other => {
                    return Err(ConnectError::new(
                        "protocol",
                        format!("expected open, got {other:?}"),
                    ));
                }
            };
            let _ = open;
            ws.send(Message::text(format!("4{}", protocol::connect(auth))))
                .await
                .map_err(|e| ConnectError::new("protocol", e))?;
            let (sid, pid) = ws_wait_connect(&mut ws, &in_tx).await?;
            tokio::spawn(ws_loop(ws, out_rx, in_tx));
            (sid, pid)
        }
        Transport::Polling | Transport::Upgrade => {
            let body = poll_get(o, &poll_url(t, None)).await?;
            let open = match body.split(SEPARATOR).next().and_then(protocol::decode_eio) {
                Some(EioPacket::Open(open)) => open,
                other => {
                    return Err(ConnectError::new(
                        "protocol",
                        format!("expected open, got {other:?}"),
                    ));
                }
            };
            let url = poll_url(t, Some(&open.sid));
            poll_post(o, &url, format!("4{}", protocol::connect(auth))).await?;
            // Read until the CONNECT ack (pings may come first; a recovered session's missed
            // packets too, which are kept).
            let (sid, pid) = loop {
                let body = poll_get(o, &url).await?;
                let mut found = None;
                for p in body.split(SEPARATOR) {
                    match protocol::decode_eio(p) {
                        Some(EioPacket::Ping(_)) => poll_post(o, &url, "3".into()).await?,
                        Some(EioPacket::Message(m)) => match protocol::decode_sio(&m) {
                            Some(SioPacket::Connect { sid, pid }) => {
                                found = Some((sid.unwrap_or_default(), pid))
                            }
                            Some(SioPacket::ConnectError(e)) => {
                                return Err(ConnectError::new("refused", e));
                            }
                            Some(other) => {
                                let _ = in_tx.send(Inbound::Packet(other));
                            }
                            None => {}
                        },
                        Some(EioPacket::Close) => {
                            return Err(ConnectError::new("protocol", "closed during connect"));
                        }
                        _ => {}
                    }
                }
                if let Some(ack) = found {
                    break ack;
                }
            };
            if o.transport == Transport::Upgrade && open.upgrades.iter().any(|u| u == "websocket") {
                let mut ws = ws_open(t, o, Some(&open.sid)).await?;
                ws.send(Message::text("2probe"))
                    .await
                    .map_err(|e| ConnectError::new("protocol", e))?;
                // The server answers 3probe; a pending poll is released with a noop meanwhile.
                let probe = ws_next_text(&mut ws).await?;
                if probe != "3probe" {
                    return Err(ConnectError::new(
                        "protocol",
                        format!("bad probe answer {probe:?}"),
                    ));
                }
                ws.send(Message::text("5"))
                    .await
                    .map_err(|e| ConnectError::new("protocol", e))?;
                tokio::spawn(ws_loop(ws, out_rx, in_tx));
            } else {
                tokio::spawn(poll_loop(o.clone(), url, out_rx, in_tx));
            }
            (sid, pid)
        }
    };
    Ok((
        Session {
            out: out_tx,
            sid,
            pid,
        },
        in_rx,
    ))
}

/// Read until the CONNECT ack: (sid, pid). Packets before it (a recovered session's missed
/// ones) go to `inbound`, in order.
async fn ws_wait_connect(
    ws: &mut Ws,
    inbound: &mpsc::UnboundedSender<Inbound>,
) -> Result<(String, Option<String>), ConnectError> {
    loop {
        let text = ws_next_text(ws).await?;
        match protocol::decode_eio(&text) {
            Some(EioPacket::Ping(d)) => {
                ws.send(Message::text(format!("3{d}")))
                    .await
                    .map_err(|e| ConnectError::new("protocol", e))?;
            }
            Some(EioPacket::Message(m)) => match protocol::decode_sio(&m) {
                Some(SioPacket::Connect { sid, pid }) => return Ok((sid.unwrap_or_default(), pid)),
                Some(SioPacket::ConnectError(e)) => return Err(ConnectError::new("refused", e)),
                Some(other) => {
                    let _ = inbound.send(Inbound::Packet(other));
                }
                None => {}
            },
            Some(EioPacket::Close) => {
                return Err(ConnectError::new("protocol", "closed during connect"));
            }
            _ => {}
        }
    }
}

async fn ws_loop(
    mut ws: Ws,
    mut out: mpsc::UnboundedReceiver<Out>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let reason = loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => match protocol::decode_eio(&t) {
                    Some(EioPacket::Ping(d)) => {
                        let pong = ws.send(Message::text(format!("3{d}"))).await;
                        if pong.is_err() {
                            break "transport error".to_string();
                        }
                    }
                    Some(EioPacket::Message(m)) => {
                        if let Some(p) = protocol::decode_sio(&m) {
                            let disconnect = matches!(p, SioPacket::Disconnect);
                            let _ = inbound.send(Inbound::Packet(p));
                            if disconnect {
                                break "io server disconnect".to_string();
                            }
                        }
                    }
                    Some(EioPacket::Close) => break "transport close".to_string(),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break "transport close".to_string(),
                Some(Ok(_)) => {}
                // The connection ended without a close frame (TCP FIN): the browser and Node.js
                // WebSocket report a close (code 1006), and socket.io-client "transport close".
                Some(Err(tokio_tungstenite::tungstenite::Error::Protocol(
                    tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => break "transport close".to_string(),
                Some(Err(e)) => break format!("transport error: {e}"),
            },
            o = out.recv() => match o {
                Some(Out::Text(s)) => {
                    if ws.send(Message::text(format!("4{s}"))).await.is_err() {
                        break "transport error".to_string();
                    }
                }
                Some(Out::Close { abrupt: false }) | None => {
                    let _ = ws.send(Message::text("41")).await;
                    let _ = ws.close(None).await;
                    break "io client disconnect".to_string();
                }
                Some(Out::Close { abrupt: true }) => break "connection dropped".to_string(),
            },
        }
    };
    drop(ws);
    let _ = inbound.send(Inbound::Closed(reason));
}

async fn poll_loop(
    o: ClientOptions,
    url: String,
    mut out: mpsc::UnboundedReceiver<Out>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // Set when the server ended the session (a `close` packet or a failed poll).
    let (ended_tx, mut ended_rx) = tokio::sync::watch::channel(false);
    // Writer: batches outgoing packets into one POST. When the server ends the session, a POST
    // in flight completes (engine.io-client does not abort its XHR either) and what is still
    // queued is dropped, as engine.io-client drops its write buffer.
    {
        let o = o.clone();
        let url = url.clone();
        let inbound = inbound.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    biased;
                    _ = ended_rx.changed() => break,
                    m = out.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                };
                let mut batch = Vec::new();
                let mut close = None;
                match first {
                    Out::Text(s) => batch.push(format!("4{s}")),
                    Out::Close { abrupt } => close = Some(abrupt),
                }
                while close.is_none() {
                    match out.try_recv() {
                        Ok(Out::Text(s)) => batch.push(format!("4{s}")),
                        Ok(Out::Close { abrupt }) => close = Some(abrupt),
                        Err(_) => break,
                    }
                }
                if close == Some(false) {
                    batch.push("41".into());
                    batch.push("1".into());
                }
                if !batch.is_empty() && close != Some(true) {
                    let sep = SEPARATOR.to_string();
                    if let Err(e) = poll_post(&o, &url, batch.join(&sep)).await {
                        if !*ended_rx.borrow() {
                            let _ = inbound
                                .send(Inbound::Closed(format!("transport error: {}", e.detail)));
                        }
                        break;
                    }
                }
                if let Some(abrupt) = close {
                    let reason = if abrupt {
                        "connection dropped"
                    } else {
                        "io client disconnect"
                    };
                    let _ = inbound.send(Inbound::Closed(reason.into()));
                    break;
                }
            }
            let _ = stop_tx.send(true);
        });
    }
    let reason = loop {
        let body = tokio::select! {
            b = poll_get(&o, &url) => b,
            _ = stop_rx.changed() => break None,
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => break Some(format!("transport error: {}", e.detail)),
        };
        let mut end = None;
        for p in body.split(SEPARATOR) {
            match protocol::decode_eio(p) {
                Some(EioPacket::Ping(d)) => {
                    let o = o.clone();
                    let url = url.clone();
                    tokio::spawn(async move { poll_post(&o, &url, format!("3{d}")).await });
                }
                Some(EioPacket::Message(m)) => {
                    if let Some(p) = protocol::decode_sio(&m) {
                        if matches!(p, SioPacket::Disconnect) {
                            end = Some("io server disconnect".to_string());
                        }
                        let _ = inbound.send(Inbound::Packet(p));
                    }
                }
                Some(EioPacket::Close) => end = Some("transport close".to_string()),
                _ => {}
            }
        }
        if end.is_some() {
            break end;
        }
    };
    if let Some(r) = reason {
        let _ = ended_tx.send(true);
        let _ = inbound.send(Inbound::Closed(r));
    }
}
