//! Differential conformance: a raw Engine.IO/Socket.IO client (`iogate_testkit::eio`, no
//! socket.io-client) runs the same scripted exchanges against the reference server — socket.io
//! from npm with the socket.io-protocol test-suite settings (`testkit/js/conformance-server.mjs`)
//! — and against iogate-node's conformance profile, each directly and through iogate-lb. Every
//! transcript must equal the reference's once session ids and server ack ids are replaced.
//!
//! Covered: handshake on both transports, heartbeat order and timing, the close of a client that
//! does not answer the PING, close, upgrade, main and custom namespace with and without an auth
//! payload, unknown namespace, events, acks both ways, binary attachments both ways, disconnect
//! and reconnect of a namespace, a server-side namespace disconnect on both transports, the close
//! after a malformed packet, and the error answers to an unknown sid, transport and protocol
//! version.

use std::time::{Duration, Instant};

use iogate_testkit::eio::{Frame, Polling, Transcript, Ws, canon};
use iogate_testkit::{Lb, Node, free_port, lb_yaml};

const PATH: &str = "/socket.io/";
const WAIT: Duration = Duration::from_secs(3);
/// The conformance settings: pingInterval 300 ms.
const PING_INTERVAL_MS: u128 = 300;

/// The next frame other than a PING (PINGs are answered); `None` after [`WAIT`].
fn next(ws: &mut Ws) -> Option<Frame> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.recv(left) {
            Some(Frame::Text(t)) if t == "2" => ws.send("3"),
            other => return other,
        }
    }
}

fn note_frame(t: &mut Transcript, f: &Frame) {
    match f {
        Frame::Text(s) => t.note(format!("recv {}", canon(s, true))),
        Frame::Binary(b) => t.note(format!("recv binary {b:02x?}")),
        Frame::Closed => t.note("recv closed"),
    }
}

fn expect(t: &mut Transcript, ws: &mut Ws, n: usize) -> Vec<Frame> {
    let mut got = Vec::new();
    for _ in 0..n {
        match next(ws) {
            Some(f) => {
                note_frame(t, &f);
                got.push(f);
            }
            None => {
                t.note(format!("nothing within {WAIT:?}"));
                break;
            }
        }
    }
    got
}

fn send(t: &mut Transcript, ws: &mut Ws, packet: &str) {
    t.note(format!("send {packet}"));
    ws.send(packet);
}

fn post(t: &mut Transcript, p: &Polling, packets: &[&str]) {
    let (status, body) = p.post(packets);
    t.note(format!("POST {packets:?} -> {status} {body}"));
}

/// A polling payload, packet by packet, each made canonical.
fn payload(body: &str) -> String {
    body.split(iogate_testkit::eio::SEP)
        .map(|p| canon(p, true))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn polls(t: &mut Transcript, p: &Polling, n: usize) {
    for packet in p.packets(n, WAIT) {
        t.note(format!("poll {}", canon(&packet, true)));
    }
}

/// A polling handshake and the main namespace joined (its CONNECT answer and `auth` polled).
fn polling_in_main_namespace(port: u16) -> (Transcript, Polling) {
    let mut t = Transcript::default();
    let mut p = Polling::new(port, PATH);
    let (status, open) = p.handshake();
    t.note(format!("handshake -> {status} {}", payload(&open)));
    post(&mut t, &p, &["40"]);
    polls(&mut t, &p, 2);
    (t, p)
}

/// Handshake, namespaces, events, acks, binary and close over long-polling.
fn polling_session(port: u16) -> Transcript {
    let (mut t, p) = polling_in_main_namespace(port);
    post(&mut t, &p, &[r#"42["message",1,"2",{"3":[true]}]"#]);
    polls(&mut t, &p, 1);
    post(&mut t, &p, &[r#"421["message-with-ack",1,"2"]"#]);
    polls(&mut t, &p, 1);
    post(&mut t, &p, &[r#"40/custom,{"token":"abc"}"#]);
    polls(&mut t, &p, 2);
    post(&mut t, &p, &["40/random,"]);
    polls(&mut t, &p, 1);
    // Binary attachments travel base64-encoded (`b…`) in polling payloads.
    post(
        &mut t,
        &p,
        &[r#"451-["message",{"_placeholder":true,"num":0}]"#, "bAQID"],
    );
    polls(&mut t, &p, 2);
    // Leave the main namespace and come back.
    post(&mut t, &p, &["41"]);
    post(&mut t, &p, &["40"]);
    polls(&mut t, &p, 2);
    post(&mut t, &p, &["1"]);
    let (status, body) = p.get();
    t.note(format!("poll after close -> {status} {}", payload(&body)));
    t
}

/// The same over a WebSocket, plus acks the server asks for and binary acks.
fn websocket_session(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let mut ws = Ws::connect(port, PATH, None);
    let open = expect(&mut t, &mut ws, 1);
    let sid = match open.first() {
        Some(Frame::Text(o)) => serde_json::from_str::<serde_json::Value>(&o[1..])
            .ok()
            .and_then(|v| v["sid"].as_str().map(str::to_string))
            .unwrap_or_default(),
        other => panic!("no open packet: {other:?}"),
    };
    send(&mut t, &mut ws, r#"40{"token":"123"}"#);
    expect(&mut t, &mut ws, 2);
    send(&mut t, &mut ws, r#"42["message",1,"2",{"3":[true]}]"#);
    expect(&mut t, &mut ws, 1);
    send(&mut t, &mut ws, r#"421["message-with-ack",1,"2"]"#);
    expect(&mut t, &mut ws, 1);
    send(&mut t, &mut ws, r#"42["emit-with-ack",1,"2"]"#);
    // The server asks for an ack; answer it with other values.
    let asked = expect(&mut t, &mut ws, 1);
    let Some(Frame::Text(asked)) = asked.first() else {
        panic!("no emit-with-ack: {asked:?}");
    };
    let ack_id: String = asked[2..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    // Ack ids are the server's choice: the transcript shows `<ack>`.
    t.note(r#"send 43<ack>[3,"4"]"#);
    ws.send(&format!(r#"43{ack_id}[3,"4"]"#));
    expect(&mut t, &mut ws, 1);
    send(
        &mut t,
        &mut ws,
        r#"451-["message",{"_placeholder":true,"num":0}]"#,
    );
    t.note("send binary [01, 02, 03]");
    ws.send_binary(&[1, 2, 3]);
    expect(&mut t, &mut ws, 2);
    send(
        &mut t,
        &mut ws,
        r#"452-7["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    );
    t.note("send binary [04], binary [05]");
    ws.send_binary(&[4]);
    ws.send_binary(&[5]);
    expect(&mut t, &mut ws, 3);
    send(&mut t, &mut ws, "40/custom,");
    expect(&mut t, &mut ws, 2);
    send(&mut t, &mut ws, r#"42/custom,["message","c"]"#);
    expect(&mut t, &mut ws, 1);
    send(&mut t, &mut ws, "40/random,");
    expect(&mut t, &mut ws, 1);
    send(&mut t, &mut ws, "41");
    send(&mut t, &mut ws, r#"40{"again":true}"#);
    expect(&mut t, &mut ws, 2);
    // engine.io-client sends `close` and closes the WebSocket itself; the session is then gone.
    send(&mut t, &mut ws, "1");
    drop(ws);
    let mut p = Polling::new(port, PATH);
    p.sid = Some(sid);
    let deadline = Instant::now() + WAIT;
    // Until the server has seen the WebSocket close, the sid still names a (WebSocket) session.
    let (status, body) = loop {
        let (status, body) = p.get();
        if body.contains("Session ID unknown") || Instant::now() > deadline {
            break (status, body);
        }
    };
    t.note(format!(
        "poll the closed session -> {status} {}",
        payload(&body)
    ));
    t
}

/// Heartbeat order and timing: the first PING one pingInterval after the open packet, the next
/// one pingInterval after the PONG. Returns the transcript and both delays.
fn heartbeat(port: u16) -> (Transcript, [u128; 2]) {
    let mut t = Transcript::default();
    let mut ws = Ws::connect(port, PATH, None);
    let opened = Instant::now();
    let open = ws.recv(WAIT).expect("open packet");
    note_frame(&mut t, &open);
    let mut delays = [0; 2];
    let mut since = opened;
    for d in &mut delays {
        let f = ws.recv(WAIT).expect("a ping");
        *d = since.elapsed().as_millis();
        note_frame(&mut t, &f);
        send(&mut t, &mut ws, "3");
        since = Instant::now();
    }
    send(&mut t, &mut ws, "40");
    expect(&mut t, &mut ws, 2);
    (t, delays)
}

/// A WebSocket client that does not answer the PING is closed once pingTimeout passes.
fn ping_timeout(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let mut ws = Ws::connect(port, PATH, None);
    for what in ["open packet", "a ping"] {
        let f = ws.recv(WAIT).expect(what);
        note_frame(&mut t, &f);
    }
    // Not answered: the next thing is the close.
    match ws.recv(WAIT) {
        Some(f) => note_frame(&mut t, &f),
        None => t.note(format!("nothing within {WAIT:?}")),
    }
    t
}

/// The frames that follow within `within` (PINGs answered), or the close.
fn rest(t: &mut Transcript, ws: &mut Ws, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            t.note(format!("nothing more within {within:?}"));
            return;
        }
        match ws.recv(left) {
            Some(Frame::Text(p)) if p == "2" => ws.send("3"),
            Some(f) => {
                note_frame(t, &f);
                if f == Frame::Closed {
                    return;
                }
            }
            None => {}
        }
    }
}

/// Server-side closes over a WebSocket: the server disconnects the socket from its only
/// namespace (the connection stays, as with socket.io's `socket.disconnect()`), and a malformed
/// packet (unknown type) closes the connection without a CLOSE packet.
fn server_side_closes(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let mut ws = Ws::connect(port, PATH, None);
    expect(&mut t, &mut ws, 1);
    send(&mut t, &mut ws, "40");
    expect(&mut t, &mut ws, 2);
    send(&mut t, &mut ws, r#"42["disconnect-me"]"#);
    rest(&mut t, &mut ws, Duration::from_millis(1000));
    send(&mut t, &mut ws, "40");
    expect(&mut t, &mut ws, 2);
    send(&mut t, &mut ws, "9");
    rest(&mut t, &mut ws, WAIT);
    t
}

/// The same disconnect over long-polling: the DISCONNECT arrives in a poll, the session stays.
fn server_disconnect_polling(port: u16) -> Transcript {
    let (mut t, p) = polling_in_main_namespace(port);
    post(&mut t, &p, &[r#"42["disconnect-me"]"#]);
    polls(&mut t, &p, 1);
    post(&mut t, &p, &["40"]);
    polls(&mut t, &p, 2);
    t
}

/// A client that opens a namespace right after the handshake gets its CONNECT answer first
/// (PINGs are recorded here, not answered away).
fn namespace_right_after_open(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let mut ws = Ws::connect(port, PATH, None);
    let open = ws.recv(WAIT).expect("open packet");
    note_frame(&mut t, &open);
    send(&mut t, &mut ws, "40/custom,");
    for _ in 0..2 {
        let f = ws.recv(WAIT).expect("a frame");
        note_frame(&mut t, &f);
    }
    let mut p = Polling::new(port, PATH);
    let (status, open) = p.handshake();
    t.note(format!("handshake -> {status} {}", payload(&open)));
    post(&mut t, &p, &["40/custom,"]);
    let (status, body) = p.get();
    t.note(format!("first poll -> {status} {}", payload(&body)));
    t
}

/// Polling → WebSocket upgrade.
fn upgrade(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let mut p = Polling::new(port, PATH);
    let (status, open) = p.handshake();
    t.note(format!("handshake -> {status} {}", payload(&open)));
    post(&mut t, &p, &["40"]);
    polls(&mut t, &p, 2);
    let sid = p.sid.clone().expect("sid");
    let mut ws = Ws::connect(port, PATH, Some(&sid));
    send(&mut t, &mut ws, "2probe");
    expect(&mut t, &mut ws, 1);
    // The polling transport is told to pause.
    let (status, body) = p.get();
    t.note(format!("poll while upgrading -> {status} {body}"));
    send(&mut t, &mut ws, "5");
    send(&mut t, &mut ws, r#"42["message","over websocket"]"#);
    expect(&mut t, &mut ws, 1);
    t
}

/// Error answers.
fn errors(port: u16) -> Transcript {
    let mut t = Transcript::default();
    let p = Polling::new(port, PATH);
    for query in [
        "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
        "EIO=4&transport=bogus",
        "EIO=9&transport=polling",
    ] {
        let (status, body) = p.get_raw(query);
        t.note(format!("GET ?{query} -> {status} {}", payload(&body)));
    }
    t
}

struct Target {
    name: &'static str,
    port: u16,
}

#[test]
fn iogate_answers_like_the_reference_server_directly_and_through_the_lb() {
    let _serial = iogate_testkit::heavy();
    let reference = Node::start_js_script("conformance-server.mjs", "reference", &[]);
    let iogate = Node::start(
        "iogate",
        &["--redis-url", "none", "--profile", "conformance"],
    );
    let front = |n: &Node| {
        let (port, admin) = (free_port(), free_port());
        Lb::start(
            port,
            admin,
            &lb_yaml(port, admin, &[(&n.id, n.port)], ""),
            true,
        )
    };
    let (lb_ref, lb_iogate) = (front(&reference), front(&iogate));
    let targets = [
        Target {
            name: "reference",
            port: reference.port,
        },
        Target {
            name: "iogate-node",
            port: iogate.port,
        },
        Target {
            name: "reference through iogate-lb",
            port: lb_ref.port,
        },
        Target {
            name: "iogate-node through iogate-lb",
            port: lb_iogate.port,
        },
    ];
    type Script = fn(u16) -> Transcript;
    let scripts: [(&str, Script); 9] = [
        ("polling session", polling_session),
        ("websocket session", websocket_session),
        ("heartbeat", |p| heartbeat(p).0),
        ("ping timeout", ping_timeout),
        ("namespace right after open", namespace_right_after_open),
        ("upgrade", upgrade),
        ("errors", errors),
        ("server-side closes", server_side_closes),
        ("server disconnect over polling", server_disconnect_polling),
    ];
    let mut mismatches = Vec::new();
    for (name, script) in scripts {
        let before = mismatches.len();
        let expected = script(targets[0].port);
        assert!(
            expected.0.len() >= 3,
            "{name}: the reference transcript is too short:\n{}",
            expected.text()
        );
        for target in &targets[1..] {
            let got = script(target.port);
            if got != expected {
                mismatches.push(format!(
                    "== {name}: {} differs from the reference\n-- reference:\n{}\n-- {}:\n{}",
                    target.name,
                    expected.text(),
                    target.name,
                    got.text()
                ));
            }
        }
        let same = if mismatches.len() == before {
            "same on every target"
        } else {
            "DIFFERENT"
        };
        eprintln!("{name}: {} lines, {same}", expected.0.len());
        // `DIFFERENTIAL_SHOW=1 cargo test --test differential -- --nocapture` prints them all.
        if std::env::var_os("DIFFERENTIAL_SHOW").is_some() {
            eprintln!("{}", expected.text());
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // Timing: the first PING one pingInterval after the open packet, the next one after the PONG.
    for target in &targets {
        let (_, delays) = heartbeat(target.port);
        eprintln!("{}: PING after {delays:?} ms", target.name);
        for d in delays {
            assert!(
                (PING_INTERVAL_MS * 8 / 10..=PING_INTERVAL_MS * 2).contains(&d),
                "{}: PING after {d} ms, pingInterval is {PING_INTERVAL_MS} ms",
                target.name
            );
        }
    }
}
