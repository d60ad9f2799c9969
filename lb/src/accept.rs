//! The accept stage: every client TCP connection is counted from accept to close, in total and
//! per client IP, and refused at accept over `limits.max_tcp_connections` /
//! `limits.max_tcp_connections_per_ip` — HAProxy's `src_conn_cur`, which nginx's `limit_conn`
//! (a connection counts only while a request is in progress: our `max_connections`) does not
//! give. Idle keep-alive connections and connections still sending their header count too,
//! which is what a slow-loris or a connection flood holds.
//!
//! How: pingora's `ConnectionFilter` runs before the TLS handshake; the vendored pingora-core
//! (patch 3) lets it attach a `Tracer` to the accepted stream, which pingora drops with the
//! stream. Ours holds a [`ConnSlot`], so the count falls when the connection closes, however
//! it closes. A refused connection is closed at once, without a response (the client has not
//! sent a request yet), and counted in `iogate_lb_rejected_total{reason="tcp_connections"|
//! "tcp_connections_per_ip"}`. Limits are read from the configuration in force, so a reload
//! changes them for the next accept.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::upstreams::peer::{Tracer, Tracing};

use crate::limits::{ConnSlot, Refused};
use crate::state::Lb;

/// The listeners' connection filter.
pub struct AcceptFilter(pub Arc<Lb>);

impl std::fmt::Debug for AcceptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptFilter")
    }
}

/// A client connection's slot, dropped with its stream.
#[derive(Debug)]
struct Held {
    _slot: ConnSlot,
    gauge: prometheus::IntGauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Tracing for Held {
    fn on_connected(&self) {}
    fn on_disconnected(&self) {}
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        // A clone must not hold (or free) the slot a second time.
        Box::new(NotHeld)
    }
}

#[derive(Debug)]
struct NotHeld;

impl Tracing for NotHeld {
    fn on_connected(&self) {}
    fn on_disconnected(&self) {}
    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(NotHeld)
    }
}

#[async_trait]
impl ConnectionFilter for AcceptFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // Only reached through accept_traced's default, which we replace.
        self.accept_traced(addr).await.is_ok()
    }

    async fn accept_traced(&self, addr: Option<&SocketAddr>) -> Result<Option<Tracer>, ()> {
        let lb = &self.0;
        let limits = &lb.config.load().limits;
        match lb.tcp_conns.acquire(
            addr.map(|a| a.ip()),
            limits.max_tcp_connections,
            limits.max_tcp_connections_per_ip,
        ) {
            Ok(slot) => {
                lb.metrics.client_connections.inc();
                Ok(Some(Tracer(Box::new(Held {
                    _slot: slot,
                    gauge: lb.metrics.client_connections.clone(),
                }))))
            }
            Err(r) => {
                let reason = match r {
                    Refused::Total => "tcp_connections",
                    Refused::PerIp => "tcp_connections_per_ip",
                };
                lb.metrics.rejected.with_label_values(&[reason]).inc();
                Err(())
            }
        }
    }
}
