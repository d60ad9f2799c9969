//! Admission: every check a request passes before it is routed, each refusal as one
//! [`Reject`] value — status, reason label, headers, body — that the proxy answers and counts in
//! one place (`proxy::reject`). No pingora `Session` here.
//!
//! | check | answer | `reason` label |
//! |---|---|---|
//! | path in `exposure.blocked_paths` (the nodes' `/metrics`, `/readyz`, …) | 404 | `blocked_path` |
//! | request head > `limits.max_header_bytes` | 431 | `header_too_large` |
//! | Content-Length > `limits.max_body_bytes` | 413 + close | `body_too_large` |
//! | `limits.max_connections` / `_per_ip` | 503 + Retry-After | `max_connections` / `max_connections_per_ip` |
//! | client TCP connections over `limits.max_tcp_connections` / `_per_ip` | closed at accept ([`crate::accept`]) | `tcp_connections` / `tcp_connections_per_ip` |
//! | sid table full (new polling session) | 503 + Retry-After | `sid_table_full` |
//! | the client IP holds `engineio.sid_table_max_per_ip` entries | 503 + Retry-After | `sid_table_full_per_ip` |
//! | `limits.new_sessions_per_second_per_ip` | 503 + Retry-After | `new_session_rate_per_ip` |
//! | `limits.new_sessions_per_second` | 503 + Retry-After | `new_session_rate` |
//! | no ready backend | 503 + Retry-After | `no_backend` |
//! | unknown sid / its backend is down | 400 Engine.IO JSON | `iogate_lb_sid_unknown_total{reason}` |

use std::net::IpAddr;
use std::sync::Arc;

use pingora_http::RequestHeader;

use crate::config::{Exposure, Limits};
use crate::engineio;
use crate::limits::{ConnLimiter, ConnSlot, IpBuckets, Refused, TokenBucket};
use crate::sid_table::SidTable;

/// A refused request: what to answer and how to count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status.
    pub status: u16,
    /// The `reason` label it is counted under.
    pub reason: &'static str,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// Close the client connection after answering.
    pub close: bool,
    /// Body (`application/json` when it starts with `{`).
    pub body: &'static str,
}

impl Reject {
    fn busy(reason: &'static str, retry_after: u64, body: &'static str) -> Reject {
        Reject {
            status: 503,
            reason,
            retry_after: Some(retry_after),
            close: false,
            body,
        }
    }

    /// `400 Session ID unknown`, the answer of an Engine.IO server for a sid it does not know.
    /// `reason` is `unknown` (no route) or `backend_down` (its backend failed).
    pub fn sid_unknown(reason: &'static str) -> Reject {
        Reject {
            status: 400,
            reason,
            retry_after: None,
            close: false,
            body: engineio::SESSION_UNKNOWN,
        }
    }

    /// No backend can take a new session.
    pub fn no_backend() -> Reject {
        Reject::busy("no_backend", 1, "no ready backend\n")
    }

    /// Whether this is an Engine.IO "Session ID unknown" answer.
    pub fn is_sid_unknown(&self) -> bool {
        self.status == 400 && self.body == engineio::SESSION_UNKNOWN
    }

    /// The Content-Type of the body.
    pub fn content_type(&self) -> &'static str {
        if self.body.starts_with('{') {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        }
    }
}

/// The size of a request head as the client sent it (request line and headers, approximately).
pub fn head_size(req: &RequestHeader) -> usize {
    let uri = req.uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri
        + 16
}

/// A path clients may not reach through the LB.
pub fn check_path(path: &str, exposure: &Exposure) -> Result<(), Reject> {
    if exposure.blocks(path) {
        return Err(Reject {
            status: 404,
            reason: "blocked_path",
            retry_after: None,
            close: false,
            body: "not found\n",
        });
    }
    Ok(())
}

/// Head size and declared body size.
pub fn check_request(req: &RequestHeader, limits: &Limits) -> Result<(), Reject> {
    let content_length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    check_sizes(head_size(req), content_length, limits)
}

/// [`check_request`] on sizes the caller measured ([`head_size`]'s way) from a head it parsed.
pub fn check_sizes(
    head_size: usize,
    content_length: Option<usize>,
    limits: &Limits,
) -> Result<(), Reject> {
    if head_size > limits.max_header_bytes {
        return Err(Reject {
            status: 431,
            reason: "header_too_large",
            retry_after: None,
            close: false,
            body: "request header too large\n",
        });
    }
    if content_length.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(Reject {
            status: 413,
            reason: "body_too_large",
            retry_after: None,
            close: true,
            body: "request body too large\n",
        });
    }
    Ok(())
}

/// A connection slot (total and per client IP), held by the request's context.
pub fn take_slot(
    conns: &Arc<ConnLimiter>,
    ip: Option<IpAddr>,
    limits: &Limits,
) -> Result<ConnSlot, Reject> {
    conns
        .acquire(ip, limits.max_connections, limits.max_connections_per_ip)
        .map_err(|r| match r {
            Refused::Total => Reject::busy("max_connections", 1, "too many connections\n"),
            Refused::PerIp => Reject::busy("max_connections_per_ip", 1, "too many connections\n"),
        })
}

/// What a new session is admitted against, besides the sid table's own bound: the global and
/// per-IP rates and each client IP's share of the sid table.
#[derive(Debug)]
pub struct SessionGate {
    /// `limits.new_sessions_per_second`.
    pub bucket: TokenBucket,
    /// `limits.new_sessions_per_second_per_ip`.
    pub per_ip: IpBuckets,
    /// `engineio.sid_table_max_per_ip`: a slot per sid-table entry, by client IP.
    pub sid_owners: Arc<ConnLimiter>,
}

impl SessionGate {
    /// A gate with `buckets` per-IP rate buckets.
    pub fn new(buckets: usize) -> SessionGate {
        SessionGate {
            bucket: TokenBucket::default(),
            per_ip: IpBuckets::new(buckets),
            sid_owners: Arc::new(ConnLimiter::default()),
        }
    }
}

/// A new Engine.IO session: room in the sid table and the client IP's share of it (polling
/// only: WebSocket-only sessions are not in the table), then a token from the client IP's
/// bucket, then one from the global bucket (a client refused per IP takes nothing from the
/// others). `Ok(Some(slot))`: the IP's share, for the table entry the handshake creates.
pub fn admit_new_session(
    sids: &SidTable,
    gate: &SessionGate,
    limits: &Limits,
    sid_max_per_ip: usize,
    websocket: bool,
    ip: Option<IpAddr>,
) -> Result<Option<ConnSlot>, Reject> {
    let mut owner = None;
    if !websocket {
        if !sids.has_room() {
            return Err(Reject::busy("sid_table_full", 1, "session table full\n"));
        }
        if sid_max_per_ip > 0 {
            owner = Some(
                gate.sid_owners
                    .acquire(ip, 0, sid_max_per_ip)
                    .map_err(|_| {
                        Reject::busy(
                            "sid_table_full_per_ip",
                            1,
                            "too many sessions from this address\n",
                        )
                    })?,
            );
        }
    }
    if let Some(ip) = ip {
        gate.per_ip
            .take(
                ip,
                limits.new_sessions_per_second_per_ip,
                limits.new_sessions_burst_per_ip,
            )
            .map_err(|after| {
                Reject::busy(
                    "new_session_rate_per_ip",
                    after,
                    "too many new sessions from this address\n",
                )
            })?;
    }
    gate.bucket
        .take(limits.new_sessions_per_second, limits.new_sessions_burst)
        .map_err(|after| Reject::busy("new_session_rate", after, "too many new sessions\n"))?;
    Ok(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", uri.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn head_and_body_limits() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_body_bytes: 2048,
            ..Limits::default()
        };
        assert_eq!(check_request(&req("/x", &[]), &limits), Ok(()));
        let big = "v".repeat(2000);
        let r = check_request(&req("/x", &[("x-big", &big)]), &limits).expect_err("431");
        assert_eq!((r.status, r.reason), (431, "header_too_large"));
        let long_uri = format!("/x?q={big}");
        assert_eq!(
            check_request(&req(&long_uri, &[]), &limits).map_err(|r| r.status),
            Err(431)
        );
        let r = check_request(&req("/x", &[("content-length", "4096")]), &limits).expect_err("413");
        assert_eq!((r.status, r.close), (413, true));
        assert_eq!(
            check_request(&req("/x", &[("content-length", "100")]), &limits),
            Ok(())
        );
    }

    #[test]
    fn new_sessions_need_room_and_a_token() {
        let sids = SidTable::new(0);
        let gate = SessionGate::new(16);
        let limits = Limits {
            new_sessions_per_second: 1,
            new_sessions_burst: 1,
            ..Limits::default()
        };
        let r = admit_new_session(&sids, &gate, &limits, 0, false, None).expect_err("full");
        assert_eq!(r.reason, "sid_table_full");
        // WebSocket sessions are not in the table.
        assert!(matches!(
            admit_new_session(&sids, &gate, &limits, 0, true, None),
            Ok(None)
        ));
        let r = admit_new_session(&sids, &gate, &limits, 0, true, None).expect_err("rate");
        assert_eq!(
            (r.status, r.reason, r.retry_after),
            (503, "new_session_rate", Some(1))
        );
    }

    #[test]
    fn per_ip_rate_and_sid_share() {
        let sids = SidTable::new(100);
        let gate = SessionGate::new(1024);
        let limits = Limits {
            new_sessions_per_second_per_ip: 1,
            new_sessions_burst_per_ip: 3,
            ..Limits::default()
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        // Two entries per IP in the table.
        let s1 = admit_new_session(&sids, &gate, &limits, 2, false, Some(a)).expect("1");
        let s2 = admit_new_session(&sids, &gate, &limits, 2, false, Some(a)).expect("2");
        assert!(s1.is_some() && s2.is_some());
        let r = admit_new_session(&sids, &gate, &limits, 2, false, Some(a)).expect_err("share");
        assert_eq!((r.status, r.reason), (503, "sid_table_full_per_ip"));
        // Another address is not affected; a freed share is usable again.
        assert!(admit_new_session(&sids, &gate, &limits, 2, false, Some(b)).is_ok());
        drop(s1);
        // The per-IP rate: the third token of a's burst, then none.
        assert!(admit_new_session(&sids, &gate, &limits, 2, true, Some(a)).is_ok());
        let r = admit_new_session(&sids, &gate, &limits, 2, true, Some(a)).expect_err("rate");
        assert_eq!(
            (r.reason, r.retry_after),
            ("new_session_rate_per_ip", Some(1))
        );
    }

    #[test]
    fn operational_paths_are_not_forwarded() {
        let e = Exposure::default();
        for p in [
            "/metrics",
            "/metrics/",
            "/readyz",
            "/healthz",
            "/demo/backends",
        ] {
            let r = check_path(p, &e).expect_err(p);
            assert_eq!((r.status, r.reason), (404, "blocked_path"), "{p}");
        }
        for p in ["/socket.io/", "/metricsx", "/", "/demo/app.js"] {
            assert_eq!(check_path(p, &e), Ok(()), "{p}");
        }
        let open = Exposure {
            blocked_paths: Vec::new(),
        };
        assert_eq!(check_path("/metrics", &open), Ok(()));
    }

    #[test]
    fn unknown_sid_answer_is_engineio_json() {
        let r = Reject::sid_unknown("unknown");
        assert!(r.is_sid_unknown());
        assert_eq!(r.content_type(), "application/json");
        assert_eq!(r.body, r#"{"code":1,"message":"Session ID unknown"}"#);
        assert!(!Reject::no_backend().is_sid_unknown());
    }
}
