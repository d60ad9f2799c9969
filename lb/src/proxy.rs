//! The proxy, phase by phase (pingora `ProxyHttp`). Routing is decided per HTTP request, never
//! per TCP connection.
//!
//! - `request_filter`: limits (head size, body size, connections total and per IP), Engine.IO
//!   classification; a request naming a sid is bound to the backend that minted it, or answered
//!   `400 Session ID unknown` (never sent elsewhere); a new session passes the sid-table bound and
//!   the new-session rate limit; WebSocket upgrades get the configured idle timeout.
//! - `upstream_peer`: the bound backend, or for a new session the stickiness cookie (cookie
//!   mode) or the balancing policy over ready backends not tried yet. A new WebSocket is counted
//!   at once (RAII guard); a new polling handshake counts as pending until its sid is learned.
//! - `fail_to_connect`: passive health; a new-session request is retried on another backend, a
//!   sid-bound one never.
//! - `upstream_request_filter`: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Real-IP`.
//! - `upstream_response_filter`: handshake accounting, upgrade of a polling session to a
//!   WebSocket, the stickiness cookie.
//! - `response_body_filter`: learns sid → backend from the open packet and records it *before*
//!   the body (which carries the sid) is relayed, holding the body until then.
//! - `logging`: request metrics. Live counts never depend on it (guards in the CTX do).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::backends::{Backend, BackendState, PendingGuard, Registry, WsGuard};
use crate::config::{HashKey, LbConfig, Policy, StickyMode};
use crate::engineio::{self, EioRequest};
use crate::hashing::HashRing;
use crate::least_conn;
use crate::limits::{ConnLimiter, ConnSlot, Refused, TokenBucket};
use crate::metrics::LbMetrics;
use crate::sid_table::{SidTable, UpgradedSid};

/// Largest handshake body held back while looking for the open packet.
const MAX_LEARN_BYTES: usize = 64 * 1024;

/// State shared by every request and the control tasks.
pub struct Lb {
    /// Backends.
    pub registry: Arc<Registry>,
    /// sid → backend.
    pub sids: Arc<SidTable>,
    /// The configuration in force (swapped on reload).
    pub config: ArcSwap<LbConfig>,
    /// Metrics.
    pub metrics: LbMetrics,
    /// Connection limits.
    pub conns: Arc<ConnLimiter>,
    /// New-session rate limit.
    pub bucket: TokenBucket,
    /// Consistent-hash ring over ready backends.
    pub ring: HashRing,
    turn: AtomicUsize,
}

impl Lb {
    /// Shared state for `cfg`.
    pub fn new(cfg: LbConfig, metrics: LbMetrics) -> Lb {
        let registry = Arc::new(Registry::new(&cfg.upstreams, !cfg.health.active.enabled));
        let sids = Arc::new(SidTable::new(cfg.engineio.sid_table_max));
        Lb {
            registry,
            sids,
            config: ArcSwap::from_pointee(cfg),
            metrics,
            conns: Arc::new(ConnLimiter::default()),
            bucket: TokenBucket::default(),
            ring: HashRing::default(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Pick a backend for a new session.
    fn select(&self, cfg: &LbConfig, session: &Session, tried: &[String]) -> Option<Arc<Backend>> {
        let configured = self.registry.configured();
        let ready: Vec<Arc<Backend>> = configured
            .iter()
            .filter(|b| b.ready() && !tried.iter().any(|t| *t == b.id))
            .cloned()
            .collect();
        if ready.is_empty() {
            return None;
        }
        if cfg.stickiness.mode == StickyMode::Cookie
            && let Some(id) = cookie(session.req_header(), &cfg.stickiness.cookie_name)
            && let Some(b) = ready.iter().find(|b| b.id == id)
        {
            return Some(b.clone());
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        match cfg.balancing.policy {
            Policy::LeastConn => least_conn::pick(&ready, turn),
            Policy::RoundRobin => ready.get(turn % ready.len()).cloned(),
            Policy::Hash => {
                let key = cfg.balancing.key.as_deref().and_then(HashKey::parse);
                let value = key.and_then(|k| hash_input(&k, session));
                match value {
                    Some(v) => self.ring.pick(&ready, v.as_bytes()),
                    // No key in this request: fall back to least-connections.
                    None => least_conn::pick(&ready, turn),
                }
            }
        }
    }
}

/// The pingora proxy app: a handle on the shared [`Lb`].
pub struct Proxy(pub Arc<Lb>);

impl std::ops::Deref for Proxy {
    type Target = Lb;
    fn deref(&self) -> &Lb {
        &self.0
    }
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    eio: EioRequest,
    upgrade: bool,
    bound: Option<Arc<Backend>>,
    chosen: Option<Arc<Backend>>,
    tried: Vec<String>,
    new_session: bool,
    learn: Option<BytesMut>,
    pending: Option<PendingGuard>,
    ws: Option<WsGuard>,
    upgraded: Option<UpgradedSid>,
    _slot: Option<ConnSlot>,
    body_seen: usize,
}

fn cookie(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim().to_string())
            })
        })
}

fn hash_input(key: &HashKey, session: &Session) -> Option<String> {
    let req = session.req_header();
    match key {
        HashKey::Query(name) => req.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.into_owned())
        }),
        HashKey::Header(name) => req
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        HashKey::Cookie(name) => cookie(req, name),
        HashKey::ClientIp => client_ip(session).map(|ip| ip.to_string()),
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn head_size(req: &RequestHeader) -> usize {
    let uri = req.uri.to_string().len();
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri
        + 16
}

/// Write a small complete response and count it as rejected (or unknown sid).
async fn respond(
    session: &mut Session,
    code: u16,
    headers: &[(&str, String)],
    body: &'static str,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(code, Some(headers.len() + 2))?;
    for (k, v) in headers {
        resp.insert_header(k.to_string(), v.as_str())?;
    }
    resp.insert_header("Content-Length", body.len().to_string())?;
    session
        .write_response_header(Box::new(resp), body.is_empty())
        .await?;
    if !body.is_empty() {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            eio: EioRequest::default(),
            upgrade: false,
            bound: None,
            chosen: None,
            tried: Vec::new(),
            new_session: false,
            learn: None,
            pending: None,
            ws: None,
            upgraded: None,
            _slot: None,
            body_seen: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let cfg = self.config.load();
        let limits = &cfg.limits;
        let req = session.req_header();
        if head_size(req) > limits.max_header_bytes {
            self.metrics
                .rejected
                .with_label_values(&["header_too_large"])
                .inc();
            return respond(session, 431, &[], "request header too large\n").await;
        }
        let content_length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if content_length.is_some_and(|n| n > limits.max_body_bytes) {
            self.metrics
                .rejected
                .with_label_values(&["body_too_large"])
                .inc();
            return respond(
                session,
                413,
                &[("Connection", "close".into())],
                "request body too large\n",
            )
            .await;
        }
        match self.conns.acquire(
            client_ip(session),
            limits.max_connections,
            limits.max_connections_per_ip,
        ) {
            Ok(slot) => ctx._slot = Some(slot),
            Err(r) => {
                let reason = match r {
                    Refused::Total => "max_connections",
                    Refused::PerIp => "max_connections_per_ip",
                };
                self.metrics.rejected.with_label_values(&[reason]).inc();
                return respond(
                    session,
                    503,
                    &[("Retry-After", "1".into())],
                    "too many connections\n",
                )
                .await;
            }
        }
        let req = session.req_header();
        ctx.eio = EioRequest::classify(req.uri.path(), req.uri.query(), &cfg.engineio.path);
        ctx.upgrade = session.is_upgrade_req();

        if let Some(sid) = ctx.eio.sid.clone()
            && cfg.stickiness.mode != StickyMode::None
        {
            let backend = self.sids.lookup(&sid, ctx.eio.websocket);
            match backend {
                // A backend that failed its checks has lost the session: let the client
                // re-handshake at once rather than wait for a 502.
                Some(b) if b.state() != BackendState::Down => ctx.bound = Some(b),
                found => {
                    if found.is_some() {
                        self.sids.remove(&sid);
                    }
                    self.metrics.sid_unknown.inc();
                    return respond(
                        session,
                        400,
                        &[("Content-Type", "application/json".into())],
                        engineio::SESSION_UNKNOWN,
                    )
                    .await;
                }
            }
        } else if ctx.eio.is_handshake() {
            if !ctx.eio.websocket && !self.sids.has_room() {
                self.metrics
                    .rejected
                    .with_label_values(&["sid_table_full"])
                    .inc();
                return respond(
                    session,
                    503,
                    &[("Retry-After", "1".into())],
                    "session table full\n",
                )
                .await;
            }
            if let Err(after) = self
                .bucket
                .take(limits.new_sessions_per_second, limits.new_sessions_burst)
            {
                self.metrics
                    .rejected
                    .with_label_values(&["new_session_rate"])
                    .inc();
                return respond(
                    session,
                    503,
                    &[("Retry-After", after.to_string())],
                    "too many new sessions\n",
                )
                .await;
            }
            ctx.new_session = true;
        } else {
            ctx.new_session = true;
        }
        if ctx.upgrade {
            // pingora's 60 s downstream read timeout would cut idle WebSockets.
            session.set_read_timeout(Some(cfg.timeouts.websocket_idle));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Chunked bodies have no Content-Length: enforce the limit as they stream (not tunnels).
        if !ctx.upgrade
            && let Some(b) = body
        {
            ctx.body_seen += b.len();
            if ctx.body_seen > self.config.load().limits.max_body_bytes {
                self.metrics
                    .rejected
                    .with_label_values(&["body_too_large"])
                    .inc();
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let cfg = self.config.load();
        let backend = match &ctx.bound {
            Some(b) => b.clone(),
            None => match self.select(&cfg, session, &ctx.tried) {
                Some(b) => b,
                None => {
                    self.metrics
                        .rejected
                        .with_label_values(&["no_backend"])
                        .inc();
                    return Error::e_explain(ErrorType::HTTPStatus(503), "no ready backend");
                }
            },
        };
        ctx.tried.push(backend.id.clone());
        ctx.chosen = Some(backend.clone());
        if ctx.bound.is_none() && ctx.eio.on_path {
            if ctx.upgrade {
                ctx.ws = Some(WsGuard::new(backend.clone(), self.metrics.clone()));
            } else {
                ctx.pending = Some(PendingGuard::new(backend.clone()));
            }
        }
        let mut peer = HttpPeer::new(backend.addr, false, String::new());
        peer.options.connection_timeout = Some(cfg.timeouts.connect);
        peer.options.total_connection_timeout = Some(cfg.timeouts.connect);
        let read = if ctx.upgrade {
            cfg.timeouts.websocket_idle
        } else {
            cfg.timeouts.polling_request
        };
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(read);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(b) = ctx.chosen.take() {
            self.metrics
                .connect_errors
                .with_label_values(&[&b.id])
                .inc();
            let cfg = self.config.load();
            if b.connect_failed(cfg.health.passive.failures, cfg.health.passive.cooldown) {
                tracing::warn!(backend = %b.id, cooldown = ?cfg.health.passive.cooldown, "backend taken out after connect failures");
            }
        }
        ctx.ws = None;
        ctx.pending = None;
        // A sid-bound request must reach the node holding the session, or fail.
        if ctx.bound.is_none() && ctx.tried.len() < self.registry.configured().len() {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = &ctx.chosen {
            b.connect_ok();
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(ip) = client_ip(session) {
            let ip = ip.to_string();
            let xff = match req
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip.clone(),
            };
            req.insert_header("X-Forwarded-For", xff)?;
            req.insert_header("X-Real-IP", ip)?;
        }
        req.insert_header("X-Forwarded-Proto", "http")?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        let Some(b) = ctx.chosen.clone() else {
            return Ok(());
        };
        if ctx.new_session && ctx.eio.is_handshake() {
            if ctx.eio.websocket && status == 101 {
                self.metrics.handshakes.with_label_values(&[&b.id]).inc();
            } else if !ctx.eio.websocket && status == 200 {
                self.metrics.handshakes.with_label_values(&[&b.id]).inc();
                ctx.learn = Some(BytesMut::new());
            } else {
                ctx.ws = None;
                ctx.pending = None;
            }
            let cfg = self.config.load();
            if cfg.stickiness.mode == StickyMode::Cookie && status < 400 {
                resp.append_header(
                    "Set-Cookie",
                    format!(
                        "{}={}; Path=/; HttpOnly; SameSite=Lax",
                        cfg.stickiness.cookie_name, b.id
                    ),
                )?;
            }
        }
        if let (Some(bound), Some(sid)) = (&ctx.bound, &ctx.eio.sid)
            && ctx.eio.websocket
            && status == 101
        {
            // The polling session now lives in this tunnel.
            self.sids.mark_upgraded(sid);
            ctx.ws = Some(WsGuard::new(bound.clone(), self.metrics.clone()));
            ctx.upgraded = Some(UpgradedSid {
                table: self.sids.clone(),
                sid: sid.clone(),
            });
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(buf) = ctx.learn.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body.take() {
            buf.extend_from_slice(&chunk);
        }
        if let Some(open) = engineio::parse_open(buf) {
            if let Some(b) = ctx.chosen.clone() {
                let margin = self.config.load().engineio.idle_margin;
                if self
                    .sids
                    .insert(&open.sid, b, open.heartbeat + margin)
                    .is_err()
                {
                    self.metrics
                        .rejected
                        .with_label_values(&["sid_table_full"])
                        .inc();
                    tracing::warn!("sid table full; session will not be sticky");
                }
            }
            ctx.pending = None;
            *body = ctx.learn.take().map(BytesMut::freeze);
        } else if end_of_stream || buf.len() > MAX_LEARN_BYTES {
            ctx.pending = None;
            *body = ctx.learn.take().map(BytesMut::freeze);
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let backend = ctx
            .chosen
            .as_ref()
            .or(ctx.bound.as_ref())
            .map(|b| b.id.as_str())
            .unwrap_or("none");
        let code_s = if code == 0 {
            "none".to_string()
        } else {
            code.to_string()
        };
        self.metrics
            .requests
            .with_label_values(&[backend, &code_s])
            .inc();
        if code != 101 {
            self.metrics
                .request_duration
                .with_label_values(&[backend])
                .observe(ctx.start.elapsed().as_secs_f64());
        }
    }
}
