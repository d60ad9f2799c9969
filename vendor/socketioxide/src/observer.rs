//! iogate patch (vendor/socketioxide/PATCHED.md): a server-wide observer of every socket's
//! lifecycle and incoming events, on every namespace, whatever handlers the application
//! registered — so the server around it can keep metrics and connection bookkeeping without
//! asking each application to call it.

use crate::socket::{DisconnectReason, Sid};

/// Notified, synchronously and on the socket's task, of what happens to sockets. Keep it cheap.
/// Set with [`SocketIoBuilder::observer`](crate::SocketIoBuilder::observer).
pub trait SocketObserver: Send + Sync + 'static {
    /// A socket joined namespace `ns`; its CONNECT ack is about to be sent. `req` is the HTTP
    /// request that started its Engine.IO session (for a WebSocket-only session, the upgrade
    /// request).
    fn connected(&self, ns: &str, sid: Sid, req: &http::request::Parts) {
        let _ = (ns, sid, req);
    }

    /// A socket left namespace `ns`.
    fn disconnected(&self, ns: &str, sid: Sid, reason: DisconnectReason) {
        let _ = (ns, sid, reason);
    }

    /// An event from the client arrived on a socket of `ns`. `handled`: a handler registered
    /// for this event name takes it (not the fallback handler, not nobody).
    fn event(&self, ns: &str, sid: Sid, event: &str, handled: bool) {
        let _ = (ns, sid, event, handled);
    }
}

/// The observer slot of [`SocketIoConfig`](crate::SocketIoConfig).
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(pub(crate) Option<std::sync::Arc<dyn SocketObserver>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
