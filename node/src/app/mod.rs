//! The Socket.IO applications a node can serve ([`Profile`](crate::config::Profile)), plus what
//! they share: the per-node context, socket lifecycle bookkeeping and two extractors.
//!
//! - [`chat`]: the reference chat application (docs/protocol.md).
//! - [`conformance`]: the handlers the official socket.io-protocol test suite expects.

pub mod chat;
pub mod conformance;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use socketioxide::TransportType;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::{DisconnectReason, Socket};

use crate::connections::{ConnInfo, SessionConns};
use crate::metrics::NodeMetrics;

/// What every handler of a node can reach.
pub struct AppCtx {
    /// This node's id.
    pub node_id: Arc<str>,
    /// The node's metrics.
    pub metrics: NodeMetrics,
    /// Connections per session, for drain.
    pub conns: Arc<SessionConns>,
}

impl AppCtx {
    /// Count one `event` and time its handler from `start`.
    pub fn observe(&self, event: &str, start: Instant) {
        let label = NodeMetrics::event_label(event);
        self.metrics.events.with_label_values(&[label]).inc();
        self.metrics
            .event_duration
            .with_label_values(&[label])
            .observe(start.elapsed().as_secs_f64());
    }

    /// Count an event whose payload the application could not use.
    pub fn invalid(&self, event: &str) {
        self.metrics
            .events_invalid
            .with_label_values(&[NodeMetrics::event_label(event)])
            .inc();
    }

    /// Bookkeeping every profile does when a socket connects: count it, track its connection for
    /// drain, and count its disconnect by reason.
    pub fn on_socket_connected<A: Adapter>(self: &Arc<Self>, socket: &SocketRef<A>) {
        self.metrics.connects.inc();
        let sid = socket.id.to_string();
        // A session that started on a WebSocket owns the handshake's connection; a polling
        // session owns none (its WebSocket, if it upgrades, is recorded by the guard).
        let websocket = (socket.transport_type() == TransportType::Websocket)
            .then(|| {
                socket
                    .req_parts()
                    .extensions
                    .get::<axum::extract::ConnectInfo<ConnInfo>>()
                    .map(|c| c.0.handle.clone())
            })
            .flatten();
        self.conns.register(&sid, websocket.as_ref());
        let ctx = self.clone();
        socket.on_disconnect(move |s: SocketRef<A>, reason: DisconnectReason| {
            ctx.metrics
                .disconnects
                .with_label_values(&[reason_label(reason)])
                .inc();
            ctx.conns.remove(&s.id.to_string());
            std::future::ready(())
        });
    }
}

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

/// Extractor: whether the client asked for an acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct AckRequested(pub bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(AckRequested(ack_id.is_some()))
    }
}

/// Every argument of an event (any count, binary attachments kept), re-emitted as the same
/// argument list. socketioxide treats tuples as argument lists; this type presents itself as a
/// tuple of any length.
#[derive(Debug, Clone, Default)]
pub struct AllArgs(pub Vec<rmpv::Value>);

impl<'de> Deserialize<'de> for AllArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllArgs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<AllArgs, S::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<rmpv::Value>()? {
                    out.push(v);
                }
                Ok(AllArgs(out))
            }
        }
        d.deserialize_tuple(usize::MAX, V)
    }
}

impl Serialize for AllArgs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}
