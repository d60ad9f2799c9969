//! Pieces both iogate binaries share.
//!
//! - [`config`]: YAML loading with serde, semantic validation, and errors that name the file, line,
//!   column and field of every problem (unknown fields are errors).
//! - [`telemetry`]: `tracing` initialisation from `RUST_LOG` with a text or JSON log format.
//! - [`sid`]: the session-id tag contract between the nodes and the load balancer.
//! - [`metrics`]: helpers to build Prometheus metrics with the `iogate_` conventions and render a
//!   registry in the text exposition format.

pub mod config;
pub mod metrics;
pub mod sid;
pub mod telemetry;
pub mod tls;
