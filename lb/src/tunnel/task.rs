//! A tunnel relayed by a task of its own on pingora's runtime: TLS connections, streams with
//! bytes still buffered, and any tunnel when no relay thread can take it (see the parent
//! module for the contract).
//!
//! Both directions are polled by one task. Plain TCP connections are relayed on their sockets
//! ([`Side::Tcp`]); anything else through pingora's stream as it is. Each read goes into a stack
//! buffer and is written on at once; only what the receiver cannot take right away is kept.
//! The idle timer is re-armed only when it fires, not on every frame.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_proxy::UpgradedTunnel;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{End, Held, Traced};

/// The read size of one relay step (the stack buffer; never allocated per tunnel).
const READ_SIZE: usize = 16 * 1024;

/// Reads one direction may make in one wake-up before yielding to other tasks.
const READS_PER_POLL: usize = 16;

/// One connection of the tunnel.
pub enum Side {
    /// A plain TCP connection, on its socket. The tracer of pingora's stream (the client's TCP
    /// connection slot) is held as long as the socket.
    Tcp(TcpStream, Traced),
    /// Anything else (TLS; a stream with bytes still buffered), through pingora's stream.
    Stream(Stream),
}

impl Side {
    /// Flush `s` (the `101` may still sit in the client stream's write buffer), then take its
    /// socket if it is plain TCP with nothing buffered. A flush that fails or takes longer
    /// than `idle` leaves the stream as it is: the relay meets the same failure, or idles out.
    pub async fn new(mut s: Stream, idle: Duration) -> Side {
        if !matches!(tokio::time::timeout(idle, s.flush()).await, Ok(Ok(()))) {
            return Side::Stream(s);
        }
        if !s.as_any().is::<L4Stream>() {
            return Side::Stream(s);
        }
        match s.into_any().downcast::<L4Stream>() {
            Ok(l4) => match l4.into_tcp() {
                Ok((tcp, tracer)) => Side::Tcp(tcp, Traced(tracer)),
                Err(l4) => Side::Stream(Box::new(l4)),
            },
            // Checked with `is` above.
            Err(_) => unreachable!("a pingora L4 stream"),
        }
    }
}

impl AsyncRead for Side {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Tcp(s, _) => Pin::new(s).poll_read(cx, buf),
            Side::Stream(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Side {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Side::Tcp(s, _) => Pin::new(s).poll_write(cx, buf),
            Side::Stream(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Tcp(s, _) => Pin::new(s).poll_flush(cx),
            Side::Stream(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Side::Tcp(s, _) => Pin::new(s).poll_shutdown(cx),
            Side::Stream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
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
        src: &mut Side,
        dst: &mut Side,
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

/// Relay `t` in this task until either side closes or fails, or nothing moves for `idle`.
/// `held` is dropped when the tunnel ends.
pub async fn relay(t: UpgradedTunnel, idle: Duration, held: Held) -> End {
    let (client, backend, to_backend, to_client) = sides(t, idle).await;
    relay_sides(client, backend, to_backend, to_client, idle, held).await
}

/// Both connections of `t` as [`Side`]s (see [`Side::new`]), with the bytes read ahead of each:
/// (client, backend, client's bytes for the backend, backend's bytes for the client).
pub async fn sides(t: UpgradedTunnel, idle: Duration) -> (Side, Side, Bytes, Bytes) {
    let UpgradedTunnel {
        downstream,
        downstream_unread,
        upstream,
        upstream_unread,
    } = t;
    let client = Side::new(downstream, idle).await;
    let backend = Side::new(upstream, idle).await;
    (client, backend, downstream_unread, upstream_unread)
}

/// [`relay`] once both connections are [`Side`]s: `to_backend` and `to_client` (bytes read
/// ahead) go first.
pub async fn relay_sides(
    mut client: Side,
    mut backend: Side,
    to_backend: Bytes,
    to_client: Bytes,
    idle: Duration,
    held: Held,
) -> End {
    // A stream left as it was may still hold unflushed bytes: flush both first.
    let mut up = Flow {
        pending: to_backend,
        unflushed: true,
    };
    let mut down = Flow {
        pending: to_client,
        unflushed: true,
    };
    let mut last_moved = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let end = std::future::poll_fn(|cx| {
        let mut moved = false;
        let up_state = up.poll(cx, &mut client, &mut backend, &mut moved);
        let down_state = down.poll(cx, &mut backend, &mut client, &mut moved);
        if moved {
            last_moved = Instant::now();
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
            if deadline <= Instant::now() {
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
        End::Idle | End::NotRelayed(_) => None,
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

    async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        s.read_exact(&mut v).await.expect("read");
        v
    }

    /// A frame each way through a running relay.
    async fn exchange<C, B>(client: &mut C, backend: &mut B)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        client.write_all(b"hello").await.expect("write");
        assert_eq!(read_exact(backend, 5).await, b"hello");
        backend.write_all(b"world!").await.expect("write");
        assert_eq!(read_exact(client, 6).await, b"world!");
    }

    /// `s` reaches end of stream with nothing more read: the close was passed on.
    async fn assert_closed<S: AsyncRead + Unpin>(s: &mut S) {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty(), "bytes after the close");
    }

    #[tokio::test]
    async fn unread_bytes_go_first_then_both_directions_relay() {
        let (t, mut client, mut backend) = tunnel(b"early", b"40{\"sid\":\"x\"}");
        let task = tokio::spawn(relay(t, Duration::from_secs(60), Held::default()));
        assert_eq!(read_exact(&mut client, 13).await, b"40{\"sid\":\"x\"}");
        assert_eq!(read_exact(&mut backend, 5).await, b"early");
        exchange(&mut client, &mut backend).await;
        drop(backend);
        assert_eq!(task.await.expect("join"), End::BackendClosed);
        assert_closed(&mut client).await;
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

    /// A connected pair of TCP sockets on loopback: (far end, near end as pingora's stream).
    async fn tcp_pair() -> (tokio::net::TcpStream, L4Stream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (far, near) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        (
            far.expect("connect"),
            L4Stream::from(near.expect("accept").0),
        )
    }

    const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";

    #[tokio::test]
    async fn plain_tcp_is_taken_off_its_stream_once_the_buffered_101_is_flushed() {
        let (mut client, mut near) = tcp_pair().await;
        // The 101 written to the client but still in the stream's write buffer.
        near.write_all(SWITCHING).await.expect("write");
        let side = Side::new(Box::new(near), Duration::from_secs(5)).await;
        assert!(matches!(side, Side::Tcp(..)), "not taken off its stream");
        assert_eq!(read_exact(&mut client, SWITCHING.len()).await, SWITCHING);
    }

    #[tokio::test]
    async fn plain_tcp_tunnels_relay_both_ways_and_pass_the_close_on() {
        let (mut client, mut client_near) = tcp_pair().await;
        let (mut backend, backend_near) = tcp_pair().await;
        client_near.write_all(SWITCHING).await.expect("write");
        let t = UpgradedTunnel {
            downstream: Box::new(client_near),
            downstream_unread: Bytes::from_static(b"early"),
            upstream: Box::new(backend_near),
            upstream_unread: Bytes::from_static(b"0{}"),
        };
        let task = tokio::spawn(relay(t, Duration::from_secs(60), Held::default()));
        let head = read_exact(&mut client, SWITCHING.len() + 3).await;
        assert_eq!(head, [SWITCHING, b"0{}"].concat());
        assert_eq!(read_exact(&mut backend, 5).await, b"early");
        exchange(&mut client, &mut backend).await;
        drop(client);
        assert_eq!(task.await.expect("join"), End::ClientClosed);
        assert_closed(&mut backend).await;
    }

    #[tokio::test]
    async fn a_stream_with_bytes_read_ahead_stays_a_stream() {
        let (_far, mut near) = tcp_pair().await;
        near.rewind(b"read ahead");
        let side = Side::new(Box::new(near), Duration::from_secs(5)).await;
        assert!(matches!(side, Side::Stream(_)));
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
