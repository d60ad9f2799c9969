//! The WebSocket tunnel after a validated `101`: two raw connections relayed by one small task.
//!
//! pingora would relay an upgraded connection as a close-delimited body inside the request's
//! task: the whole request pipeline (its future, both HTTP sessions with their header buffers,
//! two task channels) stays allocated for the tunnel's life, and every frame is copied into a
//! body buffer, allocated as `Bytes` and passed through a channel between the two halves of the
//! task. The vendored pingora-proxy instead hands iogate both streams once the upstream's `101`
//! has gone through the response filters and been written to the client
//! ([`pingora_proxy::UpgradedTunnel`]); the request then finishes (logged with its `101`) and
//! [`relay`] carries the tunnel in a task of its own.
//!
//! Contract:
//! - Only after the upstream answered `101` and the client was sent it. Bytes the client sent in
//!   the same read as its request reach the backend only then, as data of the protocol it
//!   switched to; bytes arriving separately before the response are refused by pingora ("Sent
//!   data after end of body"), so an early `Upgrade` cannot smuggle a request (CVE-2026-2833).
//! - Bytes read together with the `101` or the request (`*_unread`) are relayed first.
//! - Memory only while data is in flight (HAProxy's approach): each read goes into a stack
//!   buffer and is written on at once; only what the receiver cannot take right away is kept
//!   (on the heap, in one buffer for that direction), and that direction is not read again until
//!   it is written. An idle tunnel holds the two streams, its guards and a timer.
//! - Idle: no byte moved in either direction for `idle` (`timeouts.websocket_idle`, HAProxy's
//!   `timeout tunnel`) closes the tunnel; a receiver that does not read counts as idle.
//! - End: when either side closes (end of stream, after everything it sent has been written
//!   on) or fails, the other side's write half is shut down (TCP FIN, TLS `close_notify`) and
//!   both connections are closed — pingora's and nginx's behaviour for upgraded connections.
//! - The guards ([`Held`]) that count the tunnel (live WebSockets per backend, the upgraded sid,
//!   the client's connection slot) are dropped exactly when the relay ends.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use pingora_core::protocols::Stream;
use pingora_proxy::UpgradedTunnel;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::backends::WsGuard;
use crate::limits::ConnSlot;
use crate::sid_table::UpgradedSid;

/// The read size of one relay step (the stack buffer; never allocated per tunnel).
const READ_SIZE: usize = 16 * 1024;

/// Reads one direction may make in one wake-up before yielding to other tasks.
const READS_PER_POLL: usize = 16;

/// What counts a tunnel, held by its relay task until the tunnel ends.
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
#[derive(Debug, PartialEq, Eq)]
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
}

/// One direction of the tunnel.
struct Flow {
    /// Read but not yet written on (only while the receiver cannot take it).
    pending: Bytes,
    /// Something was written since the last flush.
    unflushed: bool,
}

/// A failure on one side of a direction.
enum Fail {
    Read(io::Error),
    Write(io::Error),
}

impl Flow {
    /// Move bytes from `src` to `dst` until one of them is not ready. `Ready(Ok(()))`: `src`
    /// ended and everything it sent was written and flushed. Sets `moved` when bytes moved.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut Stream,
        dst: &mut Stream,
        moved: &mut bool,
    ) -> Poll<Result<(), Fail>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        for _ in 0..READS_PER_POLL {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.pending))
                    .map_err(Fail::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Fail::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pending.advance(n);
                self.unflushed = true;
                *moved = true;
            }
            // Written: let go of its allocation (an empty `Bytes` still holds it).
            self.pending = Bytes::new();
            if self.unflushed {
                ready!(Pin::new(&mut *dst).poll_flush(cx)).map_err(Fail::Write)?;
                self.unflushed = false;
            }
            let mut buf = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut *src).poll_read(cx, &mut buf)).map_err(Fail::Read)?;
            let data = buf.filled();
            if data.is_empty() {
                return Poll::Ready(Ok(()));
            }
            *moved = true;
            let mut off = 0;
            while off < data.len() {
                match Pin::new(&mut *dst).poll_write(cx, &data[off..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Fail::Write(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => off += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Fail::Write(e))),
                    Poll::Pending => {
                        // The receiver is full: keep the rest (the only heap this direction
                        // holds) and read no more until it is written.
                        self.pending = Bytes::copy_from_slice(&data[off..]);
                        break;
                    }
                }
            }
            self.unflushed = true;
        }
        // Fair to other tasks: come back after they ran.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Relay `t` until either side closes or fails, or nothing moves for `idle`. `held` is
/// dropped when the tunnel ends.
pub async fn relay(t: UpgradedTunnel, idle: Duration, held: Held) -> End {
    let UpgradedTunnel {
        downstream: mut client,
        downstream_unread,
        upstream: mut backend,
        upstream_unread,
    } = t;
    // The 101 may still sit in the client stream's write buffer: flush both first.
    let mut up = Flow {
        pending: downstream_unread,
        unflushed: true,
    };
    let mut down = Flow {
        pending: upstream_unread,
        unflushed: true,
    };
    let mut last_moved = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let end = std::future::poll_fn(|cx| {
        let mut moved = false;
        let up_state = up.poll(cx, &mut client, &mut backend, &mut moved);
        let down_state = down.poll(cx, &mut backend, &mut client, &mut moved);
        let now = Instant::now();
        if moved {
            last_moved = now;
        }
        match up_state {
            Poll::Ready(Ok(())) => return Poll::Ready(End::ClientClosed),
            Poll::Ready(Err(Fail::Read(e))) => return Poll::Ready(End::ClientError(e.kind())),
            Poll::Ready(Err(Fail::Write(e))) => return Poll::Ready(End::BackendError(e.kind())),
            Poll::Pending => {}
        }
        match down_state {
            Poll::Ready(Ok(())) => return Poll::Ready(End::BackendClosed),
            Poll::Ready(Err(Fail::Read(e))) => return Poll::Ready(End::BackendError(e.kind())),
            Poll::Ready(Err(Fail::Write(e))) => return Poll::Ready(End::ClientError(e.kind())),
            Poll::Pending => {}
        }
        // The timer is re-armed only when it fires, not on every frame.
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = last_moved + idle;
            if deadline <= now {
                return Poll::Ready(End::Idle);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    // Pass the close on: FIN (or TLS close_notify) to the side that did not close first.
    let other = match end {
        End::ClientClosed | End::ClientError(_) => Some(&mut backend),
        End::BackendClosed | End::BackendError(_) => Some(&mut client),
        End::Idle => None,
    };
    if let Some(s) = other {
        // Bounded like the tunnel: a receiver that takes nothing for `idle` is gone.
        let _ = tokio::time::timeout(idle, s.shutdown()).await;
    }
    drop(held);
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream, duplex};

    fn tunnel(
        client_unread: &'static [u8],
        backend_unread: &'static [u8],
    ) -> (UpgradedTunnel, DuplexStream, DuplexStream) {
        let (client_far, client_near) = duplex(64 * 1024);
        let (backend_far, backend_near) = duplex(64 * 1024);
        let t = UpgradedTunnel {
            downstream: Box::new(client_near),
            downstream_unread: Bytes::from_static(client_unread),
            upstream: Box::new(backend_near),
            upstream_unread: Bytes::from_static(backend_unread),
        };
        (t, client_far, backend_far)
    }

    async fn read_exact(s: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        s.read_exact(&mut v).await.expect("read");
        v
    }

    #[tokio::test]
    async fn unread_bytes_go_first_then_both_directions_relay() {
        let (t, mut client, mut backend) = tunnel(b"early", b"40{\"sid\":\"x\"}");
        let task = tokio::spawn(relay(t, Duration::from_secs(60), Held::default()));
        assert_eq!(read_exact(&mut client, 13).await, b"40{\"sid\":\"x\"}");
        assert_eq!(read_exact(&mut backend, 5).await, b"early");
        client.write_all(b"hello").await.expect("write");
        assert_eq!(read_exact(&mut backend, 5).await, b"hello");
        backend.write_all(b"world!").await.expect("write");
        assert_eq!(read_exact(&mut client, 6).await, b"world!");
        drop(backend);
        assert_eq!(task.await.expect("join"), End::BackendClosed);
        // The client got the close passed on: end of stream.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_large_transfer_to_a_slow_reader_arrives_whole_and_in_order() {
        let (t, mut client, mut backend) = tunnel(b"", b"");
        let task = tokio::spawn(relay(t, Duration::from_secs(60), Held::default()));
        // 1 MiB through 64 KiB pipes: the relay must hold back and resume.
        let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            backend.write_all(&sent).await.expect("write");
            backend
        });
        let got = read_exact(&mut client, data.len()).await;
        assert!(got == data, "relayed bytes differ");
        drop(writer.await.expect("join"));
        assert_eq!(task.await.expect("join"), End::BackendClosed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_idle_for_the_timeout_ends_and_traffic_defers_it() {
        let (t, mut client, mut backend) = tunnel(b"", b"");
        let idle = Duration::from_secs(60);
        let task = tokio::spawn(relay(t, idle, Held::default()));
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"2").await.expect("write");
        assert_eq!(read_exact(&mut backend, 1).await, b"2");
        // 100 s after the start but 50 s after the last byte: still open.
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(!task.is_finished(), "ended before it was idle for 60 s");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(task.await.expect("join"), End::Idle);
    }
}
