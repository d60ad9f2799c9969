//! A client's request head, as the own polling path reads it: parsed once (httparse), checked
//! against the one shape this path serves, and turned into what the rest needs — the
//! [`RequestHeader`] that admission and routing read (the same type pingora's path gives them),
//! and the head sent upstream, written from the client's bytes.
//!
//! The shapes served, both HTTP/1.1 on the Engine.IO path with a `Host` and no
//! `Transfer-Encoding` or `Expect`:
//! - long-polling: `GET` or `POST`, `transport` not `websocket`, at most one (repeated
//!   identical) `Content-Length` and none on a `GET`, no `Upgrade`, a `Connection` naming only
//!   `keep-alive` or `close`;
//! - a WebSocket upgrade: `GET` with `transport=websocket`, exactly one `Upgrade: websocket`, a
//!   `Connection` naming `upgrade` (and at most `keep-alive` besides), no `Content-Length`.
//!
//! Anything else is [`Parsed::Other`]: the connection goes to pingora's HTTP path with every
//! byte read so far (`mod.rs`), which answers it as before — including the requests it refuses
//! (malformed heads get its `400`, chunked bodies its streaming limit).
//!
//! Upstream, hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Trailer`; `Upgrade` except on an upgrade) are not forwarded (the connection to the backend
//! is the LB's, kept alive by HTTP/1.1's default; an upgrade's head carries the client's
//! `Upgrade` and `Connection: Upgrade`, as nginx's documented WebSocket proxying sends), and the
//! forwarding headers are replaced exactly as [`crate::forwarded`] does on pingora's path.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;

use crate::engineio::EioRequest;
use crate::forwarded::ip_text;
use crate::proxy::HeadFacts;

/// Most headers in a request head this path parses; more goes to pingora's path.
pub const MAX_HEADERS: usize = 64;

/// A request this path serves.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the head in the read buffer, through its blank line.
    pub head_len: usize,
    /// The body's length (`Content-Length`, 0 without one).
    pub content_length: usize,
    /// The client asked to close the connection after this request (`Connection: close`).
    pub close: bool,
    /// A WebSocket upgrade (`Upgrade: websocket`, `transport=websocket`).
    pub upgrade: bool,
    /// The head for admission and routing: method, target, and only the headers routing reads
    /// (`Cookie`, the `hash` policy's header); no header-name case kept (nothing writes it).
    pub req: RequestHeader,
    /// What admission needs of the rest: Engine.IO fields, head size, declared body length.
    pub facts: HeadFacts,
    /// The head to send upstream, through its blank line.
    pub upstream_head: Vec<u8>,
}

/// Most body room reserved with the upstream head (a polling `POST` is usually well under
/// it; a larger body grows the buffer as it is appended).
const BODY_ROOM: usize = 64 * 1024;

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Parsed {
    /// Not a complete head yet.
    Partial,
    /// A head this path does not serve (or cannot parse): pingora's path takes the connection.
    Other,
    /// A request this path serves.
    Request(Box<Request>),
}

/// A header this path refuses to serve (pingora's path takes the request).
fn refused(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"expect")
}

/// A header not forwarded: hop-by-hop, or one the LB writes itself.
fn dropped(name: &[u8]) -> bool {
    super::hop_by_hop(name)
        || [&b"x-forwarded-for"[..], b"x-real-ip", b"x-forwarded-proto"]
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d))
}

/// A header not forwarded on an upgrade (its `Upgrade` is; `Connection: Upgrade` is written).
fn dropped_on_upgrade(name: &[u8]) -> bool {
    dropped(name) && !name.eq_ignore_ascii_case(b"upgrade")
}

/// The tokens of a `Connection` value: `Some((close, upgrade))` when it names only
/// `keep-alive`, `close` and `upgrade`.
fn connection_tokens(value: &[u8]) -> Option<(bool, bool)> {
    let (mut close, mut upgrade) = (false, false);
    for token in value.split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if token.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if !(token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive")) {
            return None;
        }
    }
    Some((close, upgrade))
}

/// A `Content-Length` value (digits only, as RFC 9110 has it).
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parse `buf` as the start of a request; `eio_path` is the Engine.IO path prefix, `client` and
/// `tls` feed the forwarding headers, `route_header` is the header the `hash` policy reads (if
/// it reads one).
pub fn parse(
    buf: &[u8],
    eio_path: &str,
    client: Option<IpAddr>,
    tls: bool,
    route_header: Option<&str>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Other;
    };
    let get = match method {
        "GET" => true,
        "POST" => false,
        _ => return Parsed::Other,
    };
    if !target.starts_with('/') {
        return Parsed::Other;
    }

    let mut len: Option<usize> = None;
    let mut close = false;
    // `Upgrade` seen: whether its value is `websocket`; `Connection` named `upgrade`.
    let mut upgrade: Option<bool> = None;
    let mut connection_upgrade = false;
    let mut host = false;
    let mut xff: Option<&[u8]> = None;
    let mut forwarded_len = 0;
    // As `admission::head_size` counts a head, so both paths refuse the same ones.
    let mut head_size = target.len() + 16;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        head_size += name.len() + h.value.len() + 4;
        if refused(name) {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = content_length(h.value) else {
                return Parsed::Other;
            };
            if len.is_some_and(|l| l != n) {
                return Parsed::Other;
            }
            len = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            let Some((c, u)) = connection_tokens(h.value) else {
                return Parsed::Other;
            };
            close |= c;
            connection_upgrade |= u;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            if upgrade.is_some() {
                return Parsed::Other;
            }
            upgrade = Some(h.value.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") && xff.is_none() {
            xff = Some(h.value);
        }
        if !dropped(name) {
            forwarded_len += name.len() + h.value.len() + 4;
        }
    }
    let content_length = len.unwrap_or(0);
    if !host || (get && content_length > 0) {
        return Parsed::Other;
    }
    let upgrade = match (upgrade, connection_upgrade) {
        (None, false) => false,
        (Some(true), true) if get && len.is_none() && !close => true,
        _ => return Parsed::Other,
    };

    // Admission and routing read the same type as on pingora's path, with only the headers
    // routing reads (cookies, the hash policy's header), sized for them: most polling
    // requests carry neither, and an empty map allocates nothing.
    let wanted = |name: &str| {
        name.eq_ignore_ascii_case("cookie")
            || route_header.is_some_and(|r| name.eq_ignore_ascii_case(r))
    };
    let routing_headers = parsed.headers.iter().filter(|h| wanted(h.name)).count();
    let Ok(mut req) =
        RequestHeader::build_no_case(method, target.as_bytes(), Some(routing_headers))
    else {
        return Parsed::Other;
    };
    // Classified from the parsed URI, exactly as on pingora's path.
    let eio = EioRequest::classify(req.uri.path(), req.uri.query(), eio_path);
    if !eio.on_path || eio.websocket != upgrade {
        return Parsed::Other;
    }
    // Only the headers routing reads go into it: building a header map of every header was
    // about 5 % of the LB's CPU per request (perf).
    for h in parsed.headers.iter() {
        if !wanted(h.name) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Other;
        };
        if req.append_header(name, value).is_err() {
            return Parsed::Other;
        }
    }

    // The head sent upstream: the client's request line and headers, as written, less the
    // dropped ones, plus the forwarding headers.
    // Room for a polling body too (up to BODY_ROOM): the fast path appends it before sending,
    // one buffer and one write.
    let mut up = Vec::with_capacity(
        head_len.min(forwarded_len + target.len() + 128) + 96 + content_length.min(BODY_ROOM),
    );
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(target.as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    if upgrade {
        super::copy_headers(&mut up, parsed.headers, dropped_on_upgrade);
        up.extend_from_slice(b"Connection: Upgrade\r\n");
    } else {
        super::copy_headers(&mut up, parsed.headers, dropped);
    }
    if let Some(ip) = client {
        let mut text = [0u8; 15];
        let ip = ip_text(ip, &mut text);
        up.extend_from_slice(b"X-Forwarded-For: ");
        // A value that is not visible ASCII is replaced, as `forwarded::apply` does.
        if let Some(prev) = xff.filter(|v| {
            !v.is_empty() && HeaderValue::from_bytes(v).is_ok_and(|h| h.to_str().is_ok())
        }) {
            up.extend_from_slice(prev);
            up.extend_from_slice(b", ");
        }
        up.extend_from_slice(&ip);
        up.extend_from_slice(b"\r\nX-Real-IP: ");
        up.extend_from_slice(&ip);
        up.extend_from_slice(b"\r\n");
    }
    up.extend_from_slice(if tls {
        b"X-Forwarded-Proto: https\r\n\r\n"
    } else {
        b"X-Forwarded-Proto: http\r\n\r\n"
    });
    Parsed::Request(Box::new(Request {
        head_len,
        content_length,
        close,
        upgrade,
        req,
        facts: HeadFacts {
            eio,
            head_size,
            content_length: len,
        },
        upstream_head: up,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> Request {
        match parse(
            raw.as_bytes(),
            "/socket.io",
            Some([10, 0, 0, 7].into()),
            false,
            Some("x-tenant"),
        ) {
            Parsed::Request(r) => *r,
            other => panic!("not served here: {other:?} for {raw:?}"),
        }
    }

    fn other(raw: &str) -> bool {
        matches!(
            parse(raw.as_bytes(), "/socket.io", None, false, None),
            Parsed::Other
        )
    }

    #[test]
    fn a_polling_post_is_forwarded_without_hop_by_hop_headers() {
        let raw = "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\n\
                   Connection: keep-alive\r\nContent-Length: 5\r\nX-Real-IP: 1.2.3.4\r\n\
                   X-Forwarded-For: 9.9.9.9\r\nCookie: a=b\r\nKeep-Alive: 5\r\n\r\n4hello";
        let r = request(raw);
        assert_eq!(r.head_len, raw.len() - 6);
        assert_eq!(r.content_length, 5);
        assert!(!r.close);
        assert_eq!(r.req.uri.query(), Some("EIO=4&transport=polling&sid=abc"));
        assert_eq!(
            r.req.headers.get("cookie").map(|v| v.as_bytes()),
            Some(&b"a=b"[..])
        );
        // Only what routing reads is in the map; sizes as admission counts them.
        assert_eq!(r.req.headers.len(), 1);
        assert_eq!(r.facts.content_length, Some(5));
        assert_eq!(r.facts.eio.sid.as_deref(), Some("abc"));
        let mut full =
            RequestHeader::build("POST", b"/socket.io/?EIO=4&transport=polling&sid=abc", None)
                .unwrap();
        for (k, v) in [
            ("Host", "x"),
            ("Connection", "keep-alive"),
            ("Content-Length", "5"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Forwarded-For", "9.9.9.9"),
            ("Cookie", "a=b"),
            ("Keep-Alive", "5"),
        ] {
            full.append_header(k, v).unwrap();
        }
        assert_eq!(r.facts.head_size, crate::admission::head_size(&full));
        assert_eq!(
            String::from_utf8(r.upstream_head).unwrap(),
            "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\n\
             Content-Length: 5\r\nCookie: a=b\r\nX-Forwarded-For: 9.9.9.9, 10.0.0.7\r\n\
             X-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn the_hash_policys_header_is_kept_for_routing() {
        let r = request(
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Tenant: t1\r\nX-Other: o\r\n\r\n",
        );
        assert_eq!(
            r.req.headers.get("x-tenant").map(|v| v.as_bytes()),
            Some(&b"t1"[..])
        );
        assert!(r.req.headers.get("x-other").is_none());
        assert_eq!(r.facts.content_length, None);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            parse(
                b"GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n",
                "/socket.io",
                None,
                false,
                None
            ),
            Parsed::Partial
        ));
    }

    #[test]
    fn connection_close_is_noted() {
        let r = request(
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n",
        );
        assert!(r.close);
        assert_eq!(r.content_length, 0);
    }

    #[test]
    fn everything_else_goes_to_pingora() {
        for raw in [
            // not the Engine.IO path, or a WebSocket
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /socket.iox/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n",
            // HTTP/1.0, other methods, no Host
            "GET /socket.io/?EIO=4 HTTP/1.0\r\nHost: x\r\n\r\n",
            "PUT /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /socket.io/?EIO=4 HTTP/1.1\r\n\r\n",
            // framing this path does not do
            "POST /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "POST /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            "POST /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n",
            // upgrades of another shape: not a WebSocket transport, no `Connection: upgrade`,
            // another protocol, two `Upgrade`s, a body, `close`, polling transport
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n",
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "POST /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /other/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            // malformed
            "GET /socket.io/?EIO=4 HTTP/1.1\r\nHost x\r\n\r\n",
            "GET\x01 / HTTP/1.1\r\n\r\n",
        ] {
            assert!(other(raw), "served here: {raw:?}");
        }
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_upgrade_headers() {
        let raw = "GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\nHost: x\r\n\
                   Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let r = request(raw);
        assert!(r.upgrade);
        assert_eq!(r.head_len, raw.len());
        assert_eq!(r.content_length, 0);
        assert!(r.facts.eio.websocket);
        assert_eq!(r.facts.eio.sid.as_deref(), Some("abc"));
        assert_eq!(
            String::from_utf8(r.upstream_head).unwrap(),
            "GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\nHost: x\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Real-IP: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        // A polling request is not an upgrade.
        let p = request("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!p.upgrade);
    }

    #[test]
    fn repeated_identical_lengths_and_odd_forwarded_values() {
        let r = request(
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
             Content-Length: 3\r\nX-Forwarded-For: \r\n\r\n",
        );
        assert_eq!(r.content_length, 3);
        let up = String::from_utf8(r.upstream_head).unwrap();
        assert!(up.contains("X-Forwarded-For: 10.0.0.7\r\n"), "{up}");
    }
}
