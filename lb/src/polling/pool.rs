//! Keep-alive connections to the backends for the own polling path — nginx's upstream
//! `keepalive`: a finished exchange puts its connection in its backend's idle list, the next
//! request to that backend takes the most recently used one. No task per idle connection:
//! tokio's reactor keeps each idle socket's readiness, so a connection the backend closed (or
//! wrote to unasked) shows up as readable; [`Pool::take`] skips those, and [`Pool::sweep`]
//! (once a second, from one task) closes them and those idle longer than
//! `upstream_keepalive.idle_timeout`, so a backend's close is answered instead of left in
//! CLOSE-WAIT. At most `upstream_keepalive.idle_per_backend` wait per backend; more are closed.
//!
//! A connection the backend closes just as a request is sent on it fails that request before
//! any response byte; the caller retries it once on a new connection (`mod.rs`), as pingora
//! does for a reused connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// One idle connection.
#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Idle upstream connections by backend address.
#[derive(Debug)]
pub struct Pool {
    /// By backend address; ahash, as a request takes and puts a connection (std's SipHash was
    /// about 2 % of a polling request's instructions).
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>, ahash::RandomState>>,
    sweeping: std::sync::OnceLock<()>,
    /// `upstream_keepalive.idle_timeout`, in milliseconds.
    max_idle_ms: AtomicU64,
    /// `upstream_keepalive.idle_per_backend`.
    per_backend: AtomicUsize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(&crate::config::UpstreamKeepalive::default())
    }
}

/// Whether an idle connection can carry a request: nothing to read (no close, no stray bytes).
fn usable(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl Pool {
    /// An empty pool with the limits of `c`.
    pub fn new(c: &crate::config::UpstreamKeepalive) -> Pool {
        let pool = Pool {
            idle: Mutex::default(),
            sweeping: std::sync::OnceLock::new(),
            max_idle_ms: AtomicU64::new(0),
            per_backend: AtomicUsize::new(0),
        };
        pool.configure(c);
        pool
    }

    /// Apply a reloaded configuration's limits (`control::apply`): the next take, put and
    /// sweep use them.
    pub fn configure(&self, c: &crate::config::UpstreamKeepalive) {
        let ms = u64::try_from(c.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        self.max_idle_ms.store(ms, Ordering::Relaxed);
        self.per_backend
            .store(c.idle_per_backend, Ordering::Relaxed);
    }

    fn max_idle(&self) -> Duration {
        Duration::from_millis(self.max_idle_ms.load(Ordering::Relaxed))
    }

    /// The most recently used idle connection to `addr` that is still usable and has idled
    /// less than the idle timeout.
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let max_idle = self.max_idle();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if now.saturating_duration_since(c.since) < max_idle && usable(&c.stream) {
                return Some(c.stream);
            }
        }
        None
    }

    /// Keep `stream` for the next request to `addr` (closed instead when as many as
    /// `idle_per_backend` already wait: the oldest goes). Starts the sweep with the first
    /// connection kept.
    pub fn put(self: &Arc<Self>, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let max_per_backend = self.per_backend.load(Ordering::Relaxed);
        if max_per_backend == 0 {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(addr).or_default();
            if list.len() >= max_per_backend {
                // The oldest goes: the newest are the ones taken next.
                list.remove(0);
            }
            list.push(Idle { stream, since: now });
        }
        self.sweeping.get_or_init(|| {
            let pool = Arc::downgrade(self);
            tokio::spawn(sweep_every_second(pool));
        });
    }

    /// Close idle connections the backend closed or wrote to, or that idled past the idle
    /// timeout; returns how many were closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let max_idle = self.max_idle();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        idle.retain(|_, list| {
            let before = list.len();
            list.retain(|c| now.saturating_duration_since(c.since) < max_idle && usable(&c.stream));
            closed += before - list.len();
            !list.is_empty()
        });
        closed
    }

    /// Idle connections kept, over all backends.
    pub fn len(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// No idle connection is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often idle connections are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The sweep task; ends with the pool.
async fn sweep_every_second(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use crate::config::UpstreamKeepalive;

    fn pool(idle_timeout: Duration, idle_per_backend: usize) -> Arc<Pool> {
        let p = Arc::new(Pool::default());
        p.configure(&UpstreamKeepalive {
            idle_timeout,
            idle_per_backend,
        });
        p
    }

    async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// Let the reactor see what the peer did.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn newest_first_and_closed_or_old_ones_are_not_taken() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = pool(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        let (a, _a_peer) = pair(&l).await;
        let (b, b_peer) = pair(&l).await;
        let a_port = a.local_addr().unwrap().port();
        let b_port = b.local_addr().unwrap().port();
        pool.put(addr, a, t0);
        pool.put(addr, b, t0);
        assert_eq!(pool.len(), 2);
        // The backend closes b: it is skipped, a is taken.
        drop(b_peer);
        settle().await;
        let got = pool.take(addr, t0).expect("a usable connection");
        assert_eq!(got.local_addr().unwrap().port(), a_port);
        assert_ne!(a_port, b_port);
        assert!(pool.is_empty());
        // Too old: not taken.
        pool.put(addr, got, t0);
        assert!(pool.take(addr, t0 + Duration::from_secs(61)).is_none());
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_backend_closed_or_wrote_to_and_the_cap_holds() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = pool(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (c, p) = pair(&l).await;
            pool.put(addr, c, t0);
            peers.push(p);
        }
        assert_eq!(pool.len(), 2, "the cap per backend");
        let mut p2 = peers.pop().expect("peer");
        p2.write_all(b"x").await.unwrap();
        settle().await;
        // Swept by the background sweep (started by `put`, it runs while we settle) or here.
        pool.sweep(t0);
        assert_eq!(pool.len(), 1, "the one written to is closed");
        assert_eq!(pool.sweep(t0 + Duration::from_secs(61)), 1, "idle too long");
        assert!(pool.is_empty());
        pool.configure(&UpstreamKeepalive {
            idle_timeout: Duration::from_secs(60),
            idle_per_backend: 0,
        });
        pool.put(addr, pair(&l).await.0, t0);
        assert!(pool.is_empty(), "a cap of 0 keeps nothing");
    }
}
