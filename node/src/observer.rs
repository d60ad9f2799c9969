//! What every application on a node gets without writing it: the node's [`SocketObserver`]
//! (a hook of the vendored socketioxide, see vendor/socketioxide/PATCHED.md) sees every socket
//! of every namespace connect, disconnect and receive events, whoever registered the handlers.
//!
//! - connects and disconnects (by reason) are counted;
//! - every socket is tracked in [`SessionConns`] from its first namespace to its last, so drain
//!   can end its transport (a session that started on a WebSocket is tracked with that
//!   connection; an upgrade is recorded by the HTTP guard);
//! - every incoming event is counted by name in `iogate_node_events_total{event}`: the name is
//!   the label when a handler is registered for it, up to `metrics.max_event_labels` distinct
//!   names per node; anything else — unhandled names, names past the cap — is `other`, so a
//!   client cannot grow the label set.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use socketioxide::observer::SocketObserver;
use socketioxide::socket::{DisconnectReason, Sid};

use crate::connections::{ConnInfo, SessionConns};
use crate::metrics::NodeMetrics;

/// A stable, low-cardinality label for a disconnect reason.
pub fn reason_label(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::MultipleHttpPollingError => "multiple_http_polling",
        DisconnectReason::PacketParsingError => "packet_parsing_error",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "closing_server",
    }
}

/// The bounded set of event names that get their own label value.
#[derive(Debug)]
pub struct EventLabels {
    names: RwLock<HashSet<Arc<str>>>,
    max: usize,
}

impl EventLabels {
    /// At most `max` distinct names.
    pub fn new(max: usize) -> EventLabels {
        EventLabels {
            names: RwLock::new(HashSet::new()),
            max,
        }
    }

    /// The label for an event: its name if `handled` and there is room (or it has one
    /// already), else `other`.
    pub fn label(&self, event: &str, handled: bool) -> Arc<str> {
        if !handled || event == "other" {
            return Arc::from("other");
        }
        // Every update leaves the set whole: a poisoned lock still holds valid names.
        if let Some(n) = self
            .names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(event)
        {
            return n.clone();
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(event) {
            return n.clone();
        }
        if names.len() >= self.max {
            return Arc::from("other");
        }
        let n: Arc<str> = Arc::from(event);
        names.insert(n.clone());
        n
    }
}

/// The node's socket observer.
pub(crate) struct NodeObserver {
    pub(crate) metrics: NodeMetrics,
    pub(crate) conns: Arc<SessionConns>,
    pub(crate) events: Arc<EventLabels>,
}

/// Whether the request that started a session is a WebSocket handshake (`transport=websocket`).
fn started_on_websocket(req: &axum::http::request::Parts) -> bool {
    req.uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "transport" && v == "websocket")
    })
}

impl SocketObserver for NodeObserver {
    fn connected(&self, _ns: &str, sid: Sid, req: &axum::http::request::Parts) {
        self.metrics.connects.inc();
        // A session that started on a WebSocket owns the handshake's connection; a polling
        // session owns none (its WebSocket, if it upgrades, is recorded by the HTTP guard).
        let websocket = started_on_websocket(req)
            .then(|| {
                req.extensions
                    .get::<axum::extract::ConnectInfo<ConnInfo>>()
                    .map(|c| c.0.handle.clone())
            })
            .flatten();
        self.conns.register(sid.as_str(), websocket.as_ref());
    }

    fn disconnected(&self, _ns: &str, sid: Sid, reason: DisconnectReason) {
        self.metrics
            .disconnects
            .with_label_values(&[reason_label(reason)])
            .inc();
        self.conns.release(sid.as_str());
    }

    fn event(&self, _ns: &str, _sid: Sid, event: &str, handled: bool) {
        let label = self.events.label(event, handled);
        self.metrics.events.with_label_values(&[&label]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_bounded_and_only_for_handled_events() {
        let l = EventLabels::new(2);
        assert_eq!(&*l.label("a", true), "a");
        assert_eq!(&*l.label("zzz", false), "other");
        assert_eq!(&*l.label("b", true), "b");
        assert_eq!(&*l.label("c", true), "other"); // past the cap
        assert_eq!(&*l.label("a", true), "a"); // known names keep theirs
    }

    #[test]
    fn websocket_handshakes_are_recognised() {
        let req = |uri: &str| {
            axum::http::Request::get(uri)
                .body(())
                .map(|r| r.into_parts().0)
        };
        let ws = req("/socket.io/?EIO=4&transport=websocket").expect("request");
        let polling = req("/socket.io/?EIO=4&transport=polling&t=x").expect("request");
        assert!(started_on_websocket(&ws));
        assert!(!started_on_websocket(&polling));
    }
}
