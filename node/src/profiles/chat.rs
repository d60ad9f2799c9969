//! The reference chat application (profile `chat`). The contract is in docs/protocol.md:
//!
//! | client sends | server does |
//! |---|---|
//! | handshake `auth.room` or query `room` | join that room |
//! | `chat:message` (any data) | `io.emit("chat:message", data)` on every node |
//! | `room:message` `{room, data}` | `io.to(room).emit("room:message", {room, data})` |
//! | `echo` (data, ack) | `ack(data)`; without an ack, emit `echo` back |
//! | `ping:ts` (ts, ack?) | `ack({ts, serverTs, node})`; without an ack, emit `pong:ts` |
//! | `join` / `leave` (room, ack?) | join / leave the room; `ack(true)` |
//! | `whoami` (ack) | `ack({node, sid, rooms})` |
//!
//! Every socket also joins the room named by its own id, so `io.to(sid)` reaches it from any node.

use std::future::ready;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use socketioxide::extract::TryData;

use crate::extract::Reply;
use crate::server::SetupError;
use crate::{AckSender, Io, NodeContext, SocketRef};

/// The longest room name accepted (longer ones are ignored and counted as invalid).
pub const MAX_ROOM_LEN: usize = 256;

/// A room name a client may use: 1–[`MAX_ROOM_LEN`] bytes, not starting with NUL (names that
/// do are the node's own, like recovery's hold room).
fn valid_room(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ROOM_LEN && !s.starts_with('\u{0}')
}

fn room_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if valid_room(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn query_room(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.into_owned())
        .filter(|r| valid_room(r))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Register the chat application on namespace `/`.
pub async fn register(io: Io, ctx: NodeContext) -> Result<(), SetupError> {
    io.ns(
        "/",
        move |socket: SocketRef, TryData(auth): TryData<Value>| {
            on_connect(socket, auth.ok(), ctx.clone());
            ready(())
        },
    )
    .await?;
    Ok(())
}

fn on_connect(socket: SocketRef, auth: Option<Value>, ctx: NodeContext) {
    socket.join(socket.id.to_string());
    let room = auth
        .as_ref()
        .and_then(|a| a.get("room"))
        .and_then(room_name)
        .or_else(|| query_room(socket.req_parts().uri.query()));
    if let Some(room) = room {
        socket.join(room);
    }

    let c = ctx.clone();
    socket.on(
        "chat:message",
        move |io: Io, TryData(data): TryData<Value>| {
            let c = c.clone();
            async move {
                let start = Instant::now();
                let data = data.unwrap_or(Value::Null);
                if let Err(e) = io.emit("chat:message", &data).await {
                    tracing::debug!(error = %e, "chat:message broadcast failed");
                }
                c.observe("chat:message", start);
            }
        },
    );

    let c = ctx.clone();
    socket.on(
        "room:message",
        move |io: Io, TryData(data): TryData<Value>| {
            let c = c.clone();
            async move {
                let start = Instant::now();
                let parsed = data.ok().and_then(|d| {
                    let room = d.get("room").and_then(room_name)?;
                    Some((room, d.get("data").cloned().unwrap_or(Value::Null)))
                });
                match parsed {
                    Some((room, data)) => {
                        let msg = json!({ "room": room, "data": data });
                        if let Err(e) = io.to(room).emit("room:message", &msg).await {
                            tracing::debug!(error = %e, "room:message broadcast failed");
                        }
                    }
                    None => c.invalid("room:message"),
                }
                c.observe("room:message", start);
            }
        },
    );

    let c = ctx.clone();
    socket.on(
        "echo",
        move |TryData(data): TryData<Value>, reply: Reply| {
            let start = Instant::now();
            let _ = reply.send("echo", &data.unwrap_or(Value::Null));
            c.observe("echo", start);
            ready(())
        },
    );

    let c = ctx.clone();
    socket.on(
        "ping:ts",
        move |TryData(ts): TryData<Value>, reply: Reply| {
            let start = Instant::now();
            let answer = json!({
                "ts": ts.unwrap_or(Value::Null),
                "serverTs": now_ms(),
                "node": c.node_id(),
            });
            let _ = reply.send("pong:ts", &answer);
            c.observe("ping:ts", start);
            ready(())
        },
    );

    for (event, joining) in [("join", true), ("leave", false)] {
        let c = ctx.clone();
        socket.on(
            event,
            move |s: SocketRef, TryData(room): TryData<Value>, ack: AckSender| {
                let start = Instant::now();
                match room.ok().as_ref().and_then(room_name) {
                    Some(room) => {
                        if joining {
                            s.join(room);
                        } else {
                            s.leave(room);
                        }
                        let _ = ack.send(&true);
                    }
                    None => {
                        c.invalid(event);
                        let _ = ack.send(&false);
                    }
                }
                c.observe(event, start);
                ready(())
            },
        );
    }

    let c = ctx.clone();
    socket.on("whoami", move |s: SocketRef, ack: AckSender| {
        let start = Instant::now();
        let rooms: Vec<String> = s.rooms().into_iter().map(|r| r.to_string()).collect();
        let _ = ack.send(&json!({ "node": c.node_id(), "sid": s.id.to_string(), "rooms": rooms }));
        c.observe("whoami", start);
        ready(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_from_auth_and_query() {
        assert_eq!(room_name(&json!("lobby")), Some("lobby".into()));
        assert_eq!(room_name(&json!(7)), Some("7".into()));
        assert_eq!(room_name(&json!("")), None);
        assert_eq!(room_name(&json!({"x": 1})), None);
        assert_eq!(room_name(&json!("x".repeat(MAX_ROOM_LEN + 1))), None);
        assert_eq!(room_name(&json!("\u{0}iogate:recovering")), None);
        assert_eq!(query_room(Some("room=%00x")), None);
        assert_eq!(
            query_room(Some("EIO=4&transport=polling&room=a%20b")),
            Some("a b".into())
        );
        assert_eq!(query_room(Some("EIO=4")), None);
        assert_eq!(query_room(None), None);
    }
}
