//! Active health checks, each interval on every backend, with rise/fall hysteresis.
//!
//! A check tells three things apart (see [`crate::backends`] for what they mean to sessions):
//! the backend would take a new session (**ready**), it answers but says it takes none — HTTP 503
//! — (**draining**), or it does not answer as it should (**failed**: connect refused, timeout,
//! another status, garbage). Only failures count toward `fall` and make a backend down.
//!
//! - `engineio` (default): `GET {engineio.path}/?EIO=4&transport=polling` — a real handshake, so it
//!   works against any Engine.IO server (plain Node.js socket.io included) with no extra route.
//!   The session it opens is closed at once with an Engine.IO `close` packet (`POST` body `1`),
//!   so nothing is left behind on the backend. Its open packet also tells the backend's session
//!   tag (`{tag}.{random}` sids) and heartbeat.
//! - `http`: `GET {path}` (default `/readyz`): 2xx ready, 503 draining; a JSON body's `sid_tag`
//!   field (iogate-node's `/readyz`) is learned too.
//!
//! A backend added at start-up or by a reload takes no new sessions until its first check
//! passes; `iogate-lb` runs one round before it starts serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::UpstreamClient;

use crate::backends::{Backend, ProbeOutcome};
use crate::config::{ActiveHealth, CheckKind};
use crate::engineio;
use crate::select::tags::tag_of;
use crate::state::Lb;

/// Most bytes read of a check's answer.
const MAX_ANSWER: usize = 64 * 1024;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Ready, draining or failed.
    pub outcome: ProbeOutcome,
    /// Human-readable detail (admin API `last_health`).
    pub detail: String,
    /// The session tag the backend reported, if any.
    pub sid_tag: Option<String>,
    /// pingInterval + pingTimeout from its open packet (`engineio` checks).
    pub heartbeat: Option<Duration>,
}

impl Probe {
    fn failed(detail: impl Into<String>) -> Probe {
        Probe {
            outcome: ProbeOutcome::Failed,
            detail: detail.into(),
            sid_tag: None,
            heartbeat: None,
        }
    }
}

/// An HTTP answer as far as a check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse a complete HTTP/1.x answer (the connection was closed, or `Content-Length` is met).
/// `Ok(None)`: more bytes are needed.
pub fn parse_answer(raw: &[u8], at_eof: bool) -> Result<Option<Answer>, String> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return if at_eof || raw.len() > MAX_ANSWER {
            Err("no complete HTTP head".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {:.60}", status_line))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let body = &raw[end + 4..];
    if chunked {
        return match dechunk(body)? {
            Some(body) => Ok(Some(Answer { status, body })),
            None if at_eof => Err("chunked body cut short".into()),
            None => Ok(None),
        };
    }
    match length {
        Some(n) if body.len() >= n => Ok(Some(Answer {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if at_eof => Err("body shorter than Content-Length".into()),
        Some(_) => Ok(None),
        None if at_eof => Ok(Some(Answer {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

fn dechunk(mut raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// One HTTP/1.1 request with `Connection: close`, over TLS when `upstream_tls` is on.
async fn exchange(
    addr: SocketAddr,
    request: String,
    tls: Option<&UpstreamClient>,
) -> Result<Answer, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match tls {
        None => talk(tcp, request).await,
        Some(c) => talk(c.connect(tcp, addr).await?, request).await,
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: String,
) -> Result<Answer, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(a) = parse_answer(&buf, n == 0)? {
            return Ok(a);
        }
        if n == 0 || buf.len() > MAX_ANSWER {
            return Err("answer too long or cut short".into());
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: iogate-lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// The Engine.IO endpoint of `eio_path` (`/socket.io` → `/socket.io/`).
fn endpoint(eio_path: &str) -> String {
    format!("{}/", eio_path.trim_end_matches('/'))
}

async fn engineio_probe(addr: SocketAddr, eio_path: &str, tls: Option<&UpstreamClient>) -> Probe {
    let base = endpoint(eio_path);
    let answer = match exchange(
        addr,
        get(addr, &format!("{base}?EIO=4&transport=polling")),
        tls,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return Probe::failed(e),
    };
    match answer.status {
        200 => {}
        503 => {
            return Probe {
                outcome: ProbeOutcome::Draining,
                detail: "Engine.IO handshake answered 503 (draining)".into(),
                sid_tag: None,
                heartbeat: None,
            };
        }
        s => return Probe::failed(format!("Engine.IO handshake answered HTTP {s}")),
    }
    let Some(open) = engineio::parse_open(&answer.body) else {
        return Probe::failed("Engine.IO handshake answered 200 without an open packet");
    };
    // Close the probe's session at once: an Engine.IO `close` packet.
    let close = format!(
        "POST {base}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: iogate-lb-health\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1",
        sid = open.sid
    );
    if let Err(e) = exchange(addr, close, tls).await {
        tracing::debug!(%addr, error = %e, "closing the health probe's session failed");
    }
    Probe {
        outcome: ProbeOutcome::Ready,
        detail: "Engine.IO handshake OK".into(),
        sid_tag: tag_of(&open.sid).map(str::to_string),
        heartbeat: Some(open.heartbeat),
    }
}

#[derive(serde::Deserialize)]
struct ReadyJson {
    sid_tag: Option<String>,
}

async fn http_probe(addr: SocketAddr, path: &str, tls: Option<&UpstreamClient>) -> Probe {
    let answer = match exchange(addr, get(addr, path), tls).await {
        Ok(a) => a,
        Err(e) => return Probe::failed(e),
    };
    let sid_tag = serde_json::from_slice::<ReadyJson>(&answer.body)
        .ok()
        .and_then(|j| j.sid_tag)
        .filter(|t| crate::config::valid_sid_tag(t));
    let outcome = match answer.status {
        200..=299 => ProbeOutcome::Ready,
        503 => ProbeOutcome::Draining,
        s => return Probe::failed(format!("GET {path} answered HTTP {s}")),
    };
    Probe {
        outcome,
        detail: format!("GET {path}: HTTP {}", answer.status),
        sid_tag,
        heartbeat: None,
    }
}

/// Check one backend (over TLS with `tls`).
pub async fn probe(
    addr: SocketAddr,
    check: &ActiveHealth,
    eio_path: &str,
    tls: Option<&UpstreamClient>,
) -> Probe {
    let fut = async {
        match check.kind {
            CheckKind::Engineio => engineio_probe(addr, eio_path, tls).await,
            CheckKind::Http => http_probe(addr, check.http_path(), tls).await,
        }
    };
    match tokio::time::timeout(check.timeout, fut).await {
        Ok(p) => p,
        Err(_) => Probe::failed(format!("timeout after {:?}", check.timeout)),
    }
}

/// Apply one probe to its backend (state, tag, heartbeat) and log transitions.
fn record(lb: &Lb, b: &Backend, p: Probe, a: &ActiveHealth, streak: &mut i64) {
    if let Some(tag) = &p.sid_tag
        && b.learn_tag(Some(tag))
    {
        tracing::info!(backend = %b.id, tag, "learned the backend's session-id tag");
    }
    if let Some(h) = p.heartbeat {
        b.learn_heartbeat(h);
    }
    lb.metrics
        .health_checks
        .with_label_values(&[&b.id, p.outcome.as_str()])
        .inc();
    let detail = p.detail.clone();
    if let Some((before, after)) = b.record_probe(&p.outcome, p.detail, a.rise, a.fall, streak) {
        lb.metrics
            .backend_transitions
            .with_label_values(&[&b.id, after.as_str()])
            .inc();
        match after {
            crate::backends::BackendState::Down => tracing::warn!(
                backend = %b.id, %detail, from = before.as_str(),
                "backend is down: its sessions are gone"
            ),
            _ => tracing::info!(
                backend = %b.id, %detail, from = before.as_str(), to = after.as_str(),
                "backend state changed"
            ),
        }
    }
}

/// Check every backend once, concurrently, and rebuild the tag map.
pub async fn round(lb: &Lb, streaks: &mut HashMap<String, i64>) {
    let cfg = lb.config.load_full();
    let a = cfg.health.active.clone();
    let backends = lb.registry.all();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, b) in backends.iter().enumerate() {
        let (addr, a, path) = (b.addr, a.clone(), cfg.engineio.path.clone());
        let tls = lb.upstream_tls.clone();
        tasks.spawn(async move { (i, probe(addr, &a, &path, tls.as_deref()).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((i, p)) = done else { continue };
        let Some(b) = backends.get(i) else { continue };
        let key = format!("{}@{}", b.id, b.addr);
        let streak = streaks.entry(key).or_insert(0);
        record(lb, b, p, &a, streak);
    }
    streaks.retain(|k, _| {
        backends
            .iter()
            .any(|b| *k == format!("{}@{}", b.id, b.addr))
    });
    lb.rebuild_tags();
}

/// Check every backend forever (until the task is dropped).
pub async fn run(lb: Arc<Lb>) {
    let mut streaks: HashMap<String, i64> = HashMap::new();
    loop {
        let interval = lb.config.load().health.active.interval;
        if lb.config.load().health.active.enabled {
            round(&lb, &mut streaks).await;
        } else {
            lb.rebuild_tags();
        }
        // New backends (a reload, a DNS change) are probed at once, not an interval later.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = lb.probe_now.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_length_chunked_and_eof() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", false)
            .expect("valid")
            .expect("complete");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"abc"[..]));
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", false),
            Ok(None)
        );
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab", true).is_err());
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let a = parse_answer(chunked, false)
            .expect("valid")
            .expect("complete");
        assert_eq!((a.status, a.body.as_slice()), (503, &b"abcde"[..]));
        let a = parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\nnope", true)
            .expect("valid")
            .expect("complete");
        assert_eq!((a.status, a.body.as_slice()), (404, &b"nope"[..]));
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
        assert!(parse_answer(b"HTTP/1.1 200", true).is_err());
        assert!(
            parse_answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                true
            )
            .is_err()
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("/socket.io"), "/socket.io/");
        assert_eq!(endpoint("/socket.io/"), "/socket.io/");
    }
}
