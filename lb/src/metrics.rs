//! The LB's Prometheus metrics (`iogate_lb_*`), registered in the default registry that
//! pingora-prometheus serves.

use iogate_shared::metrics::{self as m, MetricsError};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

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
    /// Requests naming an unknown sid.
    pub sid_unknown: IntCounter,
    /// Failed connects per backend.
    pub connect_errors: IntCounterVec,
    /// 1 when a backend takes new sessions.
    pub backend_up: IntGaugeVec,
    /// Rejected requests by reason.
    pub rejected: IntCounterVec,
    /// Config reloads by result.
    pub reloads: IntCounterVec,
}

impl LbMetrics {
    /// Register every metric in `reg`.
    pub fn new(reg: &Registry) -> Result<Self, MetricsError> {
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
            sid_unknown: m::counter(
                reg,
                "iogate_lb_sid_unknown_total",
                "Requests naming an unknown or orphaned sid (answered 400).",
            )?,
            connect_errors: m::counter_vec(
                reg,
                "iogate_lb_upstream_connect_errors_total",
                "Failed connects per backend.",
                &["backend"],
            )?,
            backend_up: m::gauge_vec(
                reg,
                "iogate_lb_backend_up",
                "1 when the backend takes new sessions.",
                &["backend"],
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
        })
    }
}
