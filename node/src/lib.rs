//! # iogate-node
//!
//! A Socket.IO server (socketioxide + axum) that joins a cluster of nodes through Redis, keeps
//! working when Redis does not, drains gracefully, and — with connection state recovery — gives
//! clients that move between nodes every packet they missed. Build your application on it:
//!
//! ```no_run
//! use std::process::ExitCode;
//! use clap::Parser;
//! use iogate_node::cli::{self, NodeArgs};
//! use iogate_node::socketioxide::extract::Data;
//! use iogate_node::{Node, SocketRef};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     node: NodeArgs,
//! }
//!
//! fn main() -> ExitCode {
//!     let cli = Cli::parse();
//!     cli::run("echo", &cli.node, cli.node.overrides(), |cfg| {
//!         Node::new(cfg).app(|io, _ctx| async move {
//!             io.ns("/", async |s: SocketRef| {
//!                 s.on("echo", async |s: SocketRef, Data::<serde_json::Value>(v)| {
//!                     let _ = s.emit("echo", &v);
//!                 });
//!             })
//!             .await?;
//!             Ok(())
//!         })
//!     })
//! }
//! ```
//!
//! Handlers are socketioxide's ([`socketioxide`] is re-exported, patched as
//! vendor/socketioxide/PATCHED.md says); the aliases below name its types with the node's
//! adapter. Every application gets the Redis bus, drain, `/healthz` `/readyz` `/metrics`,
//! per-event metrics and (when enabled) connection state recovery without writing any of it.
//! docs/embedding.md walks from `cargo new` to a cluster behind iogate-lb.
//!
//! Modules:
//!
//! - [`server`]: [`Node`] (configuration + applications) → [`BoundNode`] → run.
//! - [`cli`]: the flags and process life every node binary shares.
//! - [`context`]: [`NodeContext`], what an application's setup and handlers can reach.
//! - [`server_events`]: events between the applications on different nodes (socket.io's
//!   `serverSideEmit`, with acknowledgements).
//! - [`extract`]: extractors beyond socketioxide's.
//! - [`config`]: the YAML schema, defaults, validation and command-line overrides.
//! - [`profiles`]: the built-in applications (chat, conformance), on the public API.
//! - [`bus`]: the Redis bus — our own socketioxide-redis `Driver` on fred, its connection
//!   supervisor and the bus state.
//! - [`recovery`]: connection state recovery across nodes (Redis streams and sessions, the
//!   adapter hooks).
//! - [`observer`]: what the node counts and tracks for every socket, whatever the application.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the Engine.IO guard middleware.
//! - [`connections`]: killable TCP connections and the session → connection table used by drain.
//! - [`drain`]: paced, jittered graceful drain.
//! - [`demo`]: the chat demo page and its read-only view of the load balancer's backends.
//! - [`metrics`]: the `iogate_node_*` Prometheus metrics.

#![deny(missing_docs)]

pub mod bus;
pub mod cli;
pub mod config;
pub mod connections;
pub mod context;
pub mod demo;
pub mod drain;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod observer;
pub mod profiles;
pub mod recovery;
pub mod server;
pub mod server_events;

pub use cli::shutdown_signal;
pub use config::NodeConfig;
pub use context::NodeContext;
pub use server::{BoundNode, Node, NodeAdapter, NodeError, SetupError};
pub use server_events::{ServerAck, ServerEvent, ServerEventError, ServerEvents};
pub use socketioxide;

/// The Socket.IO server of a node: `io.ns(...)`, `io.emit(...)`, `io.to(room)...`,
/// `io.fetch_sockets()` — across every node of the cluster.
pub type Io = socketioxide::SocketIo<NodeAdapter>;
/// A connected socket, as handlers take it.
pub type SocketRef = socketioxide::extract::SocketRef<NodeAdapter>;
/// Sends the acknowledgement a client asked for.
pub type AckSender = socketioxide::extract::AckSender<NodeAdapter>;
/// A socket on another node (or this one), as `fetch_sockets` returns it.
pub type RemoteSocket = socketioxide::socket::RemoteSocket<NodeAdapter>;
