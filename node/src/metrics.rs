//! The node's Prometheus metrics (`iogate_node_*`), in one registry served at `/metrics`.

use iogate_shared::metrics::{self as m, MetricsError};
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

/// Every `reason` label of `iogate_node_bus_dropped_total`.
pub const BUS_DROP_REASONS: &[&str] = &[
    "bus_down",
    "timeout",
    "error",
    "unreached",
    "queue_full",
    "lagged",
];

/// Every metric of one node.
#[derive(Clone)]
pub struct NodeMetrics {
    /// The registry rendered at `/metrics`.
    pub registry: Registry,
    /// Local sockets by transport, refreshed at each scrape.
    pub sockets: IntGaugeVec,
    /// Socket.IO connections accepted.
    pub connects: IntCounter,
    /// Socket.IO disconnections by reason.
    pub disconnects: IntCounterVec,
    /// Events received by name.
    pub events: IntCounterVec,
    /// Handler time per event.
    pub event_duration: HistogramVec,
    /// Events received that the application rejected (bad shape), by event.
    pub events_invalid: IntCounterVec,
    /// HTTP requests on the Engine.IO path answered with an error status, by code.
    pub engineio_rejected: IntCounterVec,
    /// Messages published on the Redis bus.
    pub bus_published: IntCounter,
    /// Messages received from the Redis bus.
    pub bus_received: IntCounter,
    /// Cross-node messages lost, by reason.
    pub bus_dropped: IntCounterVec,
    /// 1 while the bus is connected and subscribed.
    pub bus_up: IntGauge,
    /// Reconnections of the bus after an outage.
    pub bus_reconnects: IntCounter,
    /// Time from losing Redis to being subscribed again, per outage.
    pub bus_outage: Histogram,
    /// 1 while the node is draining.
    pub draining: IntGauge,
    /// Recovery attempts by result (recovered, unknown_session, offset_not_held, unavailable).
    pub recovery_attempts: IntCounterVec,
    /// Tracked packets this node appended to a namespace stream.
    pub recovery_appended: IntCounter,
    /// Tracked packets delivered to local sockets by the stream reader (per packet).
    pub recovery_delivered: IntCounter,
    /// Packets replayed to recovered sessions.
    pub recovery_replayed: IntCounter,
    /// Tracked packets that got no offset, by reason (redis_unavailable: delivered to local
    /// sockets without one; uncertain: sent without an answer, delivered by the readers if it
    /// landed).
    pub recovery_untracked: IntCounterVec,
    /// Session table writes that failed.
    pub recovery_session_write_errors: IntCounter,
    /// Stream entries skipped because Redis applied them after a later append of the same
    /// writer (sent as Redis failed).
    pub recovery_late: IntCounter,
    /// Local sockets a tracked packet could not be queued to (closed, or queue full).
    pub recovery_delivery_errors: IntCounter,
    /// Cluster-wide requests that not every other node answered in time, by request.
    pub cluster_incomplete: IntCounterVec,
    /// Server-side events sent, received (with a handler) and received without one.
    pub server_events: IntCounterVec,
}

/// Every `request` label of `iogate_node_cluster_incomplete_total`.
pub const CLUSTER_REQUESTS: &[&str] = &[
    "fetch_sockets",
    "rooms",
    "join",
    "leave",
    "disconnect",
    "server_emit",
];

/// Every `direction` label of `iogate_node_server_events_total`.
pub const SERVER_EVENT_DIRECTIONS: &[&str] = &["sent", "received", "unhandled"];

/// Every `result` label of `iogate_node_recovery_attempts_total`.
pub const RECOVERY_RESULTS: &[&str] = &[
    "recovered",
    "unknown_session",
    "offset_not_held",
    "unavailable",
];

/// Every `reason` label of `iogate_node_recovery_untracked_total`.
pub const UNTRACKED_REASONS: &[&str] = &["redis_unavailable", "uncertain"];

impl NodeMetrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let metrics = Self {
            sockets: m::gauge_vec(
                &r,
                "iogate_node_sockets",
                "Local Socket.IO sockets by transport.",
                &["transport"],
            )?,
            connects: m::counter(
                &r,
                "iogate_node_connects_total",
                "Socket.IO connections accepted.",
            )?,
            disconnects: m::counter_vec(
                &r,
                "iogate_node_disconnects_total",
                "Socket.IO disconnections by reason.",
                &["reason"],
            )?,
            events: m::counter_vec(
                &r,
                "iogate_node_events_total",
                "Events received, by event name (events without a handler, and names past metrics.max_event_labels, are `other`).",
                &["event"],
            )?,
            event_duration: m::seconds_histogram_vec(
                &r,
                "iogate_node_event_duration_seconds",
                "Time spent handling one event.",
                &["event"],
            )?,
            events_invalid: m::counter_vec(
                &r,
                "iogate_node_events_invalid_total",
                "Events ignored because their payload had the wrong shape.",
                &["event"],
            )?,
            engineio_rejected: m::counter_vec(
                &r,
                "iogate_node_engineio_rejected_total",
                "Engine.IO HTTP requests answered with an error status.",
                &["code"],
            )?,
            bus_published: m::counter(
                &r,
                "iogate_node_bus_published_total",
                "Messages published on the Redis bus.",
            )?,
            bus_received: m::counter(
                &r,
                "iogate_node_bus_received_total",
                "Messages received from the Redis bus.",
            )?,
            bus_dropped: m::counter_vec(
                &r,
                "iogate_node_bus_dropped_total",
                "Cross-node messages dropped, by reason (bus_down, timeout, error, unreached, queue_full, lagged).",
                &["reason"],
            )?,
            bus_up: m::gauge(
                &r,
                "iogate_node_bus_up",
                "1 while the Redis bus is connected and subscribed.",
            )?,
            bus_reconnects: m::counter(
                &r,
                "iogate_node_bus_reconnects_total",
                "Times the Redis bus came back after an outage.",
            )?,
            bus_outage: m::seconds_histogram(
                &r,
                "iogate_node_bus_outage_seconds",
                "Duration of each Redis bus outage, until subscriptions were restored.",
            )?,
            draining: m::gauge(&r, "iogate_node_draining", "1 while the node drains.")?,
            recovery_attempts: m::counter_vec(
                &r,
                "iogate_node_recovery_attempts_total",
                "Connection state recovery attempts, by result (recovered, unknown_session, offset_not_held, unavailable).",
                &["result"],
            )?,
            recovery_appended: m::counter(
                &r,
                "iogate_node_recovery_appended_total",
                "Tracked packets this node appended to a namespace stream.",
            )?,
            recovery_delivered: m::counter(
                &r,
                "iogate_node_recovery_delivered_total",
                "Tracked packets the stream reader delivered to local sockets.",
            )?,
            recovery_replayed: m::counter(
                &r,
                "iogate_node_recovery_replayed_total",
                "Packets replayed to recovered sessions.",
            )?,
            recovery_untracked: m::counter_vec(
                &r,
                "iogate_node_recovery_untracked_total",
                "Tracked packets that got no offset, by reason (redis_unavailable: delivered locally without one; uncertain: sent without an answer).",
                &["reason"],
            )?,
            recovery_session_write_errors: m::counter(
                &r,
                "iogate_node_recovery_session_write_errors_total",
                "Session table writes that failed.",
            )?,
            recovery_late: m::counter(
                &r,
                "iogate_node_recovery_late_total",
                "Stream entries not delivered because Redis applied them after a later append of the same node (sent as Redis failed).",
            )?,
            recovery_delivery_errors: m::counter(
                &r,
                "iogate_node_recovery_delivery_errors_total",
                "Local sockets a tracked packet could not be queued to.",
            )?,
            cluster_incomplete: m::counter_vec(
                &r,
                "iogate_node_cluster_incomplete_total",
                "Cluster-wide requests (fetch_sockets, rooms, join, leave, disconnect, server_emit) that not every other node answered within redis.request_timeout; the caller got an error.",
                &["request"],
            )?,
            server_events: m::counter_vec(
                &r,
                "iogate_node_server_events_total",
                "Server-side events: sent to the other nodes, received with a handler, received without one.",
                &["direction"],
            )?,
            registry: r,
        };
        // Make the label values visible at zero from the start.
        for t in ["polling", "websocket"] {
            metrics.sockets.with_label_values(&[t]).set(0);
        }
        for reason in BUS_DROP_REASONS {
            metrics.bus_dropped.with_label_values(&[*reason]);
        }
        for result in RECOVERY_RESULTS {
            metrics.recovery_attempts.with_label_values(&[*result]);
        }
        for request in CLUSTER_REQUESTS {
            metrics.cluster_incomplete.with_label_values(&[*request]);
        }
        for direction in SERVER_EVENT_DIRECTIONS {
            metrics.server_events.with_label_values(&[*direction]);
        }
        for reason in UNTRACKED_REASONS {
            metrics.recovery_untracked.with_label_values(&[*reason]);
        }
        Ok(metrics)
    }
}
