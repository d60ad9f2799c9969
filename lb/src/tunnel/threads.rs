//! Plain-TCP tunnels relayed by event-loop threads: nginx's and HAProxy's model for an upgraded
//! connection, instead of a tokio task per tunnel.
//!
//! Why: with a task per tunnel every frame went through tokio's machinery — the I/O driver
//! waking the task, the scheduler running it (often on the other worker, woken by a futex),
//! the timer driver on every park — about 7,800 user-space instructions per echo against
//! nginx's 2,300, and a futex wake-up for most frames. Here a frame costs its `recv` and its
//! `send` and a little bookkeeping on the thread that `epoll` woke.
//!
//! Contract (beyond the parent module's):
//! - [`Relays::start`] starts `n` threads, each with its own `epoll` (through mio) and tunnels;
//!   [`Relays::relay`] hands a tunnel to them in turn. A tunnel never changes thread, and a
//!   thread touches only its own tunnels: nothing is shared between threads but the guards'
//!   counters.
//! - Sockets are registered edge-triggered for reading and writing. A side is read until a
//!   read returns less than the buffer (the socket is drained then; new data raises a new
//!   edge) or would block, unless the peer's close was reported, which is read to the end.
//!   A tunnel may move [`READS_PER_TURN`] reads per direction per turn, then waits for the
//!   thread's other tunnels (it is turned again before the thread sleeps).
//! - What a receiver cannot take is kept in that direction's pending buffer, and the direction
//!   reads no more until the receiver's next writable edge has let it be written.
//! - Idle tunnels are found by a sweep once per [`SWEEP`]: a tunnel is closed between `idle`
//!   and `idle` + one second after its last byte moved (`timeouts.websocket_idle` is at least
//!   60 s).
//! - A thread wakes at least once per [`SWEEP`], and takes new tunnels on every wake-up.
//! - When [`Relays`] is dropped (or [`Relays::start`] fails half-way), its threads end once their
//!   last tunnel has.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{End, Held, Traced};

/// The read size of one relay step (one buffer per thread, shared by its tunnels).
const READ_SIZE: usize = 16 * 1024;

/// Reads one direction may make in one turn before the thread's other tunnels get theirs.
pub const READS_PER_TURN: usize = 16;

/// How often a thread looks for idle tunnels.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Readiness events taken from `epoll` per wake-up.
const EVENTS: usize = 1024;

/// The token of a thread's waker (tunnel tokens are `slot * 2 + side`).
const WAKER: Token = Token(usize::MAX);

/// A tunnel between two plain TCP sockets, ready to be relayed.
pub struct Plain {
    /// The client's socket (non-blocking).
    pub client: std::net::TcpStream,
    /// The client stream's tracer (the client's TCP connection count).
    pub client_traced: Traced,
    /// The backend's socket (non-blocking).
    pub backend: std::net::TcpStream,
    /// The backend stream's tracer.
    pub backend_traced: Traced,
    /// Bytes the client sent that were read ahead (relayed first).
    pub to_backend: Bytes,
    /// Bytes the backend sent that were read ahead (relayed first).
    pub to_client: Bytes,
    /// The idle timeout.
    pub idle: Duration,
    /// The guards that count the tunnel, dropped when it ends.
    pub held: Held,
    /// Called on the relay thread once the tunnel has ended and everything it held is let go.
    pub ended: Box<dyn FnOnce(End) + Send>,
}

/// A tunnel's idle clock: pure, with time passed in.
#[derive(Debug, Clone, Copy)]
pub struct IdleClock {
    last_moved: Instant,
    idle: Duration,
}

impl IdleClock {
    /// A clock started at `now`.
    pub fn new(now: Instant, idle: Duration) -> IdleClock {
        IdleClock {
            last_moved: now,
            idle,
        }
    }

    /// Bytes moved at `now`.
    pub fn moved(&mut self, now: Instant) {
        self.last_moved = now;
    }

    /// Nothing moved for the idle timeout by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_moved) >= self.idle
    }
}

/// The relay threads.
pub struct Relays {
    threads: Vec<Handle>,
    next: AtomicUsize,
}

/// How tunnels reach one thread.
struct Handle {
    tx: mpsc::Sender<Plain>,
    waker: Arc<Waker>,
}

impl Relays {
    /// Start `n` (at least 1) relay threads.
    pub fn start(n: usize) -> io::Result<Relays> {
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            // The thread holds the waker too: closing it (its eventfd) with the handle would
            // drop a wake-up the thread has not read yet.
            let own = waker.clone();
            std::thread::Builder::new()
                .name(format!("iogate-relay-{i}"))
                .spawn(move || {
                    let _waker = own;
                    EventLoop::new(poll, rx).run()
                })?;
            threads.push(Handle { tx, waker });
        }
        Ok(Relays {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Hand `t` to the next thread. `Err(t)` if that thread has ended (it panicked).
    pub fn relay(&self, t: Plain) -> Result<(), Box<Plain>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let h = &self.threads[i];
        h.tx.send(t).map_err(|e| Box::new(e.0))?;
        if let Err(e) = h.waker.wake() {
            // The tunnel is queued; it starts at the thread's next wake-up (an event, or at the
            // latest its next sweep) instead of at once.
            tracing::error!(error = %e, "waking a relay thread failed");
        }
        Ok(())
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        for Handle { tx, waker } in self.threads.drain(..) {
            drop(tx);
            let _ = waker.wake();
        }
    }
}

/// One side of a tunnel.
struct Conn {
    sock: TcpStream,
    /// A read may find data (cleared when the socket was drained).
    readable: bool,
    /// The peer's close was reported: read to the end, whatever the read sizes.
    read_closed: bool,
    /// A write may find room (cleared when the socket's buffer was full).
    writable: bool,
    _traced: Traced,
}

impl Conn {
    fn new(sock: std::net::TcpStream, traced: Traced) -> Conn {
        Conn {
            sock: TcpStream::from_std(sock),
            // Registering an edge-triggered socket that already holds data reports it at once:
            // no read before that event.
            readable: false,
            read_closed: false,
            writable: true,
            _traced: traced,
        }
    }

    /// Record what an event reported (an error makes both ways try, so the call reports it).
    fn note(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_read_closed() {
            self.read_closed = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.writable = true;
        }
    }

    /// Write as much of `data` as the socket takes now.
    fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut off = 0;
        while off < data.len() && self.writable {
            match self.sock.write(&data[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(off)
    }
}

/// A failure on one side of a direction.
enum Fail {
    Read(io::Error),
    Write(io::Error),
}

/// Where a direction stands after its turn.
#[derive(PartialEq)]
enum Step {
    /// Waiting for an edge (nothing to read, or the receiver is full).
    Wait,
    /// The sender may have more: turn it again.
    More,
    /// The sender ended and everything it sent was written on.
    Eof,
}

/// Move bytes from `src` to `dst` until one of them is not ready; `pending` is what `dst` has
/// not taken yet. Sets `moved` when bytes moved.
fn pump(
    src: &mut Conn,
    dst: &mut Conn,
    pending: &mut Bytes,
    buf: &mut [u8],
    moved: &mut bool,
) -> Result<Step, Fail> {
    for _ in 0..READS_PER_TURN {
        if !pending.is_empty() {
            let n = dst.write_some(pending).map_err(Fail::Write)?;
            if n > 0 {
                *moved = true;
            }
            pending.advance(n);
            if !pending.is_empty() {
                return Ok(Step::Wait);
            }
            // Written: let go of its allocation (an empty `Bytes` still holds it).
            *pending = Bytes::new();
        }
        if !src.readable {
            return Ok(Step::Wait);
        }
        let n = match src.sock.read(buf) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.readable = false;
                return Ok(Step::Wait);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fail::Read(e)),
        };
        if n < buf.len() && !src.read_closed {
            // Drained: more data raises a new edge.
            src.readable = false;
        }
        *moved = true;
        let data = &buf[..n];
        let w = dst.write_some(data).map_err(Fail::Write)?;
        if w < n {
            // The receiver is full: keep the rest (the only heap this direction holds) and
            // read no more until it is written.
            *pending = Bytes::copy_from_slice(&data[w..]);
            return Ok(Step::Wait);
        }
    }
    Ok(if src.readable { Step::More } else { Step::Wait })
}

/// A tunnel on a relay thread.
struct Tunnel {
    client: Conn,
    backend: Conn,
    /// Client → backend bytes not taken yet.
    up: Bytes,
    /// Backend → client bytes not taken yet.
    down: Bytes,
    clock: IdleClock,
    /// In this turn's (or the next turn's) list already.
    queued: bool,
    _held: Held,
    ended: Option<Box<dyn FnOnce(End) + Send>>,
}

/// What a turn left a tunnel in.
enum Turned {
    Wait,
    More,
    Ended(End),
}

impl Tunnel {
    fn turn(&mut self, buf: &mut [u8], now: Instant) -> Turned {
        let mut moved = false;
        let up = pump(
            &mut self.client,
            &mut self.backend,
            &mut self.up,
            buf,
            &mut moved,
        );
        let down = pump(
            &mut self.backend,
            &mut self.client,
            &mut self.down,
            buf,
            &mut moved,
        );
        if moved {
            self.clock.moved(now);
        }
        let up = match up {
            Ok(Step::Eof) => return Turned::Ended(End::ClientClosed),
            Err(Fail::Read(e)) => return Turned::Ended(End::ClientError(e.kind())),
            Err(Fail::Write(e)) => return Turned::Ended(End::BackendError(e.kind())),
            Ok(s) => s,
        };
        let down = match down {
            Ok(Step::Eof) => return Turned::Ended(End::BackendClosed),
            Err(Fail::Read(e)) => return Turned::Ended(End::BackendError(e.kind())),
            Err(Fail::Write(e)) => return Turned::Ended(End::ClientError(e.kind())),
            Ok(s) => s,
        };
        if up == Step::More || down == Step::More {
            Turned::More
        } else {
            Turned::Wait
        }
    }
}

/// One relay thread.
struct EventLoop {
    poll: Poll,
    rx: mpsc::Receiver<Plain>,
    /// Tunnels by slot; a slot's tokens are `slot * 2` (client) and `slot * 2 + 1` (backend).
    slots: Vec<Option<Tunnel>>,
    free: Vec<usize>,
    live: usize,
}

impl EventLoop {
    fn new(poll: Poll, rx: mpsc::Receiver<Plain>) -> EventLoop {
        EventLoop {
            poll,
            rx,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut buf = vec![0u8; READ_SIZE];
        // Tunnels to turn now, and those to turn again next time round.
        let mut turn: Vec<usize> = Vec::new();
        let mut again: Vec<usize> = Vec::new();
        let mut next_sweep = Instant::now() + SWEEP;
        let mut open = true;
        loop {
            // Awake at least once per sweep, tunnels or not: a tunnel whose wake-up failed is
            // still picked up, and a thread whose handle is gone still ends.
            let timeout = if again.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, tunnels = self.live, "relay thread cannot wait for its sockets; closing its tunnels");
                self.close_all(End::NotRelayed(e.kind()));
                return;
            }
            let now = Instant::now();
            turn.append(&mut again);
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let slot = ev.token().0 >> 1;
                // A slot closed earlier in this batch: its events are stale.
                let Some(t) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if ev.token().0 & 1 == 0 {
                    t.client.note(ev);
                } else {
                    t.backend.note(ev);
                }
                if !t.queued {
                    t.queued = true;
                    turn.push(slot);
                }
            }
            for slot in turn.drain(..) {
                let Some(t) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                match t.turn(&mut buf, now) {
                    Turned::Wait => t.queued = false,
                    // Still queued: its events until then add nothing.
                    Turned::More => again.push(slot),
                    Turned::Ended(end) => self.close(slot, end),
                }
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
            // New tunnels last: a slot closed in this batch is reused only after its events.
            // The channel is looked at on every wake-up (the waker only makes one happen).
            loop {
                match self.rx.try_recv() {
                    Ok(p) => {
                        if let Some(slot) = self.add(p, now) {
                            again.push(slot);
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open && self.live == 0 {
                return;
            }
        }
    }

    /// Register `p`'s sockets; the tunnel's slot (queued for a first turn), or `None` if the
    /// sockets could not be registered (the tunnel is ended as `NotRelayed`).
    fn add(&mut self, p: Plain, now: Instant) -> Option<usize> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut t = Tunnel {
            client: Conn::new(p.client, p.client_traced),
            backend: Conn::new(p.backend, p.backend_traced),
            up: p.to_backend,
            down: p.to_client,
            clock: IdleClock::new(now, p.idle),
            queued: true,
            _held: p.held,
            ended: Some(p.ended),
        };
        let both = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut t.client.sock, Token(slot * 2), both)
            .and_then(|()| registry.register(&mut t.backend.sock, Token(slot * 2 + 1), both));
        self.live += 1;
        self.slots[slot] = Some(t);
        if let Err(e) = registered {
            tracing::warn!(error = %e, "relay thread could not register a tunnel's sockets");
            self.close(slot, End::NotRelayed(e.kind()));
            return None;
        }
        Some(slot)
    }

    /// End the tunnel in `slot`: the close passed on, both sockets closed, its guards dropped.
    fn close(&mut self, slot: usize, end: End) {
        let Some(mut t) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.live -= 1;
        let other = match end {
            End::ClientClosed | End::ClientError(_) => Some(&t.backend),
            End::BackendClosed | End::BackendError(_) => Some(&t.client),
            End::Idle | End::NotRelayed(_) => None,
        };
        if let Some(c) = other {
            // FIN after whatever the socket still holds (it cannot block).
            let _ = c.sock.shutdown(Shutdown::Write);
        }
        // Closing a socket takes it out of the thread's `epoll` (no other descriptor refers to
        // it): no deregistration call needed.
        let ended = t.ended.take();
        drop(t);
        if let Some(f) = ended {
            f(end);
        }
    }

    /// Close every tunnel idle at `now`.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(|t| t.clock.expired(now))
            {
                self.close(slot, End::Idle);
            }
        }
    }

    fn close_all(&mut self, end: End) {
        for slot in 0..self.slots.len() {
            self.close(slot, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ConnLimiter;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdTcp};

    /// A connected pair of TCP sockets on loopback: (far end, near end, non-blocking). What the
    /// relay writes to the near end can be buffered only up to a few hundred KiB, so a reader
    /// that lags makes the relay's writes block.
    fn tcp_pair() -> (StdTcp, StdTcp) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let far = StdTcp::connect(l.local_addr().expect("addr")).expect("connect");
        let (near, _) = l.accept().expect("accept");
        small_buffer(&far, libc::SO_RCVBUF);
        small_buffer(&near, libc::SO_SNDBUF);
        near.set_nonblocking(true).expect("nonblocking");
        far.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        (far, near)
    }

    /// A tunnel relayed by `relays`: (client's far end, backend's far end, how it ended).
    fn start(
        relays: &Relays,
        to_backend: &'static [u8],
        to_client: &'static [u8],
        idle: Duration,
        held: Held,
    ) -> (StdTcp, StdTcp, mpsc::Receiver<End>) {
        let (client, client_near) = tcp_pair();
        let (backend, backend_near) = tcp_pair();
        let (tx, rx) = mpsc::channel();
        let plain = Plain {
            client: client_near,
            client_traced: Traced::default(),
            backend: backend_near,
            backend_traced: Traced::default(),
            to_backend: Bytes::from_static(to_backend),
            to_client: Bytes::from_static(to_client),
            idle,
            held,
            ended: Box::new(move |end| {
                let _ = tx.send(end);
            }),
        };
        assert!(relays.relay(plain).is_ok(), "relay thread gone");
        (client, backend, rx)
    }

    /// Cap `s`'s `which` buffer (`SO_RCVBUF`, `SO_SNDBUF`) at 64 KiB (the kernel doubles it).
    fn small_buffer(s: &StdTcp, which: libc::c_int) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 64 * 1024;
        // SAFETY: a valid socket, and a pointer to a c_int with its size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                which,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
    }

    fn read_exact(s: &mut StdTcp, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        s.read_exact(&mut v).expect("read");
        v
    }

    /// `s` reaches end of stream with nothing more read: the close was passed on.
    fn assert_closed(s: &mut StdTcp) {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty(), "bytes after the close");
    }

    fn ended(rx: &mpsc::Receiver<End>) -> End {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the tunnel did not end")
    }

    #[test]
    fn unread_bytes_go_first_both_ways_relay_and_the_close_is_passed_on() {
        let relays = Relays::start(2).expect("start");
        let limiter = Arc::new(ConnLimiter::default());
        let slot = limiter.acquire(None, 0, 0).expect("slot");
        let held = Held {
            slot: Some(slot),
            ..Held::default()
        };
        let idle = Duration::from_secs(60);
        let (mut client, mut backend, rx) = start(&relays, b"early", b"0{}", idle, held);
        assert_eq!(read_exact(&mut client, 3), b"0{}");
        assert_eq!(read_exact(&mut backend, 5), b"early");
        for i in 0..100u32 {
            let up = format!("42[\"up\",{i}]");
            client.write_all(up.as_bytes()).expect("write");
            assert_eq!(read_exact(&mut backend, up.len()), up.as_bytes());
            let down = format!("42[\"down\",{i}]");
            backend.write_all(down.as_bytes()).expect("write");
            assert_eq!(read_exact(&mut client, down.len()), down.as_bytes());
        }
        assert_eq!(
            limiter.total(),
            1,
            "the tunnel's slot is held while it runs"
        );
        drop(client);
        assert_eq!(ended(&rx), End::ClientClosed);
        assert_closed(&mut backend);
        assert_eq!(
            limiter.total(),
            0,
            "the slot was not let go with the tunnel"
        );
    }

    #[test]
    fn large_transfers_both_ways_to_late_readers_arrive_whole_and_in_order() {
        let relays = Relays::start(1).expect("start");
        let (client, backend, rx) =
            start(&relays, b"", b"", Duration::from_secs(60), Held::default());
        // 4 MiB each way, more than the near ends and the receivers buffer: the relay's writes
        // fill them, so it must keep what they cannot take, hold back and resume on writable
        // edges.
        const LEN: usize = 4 * 1024 * 1024;
        let data =
            |seed: usize| -> Vec<u8> { (0..LEN).map(|i| ((i + seed) % 251) as u8).collect() };
        let send = |mut s: StdTcp, seed: usize| {
            std::thread::spawn(move || {
                s.write_all(&data(seed)).expect("write");
                s
            })
        };
        let c_writer = send(client.try_clone().expect("clone"), 1);
        let b_writer = send(backend.try_clone().expect("clone"), 2);
        // Nothing is read until the writers are blocked on full buffers.
        std::thread::sleep(Duration::from_millis(300));
        let recv = |mut s: StdTcp| std::thread::spawn(move || read_exact(&mut s, LEN));
        let at_backend = recv(backend);
        let at_client = recv(client);
        assert!(
            at_backend.join().expect("join") == data(1),
            "client → backend differs"
        );
        assert!(
            at_client.join().expect("join") == data(2),
            "backend → client differs"
        );
        drop(c_writer.join().expect("join"));
        let end = ended(&rx);
        assert!(
            matches!(end, End::ClientClosed | End::BackendClosed),
            "ended as {end:?}"
        );
        drop(b_writer);
    }

    #[test]
    fn a_backend_close_ends_the_tunnel_after_what_it_sent() {
        let relays = Relays::start(1).expect("start");
        let (mut client, mut backend, rx) =
            start(&relays, b"", b"", Duration::from_secs(60), Held::default());
        backend.write_all(b"41").expect("write");
        drop(backend);
        assert_eq!(read_exact(&mut client, 2), b"41");
        assert_closed(&mut client);
        assert_eq!(ended(&rx), End::BackendClosed);
    }

    #[test]
    fn an_idle_tunnel_is_closed_within_a_sweep_of_its_timeout() {
        let relays = Relays::start(1).expect("start");
        let idle = Duration::from_millis(200);
        let t0 = Instant::now();
        let (mut client, mut backend, rx) = start(&relays, b"", b"", idle, Held::default());
        assert_eq!(ended(&rx), End::Idle);
        assert!(t0.elapsed() >= idle, "closed before it was idle");
        assert_closed(&mut client);
        assert_closed(&mut backend);
    }

    #[test]
    fn traffic_defers_the_idle_timeout() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut c = IdleClock::new(t0, idle);
        assert!(!c.expired(t0 + Duration::from_secs(59)));
        c.moved(t0 + Duration::from_secs(50));
        // 100 s after the start but 50 s after the last byte: still open.
        assert!(!c.expired(t0 + Duration::from_secs(100)));
        assert!(c.expired(t0 + Duration::from_secs(110)));
        // A clock read before its last move (an earlier `now`) is not expired.
        assert!(!c.expired(t0));
    }

    #[test]
    fn a_tunnel_outlives_the_relays_handle() {
        let relays = Relays::start(1).expect("start");
        let (client, backend, rx) =
            start(&relays, b"", b"", Duration::from_secs(60), Held::default());
        drop(relays);
        // The tunnel outlives the handle.
        let (mut client, mut backend) = (client, backend);
        client.write_all(b"2").expect("write");
        assert_eq!(read_exact(&mut backend, 1), b"2");
        drop(client);
        assert_eq!(ended(&rx), End::ClientClosed);
    }
}
