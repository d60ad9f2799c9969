//! # iogate-lb
//!
//! The front door of a Socket.IO cluster, on pingora. Module map:
//!
//! - [`config`] — the YAML schema, defaults, validation, quick command-line form.
//! - [`state`] — [`state::Lb`], the state every request and control task shares.
//! - [`polling`] — the listening service's application: Engine.IO long-polling requests on
//!   plain-TCP listeners served by iogate-lb's own HTTP/1.1 path, every other connection handed
//!   to pingora's; both decide with the same [`proxy`] methods.
//! - [`proxy`] — the `ProxyHttp` implementation, phase by phase, handing off to:
//!   - [`admission`] — limits, each refusal one `Reject` answered and counted in one place;
//!   - [`select`] — backend choice (sid tags, the sid table, cookie; least-connections,
//!     round-robin, ketama), free of pingora types;
//!   - [`engineio`] — request classification and the open-packet learner;
//!   - [`request`] — cookies and hash keys;
//!   - [`forwarded`] — the `X-Forwarded-*` and `X-Real-IP` headers sent upstream.
//! - [`sid_table`] — the learned sid → backend table; [`handover`] — passing it to a new
//!   process on binary upgrade.
//! - [`backends`] — the backend registry, states (pending, up, draining, down) and live-session
//!   counters.
//! - [`limits`] — connection limits, the new-session token bucket, per-IP buckets;
//!   [`accept`] — client TCP connections counted and limited from accept to close;
//!   [`memory`] — freed memory returned to the OS after a burst of connections.
//! - [`discovery`] — upstreams named by DNS (`NAME:port`, SRV), re-resolved, applied to the
//!   registry like a reload.
//! - [`health`] — active checks; [`control`] — housekeeping, reload, handover, shutdown.
//! - [`admin`] — the admin API; [`metrics`] — the `iogate_lb_*` metrics.
//! - [`tunnel`] — a WebSocket's two connections relayed once its `101` is through (the
//!   vendored pingora-proxy hands them over): plain TCP on the relay threads' event loops
//!   ([`tunnel::threads`]), TLS by a task of its own ([`tunnel::task`]).
//! - [`tls`] — certificates of TLS listeners by SNI, reloaded in place; [`redirect`] — the
//!   HTTP → HTTPS redirect listener.

pub mod accept;
pub mod admin;
pub mod admission;
pub mod backends;
pub mod config;
pub mod control;
pub mod discovery;
pub mod engineio;
pub mod forwarded;
pub mod handover;
pub mod health;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod polling;
pub mod proxy;
pub mod redirect;
pub mod request;
pub mod select;
pub mod sid_table;
pub mod state;
pub mod tls;
pub mod tunnel;
