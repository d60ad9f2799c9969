//! TCP connections the node can cut on purpose, and how to end each session's transport.
//!
//! A drain must make clients *reconnect elsewhere*. A Socket.IO DISCONNECT packet does not do
//! that (socket.io-client treats "io server disconnect" as final), but a closed transport does
//! ("transport close" → automatic reconnect). socketioxide has no public way to close a socket's
//! transport, so the node ends it itself, and only ever the session's own:
//!
//! - A **WebSocket** owns its TCP connection (behind a proxy too: after the `101` the upstream
//!   connection is a tunnel for that one session). [`KillableListener`] wraps the TCP listener;
//!   every accepted stream carries a [`ConnHandle`] whose `kill()` makes the next read fail, so
//!   hyper/tungstenite drop the connection and the client sees it close.
//! - A **polling** session does not own a connection: a proxy that pools upstream connections
//!   (iogate-lb, nginx with `keepalive`) sends other sessions' requests — of this node — over the
//!   same one, so cutting it would break them. Instead the session's pending long-poll `GET` is
//!   answered with an Engine.IO `close` packet (`1`), and so is every later `GET` naming it.
//!
//! [`ConnInfo`] is axum's per-connection info (in every request's extensions, and so in every
//! socket's `req_parts`), holding the handle. [`SessionConns`] remembers, per Engine.IO sid,
//! the WebSocket connection (once its `101` is sent) and which sids are being drained, and wakes
//! a drained session's pending long-poll.

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
use tokio::sync::Notify;

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
    /// Namespaces the session's sockets are in (a client multiplexes them over one session).
    namespaces: usize,
    /// The session's WebSocket connection, once it has one.
    websocket: Option<ConnHandle>,
    draining: bool,
    /// Wakes the session's pending long-poll when it is drained.
    closer: Arc<Notify>,
}

impl Entry {
    fn new(websocket: Option<ConnHandle>) -> Entry {
        Entry {
            namespaces: 0,
            websocket,
            draining: false,
            closer: Arc::new(Notify::new()),
        }
    }
}

/// Which connection each WebSocket session uses, and which sessions are being drained.
#[derive(Debug, Default)]
pub struct SessionConns {
    map: Mutex<HashMap<String, Entry>>,
}

impl SessionConns {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every operation leaves the map whole: a poisoned lock still holds valid entries.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Track `sid` (a socket of the session joined a namespace). `websocket` is the connection
    /// of a session that started on a WebSocket.
    pub fn register(&self, sid: &str, websocket: Option<&ConnHandle>) {
        let mut map = self.map();
        let e = map
            .entry(sid.to_string())
            .or_insert_with(|| Entry::new(None));
        e.namespaces += 1;
        if e.websocket.is_none() {
            e.websocket = websocket.cloned();
        }
    }

    /// A socket of `sid` left its namespace; the session is forgotten with its last one.
    pub fn release(&self, sid: &str) {
        let mut map = self.map();
        if let Some(e) = map.get_mut(sid) {
            e.namespaces = e.namespaces.saturating_sub(1);
            if e.namespaces == 0 {
                map.remove(sid);
            }
        }
    }

    /// A polling session upgraded: its WebSocket (the `101` was sent) runs on `handle`.
    /// Untracked sids are ignored, so the table only ever holds live sockets.
    pub fn upgraded(&self, sid: &str, handle: &ConnHandle) {
        if let Some(e) = self.map().get_mut(sid) {
            if e.draining {
                // Drained while its upgrade was under way.
                handle.kill();
            }
            e.websocket = Some(handle.clone());
        }
    }

    /// Whether `sid` is being drained.
    pub fn is_draining(&self, sid: &str) -> bool {
        self.map().get(sid).is_some_and(|e| e.draining)
    }

    /// The notifier a pending long-poll of `sid` waits on (see [`drain`](Self::drain)).
    pub fn closer(&self, sid: &str) -> Option<Arc<Notify>> {
        self.map().get(sid).map(|e| e.closer.clone())
    }

    /// Mark `sid` drained and end its transport: cut its WebSocket connection, or wake its
    /// pending long-poll (answered with a `close` packet). Returns false when the sid was not
    /// tracked (it is then only marked, and the caller must close it otherwise).
    pub fn drain(&self, sid: &str) -> bool {
        let mut map = self.map();
        match map.get_mut(sid) {
            Some(e) => {
                e.draining = true;
                match &e.websocket {
                    Some(conn) => conn.kill(),
                    None => e.closer.notify_waiters(),
                }
                true
            }
            None => {
                let mut e = Entry::new(None);
                e.draining = true;
                map.insert(sid.to_string(), e);
                false
            }
        }
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_cuts_websockets_and_wakes_polls() {
        let conns = SessionConns::default();
        let ws = ConnHandle::default();
        conns.register("w", Some(&ws));
        let pooled = ConnHandle::default();
        conns.register("p", None);
        // A polling session never pins a (possibly pooled) connection.
        let closer = conns.closer("p").expect("tracked");
        let notified = closer.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        assert!(conns.drain("p"));
        assert!(!pooled.is_killed());
        assert!(conns.is_draining("p"));
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .expect("the pending poll is woken");
        assert!(conns.drain("w"));
        assert!(ws.is_killed());
        // An upgraded polling session is cut on its WebSocket.
        let up = ConnHandle::default();
        conns.register("u", None);
        conns.upgraded("u", &up);
        conns.drain("u");
        assert!(up.is_killed());
        assert!(!conns.drain("unknown"));
        assert!(conns.is_draining("unknown"));
        conns.release("w");
        assert_eq!(conns.len(), 3);
        // A session in two namespaces is forgotten with its last one.
        conns.register("m", None);
        conns.register("m", None);
        conns.release("m");
        assert!(conns.closer("m").is_some());
        conns.release("m");
        assert!(conns.closer("m").is_none());
    }
}
