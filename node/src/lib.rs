//! # iogate-node
//!
//! A Socket.IO server (socketioxide + axum) that joins a cluster of nodes through Redis and keeps
//! working when Redis does not.
//!
//! - [`config`]: the YAML schema, defaults, validation and command-line overrides.
//! - [`bus`]: the Redis bus — our own socketioxide-redis `Driver` on fred, its connection
//!   supervisor and the bus state.
//! - [`app`]: the Socket.IO applications (the reference chat, the conformance profile).
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the Engine.IO guard middleware.
//! - [`connections`]: killable TCP connections and the session → connection table used by drain.
//! - [`drain`]: paced, jittered graceful drain.
//! - [`demo`]: the chat demo page and its read-only view of the load balancer's backends.
//! - [`recovery`]: Socket.IO connection state recovery across nodes (Redis streams and
//!   sessions, the adapter hooks).
//! - [`metrics`]: the `iogate_node_*` Prometheus metrics.
//! - [`server`]: assembles all of the above and runs a node.

pub mod app;
pub mod bus;
pub mod config;
pub mod connections;
pub mod demo;
pub mod drain;
pub mod http;
pub mod metrics;
pub mod recovery;
pub mod server;

pub use config::NodeConfig;
pub use server::{BoundNode, NodeError};
