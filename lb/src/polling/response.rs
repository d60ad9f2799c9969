//! A backend's response head, as the own polling path reads it and passes it on: status and
//! headers as the backend wrote them (header-name case kept), less hop-by-hop ones, plus what
//! the LB adds (`Set-Cookie` of cookie stickiness, `Connection: keep-alive` or `close`, as
//! pingora writes them); how its body is framed; and the LB's own answers (refusals and
//! upstream failures), written like pingora's so clients see one LB whichever path served them.

use crate::admission::Reject;

/// Most headers in a response head this path reads; more is an upstream error (502).
pub const MAX_HEADERS: usize = 64;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (`Content-Length`; 0 for 204 and 304 too).
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed as is; [`Chunked`] finds its end.
    Chunked,
    /// Until the backend closes the connection (no length given).
    Close,
}

/// A backend's response head.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Bytes of the head in the read buffer, through its blank line.
    pub head_len: usize,
    /// How its body ends.
    pub framing: Framing,
    /// The backend may keep the connection for another request.
    pub reusable: bool,
    /// The head for the client, without its blank line (the LB's headers come after).
    pub client_head: Vec<u8>,
}

/// What a response's bytes hold so far.
#[derive(Debug)]
pub enum ParsedResponse {
    /// Not a complete head yet.
    Partial,
    /// An interim (1xx, not 101) head of this many bytes: skipped, the real one follows.
    Interim(usize),
    /// A head.
    Head(Response),
    /// A `101 Switching Protocols` to an upgrade request: the head for the client, without its
    /// blank line (every header as the backend wrote it: `Upgrade`, `Connection` and
    /// `Sec-WebSocket-Accept` belong to the switch), and its length in the read buffer.
    Switching {
        head_len: usize,
        client_head: Vec<u8>,
    },
}

/// Why a backend's response cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// The bytes are not an HTTP/1.x response head.
    #[error("malformed response head")]
    Malformed,
    /// A `101` to a request that asked for no upgrade, or conflicting framing.
    #[error("response framing the LB cannot relay")]
    Framing,
}

/// Parse the start of a backend's response to a `GET`/`POST`; `upgrade`: the request asked for
/// a WebSocket upgrade, so an HTTP/1.1 `101` switches (pingora's rule: a `101` to an upgrade
/// request is the switch; to any other request, or in HTTP/1.0, it cannot be relayed).
pub fn parse(buf: &[u8], upgrade: bool) -> Result<ParsedResponse, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(ParsedResponse::Partial),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let (Some(version), Some(status)) = (r.version, r.code) else {
        return Err(BadResponse::Malformed);
    };
    if status == 101 {
        if !upgrade || version != 1 {
            return Err(BadResponse::Framing);
        }
        let mut client_head = Vec::with_capacity(head_len + 64);
        client_head.extend_from_slice(b"HTTP/1.1 101 ");
        client_head.extend_from_slice(r.reason.unwrap_or("").as_bytes());
        client_head.extend_from_slice(b"\r\n");
        super::copy_headers(&mut client_head, r.headers, |_| false);
        return Ok(ParsedResponse::Switching {
            head_len,
            client_head,
        });
    }
    if (100..200).contains(&status) {
        return Ok(ParsedResponse::Interim(head_len));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == 0;
    let mut keep_alive = false;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| BadResponse::Framing)?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadResponse::Framing);
            }
            let n: u64 = v.parse().map_err(|_| BadResponse::Framing)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::Framing);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only `chunked` alone is relayed; anything else has no end this path can find.
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(BadResponse::Framing);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if version == 0 && keep_alive {
        close = false;
    }
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        if length.is_some() {
            // Both: RFC 9112 says chunked wins, but it is a smuggling pattern; refuse it.
            return Err(BadResponse::Framing);
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    // The head grows by the `Connection` line (and a cookie), then the body is appended to
    // it (up to the fast path's write chunk): room for both, so it is allocated once.
    let body_room = match framing {
        Framing::Length(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(super::WRITE_CHUNK),
        _ => 0,
    };
    let mut client_head = Vec::with_capacity(head_len + 64 + body_room);
    client_head.extend_from_slice(b"HTTP/1.1 ");
    client_head.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    client_head.push(b' ');
    client_head.extend_from_slice(r.reason.unwrap_or("").as_bytes());
    client_head.extend_from_slice(b"\r\n");
    super::copy_headers(&mut client_head, r.headers, super::hop_by_hop);
    Ok(ParsedResponse::Head(Response {
        status,
        head_len,
        framing,
        reusable: !close && framing != Framing::Close,
        client_head,
    }))
}

/// Finds the end of a chunked body as it passes (RFC 9112 §7.1): sizes, data, the last chunk
/// and its trailer section.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    /// Bytes of the current line (size line or trailer line), to bound them.
    line: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// After the size: extensions up to CR LF.
    Extension,
    /// CR seen at the end of the size line.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    /// After a chunk's data: CR.
    DataCr,
    /// After a chunk's data: LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR seen at the end of a trailer line.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    /// Complete.
    Done,
}

/// Longest chunk-size line or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// Take `bytes`; `Ok(Some(n))`: the body ended after `n` of them. The chunks' data is
    /// appended to `data` when one is given (a handshake's body, for the open packet).
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<Option<usize>, BadResponse> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                ChunkState::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(d)))
                            .ok_or(BadResponse::Framing)?;
                        self.line += 1;
                    } else if self.line == 0 {
                        return Err(BadResponse::Framing);
                    } else if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = ChunkState::Extension;
                    } else {
                        return Err(BadResponse::Framing);
                    }
                }
                ChunkState::Extension => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b'\n' {
                        return Err(BadResponse::Framing);
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(BadResponse::Framing);
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&bytes[i..i + take]);
                    }
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(BadResponse::Framing);
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(BadResponse::Framing);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    if b == b'\r' {
                        self.state = ChunkState::EndLf;
                    } else {
                        self.line = 1;
                        self.state = ChunkState::Trailer;
                    }
                }
                ChunkState::Trailer => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadResponse::Framing);
                    }
                    self.line = 0;
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(BadResponse::Framing);
                    }
                    self.state = ChunkState::Done;
                    return Ok(Some(i + 1));
                }
                ChunkState::Done => return Ok(Some(i)),
            }
            if self.line > MAX_CHUNK_LINE {
                return Err(BadResponse::Framing);
            }
            i += 1;
        }
        Ok((self.state == ChunkState::Done).then_some(i))
    }
}

/// An LB-made answer with an empty body, as pingora's error responses are (`502` when the
/// backend failed or did not answer within `timeouts.polling_request`, `503` when no backend
/// is ready); the client connection closes.
pub fn error_answer(status: u16) -> Vec<u8> {
    let reason = match status {
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nCache-Control: private, no-store\r\n"
    )
    .into_bytes();
    date(&mut out);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A refusal ([`Reject`]) as bytes, as `proxy::reject` writes it on pingora's path.
pub fn reject_answer(r: &Reject, close: bool) -> Vec<u8> {
    let reason = match r.status {
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        r.content_type(),
        r.body.len()
    );
    if let Some(after) = r.retry_after {
        out.push_str(&format!("Retry-After: {after}\r\n"));
    }
    let mut out = out.into_bytes();
    date(&mut out);
    out.extend_from_slice(if close {
        &b"Connection: close\r\n\r\n"[..]
    } else {
        b"Connection: keep-alive\r\n\r\n"
    });
    out.extend_from_slice(r.body.as_bytes());
    out
}

/// A `Date` header line (pingora's per-thread cache of the current second).
fn date(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Response {
        match parse(raw.as_bytes(), false) {
            Ok(ParsedResponse::Head(r)) => r,
            other => panic!("{other:?} for {raw:?}"),
        }
    }

    #[test]
    fn a_polling_answer_passes_with_its_case_and_without_hop_by_hop_headers() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 2\r\n\
                   Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Node: n1\r\n\r\nok";
        let r = head(raw);
        assert_eq!(r.status, 200);
        assert_eq!(r.head_len, raw.len() - 2);
        assert_eq!(r.framing, Framing::Length(2));
        assert!(r.reusable);
        assert_eq!(
            String::from_utf8(r.client_head).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 2\r\nX-Node: n1\r\n"
        );
    }

    #[test]
    fn framing_and_reuse() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        let r = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(r.framing, Framing::Close);
        assert!(!r.reusable);
        assert!(
            !head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").reusable
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
        assert!(
            head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").reusable
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", false),
            Ok(ParsedResponse::Interim(25))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(ParsedResponse::Partial)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad.as_bytes(), false).err(),
                Some(BadResponse::Framing),
                "{bad}"
            );
        }
        assert_eq!(
            parse(b"SSH-2.0-x\r\n\r\n", false).err(),
            Some(BadResponse::Malformed)
        );
    }

    #[test]
    fn a_101_switches_an_upgrade_only() {
        let raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x01\x02hi";
        match parse(raw.as_bytes(), true) {
            Ok(ParsedResponse::Switching {
                head_len,
                client_head,
            }) => {
                assert_eq!(head_len, raw.len() - 4);
                assert_eq!(
                    String::from_utf8(client_head).unwrap(),
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                );
            }
            other => panic!("{other:?}"),
        }
        // Not to a request that asked for none, nor in HTTP/1.0; a refusal is a plain answer.
        assert_eq!(
            parse(raw.as_bytes(), false).err(),
            Some(BadResponse::Framing)
        );
        assert_eq!(
            parse(b"HTTP/1.0 101 Switching Protocols\r\n\r\n", true).err(),
            Some(BadResponse::Framing)
        );
        assert!(matches!(
            parse(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                true
            ),
            Ok(ParsedResponse::Head(Response { status: 400, .. }))
        ));
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Whole, and one byte at a time.
        let mut data = Vec::new();
        assert_eq!(
            Chunked::default().feed(body, Some(&mut data)),
            Ok(Some(end))
        );
        assert_eq!(data, b"hello!");
        let mut c = Chunked::default();
        for (i, b) in body.iter().enumerate() {
            let r = c.feed(std::slice::from_ref(b), None).unwrap();
            if i + 1 == end {
                assert_eq!(r, Some(1));
                break;
            }
            assert_eq!(r, None, "ended early at {i}");
        }
        assert_eq!(Chunked::default().feed(b"0\r\n\r\n", None), Ok(Some(5)));
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"5\n"] {
            assert_eq!(
                Chunked::default().feed(bad, None),
                Err(BadResponse::Framing),
                "{bad:?}"
            );
        }
        assert_eq!(
            Chunked::default().feed(b"ffffffffffffffffff\r\n", None),
            Err(BadResponse::Framing)
        );
    }

    #[test]
    fn answers_read_like_pingoras() {
        let a = String::from_utf8(error_answer(502)).unwrap();
        assert!(
            a.starts_with("HTTP/1.1 502 Bad Gateway\r\n")
                && a.ends_with("Connection: close\r\n\r\n")
        );
        let r = Reject::sid_unknown("unknown");
        let a = String::from_utf8(reject_answer(&r, false)).unwrap();
        let (head, body) = a.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "HTTP/1.1 400 Bad Request");
        assert!(lines.contains(&"Content-Type: application/json"));
        assert!(lines.contains(&format!("Content-Length: {}", r.body.len()).as_str()));
        assert!(lines.contains(&"Connection: keep-alive"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Date: ") && l.ends_with(" GMT"))
        );
        assert_eq!(body, r.body);
    }
}
