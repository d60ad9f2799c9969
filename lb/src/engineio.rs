//! Just enough Engine.IO to route: classify a request (path, `sid`, `transport`) and read the
//! open packet of a handshake response (`0{"sid":"…","pingInterval":…,"pingTimeout":…}`).

use std::borrow::Cow;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Largest handshake body held back while looking for the open packet.
pub const MAX_LEARN_BYTES: usize = 64 * 1024;

/// What the LB needs to know about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EioRequest {
    /// The request is on the Engine.IO path.
    pub on_path: bool,
    /// `sid` query parameter.
    pub sid: Option<String>,
    /// `transport=websocket`.
    pub websocket: bool,
}

impl EioRequest {
    /// Classify `path?query` against the Engine.IO path prefix.
    pub fn classify(path: &str, query: Option<&str>, eio_path: &str) -> EioRequest {
        let on_path = path
            .strip_prefix(eio_path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !on_path {
            return EioRequest::default();
        }
        let mut r = EioRequest {
            on_path,
            ..EioRequest::default()
        };
        if let Some(q) = query {
            for (k, v) in query_pairs(q) {
                match &*k {
                    "sid" if !v.is_empty() => r.sid = Some(v.into_owned()),
                    "transport" => r.websocket = v == "websocket",
                    _ => {}
                }
            }
        }
        r
    }

    /// A request that starts a new session (Engine.IO handshake).
    pub fn is_handshake(&self) -> bool {
        self.on_path && self.sid.is_none()
    }
}

/// The `key=value` pairs of a query string, decoded as `application/x-www-form-urlencoded`
/// (what `form_urlencoded::parse` yields), without decoding what needs none: an Engine.IO
/// query (`EIO=4&transport=polling&t=…&sid=…`) has no `%` or `+`, and decoding every pair
/// through `form_urlencoded` cost about 6,000 instructions per request (callgrind).
pub fn query_pairs(q: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let bytes = q.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        while start < bytes.len() {
            // One pass over the pair: its end, its first '=', whether it needs decoding. The
            // three are ASCII, so every slice below is on a char boundary.
            let (from, mut end, mut eq, mut encoded) = (start, start, None, false);
            while end < bytes.len() {
                match bytes[end] {
                    b'&' => break,
                    b'=' if eq.is_none() => eq = Some(end),
                    b'%' | b'+' => encoded = true,
                    _ => {}
                }
                end += 1;
            }
            start = end + 1;
            if end == from {
                continue;
            }
            if encoded {
                match form_urlencoded::parse(&bytes[from..end]).next() {
                    Some(pair) => return Some(pair),
                    None => continue,
                }
            }
            let (k, v) = match eq {
                Some(e) => (&q[from..e], &q[e + 1..end]),
                None => (&q[from..end], ""),
            };
            return Some((Cow::Borrowed(k), Cow::Borrowed(v)));
        }
        None
    })
}

/// The fields of an open packet the LB uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPacket {
    /// The session id.
    pub sid: String,
    /// pingInterval + pingTimeout: how long a healthy client may stay silent.
    pub heartbeat: Duration,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenJson {
    sid: String,
    #[serde(default)]
    ping_interval: Option<u64>,
    #[serde(default)]
    ping_timeout: Option<u64>,
}

/// Parse the open packet at the start of a polling handshake body. Accepts Engine.IO v4
/// (`0{…}`, packets separated by 0x1e) and v3 (`<len>:0{…}`).
/// Returns `None` when the body does not (yet) hold a complete open packet.
pub fn parse_open(body: &[u8]) -> Option<OpenPacket> {
    let text = std::str::from_utf8(body).ok().or_else(|| {
        // A partial UTF-8 sequence at a chunk boundary: parse what is valid.
        std::str::from_utf8(&body[..body.iter().rposition(|b| *b == b'}')? + 1]).ok()
    })?;
    let start = text.find("0{")?;
    let prefix = &text[..start];
    if !(prefix.is_empty()
        || (prefix.ends_with(':')
            && prefix[..prefix.len() - 1]
                .chars()
                .all(|c| c.is_ascii_digit())))
    {
        return None;
    }
    let json_start = start + 1;
    let rest = &text[json_start..];
    let end = rest.find('\u{1e}').unwrap_or(rest.len());
    let mut de = serde_json::Deserializer::from_str(&rest[..end]).into_iter::<OpenJson>();
    let open = de.next()?.ok()?;
    if open.sid.is_empty() {
        return None;
    }
    let interval = open.ping_interval.unwrap_or(25_000);
    let timeout = open.ping_timeout.unwrap_or(20_000);
    Some(OpenPacket {
        sid: open.sid,
        heartbeat: Duration::from_millis(interval.saturating_add(timeout)),
    })
}

/// Holds a polling handshake's body back until its open packet is complete, so the sid is
/// recorded before any client can name it.
#[derive(Debug, Default)]
pub struct OpenLearner {
    buf: BytesMut,
}

impl OpenLearner {
    /// Take the chunk in `body`. `None`: keep holding (`body` is now empty). `Some(open)`: the
    /// whole held body is back in `body`, with the open packet when one was found (none when the
    /// body ended or grew past [`MAX_LEARN_BYTES`] without one).
    pub fn feed(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Option<Option<OpenPacket>> {
        if let Some(chunk) = body.take() {
            self.buf.extend_from_slice(&chunk);
        }
        let open = parse_open(&self.buf);
        if open.is_none() && !end_of_stream && self.buf.len() <= MAX_LEARN_BYTES {
            return None;
        }
        *body = Some(std::mem::take(&mut self.buf).freeze());
        Some(open)
    }
}

/// The body an Engine.IO server answers for an unknown sid.
pub const SESSION_UNKNOWN: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_requests() {
        let r = EioRequest::classify(
            "/socket.io/",
            Some("EIO=4&transport=polling&sid=abc"),
            "/socket.io",
        );
        assert_eq!(
            r,
            EioRequest {
                on_path: true,
                sid: Some("abc".into()),
                websocket: false
            }
        );
        let r = EioRequest::classify(
            "/socket.io/",
            Some("EIO=4&transport=websocket"),
            "/socket.io",
        );
        assert!(r.is_handshake() && r.websocket);
        assert!(!EioRequest::classify("/socket.iox/", None, "/socket.io").on_path);
        assert!(!EioRequest::classify("/", None, "/socket.io").is_handshake());
    }

    #[test]
    fn query_pairs_decode_as_form_urlencoded_does() {
        for q in [
            "EIO=4&transport=polling&t=PZ3x&sid=abc-_",
            "a=1&&b&=c&d=&e=f=g",
            "s%69d=x%2By&transport=web+socket&k=%FF%FE&x=%zz&y=a+b%20c",
            "",
            "&&",
            "sid=%E2%82%AC",
        ] {
            let ours: Vec<(String, String)> = query_pairs(q)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{q}");
        }
    }

    #[test]
    fn learner_holds_the_body_until_the_open_packet_is_complete() {
        let mut l = OpenLearner::default();
        let mut body = Some(Bytes::from_static(br#"0{"sid":"ab","pingInt"#));
        assert_eq!(l.feed(&mut body, false), None);
        assert_eq!(body, None);
        let mut body = Some(Bytes::from_static(br#"erval":300,"pingTimeout":200}"#));
        let open = l
            .feed(&mut body, false)
            .expect("released")
            .expect("open packet");
        assert_eq!(open.sid, "ab");
        assert_eq!(
            body.as_deref(),
            Some(&br#"0{"sid":"ab","pingInterval":300,"pingTimeout":200}"#[..])
        );
        // No open packet by the end: released as is.
        let mut l = OpenLearner::default();
        let mut body = Some(Bytes::from_static(b"oops"));
        assert_eq!(l.feed(&mut body, true), Some(None));
        assert_eq!(body.as_deref(), Some(&b"oops"[..]));
    }

    #[test]
    fn parse_open_packets() {
        let v4 = br#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            parse_open(v4),
            Some(OpenPacket {
                sid: "abc".into(),
                heartbeat: Duration::from_secs(45)
            })
        );
        let v4_two = "0{\"sid\":\"x\",\"pingInterval\":300,\"pingTimeout\":200}\u{1e}40";
        assert_eq!(
            parse_open(v4_two.as_bytes()).map(|o| o.heartbeat),
            Some(Duration::from_millis(500))
        );
        let v3 = br#"96:0{"sid":"v3","upgrades":[],"pingInterval":25000,"pingTimeout":5000}2:40"#;
        assert_eq!(parse_open(v3).map(|o| o.sid), Some("v3".into()));
        assert_eq!(parse_open(br#"0{"sid":"abc","pingInt"#), None);
        assert_eq!(parse_open(b"garbage"), None);
        assert_eq!(parse_open(br#"x0{"sid":"a"}"#), None);
    }
}
