//! Auth, rooms and acks on iogate-node. A client connects with `auth: {token}`; the connect
//! middleware accepts the tokens given with `--user NAME=TOKEN` (anything else gets a
//! `connect_error` "unauthorized") and remembers the user on the socket. Then:
//!
//! | client sends | server does |
//! |---|---|
//! | `join` (room, ack) | joins the room; acks `{room, members}`: sockets in it on every node |
//! | `leave` (room, ack) | leaves it; acks `true` |
//! | `say` ({room, text}, ack) | `said` {room, from, text} to everyone else in the room, on every node; acks `true`, or `false` when the sender is not in the room or the message is not `{room, text}` |
//! | `dm` ({to, text}, ack) | `dm` {from, text} to every socket of user `to`, on whatever node; acks `true` (`false` for a malformed message) |
//!
//! Every socket is in the room `user:{name}`, which is how `dm` reaches a user anywhere.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use iogate_node::cli::{self, NodeArgs};
use iogate_node::socketioxide::extract::{Data, Extension, TryData};
use iogate_node::socketioxide::handler::ConnectHandler;
use iogate_node::{AckSender, Io, Node, SocketRef};
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
#[command(name = "iogate-example-rooms")]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
    /// A user allowed in: NAME=TOKEN (repeat).
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, String)>,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    let (name, token) = s.split_once('=').ok_or("expected NAME=TOKEN")?;
    if name.is_empty() || token.is_empty() {
        return Err("NAME and TOKEN must not be empty".into());
    }
    Ok((name.to_string(), token.to_string()))
}

/// The authenticated user of a socket.
#[derive(Clone)]
struct User(Arc<str>);

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Dm {
    to: String,
    text: String,
}

#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // token → user name
    let tokens: Arc<HashMap<String, Arc<str>>> = Arc::new(
        cli.users
            .iter()
            .map(|(name, token)| (token.clone(), Arc::from(name.as_str())))
            .collect(),
    );
    cli::run("rooms", &cli.node, cli.node.overrides(), |cfg| {
        Node::new(cfg).app(|io, _ctx| async move {
            let auth = move |s: SocketRef, Data(a): Data<Auth>| {
                let user = tokens.get(&a.token).cloned();
                async move {
                    let user = user.ok_or(Unauthorized)?;
                    s.join(format!("user:{user}"));
                    s.extensions.insert(User(user));
                    Ok::<_, Unauthorized>(())
                }
            };
            io.ns("/", on_connect.with(auth)).await?;
            Ok(())
        })
    })
}

async fn on_connect(s: SocketRef) {
    s.on("join", join);
    s.on(
        "leave",
        async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
            s.leave(room);
            let _ = ack.send(&true);
        },
    );
    s.on("say", say);
    s.on("dm", dm);
}

async fn join(s: SocketRef, io: Io, Data(room): Data<String>, ack: AckSender) {
    s.join(room.clone());
    // Every node answers for its own sockets.
    let members = io
        .within(room.clone())
        .fetch_sockets()
        .await
        .map(|v| v.len());
    let _ = match members {
        Ok(n) => ack.send(&json!({ "room": room, "members": n })),
        Err(e) => ack.send(&json!({ "room": room, "error": e.to_string() })),
    };
}

async fn say(
    s: SocketRef,
    Extension(User(from)): Extension<User>,
    TryData(m): TryData<Say>,
    ack: AckSender,
) {
    // `TryData`: a malformed message still gets its answer (with `Data` the handler would not
    // run, and the client would wait for an ack that never comes).
    let Ok(m) = m else {
        let _ = ack.send(&false);
        return;
    };
    if !s.rooms().iter().any(|r| *r == m.room) {
        let _ = ack.send(&false);
        return;
    }
    let msg = json!({ "room": m.room, "from": &*from, "text": m.text });
    let sent = s.to(m.room).emit("said", &msg).await.is_ok();
    let _ = ack.send(&sent);
}

async fn dm(
    io: Io,
    Extension(User(from)): Extension<User>,
    TryData(m): TryData<Dm>,
    ack: AckSender,
) {
    let Ok(m) = m else {
        let _ = ack.send(&false);
        return;
    };
    let msg = json!({ "from": &*from, "text": m.text });
    let sent = io
        .to(format!("user:{}", m.to))
        .emit("dm", &msg)
        .await
        .is_ok();
    let _ = ack.send(&sent);
}
