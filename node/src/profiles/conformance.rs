//! Profile `conformance`: the server the official socket.io-protocol test suite
//! (`test-suite/` of socketio/socket.io-protocol) expects, on namespaces `/` and `/custom`.
//!
//! - on connect: emit `auth` with the CONNECT payload;
//! - `message` → emit `message-back` with the same arguments (binary kept);
//! - `message-with-ack` → ack with the same arguments;
//! - `emit-with-ack` → emit `emit-with-ack` with the same arguments, expecting an ack, then emit
//!   `emit-with-ack` again with the ack's arguments;
//! - `disconnect-me` → the server disconnects the socket from its namespace (not in the test
//!   suite: the differential test compares server-side disconnects with the reference's).
//!
//! The timings (ping 300 ms / 200 ms, connect timeout 1 s, max payload 1e6) are applied by
//! [`NodeConfig::apply`](crate::config::NodeConfig::apply).

use std::future::ready;
use std::time::Instant;

use socketioxide::extract::{Data, TryData};

use crate::extract::AllArgs;
use crate::server::SetupError;
use crate::{AckSender, Io, NodeContext, SocketRef};

/// The namespaces this profile serves.
pub const NAMESPACES: [&str; 2] = ["/", "/custom"];

/// Register the conformance handlers on each of [`NAMESPACES`].
pub async fn register(io: Io, ctx: NodeContext) -> Result<(), SetupError> {
    for ns in NAMESPACES {
        let ctx = ctx.clone();
        io.ns(
            ns,
            move |socket: SocketRef, TryData(auth): TryData<rmpv::Value>| {
                on_connect(socket, auth.ok(), ctx.clone());
                ready(())
            },
        )
        .await?;
    }
    Ok(())
}

fn on_connect(socket: SocketRef, auth: Option<rmpv::Value>, ctx: NodeContext) {
    let auth = auth.unwrap_or_else(|| rmpv::Value::Map(Vec::new()));
    let _ = socket.emit("auth", &auth);

    let c = ctx.clone();
    socket.on("message", move |s: SocketRef, Data(args): Data<AllArgs>| {
        let start = Instant::now();
        let _ = s.emit("message-back", &args);
        c.observe("message", start);
        ready(())
    });

    let c = ctx.clone();
    socket.on(
        "message-with-ack",
        move |Data(args): Data<AllArgs>, ack: AckSender| {
            let start = Instant::now();
            let _ = ack.send(&args);
            c.observe("message-with-ack", start);
            ready(())
        },
    );

    socket.on("disconnect-me", |s: SocketRef| {
        if let Err(e) = s.disconnect() {
            tracing::debug!(error = %e, "disconnect-me: already gone");
        }
        ready(())
    });

    let c = ctx;
    socket.on(
        "emit-with-ack",
        move |s: SocketRef, Data(args): Data<AllArgs>| {
            let c = c.clone();
            async move {
                let start = Instant::now();
                match s.emit_with_ack::<_, AllArgs>("emit-with-ack", &args) {
                    Ok(ack) => {
                        if let Ok(reply) = ack.await {
                            let _ = s.emit("emit-with-ack", &reply);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "emit-with-ack failed"),
                }
                c.observe("other", start);
            }
        },
    );
}
