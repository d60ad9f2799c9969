//! A raw Engine.IO v4 / Socket.IO v5 client — no socket.io-client, every packet visible — for
//! differential tests: the same scripted exchange runs against the reference Node.js server and
//! against iogate, and the two [`Transcript`]s must be equal once ids are replaced ([`canon`]).

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::{Message, WebSocket};

use crate::http::http_raw;

/// The Engine.IO packet separator of a polling payload.
pub const SEP: char = '\u{1e}';

/// Replace a JSON value's session and private ids with placeholders, keys sorted.
fn canon_json(text: &str) -> String {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if (k == "sid" || k == "pid") && v.is_string() {
                        *v = Value::String(format!("<{k}>"));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => text.to_string(),
    }
}

/// A packet as the transcript records it: ids replaced (`<sid>`, `<pid>`), JSON keys sorted, and
/// the ack id of a server event (`42<id>[…]`, `45…-<id>[…]`) replaced by `<ack>` when
/// `server_ack` is set.
pub fn canon(packet: &str, server_ack: bool) -> String {
    let Some(eio) = packet.chars().next() else {
        return String::new();
    };
    let rest = &packet[1..];
    match eio {
        '0' => format!("0{}", canon_json(rest)),
        '4' => {
            let Some(kind) = rest.chars().next() else {
                return packet.to_string();
            };
            let mut body = &rest[1..];
            let mut out = format!("4{kind}");
            if matches!(kind, '5' | '6')
                && let Some(dash) = body.find('-')
            {
                out.push_str(&body[..=dash]);
                body = &body[dash + 1..];
            }
            if body.starts_with('/') {
                let end = body.find(',').map_or(body.len(), |i| i + 1);
                out.push_str(&body[..end]);
                body = &body[end..];
            }
            let digits = body.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                if server_ack && matches!(kind, '2' | '5') {
                    out.push_str("<ack>");
                } else {
                    out.push_str(&body[..digits]);
                }
                body = &body[digits..];
            }
            out.push_str(&canon_json(body));
            out
        }
        _ => packet.to_string(),
    }
}

/// What a script saw and did, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transcript(pub Vec<String>);

impl Transcript {
    /// Record a line (and print it when `IOGATE_TRACE` is set, to follow a script that hangs).
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        if std::env::var_os("IOGATE_TRACE").is_some() {
            eprintln!("  | {line}");
        }
        self.0.push(line);
    }

    /// The lines, one per line, for assertion messages.
    pub fn text(&self) -> String {
        self.0.join("\n")
    }
}

/// One frame received on a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (one Engine.IO packet).
    Text(String),
    /// A binary frame (an attachment).
    Binary(Vec<u8>),
    /// The server closed the WebSocket (close frame or EOF).
    Closed,
}

/// A raw WebSocket transport (`transport=websocket`, optionally joining a polling `sid`).
pub struct Ws {
    sock: WebSocket<TcpStream>,
}

impl Ws {
    /// Open `ws://127.0.0.1:{port}{path}?EIO=4&transport=websocket[&sid=…]`.
    pub fn connect(port: u16, path: &str, sid: Option<&str>) -> Ws {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
        let mut url = format!("ws://127.0.0.1:{port}{path}?EIO=4&transport=websocket");
        if let Some(sid) = sid {
            url.push_str(&format!("&sid={sid}"));
        }
        let (sock, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
        Ws { sock }
    }

    /// The next frame within `timeout`; `None` when none came.
    pub fn recv(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.sock.get_ref().set_read_timeout(Some(left));
            match self.sock.read() {
                Ok(Message::Text(t)) => return Some(Frame::Text(t.to_string())),
                Ok(Message::Binary(b)) => return Some(Frame::Binary(b.to_vec())),
                Ok(Message::Close(_)) => return Some(Frame::Closed),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None;
                }
                Err(_) => return Some(Frame::Closed),
            }
        }
    }

    /// Send a text frame.
    pub fn send(&mut self, text: &str) {
        self.sock
            .send(Message::text(text.to_string()))
            .expect("websocket send");
    }

    /// Send a text frame; false when the connection is gone (a hostile client's sends may
    /// fail once the server closed it).
    pub fn try_send(&mut self, text: &str) -> bool {
        self.sock.send(Message::text(text.to_string())).is_ok()
    }

    /// Send a text frame whose payload is `bytes` as is, valid UTF-8 or not.
    pub fn send_raw_text(&mut self, bytes: &[u8]) -> bool {
        use tungstenite::protocol::frame::Frame as WsFrame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = WsFrame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
        self.sock.send(Message::Frame(frame)).is_ok()
    }

    /// Send a binary frame.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.sock
            .send(Message::binary(data.to_vec()))
            .expect("websocket send");
    }
}

/// A raw polling transport: each request on a new connection.
#[derive(Debug, Clone)]
pub struct Polling {
    /// Server port.
    pub port: u16,
    /// Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// The session id once the handshake is done.
    pub sid: Option<String>,
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = raw.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16);
        match size {
            Ok(n) if n > 0 && rest.len() >= n => {
                out.push_str(&rest[..n]);
                raw = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
            }
            _ => break,
        }
    }
    out
}

/// Status and body of a response.
fn split_response(raw: &str) -> (u16, String) {
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return (status, String::new());
    };
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

impl Polling {
    /// A transport to `127.0.0.1:{port}{path}`.
    pub fn new(port: u16, path: &str) -> Polling {
        Polling {
            port,
            path: path.to_string(),
            sid: None,
        }
    }

    fn url(&self) -> String {
        let mut u = format!("{}?EIO=4&transport=polling", self.path);
        if let Some(sid) = &self.sid {
            u.push_str(&format!("&sid={sid}"));
        }
        u
    }

    /// `GET` the raw query `query` (for malformed requests); status and body.
    pub fn get_raw(&self, query: &str) -> (u16, String) {
        split_response(&http_raw(
            self.port,
            &format!(
                "GET {}?{query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                self.path
            ),
        ))
    }

    /// The polling handshake; stores the sid. Status and the open packet.
    pub fn handshake(&mut self) -> (u16, String) {
        let (status, body) = self.get();
        if let Some(json) = body.strip_prefix('0')
            && let Ok(v) = serde_json::from_str::<Value>(json.split(SEP).next().unwrap_or(""))
        {
            self.sid = v["sid"].as_str().map(str::to_string);
        }
        (status, body)
    }

    /// One `GET` (a long-poll once the session exists); status and body.
    pub fn get(&self) -> (u16, String) {
        split_response(&http_raw(
            self.port,
            &format!(
                "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                self.url()
            ),
        ))
    }

    /// `POST` packets (joined with the separator); status and body.
    pub fn post(&self, packets: &[&str]) -> (u16, String) {
        let body = packets.join(&SEP.to_string());
        split_response(&http_raw(
            self.port,
            &format!(
                "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.url(),
                body.len()
            ),
        ))
    }

    /// Long-poll until `n` packets other than PING arrived (PINGs are answered); fails the test
    /// after `timeout`.
    pub fn packets(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} packets, got {out:?}"
            );
            let (status, body) = self.get();
            assert_eq!(status, 200, "long-poll answered {status}: {body}");
            for p in body.split(SEP).filter(|p| !p.is_empty()) {
                if p == "2" {
                    self.post(&["3"]);
                } else {
                    out.push(p.to_string());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        let raw = "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(split_response(raw), (400, "hello world".into()));
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(split_response(raw), (200, "ok".into()));
    }

    #[test]
    fn canonical_packets() {
        assert_eq!(
            canon(
                r#"0{"sid":"n1.abc","upgrades":[],"pingInterval":300}"#,
                true
            ),
            r#"0{"pingInterval":300,"sid":"<sid>","upgrades":[]}"#
        );
        assert_eq!(
            canon(r#"40/custom,{"sid":"x","pid":"y"}"#, true),
            r#"40/custom,{"pid":"<pid>","sid":"<sid>"}"#
        );
        assert_eq!(
            canon(r#"4212["emit-with-ack",1]"#, true),
            r#"42<ack>["emit-with-ack",1]"#
        );
        assert_eq!(canon(r#"4212["e",1]"#, false), r#"4212["e",1]"#);
        assert_eq!(
            canon(r#"451-/custom,3[{"_placeholder":true,"num":0}]"#, true),
            r#"451-/custom,<ack>[{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(canon("3probe", true), "3probe");
        assert_eq!(canon("2", true), "2");
    }
}
