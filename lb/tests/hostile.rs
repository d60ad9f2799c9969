//! Hostile input through iogate-lb to a node: each malformed or abusive input closes (or is
//! refused for) only the client that sent it, a well-behaved client keeps getting answers
//! throughout, both processes keep serving, and their memory comes back near its baseline.
//! Every outcome is checked, not only survival.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use iogate_testkit::eio::{Frame, Ws};
use iogate_testkit::{Fleet, Lb, Node, free_port, http_raw, lb_yaml};
use serde_json::json;

const PATH: &str = "/socket.io/";

/// A raw WebSocket session through the LB, connected to the root namespace.
fn session(port: u16) -> Ws {
    let mut ws = Ws::connect(port, PATH, None);
    match ws.recv(Duration::from_secs(5)) {
        Some(Frame::Text(t)) if t.starts_with("0{") => {}
        other => panic!("no open packet: {other:?}"),
    }
    assert!(ws.try_send("40"));
    match ws.recv(Duration::from_secs(5)) {
        Some(Frame::Text(t)) if t.starts_with("40") => {}
        other => panic!("no CONNECT ack: {other:?}"),
    }
    ws
}

/// What became of a session after a hostile input.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The server closed it.
    Closed,
    /// The input was dropped and the session still answers: an acked echo sent after it
    /// comes back.
    Ignored,
}

/// Closed within 5 s, or still answering an acked echo (pings and other packets skipped).
fn outcome(ws: &mut Ws) -> Outcome {
    if !ws.try_send("4277[\"echo\",\"after\"]") {
        return Outcome::Closed;
    }
    for _ in 0..1000 {
        match ws.recv(Duration::from_secs(5)) {
            Some(Frame::Closed) | None => return Outcome::Closed,
            Some(Frame::Text(t)) if t == "4377[\"after\"]" => return Outcome::Ignored,
            Some(_) => {}
        }
    }
    Outcome::Closed
}

#[test]
fn hostile_inputs_close_only_their_sender() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("h1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("h1", node.port)], ""),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.connect("good", &lb.url(), 1, &["websocket"]);
    let good = |fleet: &mut Fleet, what: &str| {
        assert_eq!(
            fleet.emit_ack("good#0", "echo", json!([what]), 3000),
            json!(what),
            "the good client after: {what}"
        );
    };
    good(&mut fleet, "start");
    // Warm both processes up before the memory baseline.
    for _ in 0..20 {
        let _ = session(port);
    }
    let (lb_rss0, node_rss0) = (lb.rss_kib(), node.rss_kib());

    // WebSocket cases: (what, frames sent after CONNECT, what must become of the session).
    // What socketioxide decodes lazily (an event's arguments are parsed by the handler's
    // extractor) is dropped when it does not parse; what breaks the packet framing closes the
    // session. Either way nobody else notices.
    use Outcome::{Closed, Ignored};
    let nested = format!(
        "42[\"echo\",{}{}]",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let oversized = format!("42[\"echo\",\"{}\"]", "x".repeat(1_500_000));
    let cases: Vec<(&str, Vec<String>, Outcome)> = vec![
        ("broken JSON", vec!["42[\"echo\",{".into()], Closed),
        ("200,000 nested arrays", vec![nested], Ignored),
        ("a frame over maxPayload", vec![oversized], Closed),
        (
            "an absurd attachment count",
            vec!["451000000000-[\"echo\",{\"_placeholder\":true,\"num\":0}]".into()],
            Closed,
        ),
        (
            "an unknown Socket.IO packet type",
            vec!["49[]".into()],
            Closed,
        ),
        (
            "an unknown Engine.IO packet type",
            vec!["9hello".into()],
            Closed,
        ),
        ("an event without a name", vec!["42[]".into()], Closed),
        (
            "an event named by a number",
            vec!["42[7,\"x\"]".into()],
            Closed,
        ),
    ];
    let mut seen = Vec::new();
    for (what, frames, _) in &cases {
        let mut ws = session(port);
        for f in frames {
            if !ws.try_send(f) {
                break;
            }
        }
        seen.push((*what, outcome(&mut ws)));
        good(&mut fleet, what);
    }
    // Invalid UTF-8 in a text frame: a WebSocket protocol error.
    let mut ws = session(port);
    ws.send_raw_text(b"42[\"echo\",\"\xff\xfe\"]");
    seen.push(("invalid UTF-8", outcome(&mut ws)));
    good(&mut fleet, "invalid UTF-8");
    // A placeholder past the attachments actually sent.
    let mut ws = session(port);
    ws.try_send("451-[\"echo\",{\"_placeholder\":true,\"num\":5}]");
    ws.send_binary(b"only one");
    seen.push(("a placeholder past the attachments", outcome(&mut ws)));
    good(&mut fleet, "placeholder past the attachments");
    // Garbage before the first packet of a fresh WebSocket.
    let mut ws = Ws::connect(port, PATH, None);
    let _ = ws.recv(Duration::from_secs(5));
    ws.try_send("garbage garbage");
    seen.push(("garbage before CONNECT", outcome(&mut ws)));
    good(&mut fleet, "garbage before CONNECT");
    let want: Vec<(&str, Outcome)> = cases
        .into_iter()
        .map(|(w, _, o)| (w, o))
        .chain([
            ("invalid UTF-8", Closed),
            // socketioxide keeps the session and hands the handler the unresolved placeholder;
            // Node.js socket.io closes it ("illegal attachments"). Harmless either way.
            ("a placeholder past the attachments", Ignored),
            ("garbage before CONNECT", Closed),
        ])
        .collect();
    assert_eq!(seen, want);

    // Thousands of unknown namespaces, read as they come (a client that never reads is the
    // flood below): each refused with CONNECT_ERROR, the session lives on.
    let mut ws = session(port);
    let mut errors = 0;
    for batch in 0..30 {
        for i in 0..100 {
            assert!(ws.try_send(&format!("40/nope{batch}x{i},")));
        }
        let mut got = 0;
        while got < 100 {
            match ws.recv(Duration::from_secs(5)) {
                Some(Frame::Text(t)) if t.starts_with("44/nope") => got += 1,
                Some(Frame::Text(_)) => {}
                other => panic!("unknown namespaces: {other:?} after {errors} answers"),
            }
        }
        errors += got;
    }
    assert_eq!(
        errors, 3000,
        "every unknown namespace answered with CONNECT_ERROR"
    );
    assert_eq!(outcome(&mut ws), Outcome::Ignored, "the session lives on");
    good(&mut fleet, "3,000 unknown namespaces");

    // A flood of 20,000 events on one session, as fast as the socket takes them, never reading
    // (echo without an ack: nothing for anyone else; a chat message would be broadcast to the
    // good client too, which is the application's choice, not an attack on the server).
    let mut ws = session(port);
    let mut sent = 0;
    for i in 0..20_000 {
        if !ws.try_send(&format!("42[\"echo\",{i}]")) {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    good(&mut fleet, "a flood of 20,000 events");
    drop(ws);

    // HTTP cases at the LB: a body and a query over its limits, refused before any node.
    let big_body = "4".repeat(2_000_000);
    let r = http_raw(
        port,
        &format!(
            "POST {PATH}?EIO=4&transport=polling&sid=h1.AAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big_body}",
            big_body.len()
        ),
    );
    assert!(
        r.starts_with("HTTP/1.1 413"),
        "2 MB polling body: {}",
        &r[..r.len().min(80)]
    );
    // A query over limits.max_header_bytes (16 KiB) is refused by the LB's admission; one of
    // 1 MB already by pingora's header parser, which closes the connection.
    let query = |n: usize| {
        http_raw(
            port,
            &format!(
                "GET {PATH}?EIO=4&transport=polling&q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(n)
            ),
        )
    };
    let r = query(20_000);
    assert!(
        r.starts_with("HTTP/1.1 431"),
        "20 KB query string: {}",
        &r[..r.len().min(80)]
    );
    let r = query(1_000_000);
    assert!(
        r.starts_with("HTTP/1.1 400"),
        "1 MB query string: {}",
        &r[..r.len().min(80)]
    );
    // A polling session posting invalid UTF-8 and broken packets is closed, alone.
    let open = http_raw(
        port,
        &format!(
            "GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("sid");
    let post = |body: &[u8]| {
        let mut req = format!(
            "POST {PATH}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        http_raw(port, &String::from_utf8_lossy(&req))
    };
    let r = post(b"4{garbage");
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "the POST itself is taken: {r}"
    );
    let r = http_raw(
        port,
        &format!(
            "GET {PATH}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(
        r.starts_with("HTTP/1.1 400")
            && r.ends_with(r#"{"code":1,"message":"Session ID unknown"}"#),
        "the session is gone after its garbage: {r}"
    );
    good(&mut fleet, "polling garbage");

    // Both processes still serve, and no one else was disconnected.
    assert_eq!(node.get("/healthz").0, 200);
    let r = http_raw(
        port,
        &format!(
            "GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let status = fleet.status();
    let disconnects: usize = status
        .values()
        .map(|v| v["disconnects"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(disconnects, 0, "{status:?}");
    let (lb_rss1, node_rss1) = (lb.rss_kib(), node.rss_kib());
    eprintln!(
        "RSS before / after: iogate-lb {lb_rss0} / {lb_rss1} KiB, iogate-node {node_rss0} / {node_rss1} KiB"
    );
    // The 1.5 MB and 2 MB inputs pass through buffers once; nothing may be kept per input.
    assert!(
        lb_rss1 < lb_rss0 + 16 * 1024,
        "iogate-lb RSS {lb_rss0} -> {lb_rss1} KiB"
    );
    assert!(
        node_rss1 < node_rss0 + 16 * 1024,
        "iogate-node RSS {node_rss0} -> {node_rss1} KiB"
    );
}

/// Everything the LB sends on `s` until it closes the connection (or 5 s pass).
fn read_to_close(s: &mut TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A request written behind an upgrade request, in the same packet, never reaches the node
/// as a request: not when the node refuses the upgrade (the bytes are not turned into a
/// tunnel), and not when it accepts it (they arrive as WebSocket data, which the node rejects).
#[test]
fn a_request_smuggled_behind_an_upgrade_never_reaches_the_node() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("s1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let _lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("s1", node.port)], ""),
        true,
    );
    // The node answers this itself; through the LB it is not exposed.
    assert!(node.get("/metrics").1.contains("iogate_node_"));
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (query, status) in [
        // Engine.IO 3 is not served: the node refuses the upgrade.
        ("EIO=3&transport=websocket", "HTTP/1.1 400"),
        ("EIO=4&transport=websocket", "HTTP/1.1 101"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let upgrade = format!(
            "GET {PATH}?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(format!("{upgrade}{smuggled}").as_bytes())
            .expect("write");
        let got = read_to_close(&mut s);
        assert!(got.starts_with(status), "{query}: {got}");
        assert!(
            !got.contains("iogate_node_"),
            "{query}: the request behind the upgrade reached the node: {got}"
        );
    }
}
