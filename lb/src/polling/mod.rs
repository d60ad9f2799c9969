//! The fast path: Engine.IO long-polling requests and WebSocket upgrades served by iogate-lb's
//! own HTTP/1.1 code instead of pingora's, because pingora's per-request machinery cost 4×
//! nginx's CPU per polling request (docs/benchmarks.md, "Instructions per echo" and the flame
//! graphs): two header maps per message, a task pipeline and channels between its halves, an
//! upstream connector and pool built for every kind of proxy. These requests are small and
//! their shape is fixed; this path reads them, decides with the very same code pingora's path
//! calls ([`crate::proxy::Proxy`]'s admission, routing, accounting, sid learning and metrics),
//! and relays them with one write each way.
//!
//! [`FrontDoor`] is the listening service's application. For each accepted connection:
//!
//! - TLS listeners, HTTP/2, `engineio.polling_fast_path: false` and `upstream_tls` go to
//!   pingora's path at once (pingora's `HttpProxy`, unchanged).
//! - Otherwise the connection is read here. Each request head is parsed ([`head`]); one this
//!   path serves (HTTP/1.1 polling `GET`/`POST` with a plain body, or a WebSocket upgrade, on
//!   the Engine.IO path, see [`head`]) is answered here, and the connection loops for the next
//!   one (keep-alive, pipelining in order). The first head that is anything else — a page
//!   outside the Engine.IO path, a chunked body, a malformed head — hands the connection, with
//!   every byte read so far, to pingora's path for the rest of its life.
//! - Upstream, a request goes on a keep-alive connection from [`pool`] (or a new one within
//!   `timeouts.connect`); a connect failure is passive health and, for a new session, a retry
//!   on another backend, exactly as on pingora's path; a reused connection that fails before
//!   any response byte is retried once on a new connection, as pingora does. The response head
//!   is parsed ([`response`]), hop-by-hop headers dropped, the stickiness cookie and
//!   `Connection: close` added where due; a polling handshake's body is held until its open
//!   packet is read and the sid recorded (the same [`crate::engineio::OpenLearner`]).
//! - A WebSocket upgrade is sent with its `Upgrade` and `Connection: Upgrade`. A `101` answer
//!   (HTTP/1.1, to an upgrade only — pingora's rule) is accounted for as on pingora's path
//!   (handshake, the polling session's upgrade, the cookie), written to the client as the
//!   backend wrote it, and the two connections then go to [`crate::tunnel`] with the guards
//!   that count the tunnel — the relay threads, as pingora's path hands its upgrades over.
//!   Nothing the client sends after its request reaches the backend before the `101` (bytes
//!   already read go first after it), so an early `Upgrade` cannot smuggle a request
//!   (CVE-2026-2833). Any other answer is relayed as an ordinary response, and the connection
//!   carries on as an HTTP connection, as on pingora's path.
//! - Timeouts are the configured ones: a connection, new or kept alive, idles at most
//!   `timeouts.client_keepalive` before a request starts, a head must be complete within
//!   `timeouts.client_header` of its first byte, each read of the body or of the backend's
//!   answer (a `101` included) waits at most `timeouts.polling_request` (a late answer is a
//!   502, as pingora's); a tunnel idles out after `timeouts.websocket_idle`.
//! - Shutdown: a connection idle between requests when shutdown starts waits
//!   `shutdown.idle_wait` for its next request (counted in the same parked-connection count as
//!   pingora's path), and every answer from then on, or while the process is being replaced,
//!   carries `Connection: close`.
//!
//! Answers of its own (refusals, `502`, `503`) read as pingora's path writes them.

pub mod deadline;
pub mod head;
pub mod pool;
pub mod response;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::Backend;
use crate::config::{HashKey, LbConfig};
use crate::proxy::{Ctx, Proxy, count_reject};
use deadline::{Deadline, Timer};
use head::Parsed;
use response::{Chunked, Framing, ParsedResponse};

/// Hop-by-hop headers (RFC 9110 §7.6.1, with the `Keep-Alive` and `Proxy-Connection` of older
/// clients): never passed on, in either direction.
fn hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    ]
    .iter()
    .any(|d| name.eq_ignore_ascii_case(d))
}

/// Longest request head read here; a longer one goes to pingora's path (which answers `431`
/// over `limits.max_header_bytes`, `400` over its own 1 MiB).
const MAX_HEAD: usize = 16 * 1024;

/// A response body is written to the client in pieces of at most this much (a handshake's is
/// held whole until its open packet is read, up to the learner's 64 KiB).
const WRITE_CHUNK: usize = 64 * 1024;

/// The listening service's application: this path in front of pingora's.
pub struct FrontDoor {
    proxy: Arc<HttpProxy<Proxy>>,
    app: Proxy,
    parked_idle: Arc<AtomicUsize>,
    idle_wait: Duration,
}

impl FrontDoor {
    /// In front of `proxy` (pingora's path, configured), deciding with `app`; `idle_wait` is
    /// `shutdown.idle_wait` (the same as `proxy`'s).
    pub fn new(proxy: HttpProxy<Proxy>, app: Proxy, idle_wait: Duration) -> FrontDoor {
        let parked_idle = proxy.parked_idle_connections();
        FrontDoor {
            proxy: Arc::new(proxy),
            app,
            parked_idle,
            idle_wait,
        }
    }

    /// The connections idle between requests after shutdown started, on both paths.
    pub fn parked_idle_connections(&self) -> Arc<AtomicUsize> {
        self.parked_idle.clone()
    }

    /// pingora's path for the rest of the connection, starting with the bytes in `read`.
    async fn to_pingora(&self, stream: Stream, read: BytesMut, shutdown: &ShutdownWatch) {
        let options = self.proxy.server_options();
        let header_timeout = options.and_then(|o| o.h1_header_timeout);
        let mut session = ServerSession::new_http1(stream);
        session.set_header_timeout(header_timeout);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
        if !read.is_empty() {
            session.set_pipelined_prefix(read);
        }
        // What pingora's own `ServerApp` does with an HTTP/1 connection.
        let mut result = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            session.set_header_timeout(header_timeout);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.proxy.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl ServerApp for FrontDoor {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let cfg = self.app.config.load_full();
        if !cfg.engineio.polling_fast_path
            || cfg.upstream_tls.enabled
            || stream.get_ssl_digest().is_some()
            || stream.selected_alpn_proto().is_some()
        {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
            client,
            linger: false,
            idle_timer: Timer::new(),
            request_timer: Timer::new(),
        };
        loop {
            let cfg = self.app.config.load_full();
            let next = self.read_head(&mut conn, &cfg, shutdown).await;
            match next {
                Next::Closed => break,
                Next::Pingora => {
                    self.to_pingora(conn.stream, conn.buf, shutdown).await;
                    return None;
                }
                Next::Request(req) => match self.serve(&mut conn, &cfg, *req, shutdown).await {
                    Served::Keep => {}
                    Served::Close => break,
                    Served::Tunnel(t) => {
                        self.tunnel(conn, *t, &cfg).await;
                        return None;
                    }
                },
            }
        }
        let _ = conn.stream.shutdown().await;
        if conn.linger {
            // The client may still be sending a body we refused: read it away for a while, so
            // closing does not reset the connection before the client has read our answer
            // (nginx's lingering close).
            let mut sink = [0u8; 4096];
            let until = tokio::time::Instant::now() + LINGER;
            while let Ok(Ok(n)) = tokio::time::timeout_at(until, conn.stream.read(&mut sink)).await
            {
                if n == 0 {
                    break;
                }
            }
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// A client connection on this path.
struct Conn {
    stream: Stream,
    /// Read but not yet consumed (the next request's first bytes when pipelined).
    buf: BytesMut,
    client: Option<IpAddr>,
    /// Close lingering: a refused request's body may still be arriving.
    linger: bool,
    /// The deadline of the wait for a request head (`client_keepalive`, `client_header`).
    idle_timer: Timer,
    /// The deadline of each read and write of a request's exchange (`polling_request`): the
    /// client's body, the backend's answer. Two timers, so that each moves only forward in
    /// the usual request (see [`deadline`]).
    request_timer: Timer,
}

/// How long a connection closed with a refused body still arriving is read before it is
/// dropped.
const LINGER: Duration = Duration::from_secs(2);

/// What comes next on a connection.
enum Next {
    /// A request this path serves.
    Request(Box<head::Request>),
    /// Anything else: pingora's path takes the connection.
    Pingora,
    /// The client closed it, a timeout ran out, or shutdown ended the wait.
    Closed,
}

/// Counts a connection as parked (idle after shutdown started) while it lives.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(n: &'a AtomicUsize) -> Parked<'a> {
        n.fetch_add(1, Ordering::AcqRel);
        Parked(n)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a served request leaves of the connection.
enum Served {
    /// It may carry another request.
    Keep,
    /// It closes.
    Close,
    /// A WebSocket upgrade was switched (`101` written): it is a tunnel from now on.
    Tunnel(Box<Tunnel>),
}

/// A connection to a backend, and whether it was kept alive from an earlier request.
struct Upstream {
    stream: TcpStream,
    reused: bool,
}

/// An upgraded connection's other half and what counts it.
struct Tunnel {
    /// The backend's connection.
    up: TcpStream,
    /// Bytes the backend sent after its `101` (read with it).
    to_client: Bytes,
    /// The guards that count the tunnel.
    held: crate::tunnel::Held,
}

/// How an upstream exchange ended.
enum Exchange {
    /// Answered; whether the client connection may carry another request.
    Done { status: u16, keep: bool },
    /// Failed before anything reached the client: answer this status. `retry`: the failure
    /// came before any response byte on a reused connection.
    Failed { status: u16, retry: bool },
    /// Failed after the response head reached the client: only closing is left.
    Broken { status: u16 },
    /// The backend switched protocols (`101` to an upgrade): its head for the client (without
    /// the blank line) and the bytes read after it; nothing was written to the client yet.
    Switched {
        up: TcpStream,
        head: Vec<u8>,
        rest: BytesMut,
    },
}

impl FrontDoor {
    /// Wait for the next request head.
    async fn read_head(&self, conn: &mut Conn, cfg: &LbConfig, shutdown: &ShutdownWatch) -> Next {
        // A connection (new or kept alive) may idle client_keepalive before a request starts;
        // a head has client_header from its first byte.
        let mut deadline = tokio::time::Instant::now()
            + if conn.buf.is_empty() {
                cfg.timeouts.client_keepalive
            } else {
                cfg.timeouts.client_header
            };
        let mut started = !conn.buf.is_empty();
        let mut shutdown = shutdown.clone();
        let mut parked: Option<Parked<'_>> = None;
        let route_header = match cfg.balancing.hash_key() {
            Some(HashKey::Header(name)) => Some(name.as_str()),
            _ => None,
        };
        loop {
            if !conn.buf.is_empty() {
                match head::parse(
                    &conn.buf,
                    &cfg.engineio.path,
                    conn.client,
                    false,
                    route_header,
                ) {
                    Parsed::Request(r) => return Next::Request(r),
                    Parsed::Other => return Next::Pingora,
                    Parsed::Partial if conn.buf.len() > MAX_HEAD => return Next::Pingora,
                    Parsed::Partial => {}
                }
                if !started {
                    started = true;
                    deadline = tokio::time::Instant::now() + cfg.timeouts.client_header;
                }
            }
            let idle = conn.buf.is_empty() && parked.is_none();
            let read = conn
                .idle_timer
                .wait(Deadline::At(deadline), conn.stream.read_buf(&mut conn.buf));
            let n = if idle {
                tokio::select! {
                    biased;
                    r = read => r,
                    _ = shutdown.wait_for(|s| *s) => {
                        // Shutdown while idle between requests: wait idle_wait for one more.
                        if self.idle_wait.is_zero() {
                            return Next::Closed;
                        }
                        parked = Some(Parked::new(&self.parked_idle));
                        deadline = deadline.min(tokio::time::Instant::now() + self.idle_wait);
                        continue;
                    }
                }
            } else {
                read.await
            };
            match n {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Next::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Serve one request.
    async fn serve(
        &self,
        conn: &mut Conn,
        cfg: &LbConfig,
        mut req: head::Request,
        shutdown: &ShutdownWatch,
    ) -> Served {
        let mut ctx = Ctx::fast(Instant::now(), req.upgrade);
        let facts = std::mem::take(&mut req.facts);
        if let Err(r) = self
            .app
            .admit_request(cfg, &req.req, Some(facts), conn.client, &mut ctx)
            .await
        {
            count_reject(&self.app, &r);
            // A refused request's body is not read: the connection closes after the answer
            // unless there is none.
            let close = r.close
                || req.close
                || req.content_length > 0
                || self.app.closing()
                || *shutdown.borrow();
            let answer = response::reject_answer(&r, close);
            let ok = write_all(&mut conn.stream, &answer).await;
            conn.linger = req.content_length > 0;
            self.app.count_request(r.status, &ctx);
            if close || !ok {
                return Served::Close;
            }
            conn.buf.advance(req.head_len);
            return Served::Keep;
        }

        // The body (Content-Length), then the request is complete.
        let total = req.head_len + req.content_length;
        while conn.buf.len() < total {
            conn.buf.reserve(total - conn.buf.len());
            match conn
                .request_timer
                .wait(
                    Deadline::After(cfg.timeouts.polling_request),
                    conn.stream.read_buf(&mut conn.buf),
                )
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    self.app.count_request(0, &ctx);
                    return Served::Close;
                }
            }
        }
        // The request as sent upstream: its head, then the body appended in place (the head
        // was allocated with room for it), and the read buffer moves past both.
        let mut out = std::mem::take(&mut req.upstream_head);
        out.extend_from_slice(&conn.buf[req.head_len..total]);
        conn.buf.advance(total);

        let client_close = req.close;
        loop {
            let Some(backend) = self
                .app
                .choose_backend(cfg, &req.req, conn.client, &mut ctx)
            else {
                return self.fail(conn, 503, &ctx).await;
            };
            let mut fresh = false;
            loop {
                let up = match self.upstream(&backend, cfg, fresh).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(backend = %backend.id, error = %e, "connect failed");
                        break;
                    }
                };
                self.app.connected(&ctx, up.reused);
                let keep_client = !client_close && !self.app.closing() && !*shutdown.borrow();
                match self
                    .exchange(conn, up, &backend, &out, cfg, keep_client, &mut ctx)
                    .await
                {
                    Exchange::Done { status, keep } => {
                        self.app.count_request(status, &ctx);
                        return if keep { Served::Keep } else { Served::Close };
                    }
                    Exchange::Switched { up, head, rest } => {
                        return self.switched(conn, cfg, up, head, rest, &mut ctx).await;
                    }
                    Exchange::Failed { retry: true, .. } if !fresh => {
                        // The backend closed the kept-alive connection as the request went out.
                        fresh = true;
                    }
                    Exchange::Failed { status, .. } => return self.fail(conn, status, &ctx).await,
                    Exchange::Broken { status } => {
                        self.app.count_request(status, &ctx);
                        return Served::Close;
                    }
                }
            }
            // Connect failed: passive health; a new session tries another backend.
            if !self.app.connect_failed(&mut ctx) {
                return self.fail(conn, 502, &ctx).await;
            }
        }
    }

    /// Answer an LB-made error and close.
    async fn fail(&self, conn: &mut Conn, status: u16, ctx: &Ctx) -> Served {
        let _ = write_all(&mut conn.stream, &response::error_answer(status)).await;
        self.app.count_request(status, ctx);
        Served::Close
    }

    /// The backend answered an upgrade with `101`: account for it as pingora's path does (the
    /// handshake or the polling session's upgrade, the stickiness cookie), write the `101` to
    /// the client, and hand the guards to the tunnel.
    async fn switched(
        &self,
        conn: &mut Conn,
        cfg: &LbConfig,
        up: TcpStream,
        mut head: Vec<u8>,
        rest: BytesMut,
        ctx: &mut Ctx,
    ) -> Served {
        let cookie = self.app.account_response(cfg, 101, ctx);
        set_cookie(&mut head, cookie.as_deref());
        head.extend_from_slice(b"\r\n");
        if !write_all(&mut conn.stream, &head).await {
            // The client is gone: the guards in `ctx` let go of the session with it.
            self.app.count_request(0, ctx);
            return Served::Close;
        }
        self.app.count_request(101, ctx);
        Served::Tunnel(Box::new(Tunnel {
            up,
            // Usually the open packet. A copy, so that the 4 KiB response buffer is let go
            // of here and now rather than once a relay thread has written a slice of it:
            // 0.8 KiB per idle WebSocket with the copy, 1.3 without (front door part (b)).
            to_client: Bytes::copy_from_slice(&rest),
            held: ctx.take_held(),
        }))
    }

    /// Relay an upgraded connection until it ends, as pingora's path relays its upgrades
    /// ([`crate::tunnel`]): bytes the client sent after its request (read with it) go to the
    /// backend first, the backend's after its `101` to the client.
    async fn tunnel(&self, conn: Conn, t: Tunnel, cfg: &LbConfig) {
        let Conn { stream, buf, .. } = conn;
        let idle = cfg.timeouts.websocket_idle;
        let to_backend = buf.freeze();
        let client = crate::tunnel::task::Side::new(stream, idle).await;
        let backend = crate::tunnel::task::Side::Tcp(t.up, crate::tunnel::Traced::default());
        crate::tunnel::start_sides(
            client,
            backend,
            to_backend,
            t.to_client,
            idle,
            t.held,
            self.app.relays(),
        )
        .await;
    }

    /// A connection to `backend`: a kept-alive one unless `fresh`, else a new one.
    async fn upstream(
        &self,
        backend: &Backend,
        cfg: &LbConfig,
        fresh: bool,
    ) -> std::io::Result<Upstream> {
        if !fresh && let Some(c) = self.app.upstream_pool.take(backend.addr, Instant::now()) {
            return Ok(Upstream {
                stream: c,
                reused: true,
            });
        }
        let c = tokio::time::timeout(cfg.timeouts.connect, TcpStream::connect(backend.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        c.set_nodelay(true)?;
        Ok(Upstream {
            stream: c,
            reused: false,
        })
    }

    /// Send the request on `up` and relay the answer to the client.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        conn: &mut Conn,
        up: Upstream,
        backend: &Backend,
        request: &[u8],
        cfg: &LbConfig,
        keep_client: bool,
        ctx: &mut Ctx,
    ) -> Exchange {
        let Upstream {
            stream: mut up,
            reused,
        } = up;
        let upgrade = ctx.upgrade();
        let wait = Deadline::After(cfg.timeouts.polling_request);
        let failed = |status: u16, got_any: bool| Exchange::Failed {
            status,
            retry: reused && !got_any,
        };
        match conn.request_timer.wait(wait, up.write_all(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return failed(502, false),
            Err(_) => {
                return Exchange::Failed {
                    status: 502,
                    retry: false,
                };
            }
        }
        // The response head.
        let mut rbuf = BytesMut::with_capacity(4096);
        let resp = loop {
            let parsed = if rbuf.is_empty() {
                Ok(ParsedResponse::Partial)
            } else {
                response::parse(&rbuf, upgrade)
            };
            match parsed {
                Ok(ParsedResponse::Head(r)) => break r,
                Ok(ParsedResponse::Switching {
                    head_len,
                    client_head,
                }) => {
                    rbuf.advance(head_len);
                    return Exchange::Switched {
                        up,
                        head: client_head,
                        rest: rbuf,
                    };
                }
                Ok(ParsedResponse::Interim(n)) => {
                    rbuf.advance(n);
                    continue;
                }
                Ok(ParsedResponse::Partial) => {}
                Err(e) => {
                    tracing::warn!(backend = %backend.id, error = %e, "bad response from backend");
                    return failed(502, true);
                }
            }
            if rbuf.len() > MAX_HEAD {
                tracing::warn!(backend = %backend.id, "response head too large");
                return failed(502, true);
            }
            let got_any = !rbuf.is_empty();
            match conn.request_timer.wait(wait, up.read_buf(&mut rbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) | Ok(Err(_)) => return failed(502, got_any),
                Err(_) => {
                    return Exchange::Failed {
                        status: 502,
                        retry: false,
                    };
                }
            }
        };
        rbuf.advance(resp.head_len);

        let cookie = self.app.account_response(cfg, resp.status, ctx);
        let keep = keep_client && resp.framing != Framing::Close;
        let mut out = resp.client_head;
        set_cookie(&mut out, cookie.as_deref());
        out.extend_from_slice(if keep {
            &b"Connection: keep-alive\r\n\r\n"[..]
        } else {
            b"Connection: close\r\n\r\n"
        });

        // The body, as framed; `rbuf` holds what came with the head.
        let mut left = match resp.framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        let mut chunked = (resp.framing == Framing::Chunked).then(Chunked::default);
        let mut head_sent = false;
        let mut extra = false;
        let mut ended = left == 0;
        let mut eof = false;
        loop {
            if !rbuf.is_empty() && !ended {
                // Copied on below (or decoded), so the buffer is read in place and cleared.
                let piece = &rbuf[..];
                let take = match (&mut chunked, resp.framing) {
                    (Some(c), _) => {
                        let mut data = ctx.learning().then(Vec::new);
                        let end = match c.feed(piece, data.as_mut()) {
                            Ok(end) => end,
                            Err(e) => {
                                tracing::warn!(backend = %backend.id, error = %e, "bad chunked body from backend");
                                return self.abandon(head_sent, resp.status);
                            }
                        };
                        if let Some(d) = data {
                            self.app
                                .learn_body(&mut Some(Bytes::from(d)), end.is_some(), ctx);
                        }
                        ended = end.is_some();
                        end.unwrap_or(piece.len())
                    }
                    (None, Framing::Length(_)) => {
                        let take = usize::try_from(left).unwrap_or(usize::MAX).min(piece.len());
                        left -= take as u64;
                        ended = left == 0;
                        take
                    }
                    (None, _) => piece.len(),
                };
                extra |= take < piece.len();
                let body = &piece[..take];
                if chunked.is_none() && ctx.learning() {
                    self.app
                        .learn_body(&mut Some(Bytes::copy_from_slice(body)), ended, ctx);
                }
                out.extend_from_slice(body);
                rbuf.clear();
            }
            if eof && !ended {
                if resp.framing == Framing::Close {
                    ended = true;
                    if ctx.learning() {
                        self.app.learn_body(&mut None, true, ctx);
                    }
                } else {
                    tracing::warn!(backend = %backend.id, "backend closed the connection inside a response body");
                    return self.abandon(head_sent, resp.status);
                }
            }
            // The client gets nothing of a handshake until its sid is recorded.
            if (ended || out.len() >= WRITE_CHUNK) && !ctx.learning() {
                if !write_all(&mut conn.stream, &out).await {
                    return Exchange::Broken {
                        status: resp.status,
                    };
                }
                head_sent = true;
                out.clear();
            }
            if ended {
                break;
            }
            match conn.request_timer.wait(wait, up.read_buf(&mut rbuf)).await {
                Ok(Ok(0)) => eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(backend = %backend.id, "backend response body failed or timed out");
                    return self.abandon(head_sent, resp.status);
                }
            }
        }
        if resp.reusable && !extra && !eof {
            self.app.upstream_pool.put(backend.addr, up, Instant::now());
        }
        Exchange::Done {
            status: resp.status,
            keep,
        }
    }

    /// A response that broke off: a 502 if the client has seen nothing of it yet.
    fn abandon(&self, head_sent: bool, status: u16) -> Exchange {
        if head_sent {
            Exchange::Broken { status }
        } else {
            Exchange::Failed {
                status: 502,
                retry: false,
            }
        }
    }
}

/// Append the stickiness cookie's header line, if there is one to set.
fn set_cookie(out: &mut Vec<u8>, cookie: Option<&str>) {
    if let Some(c) = cookie {
        out.extend_from_slice(b"Set-Cookie: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Append `headers` as written (`Name: value` lines), less those `skip` names.
fn copy_headers(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], skip: fn(&[u8]) -> bool) {
    for h in headers {
        if skip(h.name.as_bytes()) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Write `bytes` to the client and flush; `false` when the client is gone.
async fn write_all(stream: &mut Stream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}
