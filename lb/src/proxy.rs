//! The proxy, phase by phase (pingora `ProxyHttp`). Routing is decided per HTTP request, never
//! per TCP connection. The decisions are methods of [`Proxy`] that take no pingora session
//! (`admit_request`, `choose_backend`, `connect_failed`, `connected`, `account_response`,
//! `learn_body`, `count_request`), so the fast path ([`crate::polling`]) makes
//! exactly the same ones. Each phase hands off to the module that owns the decision:
//!
//! - `request_filter`: [`crate::admission`] (limits; one `reject` path answers and counts every
//!   refusal), Engine.IO classification ([`crate::engineio`]); a request naming a sid is bound
//!   through [`Lb::route_sid`] (tag → sid table → cookie) or answered `400 Session ID unknown`; a
//!   new session passes [`crate::admission::admit_new_session`]. WebSocket upgrades get the
//!   configured idle timeout.
//! - `upstream_peer`: the bound backend, or [`Lb::pick_new`] over ready backends not tried yet.
//!   A new WebSocket is counted at once (RAII guard); a new polling handshake counts as pending
//!   until its sid is learned.
//! - `fail_to_connect`: passive health; a new-session request is retried on another backend, a
//!   sid-bound one never.
//! - `upstream_request_filter`: [`crate::forwarded`] (`X-Forwarded-For`, `X-Forwarded-Proto`,
//!   `X-Real-IP`).
//! - `upstream_response_filter`: handshake accounting (a 503 marks the backend draining), upgrade
//!   of a polling session to a WebSocket, the stickiness cookie, table entries for sessions
//!   routed by tag or cookie.
//! - `response_filter`: `Connection: close` while the process is being replaced or stopped.
//! - `response_body_filter`: [`OpenLearner`] records sid → backend *before* the body
//!   (which carries the sid) is relayed.
//! - `take_upgraded_tunnel` / `upgraded_tunnel` (vendored pingora-proxy hooks): once a `101`
//!   has been written to the client, the two connections and the guards that count the tunnel
//!   move to [`tunnel::start`](crate::tunnel::start) (a relay thread for plain TCP, else a
//!   task) and the request finishes.
//! - `logging`: request metrics. Live counts never depend on it (guards in the CTX, then in
//!   the tunnel's relay, do).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session, UpgradedTunnel};

use crate::admission::{self, Reject};
use crate::backends::{Backend, PendingGuard, WsGuard};
use crate::config::{LbConfig, StickyMode};
use crate::engineio::{EioRequest, OpenLearner};
use crate::limits::ConnSlot;
use crate::select::Via;
use crate::sid_table::UpgradedSid;
use crate::state::Lb;

/// Heartbeat assumed for a backend whose open packet was never seen (Engine.IO's defaults).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(45);

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
    /// The backend holding the named session, and how it was found.
    bound: Option<(Arc<Backend>, Via)>,
    chosen: Option<Arc<Backend>>,
    tried: Vec<String>,
    learn: Option<OpenLearner>,
    pending: Option<PendingGuard>,
    ws: Option<WsGuard>,
    upgraded: Option<UpgradedSid>,
    _slot: Option<ConnSlot>,
    body_seen: usize,
    /// The client connection is TLS (the stickiness cookie gets `Secure`).
    tls: bool,
    /// The client IP's share of the sid table, for the entry this handshake creates.
    sid_owner: Option<ConnSlot>,
    /// Read by the fast path ([`crate::polling`]), not pingora's.
    fast: bool,
}

impl Ctx {
    /// A request's state, its clock started at `start`.
    pub(crate) fn new(start: Instant) -> Ctx {
        Ctx {
            start,
            eio: EioRequest::default(),
            upgrade: false,
            bound: None,
            chosen: None,
            tried: Vec::new(),
            learn: None,
            pending: None,
            ws: None,
            upgraded: None,
            _slot: None,
            body_seen: 0,
            tls: false,
            sid_owner: None,
            fast: false,
        }
    }

    /// A request read by the fast path ([`crate::polling`]); `upgrade`: a WebSocket upgrade.
    pub(crate) fn fast(start: Instant, upgrade: bool) -> Ctx {
        Ctx {
            fast: true,
            upgrade,
            ..Ctx::new(start)
        }
    }

    /// The guards that count a tunnel once its `101` is written (live WebSockets of the
    /// backend, the upgraded sid, the client's connection slot): the tunnel's relay holds them
    /// from then on.
    pub(crate) fn take_held(&mut self) -> crate::tunnel::Held {
        crate::tunnel::Held {
            ws: self.ws.take(),
            upgraded: self.upgraded.take(),
            slot: self._slot.take(),
        }
    }

    /// The request is a WebSocket upgrade.
    pub(crate) fn upgrade(&self) -> bool {
        self.upgrade
    }

    /// A polling handshake's body is being held for its open packet.
    pub(crate) fn learning(&self) -> bool {
        self.learn.is_some()
    }
}

/// What a caller that parsed a request head itself measured of it (for `Proxy::admit_request`).
#[derive(Debug, Clone, Default)]
pub struct HeadFacts {
    /// The Engine.IO fields.
    pub eio: EioRequest,
    /// The head's size, as [`admission::head_size`] counts it.
    pub head_size: usize,
    /// The declared body length.
    pub content_length: Option<usize>,
}

/// Whether the client reached us over TLS.
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Answer a refused request and count it: the one reject path of the proxy.
async fn reject(lb: &Lb, session: &mut Session, r: Reject) -> Result<bool> {
    count_reject(lb, &r);
    let mut resp = ResponseHeader::build(r.status, Some(4))?;
    resp.insert_header("Content-Type", r.content_type())?;
    resp.insert_header("Content-Length", r.body.len().to_string())?;
    if let Some(after) = r.retry_after {
        resp.insert_header("Retry-After", after.to_string())?;
    }
    if r.close {
        resp.insert_header("Connection", "close")?;
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(resp), r.body.is_empty())
        .await?;
    if !r.body.is_empty() {
        session
            .write_response_body(Some(Bytes::from_static(r.body.as_bytes())), true)
            .await?;
    }
    Ok(true)
}

/// Count a refused request (both HTTP paths).
pub(crate) fn count_reject(lb: &Lb, r: &Reject) {
    if r.is_sid_unknown() {
        lb.metrics.sid_unknown.with_label_values(&[r.reason]).inc();
    } else {
        lb.metrics.rejected.with_label_values(&[r.reason]).inc();
    }
}

fn peer(backend: &Backend, cfg: &LbConfig, upgrade: bool) -> Box<HttpPeer> {
    let t = &cfg.upstream_tls;
    // TLS: the configured name, else the backend's IP, is sent and verified (pingora skips all
    // verification for an empty SNI, so it is never empty).
    let sni = if t.enabled {
        t.server_name
            .clone()
            .unwrap_or_else(|| backend.addr.ip().to_string())
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(backend.addr, t.enabled, sni);
    peer.options.connection_timeout = Some(cfg.timeouts.connect);
    peer.options.total_connection_timeout = Some(cfg.timeouts.connect);
    let read = if upgrade {
        cfg.timeouts.websocket_idle
    } else {
        cfg.timeouts.polling_request
    };
    peer.options.read_timeout = Some(read);
    peer.options.write_timeout = Some(read);
    Box::new(peer)
}

impl Proxy {
    /// Everything `request_filter` decides; `Err` is answered by [`reject`].
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Reject> {
        let cfg = self.config.load();
        // How long the connection may idle after this response (nginx's keepalive_timeout),
        // unless the client asked to close it. pingora's own default is forever.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(cfg.timeouts.client_keepalive.as_secs().max(1)));
        }
        ctx.tls = is_tls(session);
        ctx.upgrade = session.is_upgrade_req();
        self.admit_request(&cfg, session.req_header(), None, client_ip(session), ctx)
            .await?;
        if ctx.upgrade {
            // pingora's 60 s downstream read timeout would cut idle WebSockets.
            session.set_read_timeout(Some(cfg.timeouts.websocket_idle));
        }
        Ok(())
    }

    /// Admission and session routing of one request head, whichever HTTP path read it
    /// (`ctx.tls` and `ctx.upgrade` are set by the caller; `facts`: what a caller that parsed
    /// the head itself measured, its `req` then holding only the headers routing reads).
    /// `Err` is answered and counted by the caller ([`count_reject`]).
    pub(crate) async fn admit_request(
        &self,
        cfg: &LbConfig,
        req: &RequestHeader,
        facts: Option<HeadFacts>,
        ip: Option<IpAddr>,
        ctx: &mut Ctx,
    ) -> Result<(), Reject> {
        admission::check_path(req.uri.path(), &cfg.exposure)?;
        match &facts {
            Some(f) => admission::check_sizes(f.head_size, f.content_length, &cfg.limits)?,
            None => admission::check_request(req, &cfg.limits)?,
        }
        ctx._slot = Some(admission::take_slot(&self.conns, ip, &cfg.limits)?);
        ctx.eio = match facts {
            Some(f) => f.eio,
            None => EioRequest::classify(req.uri.path(), req.uri.query(), &cfg.engineio.path),
        };
        match ctx.eio.sid.as_deref() {
            Some(sid) if cfg.stickiness.mode != StickyMode::None => {
                let bound = self.route_sid(cfg, req, sid, ctx.eio.websocket).await?;
                ctx.bound = Some(bound);
            }
            _ if ctx.eio.is_handshake() => {
                if !self.any_ready() {
                    return Err(Reject::no_backend());
                }
                ctx.sid_owner = admission::admit_new_session(
                    &self.sids,
                    &self.gate,
                    &cfg.limits,
                    cfg.engineio.sid_table_max_per_ip,
                    ctx.eio.websocket,
                    ip,
                )?;
            }
            // Outside the Engine.IO path (or stickiness off): balanced like a new session.
            _ => {}
        }
        Ok(())
    }

    /// The backend for this attempt: the bound one, else a new pick over ready backends not
    /// tried yet (`None`, counted as `no_backend`, when there is none). Starts counting the
    /// session it may open.
    pub(crate) fn choose_backend(
        &self,
        cfg: &LbConfig,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        ctx: &mut Ctx,
    ) -> Option<Arc<Backend>> {
        let backend = match &ctx.bound {
            Some((b, _)) => b.clone(),
            None => match self.pick_new(cfg, req, ip, &ctx.tried) {
                Some(b) => b,
                None => {
                    self.metrics
                        .rejected
                        .with_label_values(&["no_backend"])
                        .inc();
                    return None;
                }
            },
        };
        // Only a new pick can be retried elsewhere (`connect_failed`): a bound request is
        // never, so it keeps no list (an allocation and a copy of the id less per request).
        if ctx.bound.is_none() {
            ctx.tried.push(backend.id.clone());
        }
        ctx.chosen = Some(backend.clone());
        if ctx.bound.is_none() && ctx.eio.on_path {
            if ctx.upgrade {
                ctx.ws = Some(WsGuard::new(backend.clone(), self.metrics.clone()));
            } else {
                ctx.pending = Some(PendingGuard::new(backend.clone()));
            }
        }
        Some(backend)
    }

    /// A connect to the chosen backend failed: passive health. Returns whether the request may
    /// go to another backend (a new session may; a sid-bound request never).
    pub(crate) fn connect_failed(&self, ctx: &mut Ctx) -> bool {
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
        ctx.bound.is_none() && ctx.tried.len() < self.registry.configured().len()
    }

    /// Connected to the chosen backend (`reused`: an idle keep-alive connection).
    pub(crate) fn connected(&self, ctx: &Ctx, reused: bool) {
        if let Some(b) = &ctx.chosen {
            b.connect_ok();
            let series = b.series(&self.metrics);
            if reused {
                series.upstream_reused.inc();
            } else {
                series.upstream_new.inc();
            }
        }
    }

    /// A chunk of the response body (`None` at the end): a polling handshake's body is held
    /// until its open packet is complete and the sid is recorded, then released into `body`.
    pub(crate) fn learn_body(&self, body: &mut Option<Bytes>, end_of_stream: bool, ctx: &mut Ctx) {
        let Some(learner) = ctx.learn.as_mut() else {
            return;
        };
        let Some(found) = learner.feed(body, end_of_stream) else {
            return;
        };
        ctx.learn = None;
        ctx.pending = None;
        if let (Some(open), Some(b)) = (found, ctx.chosen.clone()) {
            let margin = self.config.load().engineio.idle_margin;
            if self
                .sids
                .insert_owned(&open.sid, b, open.heartbeat + margin, ctx.sid_owner.take())
                .is_err()
            {
                self.metrics
                    .rejected
                    .with_label_values(&["sid_table_full"])
                    .inc();
                tracing::warn!("sid table full; session will not be sticky");
            }
        }
    }

    /// Count a finished request (`code` 0: no response was written).
    pub(crate) fn count_request(&self, code: u16, ctx: &Ctx) {
        if ctx.fast {
            self.metrics.http_path_fast.inc();
        } else {
            self.metrics.http_path_pingora.inc();
        }
        let chosen = ctx.chosen.as_ref().or(ctx.bound.as_ref().map(|(b, _)| b));
        // Most requests are a 200 to a chosen backend: its resolved series, no label lookup.
        let series = chosen.map(|b| b.series(&self.metrics));
        match series {
            Some(series) if code == 200 => series.ok.inc(),
            _ => {
                let backend = chosen.map(|b| b.id.as_str()).unwrap_or("none");
                let digits;
                let code_s = if (100..=999).contains(&code) {
                    digits = [
                        b'0' + (code / 100) as u8,
                        b'0' + (code / 10 % 10) as u8,
                        b'0' + (code % 10) as u8,
                    ];
                    std::str::from_utf8(&digits).unwrap_or("none")
                } else {
                    "none"
                };
                self.metrics
                    .requests
                    .with_label_values(&[backend, code_s])
                    .inc();
            }
        }
        // WebSocket tunnels are not requests with a duration.
        if code == 101 {
            return;
        }
        let duration = ctx.start.elapsed().as_secs_f64();
        match series {
            Some(series) => series.duration.observe(duration),
            None => self
                .metrics
                .request_duration
                .with_label_values(&["none"])
                .observe(duration),
        }
    }

    /// After the backend's response head: what the session's bookkeeping learns from it.
    pub(crate) fn account_response(
        &self,
        cfg: &LbConfig,
        status: u16,
        ctx: &mut Ctx,
    ) -> Option<String> {
        let b = ctx.chosen.clone()?;
        if ctx.bound.is_none() && ctx.eio.is_handshake() {
            match (ctx.eio.websocket, status) {
                (true, 101) => self.metrics.handshakes.with_label_values(&[&b.id]).inc(),
                (false, 200) => {
                    self.metrics.handshakes.with_label_values(&[&b.id]).inc();
                    ctx.learn = Some(OpenLearner::default());
                }
                (_, s) => {
                    if s == 503 && b.ready() {
                        // The node says it drains before our next check does.
                        b.reported_draining();
                        tracing::info!(backend = %b.id, "handshake answered 503: backend drains");
                    }
                    ctx.ws = None;
                    ctx.pending = None;
                }
            }
            if cfg.stickiness.mode == StickyMode::Cookie && status < 400 {
                let secure = if ctx.tls { "; Secure" } else { "" };
                return Some(format!(
                    "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
                    cfg.stickiness.cookie_name, b.id
                ));
            }
            return None;
        }
        let (Some((bound, via)), Some(sid)) = (&ctx.bound, &ctx.eio.sid) else {
            return None;
        };
        if ctx.eio.websocket && status == 101 {
            // The polling session now lives in this tunnel.
            self.sids.mark_upgraded(sid);
            ctx.ws = Some(WsGuard::new(bound.clone(), self.metrics.clone()));
            ctx.upgraded = Some(UpgradedSid {
                table: self.sids.clone(),
                sid: sid.clone(),
            });
        } else if !ctx.eio.websocket && *via != Via::Table && (200..300).contains(&status) {
            // Routed by tag or cookie: this process counts the polling session from now on.
            let ttl = bound.heartbeat().unwrap_or(DEFAULT_HEARTBEAT) + cfg.engineio.idle_margin;
            if self.sids.insert_if_absent(sid, bound.clone(), ttl).is_err() {
                self.metrics
                    .rejected
                    .with_label_values(&["sid_table_full"])
                    .inc();
            }
        }
        None
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(Instant::now())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.admit(session, ctx).await {
            Ok(()) => Ok(false),
            Err(r) => reject(self, session, r).await,
        }
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
        let ip = client_ip(session);
        match self.choose_backend(&cfg, session.req_header(), ip, ctx) {
            Some(backend) => Ok(peer(&backend, &cfg, ctx.upgrade)),
            None => Error::e_explain(ErrorType::HTTPStatus(503), "no ready backend"),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if self.connect_failed(ctx) {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.connected(ctx, reused);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        crate::forwarded::apply(req, client_ip(session), ctx.tls)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let cfg = self.config.load();
        if let Some(cookie) = self.account_response(&cfg, resp.status.as_u16(), ctx) {
            resp.append_header("Set-Cookie", cookie)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        _resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if self.closing() {
            // `Connection: close` on this response (see `Lb::start_closing`).
            session.set_keepalive(None);
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
        self.learn_body(body, end_of_stream, ctx);
        Ok(None)
    }

    fn take_upgraded_tunnel(&self, _session: &Session, _ctx: &Ctx) -> bool {
        true
    }

    fn upgraded_tunnel(&self, _session: &mut Session, tunnel: UpgradedTunnel, ctx: &mut Ctx) {
        let held = ctx.take_held();
        let idle = self.config.load().timeouts.websocket_idle;
        let lb = self.0.clone();
        tokio::spawn(async move {
            crate::tunnel::start(tunnel, idle, held, lb.relays()).await;
        });
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        self.count_request(code, ctx);
    }
}
