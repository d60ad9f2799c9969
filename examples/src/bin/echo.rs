//! The smallest application on iogate-node: every `echo` comes back — as the ack when the
//! client asked for one, else as an `echo` event. It has the node's flags (`--config`,
//! `--listen`, `--redis-url`, …), Redis clustering, drain, probes, metrics and (when enabled)
//! connection state recovery without a line for any of them.

use std::process::ExitCode;

use clap::Parser;
use iogate_node::cli::{self, NodeArgs};
use iogate_node::extract::Reply;
use iogate_node::socketioxide::extract::Data;
use iogate_node::{Node, SocketRef};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "iogate-example-echo")]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::run("echo", &cli.node, cli.node.overrides(), |cfg| {
        Node::new(cfg).app(|io, _ctx| async move {
            io.ns("/", async |s: SocketRef| {
                s.on("echo", echo);
            })
            .await?;
            Ok(())
        })
    })
}

async fn echo(Data(v): Data<Value>, reply: Reply) {
    let _ = reply.send("echo", &v);
}
