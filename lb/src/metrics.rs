//! The LB's Prometheus metrics (`iogate_lb_*`), registered in the default registry that
//! pingora-prometheus serves.

use iogate_shared::metrics::{self as m, MetricsError};
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use crate::backends::BackendState;
use crate::select::Via;

/// Every `reason` label of `iogate_lb_rejected_total` (see [`crate::admission`]).
pub const REJECT_REASONS: [&str; 12] = [
    "blocked_path",
    "header_too_large",
    "body_too_large",
    "max_connections",
    "max_connections_per_ip",
    "tcp_connections",
    "tcp_connections_per_ip",
    "sid_table_full",
    "sid_table_full_per_ip",
    "new_session_rate_per_ip",
    "new_session_rate",
    "no_backend",
];

/// The series of one backend that every request to it updates, resolved once per backend
/// ([`crate::backends::Backend::series`]): a label lookup hashes the label values and locks
/// the family's map, four times per polling request — about 7 % of the LB's user-space
/// instructions per request (callgrind, `bench/instructions.sh`).
#[derive(Debug)]
pub struct BackendSeries {
    /// `iogate_lb_requests_total{code="200"}`.
    pub ok: IntCounter,
    /// `iogate_lb_request_duration_seconds`.
    pub duration: Histogram,
    /// `iogate_lb_upstream_connections_total{reuse="new"}`.
    pub upstream_new: IntCounter,
    /// `iogate_lb_upstream_connections_total{reuse="reused"}`.
    pub upstream_reused: IntCounter,
}

/// Every `result` label of `iogate_lb_dns_resolutions_total`.
pub const DNS_RESULTS: [&str; 3] = ["ok", "empty", "error"];

/// Every LB metric. Labels are backend ids, status codes and reasons — never sids or IPs.
#[derive(Debug, Clone)]
pub struct LbMetrics {
    /// Requests by backend and status code.
    pub requests: IntCounterVec,
    /// Request duration by backend (WebSocket tunnels excluded).
    pub request_duration: HistogramVec,
    /// Live sessions per backend.
    pub sessions: IntGaugeVec,
    /// Open WebSocket tunnels per backend.
    pub websockets: IntGaugeVec,
    /// Engine.IO handshakes per backend.
    pub handshakes: IntCounterVec,
    /// Entries in the sid table.
    pub sid_table_entries: IntGauge,
    /// Requests answered `400 Session ID unknown`, by reason (`unknown`, `backend_down`).
    pub sid_unknown: IntCounterVec,
    /// Requests naming a sid, by how their backend was found (`tag`, `table`, `cookie`).
    pub sid_routed: IntCounterVec,
    /// Session-id tags claimed by more than one backend (not used for routing).
    pub sid_tag_conflicts: IntGauge,
    /// Sid-table entries handed over during a binary upgrade, by direction (`sent`, `received`).
    pub handover_entries: IntCounterVec,
    /// Failed connects per backend.
    pub connect_errors: IntCounterVec,
    /// Upstream connections requests went over, per backend, by `reuse` (`new`: connected for
    /// the request; `reused`: taken from the keep-alive pool). HAProxy's connection attempts and
    /// reuses per server.
    pub upstream_connections: IntCounterVec,
    /// Requests answered, by the HTTP path that read them (`fast`: the fast path,
    /// `pingora`: pingora's).
    pub http_path_requests: IntCounterVec,
    /// The series of [`Self::sid_routed`], resolved once, in [`Via::ALL`] order.
    sid_routed_via: [IntCounter; 3],
    /// Its two series, resolved once (a label lookup hashes and locks on every request).
    pub http_path_fast: IntCounter,
    /// See [`Self::http_path_fast`].
    pub http_path_pingora: IntCounter,
    /// 1 when a backend takes new sessions.
    pub backend_up: IntGaugeVec,
    /// 1 for the state a backend is in (`pending`, `up`, `draining`, `down`), 0 for the others.
    pub backend_state: IntGaugeVec,
    /// State changes per backend, by the state entered.
    pub backend_transitions: IntCounterVec,
    /// Active checks per backend, by result (`ready`, `draining`, `failed`).
    pub health_checks: IntCounterVec,
    /// Rejected requests by reason.
    pub rejected: IntCounterVec,
    /// Config reloads by result.
    pub reloads: IntCounterVec,
    /// Open client TCP connections (accepted, not yet closed).
    pub client_connections: IntGauge,
    /// The configured limits (0: none), so alerts can compare usage with them.
    pub limits: IntGaugeVec,
    /// notAfter of each TLS listener's certificates (seconds since the epoch), by listener
    /// address and the certificate's first name.
    pub certificate_expiry: IntGaugeVec,
    /// Resolutions of DNS-named upstreams, by upstream id and result (`ok`, `empty`, `error`).
    pub dns_resolutions: IntCounterVec,
    /// Addresses in force for each DNS-named upstream.
    pub dns_addresses: IntGaugeVec,
}

impl LbMetrics {
    /// Register every metric in `reg`; label values that are known up front start at 0.
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
        let m = Self::register(reg)?;
        for reason in ["unknown", "backend_down"] {
            m.sid_unknown.with_label_values(&[reason]);
        }
        for d in ["sent", "received"] {
            m.handover_entries.with_label_values(&[d]);
        }
        for reason in REJECT_REASONS {
            m.rejected.with_label_values(&[reason]);
        }
        for result in ["ok", "error"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Make the per-backend counters of `id` visible at 0 (a backend that never got a handshake
    /// shows 0, not nothing).
    pub fn touch_backend(&self, id: &str) {
        self.handshakes.with_label_values(&[id]);
        self.connect_errors.with_label_values(&[id]);
        for reuse in ["new", "reused"] {
            self.upstream_connections.with_label_values(&[id, reuse]);
        }
    }

    /// The `iogate_lb_sid_routed_total` series of `via`.
    pub fn sid_routed(&self, via: Via) -> &IntCounter {
        match via {
            Via::Tag => &self.sid_routed_via[0],
            Via::Table => &self.sid_routed_via[1],
            Via::Cookie => &self.sid_routed_via[2],
        }
    }

    /// Backend `id`'s series that every request of it updates, resolved (see
    /// [`BackendSeries`]).
    pub fn backend_series(&self, id: &str) -> BackendSeries {
        BackendSeries {
            ok: self.requests.with_label_values(&[id, "200"]),
            duration: self.request_duration.with_label_values(&[id]),
            upstream_new: self.upstream_connections.with_label_values(&[id, "new"]),
            upstream_reused: self.upstream_connections.with_label_values(&[id, "reused"]),
        }
    }

    /// Set the state gauges of backend `id`.
    pub fn set_backend_state(&self, id: &str, state: BackendState) {
        for s in BackendState::ALL {
            self.backend_state
                .with_label_values(&[id, s.as_str()])
                .set(i64::from(s == state));
        }
        self.backend_up
            .with_label_values(&[id])
            .set(i64::from(state == BackendState::Up));
    }

    /// Publish the limits of `cfg` (at start and after every reload).
    pub fn set_limits(&self, cfg: &crate::config::LbConfig) {
        let l = &cfg.limits;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (name, v) in [
            ("max_connections", count(l.max_connections)),
            ("max_connections_per_ip", count(l.max_connections_per_ip)),
            ("max_tcp_connections", count(l.max_tcp_connections)),
            (
                "max_tcp_connections_per_ip",
                count(l.max_tcp_connections_per_ip),
            ),
            (
                "new_sessions_per_second",
                i64::from(l.new_sessions_per_second),
            ),
            (
                "new_sessions_per_second_per_ip",
                i64::from(l.new_sessions_per_second_per_ip),
            ),
            ("sid_table_max", count(cfg.engineio.sid_table_max)),
            (
                "sid_table_max_per_ip",
                count(cfg.engineio.sid_table_max_per_ip),
            ),
        ] {
            self.limits.with_label_values(&[name]).set(v);
        }
    }

    /// Publish the expiry of the certificates in force (after start and every reload).
    pub fn set_certificates(&self, tls: &crate::tls::TlsListeners) {
        self.certificate_expiry.reset();
        for (listener, resolver) in tls.all() {
            for c in resolver.current().certs() {
                let name = c.names.first().map_or("", String::as_str);
                self.certificate_expiry
                    .with_label_values(&[listener.as_str(), name])
                    .set(c.not_after);
            }
        }
    }

    /// Count a resolution of DNS-named upstream `id` (every result of [`DNS_RESULTS`] shows, at 0
    /// until seen).
    pub fn dns_result(&self, id: &str, result: &str) {
        for r in DNS_RESULTS {
            let c = self.dns_resolutions.with_label_values(&[id, r]);
            if r == result {
                c.inc();
            }
        }
    }

    /// Publish how many addresses DNS-named upstream `id` has in force.
    pub fn dns_addresses(&self, id: &str, n: usize) {
        self.dns_addresses
            .with_label_values(&[id])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Forget the series of DNS-named upstream `id` (removed from the config).
    pub fn forget_dns(&self, id: &str) {
        let _ = self.dns_addresses.remove_label_values(&[id]);
        for r in DNS_RESULTS {
            let _ = self.dns_resolutions.remove_label_values(&[id, r]);
        }
    }

    /// Forget every series of backend `id`.
    pub fn forget_backend(&self, id: &str) {
        let _ = self.sessions.remove_label_values(&[id]);
        let _ = self.backend_up.remove_label_values(&[id]);
        let _ = self.websockets.remove_label_values(&[id]);
        let _ = self.handshakes.remove_label_values(&[id]);
        let _ = self.connect_errors.remove_label_values(&[id]);
        for reuse in ["new", "reused"] {
            let _ = self.upstream_connections.remove_label_values(&[id, reuse]);
        }
        for s in BackendState::ALL {
            let _ = self.backend_state.remove_label_values(&[id, s.as_str()]);
            let _ = self
                .backend_transitions
                .remove_label_values(&[id, s.as_str()]);
        }
        for r in ["ready", "draining", "failed"] {
            let _ = self.health_checks.remove_label_values(&[id, r]);
        }
    }

    fn register(reg: &Registry) -> Result<Self, MetricsError> {
        let sid_routed = m::counter_vec(
            reg,
            "iogate_lb_sid_routed_total",
            "Requests naming a sid, by how their backend was found (tag, table, cookie).",
            &["via"],
        )?;
        let http_path_requests = m::counter_vec(
            reg,
            "iogate_lb_http_path_requests_total",
            "Requests answered, by the HTTP path that read them (fast: the fast path for long-polling and WebSocket upgrades; pingora: pingora's).",
            &["path"],
        )?;
        Ok(Self {
            requests: m::counter_vec(
                reg,
                "iogate_lb_requests_total",
                "Requests by backend and status code.",
                &["backend", "code"],
            )?,
            request_duration: m::seconds_histogram_vec(
                reg,
                "iogate_lb_request_duration_seconds",
                "Request duration (WebSocket tunnels excluded).",
                &["backend"],
            )?,
            sessions: m::gauge_vec(
                reg,
                "iogate_lb_sessions",
                "Live sessions (WebSockets + polling sessions) per backend.",
                &["backend"],
            )?,
            websockets: m::gauge_vec(
                reg,
                "iogate_lb_websockets",
                "Open WebSocket tunnels per backend.",
                &["backend"],
            )?,
            handshakes: m::counter_vec(
                reg,
                "iogate_lb_handshakes_total",
                "Engine.IO handshakes per backend.",
                &["backend"],
            )?,
            sid_table_entries: m::gauge(
                reg,
                "iogate_lb_sid_table_entries",
                "Sessions in the sid table.",
            )?,
            sid_unknown: m::counter_vec(
                reg,
                "iogate_lb_sid_unknown_total",
                "Requests answered 400 Session ID unknown, by reason (unknown: no route; backend_down: its backend failed).",
                &["reason"],
            )?,
            sid_tag_conflicts: m::gauge(
                reg,
                "iogate_lb_sid_tag_conflicts",
                "Session-id tags claimed by more than one backend (not used for routing).",
            )?,
            handover_entries: m::counter_vec(
                reg,
                "iogate_lb_upgrade_handover_entries_total",
                "Sid-table entries handed over during a binary upgrade, by direction (sent, received).",
                &["direction"],
            )?,
            connect_errors: m::counter_vec(
                reg,
                "iogate_lb_upstream_connect_errors_total",
                "Failed connects per backend.",
                &["backend"],
            )?,
            upstream_connections: m::counter_vec(
                reg,
                "iogate_lb_upstream_connections_total",
                "Upstream connections requests went over, per backend, by reuse (new, reused).",
                &["backend", "reuse"],
            )?,
            sid_routed_via: Via::ALL.map(|v| sid_routed.with_label_values(&[v.as_str()])),
            sid_routed,
            http_path_fast: http_path_requests.with_label_values(&["fast"]),
            http_path_pingora: http_path_requests.with_label_values(&["pingora"]),
            http_path_requests,
            backend_up: m::gauge_vec(
                reg,
                "iogate_lb_backend_up",
                "1 when the backend takes new sessions.",
                &["backend"],
            )?,
            backend_state: m::gauge_vec(
                reg,
                "iogate_lb_backend_state",
                "1 for the state the backend is in (pending, up, draining, down), 0 for the others.",
                &["backend", "state"],
            )?,
            health_checks: m::counter_vec(
                reg,
                "iogate_lb_health_checks_total",
                "Active health checks per backend, by result (ready, draining, failed).",
                &["backend", "result"],
            )?,
            backend_transitions: m::counter_vec(
                reg,
                "iogate_lb_backend_transitions_total",
                "Backend state changes, by the state entered.",
                &["backend", "state"],
            )?,
            rejected: m::counter_vec(
                reg,
                "iogate_lb_rejected_total",
                "Requests rejected by the LB, by reason.",
                &["reason"],
            )?,
            reloads: m::counter_vec(
                reg,
                "iogate_lb_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            )?,
            client_connections: m::gauge(
                reg,
                "iogate_lb_client_connections",
                "Open client TCP connections (idle keep-alive and header-reading ones included).",
            )?,
            limits: m::gauge_vec(
                reg,
                "iogate_lb_limit",
                "Configured limits by name (0: no limit): limits.* and engineio.sid_table_max*.",
                &["limit"],
            )?,
            certificate_expiry: m::gauge_vec(
                reg,
                "iogate_lb_tls_certificate_expiry_timestamp_seconds",
                "notAfter of each TLS listener certificate, by listener and the certificate's first name.",
                &["listener", "certificate"],
            )?,
            dns_resolutions: m::counter_vec(
                reg,
                "iogate_lb_dns_resolutions_total",
                "Resolutions of DNS-named upstreams, by upstream and result (ok; empty: NXDOMAIN or no records; error: no answer).",
                &["upstream", "result"],
            )?,
            dns_addresses: m::gauge_vec(
                reg,
                "iogate_lb_dns_addresses",
                "Addresses in force for each DNS-named upstream (the last good answer).",
                &["upstream"],
            )?,
        })
    }
}
