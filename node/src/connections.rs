//! TCP connections the node can cut on purpose, and which connection carries which session.
//!
//! A drain must make clients *reconnect elsewhere*. A Socket.IO DISCONNECT packet does not do
//! that (socket.io-client treats "io server disconnect" as final), but a lost transport does
//! ("transport close" / "transport error" → automatic reconnect). socketioxide has no public way
//! to close a socket's transport, so the node owns its TCP connections instead:
//!
//! - [`KillableListener`] wraps the TCP listener; every accepted stream carries a [`ConnHandle`]
//!   whose `kill()` makes the next read fail, so hyper/tungstenite drop the connection.
//! - [`ConnInfo`] is axum's per-connection info (in every request's extensions, and so in every
//!   socket's `req_parts`), holding that handle.
//! - [`SessionConns`] remembers, per Engine.IO sid, the connection its latest request used (a
//!   WebSocket upgrade pins it), and which sids are being drained: a polling request for a
//!   drained sid is answered with an Engine.IO `close` packet so the client reconnects.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct KillSwitch {
    killed: AtomicBool,
    waker: AtomicWaker,
}

/// Cuts one TCP connection.
#[derive(Debug, Clone, Default)]
pub struct ConnHandle(Arc<KillSwitch>);

impl ConnHandle {
    /// Make the connection fail: its pending and future reads return an error.
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// Whether [`kill`](Self::kill) was called.
    pub fn is_killed(&self) -> bool {
        self.0.killed.load(Ordering::Acquire)
    }
}

/// A TCP stream that can be cut through its [`ConnHandle`].
#[derive(Debug)]
pub struct KillableStream {
    inner: TcpStream,
    handle: ConnHandle,
}

impl KillableStream {
    /// The handle that cuts this stream.
    pub fn handle(&self) -> &ConnHandle {
        &self.handle
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by drain",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.handle.0.waker.register(cx.waker());
        if self.handle.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.handle.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.handle.is_killed() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TCP listener whose connections are [`KillableStream`]s.
#[derive(Debug)]
pub struct KillableListener(pub TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = KillableStream {
                        inner: stream,
                        handle: ConnHandle::default(),
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Per-connection info inserted into every request by axum.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub remote: SocketAddr,
    /// Cuts this connection.
    pub handle: ConnHandle,
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnInfo {
            remote: *stream.remote_addr(),
            handle: stream.io().handle().clone(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    handle: ConnHandle,
    websocket: bool,
    draining: bool,
}

/// Which connection each Engine.IO session uses, and which sessions are being drained.
#[derive(Debug, Default)]
pub struct SessionConns {
    map: Mutex<HashMap<String, Entry>>,
}

impl SessionConns {
    /// Start tracking `sid` (a socket connected) on the connection of its handshake.
    pub fn register(&self, sid: &str, handle: Option<&ConnHandle>, websocket: bool) {
        if let Ok(mut map) = self.map.lock() {
            map.entry(sid.to_string()).or_insert_with(|| Entry {
                handle: handle.cloned().unwrap_or_default(),
                websocket,
                draining: false,
            });
        }
    }

    /// Record that a request for a tracked `sid` arrived on `handle`. A WebSocket request pins
    /// the sid to its connection (polling requests during the upgrade do not replace it).
    /// Untracked sids are ignored, so the table only ever holds live sockets.
    pub fn seen(&self, sid: &str, handle: &ConnHandle, websocket: bool) {
        let Ok(mut map) = self.map.lock() else { return };
        if let Some(e) = map.get_mut(sid)
            && (websocket || !e.websocket)
        {
            e.handle = handle.clone();
            e.websocket = websocket;
        }
    }

    /// Whether `sid` is being drained.
    pub fn is_draining(&self, sid: &str) -> bool {
        self.map
            .lock()
            .map(|m| m.get(sid).is_some_and(|e| e.draining))
            .unwrap_or(false)
    }

    /// Mark `sid` drained and cut the connection its latest request used. Returns false when
    /// the sid was not tracked (it is then only marked, and the caller must close it otherwise).
    pub fn drain(&self, sid: &str) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        match map.get_mut(sid) {
            Some(e) => {
                e.draining = true;
                e.handle.kill();
                true
            }
            None => {
                map.insert(
                    sid.to_string(),
                    Entry {
                        handle: ConnHandle::default(),
                        websocket: false,
                        draining: true,
                    },
                );
                false
            }
        }
    }

    /// Forget `sid` (its socket is gone).
    pub fn remove(&self, sid: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(sid);
        }
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
