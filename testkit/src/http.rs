//! Plain HTTP/1.1 over a fresh TCP connection (GET, POST, raw) or an open one (exchange).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plain HTTP/1.1 GET to 127.0.0.1; returns status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// A plain HTTP/1.1 GET to `host` (an IP address); returns status and body.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let raw = http_raw_at(
        host,
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A plain HTTP/1.1 POST with a text body; returns status and body.
pub fn http_post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    let raw = http_raw(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Send a raw HTTP request and return the raw response: the head, and the body as far as its
/// Content-Length (or the connection's end) says — servers that keep the connection open
/// despite `Connection: close` do not make this wait.
pub fn http_raw(port: u16, request: &str) -> String {
    http_raw_at("127.0.0.1", port, request)
}

/// [`http_raw`] to `host` (an IP address).
pub fn http_raw_at(host: &str, port: u16, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect((host, port)) else {
        return String::new();
    };
    http_exchange(&mut s, request)
}

/// Send a raw HTTP request on an open connection (a keep-alive one, say) and return the raw
/// response as [`http_raw`] does; empty when the connection fails before any byte came back.
pub fn http_exchange(s: &mut TcpStream, request: &str) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                buf.truncate(end + 4 + len);
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
