//! Cluster-wide operations on iogate-node — what socket.io users know as `fetchSockets()`,
//! `socketsJoin()`/`socketsLeave()`, `disconnectSockets()`, broadcasts with acks and
//! `serverSideEmit()` with acks. Each one spans every node of the cluster through Redis, waiting
//! at most `redis.request_timeout` for the other nodes' answers; a node that does not answer in
//! time makes it fail with an error that says so.
//!
//! | client sends | server does |
//! |---|---|
//! | `count` (ack) | acks how many sockets are connected, on every node |
//! | `move` ({from, to}, ack) | every socket in room `from`, on every node, joins `to` and leaves `from`; acks `true` |
//! | `poll` ({question, timeoutMs}, ack) | asks every other client `question` (an event with an ack) and acks `{answers, failed}`: how many answered in time, how many did not |
//! | `kick` (room, ack) | disconnects every socket in `room`, on every node; acks `true` |
//! | `join` (room, ack) | joins the room; acks `true` |
//! | `census` (ack) | asks every other node's application (a server-side event) how many clients it holds; acks `{nodes: {id: count}, error?}`, this node included |

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use iogate_node::cli::{self, NodeArgs};
use iogate_node::socketioxide::extract::Data;
use iogate_node::{AckSender, Io, Node, ServerEventError, ServerEvents, SocketRef};
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
        Node::new(cfg).app(|io, ctx| async move {
            let events = ctx.server_events().clone();
            let census = events.clone();
            io.ns("/", move |s: SocketRef| {
                let census = census.clone();
                async move {
                    on_connect(s.clone()).await;
                    s.on("census", move |io: Io, ack: AckSender| {
                        let census = census.clone();
                        async move {
                            let _ = ack.send(&take_census(&io, &census).await);
                        }
                    });
                }
            })
            .await?;
            // Another node asks for a census: answer how many clients this node holds.
            events.on("census", move |_ev| {
                let io = io.clone();
                async move { json!(local_clients(&io)) }
            });
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

fn local_clients(io: &Io) -> usize {
    io.of("/").map(|ns| ns.sockets().len()).unwrap_or(0)
}

/// Every node's client count: this node's, and the answers of the others to a server-side
/// event. A node that did not answer in time is named as missing, not left out.
async fn take_census(io: &Io, events: &ServerEvents) -> Value {
    let mut nodes = serde_json::Map::new();
    nodes.insert("self".into(), json!(local_clients(io)));
    let (acks, error) = match events.emit_with_ack("census", &()).await {
        Ok(acks) => (acks, None),
        Err(e) => {
            let msg = e.to_string();
            match e {
                // The answers that came, and the error that says how many did not.
                ServerEventError::Incomplete { acks, .. } => (acks, Some(msg)),
                _ => (Vec::new(), Some(msg)),
            }
        }
    };
    for a in acks {
        nodes.insert(a.node, a.data.unwrap_or(Value::Null));
    }
    json!({ "nodes": nodes, "error": error })
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
