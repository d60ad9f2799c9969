//! `iogate-node`: run one clustered Socket.IO node serving a built-in profile (the chat
//! application or the conformance handlers), on the same public API applications use.

use std::process::ExitCode;

use clap::Parser;
use iogate_node::Node;
use iogate_node::cli::{self, NodeArgs};
use iogate_node::config::Profile;

/// A clustered Socket.IO node: socketioxide + axum, joined to other nodes through Redis.
#[derive(Debug, Parser)]
#[command(name = "iogate-node", version)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
    /// Application profile, overrides `profile`.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = cli.node.overrides();
    overrides.profile = cli.profile;
    cli::run("iogate-node", &cli.node, overrides, |cfg| {
        Node::new(cfg).app(iogate_node::profiles::register)
    })
}
