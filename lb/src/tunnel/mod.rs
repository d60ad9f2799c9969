//! The WebSocket tunnel after a validated `101`: the two raw connections relayed outside
//! pingora's request pipeline.
//!
//! pingora would relay an upgraded connection as a close-delimited body inside the request's
//! task: the whole request pipeline (its future, both HTTP sessions with their header buffers,
//! two task channels) stays allocated for the tunnel's life, and every frame is copied into a
//! body buffer, allocated as `Bytes` and passed through a channel between the two halves of the
//! task. The vendored pingora-proxy instead hands iogate both streams once the upstream's `101`
//! has gone through the response filters and been written to the client
//! ([`pingora_proxy::UpgradedTunnel`]); the request then finishes (logged with its `101`) and
//! [`start`] takes the tunnel over. Upgrades on plain-TCP listeners are read by the fast path
//! ([`crate::polling`]) instead, which hands its two connections to [`start_sides`] the same
//! way once its `101` is written:
//!
//! - Both connections plain TCP (the usual case): once the `101` is flushed, pingora's streams
//!   (a write buffer every write is copied into, read and write timing on every call) are set
//!   aside and the two sockets go to one of the LB's relay threads ([`threads`]): an event loop
//!   per thread over `epoll`, as nginx's and HAProxy's workers relay an upgraded connection. A
//!   frame costs its read and its write, with no task woken, no timer touched and no other
//!   thread involved.
//! - Anything else (a TLS connection, a stream with bytes still buffered), or no relay thread
//!   to take it: a task of its own on pingora's runtime relays the two streams ([`task`]).
//!
//! Contract, whichever relays it:
//! - Only after the upstream answered `101` and the client was sent it. Bytes the client sent in
//!   the same read as its request reach the backend only then, as data of the protocol it
//!   switched to; bytes arriving separately before the response are refused by pingora ("Sent
//!   data after end of body"), or on the fast path not read until the `101` is out (and read as
//!   the next request if the answer is anything else), so an early `Upgrade` cannot smuggle a
//!   request to the backend (CVE-2026-2833).
//! - Bytes read together with the `101` or the request (`*_unread`) are relayed first.
//! - Memory only while data is in flight (HAProxy's approach): each read goes into a buffer
//!   shared by every tunnel of its thread (or the task's stack) and is written on at once; only
//!   what the receiver cannot take right away is kept (on the heap, in one buffer for that
//!   direction), and that direction is not read again until it is written. An idle tunnel
//!   holds its two sockets, its guards and its last-activity time.
//! - Idle: no byte moved in either direction for `idle` (`timeouts.websocket_idle`, HAProxy's
//!   `timeout tunnel`) closes the tunnel; a receiver that does not read counts as idle.
//! - End: when either side closes (end of stream, after everything it sent has been written
//!   on) or fails, the other side's write half is shut down (TCP FIN, TLS `close_notify`) and
//!   both connections are closed — pingora's and nginx's behaviour for upgraded connections.
//! - The guards ([`Held`]) that count the tunnel (live WebSockets per backend, the upgraded sid,
//!   the client's connection slot) are dropped exactly when the relay ends; so is each
//!   connection's tracer (the client's TCP connection count).

pub mod task;
pub mod threads;

use std::io;
use std::time::Duration;

use pingora_core::upstreams::peer::Tracer;
use pingora_proxy::UpgradedTunnel;

use crate::backends::WsGuard;
use crate::limits::ConnSlot;
use crate::sid_table::UpgradedSid;

pub use threads::Relays;

/// What counts a tunnel, held by its relay until the tunnel ends.
#[derive(Debug, Default)]
pub struct Held {
    /// The live-WebSocket count of the backend.
    pub ws: Option<WsGuard>,
    /// The upgraded polling session's sid-table entry.
    pub upgraded: Option<UpgradedSid>,
    /// The client's connection slot (`limits.max_connections`).
    pub slot: Option<ConnSlot>,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its connection.
    ClientClosed,
    /// The backend closed its connection.
    BackendClosed,
    /// No byte moved for the idle timeout.
    Idle,
    /// Reading or writing the client's connection failed.
    ClientError(io::ErrorKind),
    /// Reading or writing the backend's connection failed.
    BackendError(io::ErrorKind),
    /// The relay could not take the tunnel (its sockets could not be moved to a relay thread's
    /// event loop); both connections were closed.
    NotRelayed(io::ErrorKind),
}

/// The tracer of a pingora stream whose socket was taken off it: reports the disconnect (what
/// pingora's stream does when it is dropped) when the socket is let go.
#[derive(Debug, Default)]
pub struct Traced(pub Option<Tracer>);

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.0.on_disconnected();
        }
    }
}

/// Bytes read ahead of a tunnel as the relay keeps them: an empty slice becomes
/// `Bytes::new()`, which holds no allocation. An empty slice of a read buffer still holds the
/// whole buffer, and the relay only lets go of what it has written — an idle WebSocket kept
/// the fast path's 4 KiB read buffers for its whole life this way (5.8 KiB per idle WebSocket
/// in the front door's part (b), before the fast path copied its read-ahead out).
fn read_ahead(b: bytes::Bytes) -> bytes::Bytes {
    if b.is_empty() { bytes::Bytes::new() } else { b }
}

/// Relay `t` until it ends (see the module's contract): on a relay thread of `relays` when both
/// connections are plain TCP, else in this task. `held` is dropped when the tunnel ends.
pub async fn start(t: UpgradedTunnel, idle: Duration, held: Held, relays: Option<&Relays>) {
    let (client, backend, to_backend, to_client) = task::sides(t, idle).await;
    start_sides(client, backend, to_backend, to_client, idle, held, relays).await;
}

/// [`start`] once both connections are [`task::Side`]s (the fast path's upgrades arrive so):
/// `to_backend` and `to_client` are bytes read ahead, relayed first. They may be slices of a
/// caller's read buffer: a non-empty one keeps that buffer until it is written (the relay's
/// first turn, unless the peer does not read), an empty one is let go of here.
pub async fn start_sides(
    client: task::Side,
    backend: task::Side,
    to_backend: bytes::Bytes,
    to_client: bytes::Bytes,
    idle: Duration,
    held: Held,
    relays: Option<&Relays>,
) {
    let (to_backend, to_client) = (read_ahead(to_backend), read_ahead(to_client));
    let (client, backend) = match (client, backend, relays) {
        (task::Side::Tcp(c, c_traced), task::Side::Tcp(b, b_traced), Some(relays)) => {
            // Off tokio's reactor, so that the relay thread's event loop can register them.
            let (c, b) = match (c.into_std(), b.into_std()) {
                (Ok(c), Ok(b)) => (c, b),
                (Err(e), _) | (_, Err(e)) => {
                    let end = End::NotRelayed(e.kind());
                    tracing::warn!(
                        ?end,
                        "WebSocket tunnel could not be moved to a relay thread"
                    );
                    return;
                }
            };
            let plain = threads::Plain {
                client: c,
                client_traced: c_traced,
                backend: b,
                backend_traced: b_traced,
                to_backend,
                to_client,
                idle,
                held,
                ended: Box::new(|end| tracing::debug!(?end, "WebSocket tunnel ended")),
            };
            match relays.relay(plain) {
                Ok(()) => return,
                // The relay thread it went to has ended (only if it panicked): relay it here.
                Err(p) => {
                    tracing::warn!("a WebSocket relay thread has ended; tunnel relayed by a task");
                    let back = (
                        tokio::net::TcpStream::from_std(p.client),
                        tokio::net::TcpStream::from_std(p.backend),
                    );
                    let (c, b) = match back {
                        (Ok(c), Ok(b)) => (c, b),
                        (Err(e), _) | (_, Err(e)) => {
                            let end = End::NotRelayed(e.kind());
                            tracing::warn!(?end, "WebSocket tunnel could not be relayed");
                            return;
                        }
                    };
                    let end = task::relay_sides(
                        task::Side::Tcp(c, p.client_traced),
                        task::Side::Tcp(b, p.backend_traced),
                        p.to_backend,
                        p.to_client,
                        idle,
                        p.held,
                    )
                    .await;
                    tracing::debug!(?end, "WebSocket tunnel ended");
                    return;
                }
            }
        }
        (c, b, _) => (c, b),
    };
    let end = task::relay_sides(client, backend, to_backend, to_client, idle, held).await;
    tracing::debug!(?end, "WebSocket tunnel ended");
}

#[cfg(test)]
mod tests {
    use super::read_ahead;
    use bytes::{Bytes, BytesMut};

    #[test]
    fn an_empty_read_ahead_lets_go_of_the_buffer_it_was_cut_from() {
        // As the fast path hands them over: what is left of a read buffer after the request.
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let request = buf.split().freeze();
        let rest = buf.freeze();
        assert!(rest.is_empty());
        assert!(
            !request.is_unique(),
            "the empty rest shares the request's buffer"
        );
        let kept = read_ahead(rest);
        assert!(
            request.is_unique(),
            "the empty read-ahead still holds the buffer"
        );
        assert!(kept.is_empty());

        // Bytes that are there are kept as they are (relayed first).
        let whole = Bytes::from(b"GET / HTTP/1.1\r\n\r\n\x81\x05hello".to_vec());
        let frame = read_ahead(whole.slice(18..));
        assert_eq!(&frame[..], b"\x81\x05hello");
    }
}
