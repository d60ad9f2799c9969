//! # iogate-lb
//!
//! The front door of a Socket.IO cluster, on pingora. Module map:
//!
//! - [`config`] — the YAML schema, defaults, validation, quick command-line form.
//! - [`proxy`] — the `ProxyHttp` implementation, phase by phase.
//! - [`engineio`] — request classification and the open-packet parser.
//! - [`sid_table`] — the learned sid → backend table.
//! - [`backends`] — the backend registry, states and live-session counters.
//! - [`least_conn`] — the least-connections selector; [`hashing`] — the ketama ring.
//! - [`limits`] — connection limits and the new-session token bucket.
//! - [`health`] — active checks; [`control`] — housekeeping, reload, shutdown.
//! - [`admin`] — the admin API; [`metrics`] — the `iogate_lb_*` metrics.

pub mod admin;
pub mod backends;
pub mod config;
pub mod control;
pub mod engineio;
pub mod hashing;
pub mod health;
pub mod least_conn;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod sid_table;
