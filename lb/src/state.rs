//! [`Lb`]: the state every request and every control task shares — the configuration in force,
//! the backend registry, the sid table and tag map, limits, metrics — and the two routing
//! entry points the proxy phases call, which put the pure choices of [`crate::select`] together
//! with that state.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use pingora_http::RequestHeader;

use crate::admission::Reject;
use crate::backends::{Backend, BadAddress, Registry};
use crate::config::{LbConfig, StickyMode};
use crate::handover::HandoverGate;
use crate::limits::ConnLimiter;
use crate::metrics::LbMetrics;
use crate::request;
use crate::select::hashing::HashRing;
use crate::select::tags::TagMap;
use crate::select::{self, NewSession, SidRoute, SidRoutes, Via};
use crate::sid_table::SidTable;

/// State shared by every request and the control tasks.
pub struct Lb {
    /// Backends.
    pub registry: Arc<Registry>,
    /// The addresses DNS-named upstreams stand for; its lock orders every change of the
    /// registry's upstream list.
    pub discovered: crate::discovery::Discovered,
    /// Wakes the health checks at once (new backends to probe).
    pub probe_now: tokio::sync::Notify,
    /// sid → backend, learned from handshakes.
    pub sids: Arc<SidTable>,
    /// Session-id tag → backend.
    pub tags: TagMap,
    /// The configuration in force (swapped on reload).
    pub config: ArcSwap<LbConfig>,
    /// Metrics.
    pub metrics: LbMetrics,
    /// Connection limits.
    pub conns: Arc<ConnLimiter>,
    /// New-session rate limits and each client IP's share of the sid table.
    pub gate: crate::admission::SessionGate,
    /// Open client TCP connections, total and per IP (counted from accept to close).
    pub tcp_conns: Arc<ConnLimiter>,
    /// Consistent-hash ring over ready backends.
    pub ring: HashRing,
    /// The certificates of the TLS listeners.
    pub tls: crate::tls::TlsListeners,
    /// TLS towards the backends for health checks (`upstream_tls`, fixed at start).
    pub upstream_tls: Option<Arc<crate::tls::UpstreamClient>>,
    /// Closed unless this process was started with `-u` and waits for the old one's table.
    pub handover: HandoverGate,
    /// This process is being replaced or stopped: every response closes its connection, so
    /// clients open their next request on a new one (to the new process) instead of racing the
    /// close of an idle keep-alive connection.
    closing: std::sync::atomic::AtomicBool,
    turn: AtomicUsize,
    /// The WebSocket relay threads, started with the first tunnel (after pingora has
    /// daemonized); `None` inside if they could not start.
    relays: std::sync::OnceLock<Option<crate::tunnel::Relays>>,
    /// The fast path's idle keep-alive connections to the backends (its limits set here and
    /// on every reload, `control::apply`).
    pub upstream_pool: Arc<crate::polling::pool::Pool>,
}

impl Lb {
    /// Shared state for a validated `cfg`.
    pub fn new(cfg: LbConfig, metrics: LbMetrics) -> Result<Lb, BadAddress> {
        // DNS-named upstreams stand for nothing until the discovery task's first answer.
        let fixed = crate::discovery::expand(&cfg.upstreams, &Default::default());
        let registry = Arc::new(Registry::new(&fixed, !cfg.health.active.enabled)?);
        let sids = Arc::new(SidTable::new(cfg.engineio.sid_table_max));
        let buckets = cfg.limits.per_ip_rate_buckets;
        let upstream_pool = Arc::new(crate::polling::pool::Pool::new(&cfg.upstream_keepalive));
        let lb = Lb {
            registry,
            discovered: Default::default(),
            probe_now: tokio::sync::Notify::new(),
            sids,
            tags: TagMap::default(),
            config: ArcSwap::from_pointee(cfg),
            metrics,
            conns: Arc::new(ConnLimiter::default()),
            gate: crate::admission::SessionGate::new(buckets),
            tcp_conns: Arc::new(ConnLimiter::default()),
            ring: HashRing::default(),
            tls: crate::tls::TlsListeners::default(),
            upstream_tls: None,
            handover: HandoverGate::open(),
            closing: std::sync::atomic::AtomicBool::new(false),
            turn: AtomicUsize::new(0),
            relays: std::sync::OnceLock::new(),
            upstream_pool,
        };
        lb.rebuild_tags();
        Ok(lb)
    }

    /// The WebSocket relay threads (as many as the proxy's worker threads, `threads`), started
    /// on first use. `None` if they could not start (logged once): tunnels are then relayed by
    /// tasks.
    pub fn relays(&self) -> Option<&crate::tunnel::Relays> {
        self.relays
            .get_or_init(|| {
                let n = self.config.load().threads;
                match crate::tunnel::Relays::start(n) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, "WebSocket relay threads could not start; tunnels are relayed by tasks");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The same state serving the TLS listeners' certificates.
    pub fn with_tls(mut self, tls: crate::tls::TlsListeners) -> Lb {
        self.tls = tls;
        self
    }

    /// The same state probing the backends over TLS.
    pub fn with_upstream_tls(mut self, client: Option<crate::tls::UpstreamClient>) -> Lb {
        self.upstream_tls = client.map(Arc::new);
        self
    }

    /// Rebuild the tag map from the registry (after checks and reloads); logs new conflicts.
    pub fn rebuild_tags(&self) {
        for tag in self.tags.rebuild(&self.registry.all()) {
            tracing::error!(
                tag,
                "two backends use the same session-id tag; their sessions are routed by the sid table only (give every node its own engineio.sid_tag / node_id)"
            );
        }
        self.metrics
            .sid_tag_conflicts
            .set(self.tags.conflicts().len() as i64);
    }

    /// The backend of a request naming `sid`: tag → sid table → cookie. While a binary upgrade
    /// hands the old process's table over, an unknown sid waits for it (up to
    /// `upgrade.handover_wait`) before it is answered 400.
    pub async fn route_sid(
        &self,
        cfg: &LbConfig,
        req: &RequestHeader,
        sid: &str,
        websocket: bool,
    ) -> Result<(Arc<Backend>, Via), Reject> {
        let cookie = (cfg.stickiness.mode == StickyMode::Cookie)
            .then(|| request::cookie(req, &cfg.stickiness.cookie_name))
            .flatten();
        let routes = SidRoutes {
            tags: &self.tags,
            sids: &self.sids,
            registry: &self.registry,
        };
        let mut route = select::route_sid(routes, sid, websocket, cookie);
        if matches!(route, SidRoute::Unknown) && self.handover.pending() {
            self.handover.wait().await;
            route = select::route_sid(routes, sid, websocket, cookie);
        }
        if matches!(route, SidRoute::Unknown) && self.handover.following() {
            let known = |r: &SidRoute| !matches!(r, SidRoute::Unknown);
            route = self
                .handover
                .follow(|| Some(select::route_sid(routes, sid, websocket, cookie)).filter(known))
                .await
                .unwrap_or(SidRoute::Unknown);
        }
        match route {
            SidRoute::Bound { backend, via } => {
                self.metrics.sid_routed(via).inc();
                Ok((backend, via))
            }
            SidRoute::Gone(b) => {
                tracing::debug!(backend = %b.id, "session of a down backend");
                Err(Reject::sid_unknown("backend_down"))
            }
            SidRoute::Unknown => Err(Reject::sid_unknown("unknown")),
        }
    }

    /// A backend for a new session (or a request outside the Engine.IO path), not one of `tried`.
    pub fn pick_new(
        &self,
        cfg: &LbConfig,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        tried: &[String],
    ) -> Option<Arc<Backend>> {
        let sticky_cookie = (cfg.stickiness.mode == StickyMode::Cookie)
            .then(|| request::cookie(req, &cfg.stickiness.cookie_name))
            .flatten();
        let hash_value = cfg
            .balancing
            .hash_key()
            .and_then(|k| request::hash_input(k, req, ip));
        select::pick_new(
            &self.registry.configured(),
            &self.ring,
            NewSession {
                policy: cfg.balancing.policy,
                sticky_cookie,
                hash_key: hash_value.as_deref().map(str::as_bytes),
                tried,
                turn: self.turn.fetch_add(1, Ordering::Relaxed),
            },
        )
    }

    /// From now on, close every client connection after its current response.
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether client connections close after their current response.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether any backend takes new sessions.
    pub fn any_ready(&self) -> bool {
        self.registry.configured().iter().any(|b| b.ready())
    }
}
