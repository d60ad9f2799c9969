//! The long-polling fast path (`lb/src/polling/`): what it answers is what pingora's path
//! answers. The oracle is the same LB with `engineio.polling_fast_path: false`, in front of the
//! same Node.js socket.io server: one keep-alive connection runs the same exchange through
//! each (handshake, message, poll, unknown sid, oversized body) and the two transcripts must be
//! equal once session ids are masked. Also: pipelined requests answered in order, the hand-over
//! of a connection to pingora's path at its first request outside the fast path's shape (with
//! the bytes already read), and a chunked answer relayed with its framing and the upstream
//! connection reused after it. WebSocket upgrades (a new session on the WebSocket transport,
//! a polling session's upgrade, an unknown sid) get the same treatment: the same exchange
//! through both paths, frames included, and the tunnel's live counts held while it is open and
//! let go when it closes. A poll the backend holds past `timeouts.polling_request` is a `502` at
//! that deadline on both paths. Which path served is read from
//! `iogate_lb_http_path_requests_total{path}`, so every check here can fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use iogate_testkit::{Lb, Node, free_port, wait_for};

/// Read one response: its head (status line and headers, lower-cased names) and its body
/// (Content-Length or chunked, decoded).
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut chunk = [0u8; 8192];
    let mut fill = |pending: &mut Vec<u8>| {
        let n = s.read(&mut chunk).expect("read from the LB");
        assert!(n > 0, "the LB closed the connection mid-response");
        pending.extend_from_slice(&chunk[..n]);
    };
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        fill(pending);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    pending.drain(..end + 4);
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| {
        lower
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(pending);
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&pending[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .expect("chunk size");
            pending.drain(..line_end + 2);
            while pending.len() < size + 2 {
                fill(pending);
            }
            body.extend_from_slice(&pending[..size]);
            pending.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = header("content-length")
            .expect("a Content-Length or chunked")
            .parse()
            .expect("length");
        while pending.len() < len {
            fill(pending);
        }
        body = pending.drain(..len).collect();
    }
    (head, body)
}

/// Every `"sid":"…"` value masked (Engine.IO's and Socket.IO's).
fn mask_sids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"sid\":\"") {
        let (before, after) = rest.split_at(i + 7);
        out.push_str(before);
        out.push_str("<sid>");
        rest = after.find('"').map_or("", |j| &after[j..]);
    }
    out.push_str(rest);
    out
}

/// A response with session ids masked, header names lower-cased and sorted, and left out:
/// `Date` (differs by nature) and the backend's `Keep-Alive` (hop-by-hop, about the LB's
/// connection to the node: pingora's path passes it on, the fast path drops it, as nginx does).
fn canon(head: &str, body: &[u8], sid: &str) -> String {
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let mut headers: Vec<String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            format!("{}: {}", k.trim().to_ascii_lowercase(), v.trim())
        })
        .filter(|l| !l.starts_with("date:") && !l.starts_with("keep-alive:"))
        .collect();
    headers.sort();
    let body = mask_sids(&String::from_utf8_lossy(body)).replace(sid, "<sid>");
    let headers = headers.join("\n").replace(sid, "<sid>");
    format!("{status}\n{headers}\n\n{body}")
}

/// The sid of an open packet.
fn sid_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let v: serde_json::Value =
        serde_json::from_str(text.strip_prefix('0').expect("an open packet")).expect("json");
    v["sid"].as_str().expect("sid").to_string()
}

fn lb_for(node: &Node, fast: bool, extra: &str) -> Lb {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:{admin}\n\
         health:\n  active:\n    enabled: false\n\
         engineio:\n  polling_fast_path: {fast}\n{extra}\
         limits:\n  max_body_bytes: 2000\nexposure:\n  blocked_paths: []\n\
         upstreams:\n  - id: n1\n    address: 127.0.0.1:{}\n",
        node.port
    );
    Lb::start(port, admin, &yaml, true)
}

/// Requests served by `path` once it has counted at least `want` (a request is counted after
/// its answer is written, as pingora's path counts in its logging phase, so a client can read
/// the answer first): the count then, which must be `want` exactly.
fn served_n(lb: &Lb, path: &str, want: f64) -> f64 {
    let metric = format!("iogate_lb_http_path_requests_total{{path=\"{path}\"}}");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = lb.metric(&metric);
        if n >= want || std::time::Instant::now() > until {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` requests served by `fast`'s fast path and none by its pingora path, the reverse on
/// `pingora` (the LB with the fast path off).
fn assert_each_path_served_all(fast: &Lb, pingora: &Lb, n: f64) {
    assert_eq!(served_n(fast, "fast", n), n, "fast path, LB with it on");
    assert_eq!(
        served_n(fast, "pingora", 0.0),
        0.0,
        "pingora, LB with the fast path on"
    );
    assert_eq!(
        served_n(pingora, "pingora", n),
        n,
        "pingora, LB with the fast path off"
    );
    assert_eq!(
        served_n(pingora, "fast", 0.0),
        0.0,
        "fast path, LB with it off"
    );
}

/// The scripted exchange on one keep-alive connection; the canonical transcript.
fn transcript(lb: &Lb) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect to the LB");
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let eio = "/socket.io/?EIO=4&transport=polling";
    let ask = |s: &mut TcpStream, req: String| s.write_all(req.as_bytes()).expect("send");

    ask(
        &mut s,
        format!("GET {eio} HTTP/1.1\r\nHost: lb\r\nAccept: */*\r\n\r\n"),
    );
    let (head, body) = read_response(&mut s, &mut pending);
    let sid = sid_of(&body);
    out.push(canon(&head, &body, &sid));

    ask(
        &mut s,
        format!(
            "POST {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\nContent-Type: text/plain;charset=UTF-8\r\n\
             Content-Length: 2\r\n\r\n40"
        ),
    );
    let (head, body) = read_response(&mut s, &mut pending);
    out.push(canon(&head, &body, &sid));

    ask(
        &mut s,
        format!("GET {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\n\r\n"),
    );
    let (head, body) = read_response(&mut s, &mut pending);
    out.push(canon(&head, &body, &sid));

    ask(
        &mut s,
        format!("GET {eio}&sid=nobody HTTP/1.1\r\nHost: lb\r\n\r\n"),
    );
    let (head, body) = read_response(&mut s, &mut pending);
    out.push(canon(&head, &body, &sid));

    ask(
        &mut s,
        format!("POST {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\nContent-Length: 5000\r\n\r\n"),
    );
    let (head, body) = read_response(&mut s, &mut pending);
    out.push(canon(&head, &body, &sid));
    out
}

/// The same exchange through an LB with the fast path and one without, in front of `node`:
/// both LBs and both transcripts (printed side by side).
fn both_paths(node: &Node, exchange: fn(&Lb) -> Vec<String>) -> (Lb, Lb, Vec<String>, Vec<String>) {
    let fast = lb_for(node, true, "");
    let pingora = lb_for(node, false, "");
    let a = exchange(&fast);
    let b = exchange(&pingora);
    for (x, y) in a.iter().zip(&b) {
        eprintln!("--- fast path\n{x}\n--- pingora's path\n{y}\n");
    }
    (fast, pingora, a, b)
}

#[test]
fn the_fast_path_answers_what_pingoras_path_answers() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start_js("fp1");
    let (fast, pingora, a, b) = both_paths(&node, transcript);
    assert_eq!(a.len(), 5);
    assert!(a[0].starts_with("HTTP/1.1 200") && a[0].contains("0{\"sid\":\"<sid>\""));
    assert!(
        a[2].contains("40{\"sid\":"),
        "the CONNECT answer polled: {}",
        a[2]
    );
    assert!(a[3].starts_with("HTTP/1.1 400") && a[3].contains("Session ID unknown"));
    assert!(a[4].starts_with("HTTP/1.1 413"), "{}", a[4]);
    assert_eq!(a, b, "the fast path and pingora's path answer alike");
    assert_each_path_served_all(&fast, &pingora, 5.0);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_other_requests_go_to_pingora() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start_js("fp2");
    let lb = lb_for(&node, true, "");
    let mut s = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut pending = Vec::new();
    let eio = "/socket.io/?EIO=4&transport=polling";
    // Two handshakes and a request outside the Engine.IO path, in one write.
    s.write_all(
        format!(
            "GET {eio} HTTP/1.1\r\nHost: lb\r\n\r\nGET {eio} HTTP/1.1\r\nHost: lb\r\n\r\n\
             GET /readyz HTTP/1.1\r\nHost: lb\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send");
    let (h1, b1) = read_response(&mut s, &mut pending);
    let (h2, b2) = read_response(&mut s, &mut pending);
    let (h3, b3) = read_response(&mut s, &mut pending);
    assert!(h1.starts_with("HTTP/1.1 200") && h2.starts_with("HTTP/1.1 200"));
    assert_ne!(sid_of(&b1), sid_of(&b2), "two sessions, answered in order");
    assert!(h3.starts_with("HTTP/1.1 200"), "{h3}");
    assert!(
        String::from_utf8_lossy(&b3).contains("\"node\":\"fp2\""),
        "the node's /readyz through pingora's path: {}",
        String::from_utf8_lossy(&b3)
    );
    assert_eq!(served_n(&lb, "fast", 2.0), 2.0);
    assert_eq!(served_n(&lb, "pingora", 1.0), 1.0);
    // The connection stays with pingora's path from then on.
    s.write_all(format!("GET {eio} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
        .expect("send");
    let (h4, b4) = read_response(&mut s, &mut pending);
    assert!(h4.starts_with("HTTP/1.1 200"));
    sid_of(&b4);
    assert_eq!(served_n(&lb, "fast", 2.0), 2.0);
    assert_eq!(served_n(&lb, "pingora", 2.0), 2.0);
    // The session learned on the fast path is routed, on a new connection: CONNECT, then poll.
    let sid = sid_of(&b1);
    let mut t = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut pending = Vec::new();
    t.write_all(
        format!(
            "POST {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n\r\n40\
             GET {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send");
    let (h5, b5) = read_response(&mut t, &mut pending);
    assert!(h5.starts_with("HTTP/1.1 200") && b5 == b"ok", "{h5}");
    let (h6, b6) = read_response(&mut t, &mut pending);
    assert!(h6.starts_with("HTTP/1.1 200"), "{h6}");
    assert!(
        String::from_utf8_lossy(&b6).starts_with("40{\"sid\""),
        "the CONNECT answer: {}",
        String::from_utf8_lossy(&b6)
    );
    assert_eq!(served_n(&lb, "fast", 4.0), 4.0);
}

#[test]
fn a_chunked_answer_is_relayed_with_its_framing_and_the_connection_reused() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start_js_with("fp3", &["--stream", "/stream"]);
    let lb = lb_for(&node, true, "  path: /stream\n");
    let mut s = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut pending = Vec::new();
    for i in 0..3 {
        s.write_all(format!("GET /stream/x?n={i} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
            .expect("send");
        let (head, body) = read_response(&mut s, &mut pending);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        assert_eq!(body, b"abc");
    }
    assert_eq!(served_n(&lb, "fast", 3.0), 3.0);
    let reused = lb.metric("iogate_lb_upstream_connections_total{backend=\"n1\",reuse=\"reused\"}");
    let new = lb.metric("iogate_lb_upstream_connections_total{backend=\"n1\",reuse=\"new\"}");
    assert_eq!(
        (new, reused),
        (1.0, 2.0),
        "the end of a chunked body was found"
    );
}

/// Read a response head only (through its blank line), as text.
fn read_head_only(s: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).expect("read from the LB");
        assert!(n > 0, "the LB closed the connection mid-head");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    pending.drain(..end + 4);
    head
}

/// Send a masked client text frame.
fn ws_send(s: &mut TcpStream, text: &str) {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).expect("short frame")];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("send a frame");
}

/// Read one server text frame (unmasked, under 64 KiB).
fn ws_recv(s: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if pending.len() >= 2 {
            assert_eq!(pending[0], 0x81, "a final text frame: {pending:?}");
            let (len, at) = match pending[1] & 0x7f {
                126 if pending.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([pending[2], pending[3]])), 4)
                }
                126 => (usize::MAX, 4),
                n => (usize::from(n), 2),
            };
            if len != usize::MAX && pending.len() >= at + len {
                let text = String::from_utf8_lossy(&pending[at..at + len]).to_string();
                pending.drain(..at + len);
                return text;
            }
        }
        let n = s.read(&mut chunk).expect("read a frame");
        assert!(n > 0, "the tunnel closed");
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn upgrade_request(sid: Option<&str>) -> String {
    let sid = sid.map(|s| format!("&sid={s}")).unwrap_or_default();
    format!(
        "GET /socket.io/?EIO=4&transport=websocket{sid} HTTP/1.1\r\nHost: lb\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A 101 head canonicalised (names lower-cased, sorted).
fn canon_head(head: &str) -> String {
    canon(head, b"", "\u{0}")
}

/// WebSocket exchanges through `lb`: a new session on the WebSocket transport (open packet,
/// CONNECT, an event and its answer), a polling session's upgrade (probe, upgrade, CONNECT), an
/// unknown sid. Returns the canonical transcript; checks the tunnels' live counts meanwhile.
fn ws_transcript(lb: &Lb) -> Vec<String> {
    let mut out = Vec::new();
    let websockets = || lb.metric("iogate_lb_websockets{backend=\"n1\"}");

    // A new session on the WebSocket transport.
    let mut s = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut pending = Vec::new();
    s.write_all(upgrade_request(None).as_bytes()).expect("send");
    out.push(canon_head(&read_head_only(&mut s, &mut pending)));
    let open = ws_recv(&mut s, &mut pending);
    let sid = sid_of(open.as_bytes());
    out.push(mask_sids(&open));
    ws_send(&mut s, "40");
    out.push(mask_sids(&ws_recv(&mut s, &mut pending)));
    ws_send(&mut s, "42[\"echo\",\"hi\"]");
    out.push(mask_sids(&ws_recv(&mut s, &mut pending)).replace(&sid, "<sid>"));
    assert_eq!(websockets(), 1.0, "the tunnel is counted while it is open");

    // A polling session upgraded on a new connection.
    let mut p = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut ppending = Vec::new();
    p.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: lb\r\n\r\n")
        .expect("send");
    let (_, body) = read_response(&mut p, &mut ppending);
    let psid = sid_of(&body);
    let mut u = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut upending = Vec::new();
    u.write_all(upgrade_request(Some(&psid)).as_bytes())
        .expect("send");
    out.push(canon_head(&read_head_only(&mut u, &mut upending)));
    ws_send(&mut u, "2probe");
    out.push(ws_recv(&mut u, &mut upending));
    ws_send(&mut u, "5");
    ws_send(&mut u, "40");
    out.push(mask_sids(&ws_recv(&mut u, &mut upending)));
    assert_eq!(
        websockets(),
        2.0,
        "the upgraded session's tunnel is counted"
    );

    // An unknown sid: the LB's own 400.
    let mut x = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
    let mut xpending = Vec::new();
    x.write_all(upgrade_request(Some("nobody")).as_bytes())
        .expect("send");
    let (head, body) = read_response(&mut x, &mut xpending);
    out.push(canon(&head, &body, "\u{0}"));

    drop((s, u));
    wait_for(
        Duration::from_secs(10),
        "the tunnels' counts let go",
        || (websockets() == 0.0).then_some(()),
    );
    out
}

#[test]
fn websocket_upgrades_on_the_fast_path_answer_what_pingoras_path_answers() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start_js("fp4");
    let (fast, pingora, a, b) = both_paths(&node, ws_transcript);
    assert_eq!(a.len(), 8);
    assert!(a[0].starts_with("HTTP/1.1 101"), "{}", a[0]);
    assert!(
        a[0].contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{}",
        a[0]
    );
    assert!(a[1].starts_with("0{\"sid\":\"<sid>\""), "{}", a[1]);
    assert!(a[2].starts_with("40{\"sid\":"), "{}", a[2]);
    assert_eq!(a[5], "3probe");
    assert!(a[7].starts_with("HTTP/1.1 400") && a[7].contains("Session ID unknown"));
    assert_eq!(a, b, "the fast path and pingora's path answer alike");
    // Upgrades (2) and the polling handshake, the unknown sid's 400: all on the fast path.
    assert_each_path_served_all(&fast, &pingora, 4.0);
    assert_eq!(
        fast.metric("iogate_lb_handshakes_total{backend=\"n1\"}"),
        2.0,
        "the WebSocket handshake and the polling one"
    );
}

/// A poll the backend holds past `timeouts.polling_request` is answered `502` by the LB at that
/// deadline, on both paths alike. On one keep-alive connection the fast path's deadline timer
/// has already been moved forward by the exchanges before it (a handshake, a CONNECT, a poll
/// answered at once), so this also checks that a timer moved forward fires at its last
/// deadline — not at an earlier one, and not never.
#[test]
fn a_poll_held_past_polling_request_is_a_502_at_the_deadline_on_both_paths() {
    let _serial = iogate_testkit::heavy();
    // Node.js socket.io holds a poll until it has a packet: the next ping is 25 s away.
    let node = Node::start_js("fp5");
    let extra = "timeouts:\n  polling_request: 1s\n";
    let mut seen = Vec::new();
    for fast in [true, false] {
        let lb = lb_for(&node, fast, extra);
        let mut s = TcpStream::connect(("127.0.0.1", lb.port)).expect("connect");
        let mut pending = Vec::new();
        let eio = "/socket.io/?EIO=4&transport=polling";
        s.write_all(format!("GET {eio} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
            .expect("send");
        let (h, b) = read_response(&mut s, &mut pending);
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        let sid = sid_of(&b);
        // One request at a time: pingora's path closed the connection on a GET pipelined
        // behind the POST's body.
        s.write_all(
            format!("POST {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\n\r\n40")
                .as_bytes(),
        )
        .expect("send");
        let (h, b) = read_response(&mut s, &mut pending);
        assert!(h.starts_with("HTTP/1.1 200") && b == b"ok", "{h}");
        s.write_all(format!("GET {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
            .expect("send");
        let (h, b) = read_response(&mut s, &mut pending);
        assert!(
            h.starts_with("HTTP/1.1 200") && b.starts_with(b"40{"),
            "the CONNECT answer: {h}"
        );
        // Idle for 600 ms first, so that a timer left at the CONNECT poll's deadline (1 s after
        // it) would answer the next poll after about 400 ms instead of 1 s.
        std::thread::sleep(Duration::from_millis(600));
        // Nothing to send: the node holds this one.
        let start = std::time::Instant::now();
        s.write_all(format!("GET {eio}&sid={sid} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
            .expect("send");
        let (h, _) = read_response(&mut s, &mut pending);
        let took = start.elapsed();
        assert!(
            h.starts_with("HTTP/1.1 502"),
            "fast path {fast}: a held poll past the deadline: {h}"
        );
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(4),
            "fast path {fast}: answered after {took:?}, the deadline is 1 s"
        );
        let path = if fast { "fast" } else { "pingora" };
        assert_eq!(served_n(&lb, path, 4.0), 4.0, "{path} path served all four");
        seen.push(h.lines().next().unwrap_or("").to_string());
    }
    assert_eq!(seen[0], seen[1], "the same status line on both paths");
}
