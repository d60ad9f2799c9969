//! Stickiness and balancing modes, the admin API, request limits, forwarded headers, shutdown
//! (live sessions, idle keep-alive connections), and an idle WebSocket kept open past pingora's 60 s default.

use std::time::{Duration, Instant};

use iogate_testkit::{
    Fleet, Lb, Node, free_port, http_exchange, http_get, http_raw, lb_yaml, wait_for,
};
use serde_json::json;

fn handshake(port: u16, extra_headers: &str, query: &str) -> String {
    http_raw(
        port,
        &format!(
            "GET /socket.io/?EIO=4&transport=polling{query} HTTP/1.1\r\nHost: x\r\n{extra_headers}Connection: close\r\n\r\n"
        ),
    )
}

#[test]
fn cookie_stickiness_names_the_backend_and_is_looked_up() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start("c1", &["--redis-url", "none"]);
    let b = Node::start("c2", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let extra = "stickiness:\n  mode: cookie\n";
    let lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("c1", a.port), ("c2", b.port)], extra),
        true,
    );
    let first = handshake(port, "", "");
    let cookie = first
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l.to_string())
        })
        .expect("Set-Cookie on the handshake");
    assert!(
        cookie.contains("iogate_backend=c1") || cookie.contains("iogate_backend=c2"),
        "{cookie}"
    );
    // A client presenting the cookie goes to that backend, every time.
    for _ in 0..10 {
        let r = handshake(port, "Cookie: theme=dark; iogate_backend=c2\r\n", "");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    assert!(lb.metric("iogate_lb_handshakes_total{backend=\"c2\"}") >= 10.0);
    // A cookie naming a backend that is not ready falls back to the policy.
    let r = handshake(port, "Cookie: iogate_backend=nope\r\n", "");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn hash_policy_keeps_a_key_on_one_backend() {
    let _serial = iogate_testkit::heavy();
    let nodes: Vec<Node> = ["h1", "h2", "h3"]
        .iter()
        .map(|id| Node::start(id, &["--redis-url", "none"]))
        .collect();
    let ups: Vec<(&str, u16)> = nodes.iter().map(|n| (n.id.as_str(), n.port)).collect();
    let (port, admin) = (free_port(), free_port());
    let extra = "balancing:\n  policy: hash\n  key: query:room\n";
    let lb = Lb::start(port, admin, &lb_yaml(port, admin, &ups, extra), true);
    let count = |lb: &Lb| -> Vec<f64> {
        ["h1", "h2", "h3"]
            .iter()
            .map(|id| lb.metric(&format!("iogate_lb_handshakes_total{{backend=\"{id}\"}}")))
            .collect()
    };
    for _ in 0..9 {
        assert!(handshake(port, "", "&room=lobby").starts_with("HTTP/1.1 200"));
    }
    let c = count(&lb);
    assert_eq!(
        c.iter().filter(|v| **v == 9.0).count(),
        1,
        "one backend takes every `lobby` handshake: {c:?}"
    );
    // Many keys spread over every backend.
    for i in 0..60 {
        handshake(port, "", &format!("&room=r{i}"));
    }
    assert!(count(&lb).iter().all(|v| *v > 0.0), "{:?}", count(&lb));
}

#[test]
fn admin_api_drain_undrain_and_token() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start("d1", &["--redis-url", "none"]);
    let b = Node::start("d2", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    // The token comes from a file, as it should in production.
    let mut token_file = tempfile::NamedTempFile::new().expect("temp");
    std::io::Write::write_all(&mut token_file, b"s3cret\n").expect("write");
    let extra = format!(
        "admin:\n  listen: 127.0.0.1:{admin}\n  token_file: {}\n",
        token_file.path().display()
    );
    // lb_yaml already has an admin section; replace it.
    let yaml = lb_yaml(port, admin, &[("d1", a.port), ("d2", b.port)], "")
        .replace(&format!("admin:\n  listen: 127.0.0.1:{admin}\n"), &extra);
    let _lb = Lb::start(port, admin, &yaml, false);
    let auth = "Authorization: Bearer s3cret\r\n";
    let req = |method: &str, path: &str, auth: &str| {
        http_raw(
            admin,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    assert!(req("GET", "/api/backends", "").starts_with("HTTP/1.1 401"));
    wait_for(Duration::from_secs(10), "backends up", || {
        let r = req("GET", "/api/backends", auth);
        (r.matches("\"state\": \"up\"").count() == 2).then_some(())
    });
    assert!(
        req("GET", "/api/backends", "Authorization: Bearer s3creT\r\n").starts_with("HTTP/1.1 401")
    );
    // A browser cannot drain a backend, even with the token (a cross-site form, a page on a
    // DNS-rebound name): reading still works.
    let from_page = format!("{auth}Origin: http://evil.example\r\n");
    let r = req("POST", "/api/backends/d1/drain", &from_page);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = req(
        "POST",
        "/api/backends/d1/drain",
        &format!("{auth}Sec-Fetch-Site: cross-site\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = req("GET", "/api/backends", &from_page);
    assert_eq!(r.matches("\"state\": \"up\"").count(), 2, "{r}");
    let r = req("POST", "/api/backends/d1/drain", auth);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("draining"),
        "{r}"
    );
    let mut fleet = Fleet::start();
    fleet.connect("x", &format!("http://127.0.0.1:{port}"), 20, &["websocket"]);
    for i in 0..20 {
        assert_eq!(
            fleet.emit_ack(&format!("x#{i}"), "whoami", json!([]), 2000)["node"],
            json!("d2")
        );
    }
    assert!(req("POST", "/api/backends/d1/undrain", auth).contains("\"up\""));
    assert!(req("POST", "/api/backends/zz/drain", auth).starts_with("HTTP/1.1 404"));
    // One completed proxied request, so the per-request series exist.
    assert_eq!(
        http_get(port, "/socket.io/?EIO=4&transport=polling").map(|r| r.0),
        Some(200)
    );
    // The nodes' operational endpoints are not reachable through the LB by default; the node
    // itself serves them.
    for path in [
        "/metrics",
        "/readyz",
        "/healthz",
        "/healthz/x",
        "/demo/backends",
    ] {
        assert_eq!(
            http_get(port, path),
            Some((404, "not found\n".to_string())),
            "{path}"
        );
    }
    assert_eq!(a.get("/healthz").0, 200);
    assert!(a.get("/metrics").1.contains("iogate_node_"));
    // logging() runs just after the response is written: poll for the series.
    let names = [
        "iogate_lb_requests_total",
        "iogate_lb_sessions",
        "iogate_lb_websockets",
        "iogate_lb_handshakes_total",
        "iogate_lb_sid_table_entries",
        "iogate_lb_rejected_total{reason=\"blocked_path\"} 5",
        "iogate_lb_backend_up",
        "iogate_lb_request_duration_seconds",
    ];
    wait_for(Duration::from_secs(5), "every metric on /metrics", || {
        let metrics = req("GET", "/metrics", auth);
        names.iter().all(|n| metrics.contains(n)).then_some(())
    });
}

#[test]
fn limits_and_forwarded_headers() {
    let _serial = iogate_testkit::heavy();
    let js = Node::start_js("f1");
    let (port, admin) = (free_port(), free_port());
    let extra = "limits:\n  max_body_bytes: 2000\n  max_header_bytes: 2048\n";
    let lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("f1", js.port)], extra),
        true,
    );
    let big_header = format!("X-Big: {}\r\n", "a".repeat(4000));
    assert!(handshake(port, &big_header, "").starts_with("HTTP/1.1 431"));
    let body = "x".repeat(5000);
    let r = http_raw(
        port,
        &format!(
            "POST /socket.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(lb.metric("iogate_lb_rejected_total{reason=\"header_too_large\"}") >= 1.0);
    assert!(lb.metric("iogate_lb_rejected_total{reason=\"body_too_large\"}") >= 1.0);

    let mut fleet = Fleet::start();
    fleet.connect("h", &lb.url(), 1, &["polling"]);
    let headers = fleet.emit_ack("h#0", "headers", json!([]), 2000);
    assert_eq!(headers["x-forwarded-for"], json!("127.0.0.1"), "{headers}");
    assert_eq!(headers["x-real-ip"], json!("127.0.0.1"));
    assert_eq!(headers["x-forwarded-proto"], json!("http"));
}

#[test]
fn sigterm_keeps_live_sessions_for_the_grace_then_exits() {
    let _serial = iogate_testkit::heavy();
    let a = Node::start("g1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let mut lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("g1", a.port)], "shutdown:\n  grace: 3s\n"),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.connect("g", &lb.url(), 10, &["websocket"]);
    let t = Instant::now();
    lb.signal("TERM");
    // New connections are refused at once; live sockets keep working during the grace.
    wait_for(Duration::from_secs(2), "listener closed", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert_eq!(
        fleet.emit_ack("g#3", "echo", json!(["still"]), 2000),
        json!("still")
    );
    let status = wait_for(Duration::from_secs(15), "LB exit", || lb.try_wait());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "exited after {took:?}, before the grace"
    );
    assert!(took < Duration::from_secs(12), "took {took:?}");
    eprintln!("lb exited {status:?} after {took:?}");
    wait_for(Duration::from_secs(5), "clients cut", || {
        fleet
            .status()
            .values()
            .all(|c| c["connected"] == json!(false))
            .then_some(())
    });

    // With nothing live, SIGTERM exits right away instead of sleeping the whole grace.
    let (port, admin) = (free_port(), free_port());
    let mut lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("g1", a.port)], "shutdown:\n  grace: 20s\n"),
        true,
    );
    let t = Instant::now();
    lb.signal("TERM");
    wait_for(Duration::from_secs(5), "quick exit when idle", || {
        lb.try_wait()
    });
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// An idle keep-alive connection when shutdown starts stays open for its next request, which is
/// answered with `Connection: close`, and the process exits once it closes. Closed at once
/// instead (pingora's default, `shutdown.idle_wait: 0s`), a request a client sends on it right
/// then fails with no answer: this is what lost polling sessions on binary upgrades.
fn idle_connection_at_shutdown(idle_wait: &str) -> (String, Duration) {
    let a = Node::start("k1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let extra = format!("shutdown:\n  grace: 20s\n  idle_wait: {idle_wait}\n");
    let mut lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("k1", a.port)], &extra),
        true,
    );
    let handshake = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the LB");
    let first = http_exchange(&mut conn, handshake);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("0{\"sid\""), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    // The connection is idle now. SIGTERM closes the listener at once.
    lb.signal("TERM");
    wait_for(Duration::from_secs(5), "listener closed", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    let t = Instant::now();
    let second = http_exchange(&mut conn, handshake);
    wait_for(Duration::from_secs(10), "LB exit", || lb.try_wait());
    (second, t.elapsed())
}

#[test]
fn an_idle_keepalive_connection_gets_its_next_request_answered_during_shutdown() {
    let _serial = iogate_testkit::heavy();
    let (second, took) = idle_connection_at_shutdown("30s");
    eprintln!("request on an idle connection after SIGTERM: {second:?}; exit after {took:?}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
    assert!(second.contains("0{\"sid\""), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    // The process exits once that connection has closed, long before the 20 s grace.
    assert!(took < Duration::from_secs(5), "exited after {took:?}");

    // With `idle_wait: 0s` the idle connection is dropped when shutdown starts.
    let (second, _) = idle_connection_at_shutdown("0s");
    assert_eq!(second, "", "answered on a connection closed at shutdown");
}

/// Slow-loris: connections that send their request header a line at a time are closed once
/// `timeouts.client_header` has passed since its first byte, while a normal client is served
/// meanwhile; an idle keep-alive connection is closed after `timeouts.client_keepalive`.
#[test]
fn slow_headers_and_idle_keepalive_connections_are_closed_on_time() {
    use std::io::{Read, Write};
    let _serial = iogate_testkit::heavy();
    let a = Node::start("s1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let extra = "timeouts:\n  client_header: 1s\n  client_keepalive: 2s\n";
    let _lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("s1", a.port)], extra),
        true,
    );

    let t = Instant::now();
    let mut slow: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            c.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
                .expect("first line");
            c.set_nonblocking(true).expect("nonblocking");
            c
        })
        .collect();
    // Keep trickling one header line every 200 ms; count the connections the LB closed.
    let mut closed_at: Vec<Option<Duration>> = vec![None; slow.len()];
    while t.elapsed() < Duration::from_secs(6) && closed_at.iter().any(Option::is_none) {
        for (i, c) in slow.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            let mut buf = [0u8; 512];
            let gone = match c.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    c.write_all(b"X-Slow: 1\r\n").is_err()
                }
                Err(_) => true,
            };
            if gone {
                closed_at[i] = Some(t.elapsed());
            }
        }
        // A normal client is served meanwhile.
        let ok = http_get(port, "/socket.io/?EIO=4&transport=polling");
        assert_eq!(ok.as_ref().map(|r| r.0), Some(200), "{ok:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed: Vec<Duration> = closed_at.iter().flatten().copied().collect();
    let last = closed.iter().max().copied();
    eprintln!(
        "slow headers: {} of 50 closed, the last after {last:?}",
        closed.len()
    );
    assert_eq!(closed.len(), 50, "closed: {closed_at:?}");
    assert!(
        closed.iter().all(|d| *d >= Duration::from_millis(900)),
        "{closed:?}"
    );
    assert!(last.is_some_and(|d| d < Duration::from_secs(4)), "{last:?}");

    // An idle keep-alive connection: answered, then closed after about 2 s of silence.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let first = http_exchange(
        &mut conn,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let idle = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).unwrap_or(0);
    let took = idle.elapsed();
    eprintln!("idle keep-alive connection closed after {took:?}");
    assert_eq!(n, 0, "the LB sent data on an idle connection");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn idle_websocket_survives_past_pingoras_60s_default() {
    let _serial = iogate_testkit::heavy();
    let idle: u64 = std::env::var("IOGATE_IDLE_TEST_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    // No heartbeat during the idle period: the node pings every 200 s.
    let node = Node::start_with_config(
        "i1",
        &["--redis-url", "none"],
        Some("engineio:\n  ping_interval: 200s\n  ping_timeout: 20s\n"),
    );
    let (port, admin) = (free_port(), free_port());
    let _lb = Lb::start(
        port,
        admin,
        &lb_yaml(port, admin, &[("i1", node.port)], ""),
        true,
    );
    let mut fleet = Fleet::start();
    fleet.connect(
        "idle",
        &format!("http://127.0.0.1:{port}"),
        1,
        &["websocket"],
    );
    std::thread::sleep(Duration::from_secs(idle));
    assert_eq!(
        fleet.emit_ack("idle#0", "echo", json!(["awake"]), 2000),
        json!("awake")
    );
    let st = fleet.status();
    assert_eq!(
        st["idle#0"]["disconnects"],
        json!([]),
        "idle WebSocket was cut"
    );
    eprintln!("idle WebSocket kept open through the LB for {idle} s");
    let _ = http_get(admin, "/metrics");
}
