//! Cluster-wide operations on iogate-node — what socket.io users know as `fetchSockets()`,
//! `socketsJoin()`/`socketsLeave()`, `disconnectSockets()` and broadcasts with acks. Each one
//! spans every node of the cluster through Redis, waiting at most `redis.request_timeout` for
//! the other nodes' answers.
//!
//! | client sends | server does |
//! |---|---|
//! | `count` (ack) | acks how many sockets are connected, on every node |
//! | `move` ({from, to}, ack) | every socket in room `from`, on every node, joins `to` and leaves `from`; acks `true` |
//! | `poll` ({question, timeoutMs}, ack) | asks every other client `question` (an event with an ack) and acks `{answers, failed}`: how many answered in time, how many did not |
//! | `kick` (room, ack) | disconnects every socket in `room`, on every node; acks `true` |
//! | `join` (room, ack) | joins the room; acks `true` |

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use iogate_node::cli::{self, NodeArgs};
use iogate_node::socketioxide::extract::Data;
use iogate_node::{AckSender, Io, Node, SocketRef};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "iogate-example-cluster")]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Deserialize)]
struct Move {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Poll {
    question: Value,
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::run("cluster", &cli.node, cli.node.overrides(), |cfg| {
        Node::new(cfg).app(|io, _ctx| async move {
            io.ns("/", on_connect).await?;
            Ok(())
        })
    })
}

async fn on_connect(s: SocketRef) {
    s.on(
        "join",
        async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
            s.join(room);
            let _ = ack.send(&true);
        },
    );
    s.on("count", async |io: Io, ack: AckSender| {
        let _ = match io.fetch_sockets().await {
            Ok(sockets) => ack.send(&sockets.len()),
            Err(e) => ack.send(&json!({ "error": e.to_string() })),
        };
    });
    s.on(
        "move",
        async |io: Io, Data(m): Data<Move>, ack: AckSender| {
            let moved = async {
                io.within(m.from.clone()).join(m.to).await?;
                io.within(m.from.clone()).leave(m.from).await
            };
            let _ = match moved.await {
                Ok(()) => ack.send(&true),
                Err(e) => ack.send(&json!({ "error": e.to_string() })),
            };
        },
    );
    s.on("poll", poll);
    s.on(
        "kick",
        async |io: Io, Data(room): Data<String>, ack: AckSender| {
            let _ = match io.within(room).disconnect().await {
                Ok(()) => ack.send(&true),
                Err(e) => ack.send(&json!({ "error": e.to_string() })),
            };
        },
    );
}

async fn poll(s: SocketRef, Data(p): Data<Poll>, ack: AckSender) {
    let asked = s
        .broadcast()
        .timeout(Duration::from_millis(p.timeout_ms))
        .emit_with_ack::<_, Value>("question", &p.question)
        .await;
    let reply = match asked {
        Ok(stream) => {
            let (mut answers, mut failed) = (0u64, 0u64);
            let mut stream = std::pin::pin!(stream);
            while let Some((_sid, res)) = stream.next().await {
                match res {
                    Ok(_) => answers += 1,
                    Err(_) => failed += 1,
                }
            }
            json!({ "answers": answers, "failed": failed })
        }
        Err(e) => json!({ "error": e.to_string() }),
    };
    let _ = ack.send(&reply);
}
