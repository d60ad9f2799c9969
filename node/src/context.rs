//! [`NodeContext`]: what a node hands to the application's setup — the node's identity and
//! configuration, its metrics registry and its server-side events — cheap to clone into
//! handlers.

use std::sync::Arc;
use std::time::Instant;

use crate::config::NodeConfig;
use crate::metrics::NodeMetrics;
use crate::observer::EventLabels;
use crate::server_events::ServerEvents;

/// The node an application runs on. Clone it into handlers freely (one `Arc`).
#[derive(Clone)]
pub struct NodeContext {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: Arc<str>,
    sid_tag: Arc<str>,
    config: NodeConfig,
    metrics: NodeMetrics,
    events: Arc<EventLabels>,
    server_events: ServerEvents,
}

impl NodeContext {
    pub(crate) fn new(
        node_id: Arc<str>,
        sid_tag: Arc<str>,
        config: NodeConfig,
        metrics: NodeMetrics,
        events: Arc<EventLabels>,
        server_events: ServerEvents,
    ) -> NodeContext {
        NodeContext {
            inner: Arc::new(Inner {
                node_id,
                sid_tag,
                config,
                metrics,
                events,
                server_events,
            }),
        }
    }

    /// This node's id (`node_id`, or the hostname plus a random suffix).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The tag in front of the session ids this node issues (`engineio.sid_tag`).
    pub fn sid_tag(&self) -> &str {
        &self.inner.sid_tag
    }

    /// The node's configuration, after command-line overrides and validation.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Events to and from the applications on the other nodes (socket.io's `serverSideEmit`,
    /// with acknowledgements): register handlers in the setup, emit from anywhere.
    pub fn server_events(&self) -> &ServerEvents {
        &self.inner.server_events
    }

    /// The registry served at `GET /metrics`: register the application's own metrics here
    /// (names `iogate_`-free, e.g. `myapp_orders_total`, to keep them apart from the node's).
    pub fn registry(&self) -> &prometheus::Registry {
        &self.inner.metrics.registry
    }

    /// Count an event whose payload the application could not use
    /// (`iogate_node_events_invalid_total{event}`).
    pub fn invalid(&self, event: &str) {
        let label = self.inner.events.label(event, true);
        self.inner
            .metrics
            .events_invalid
            .with_label_values(&[&*label])
            .inc();
    }

    /// Record how long a handler of `event` took, from `start`
    /// (`iogate_node_event_duration_seconds{event}`). Events are counted without this
    /// (`iogate_node_events_total`); the duration is the handler's to measure, since only it
    /// knows when its work (an async one's included) is done.
    pub fn observe(&self, event: &str, start: Instant) {
        let label = self.inner.events.label(event, true);
        self.inner
            .metrics
            .event_duration
            .with_label_values(&[&*label])
            .observe(start.elapsed().as_secs_f64());
    }
}
