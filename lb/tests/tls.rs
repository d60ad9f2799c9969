//! TLS termination: certificates chosen by SNI, HTTP/2 long-polling and WebSockets over TLS
//! with the official client, the HTTP → HTTPS redirect listener, and certificates reloaded in
//! place (a bad file keeps the old ones; live connections stay).

use std::time::{Duration, Instant};

use iogate_testkit::{Fleet, Lb, Node, TestCert, curl, free_port, wait_for};
use serde_json::json;

const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

#[test]
fn sni_certificates_http2_polling_wss_and_the_redirect_listener() {
    let _serial = iogate_testkit::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let default = TestCert::generate(dir.path(), "default", &["default.test"]);
    let chat = TestCert::generate(dir.path(), "chat", &["chat.test", "localhost"]);
    let node = Node::start("t1", &["--redis-url", "none"]);
    let (port, admin, plain) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{port}\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\n        - cert: {}\n          key: {}\n  - address: 127.0.0.1:{plain}\n    redirect_to_https: {port}\nadmin:\n  listen: 127.0.0.1:{admin}\nhealth:\n  active:\n    interval: 200ms\nupstreams:\n  - id: t1\n    address: 127.0.0.1:{}\n",
        default.cert.display(),
        default.key.display(),
        chat.cert.display(),
        chat.key.display(),
        node.port
    );
    let lb = Lb::start(port, admin, &yaml, true);
    let url = |host: &str, path: &str| format!("https://{host}:{port}{path}");

    // SNI picks the certificate: chat.test verifies against chat's, an unknown name gets the
    // first (default) one, which chat's CA does not verify.
    let r = curl(
        &url("chat.test", HANDSHAKE),
        Some(("chat.test", port)),
        Some(&chat.cert),
        &[],
    );
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert_eq!(r.http_version, "2", "ALPN h2 for long-polling: {r:?}");
    assert!(r.body.starts_with("0{\"sid\":\"t1."), "{r:?}");
    let r = curl(
        &url("other.test", HANDSHAKE),
        Some(("other.test", port)),
        Some(&chat.cert),
        &[],
    );
    assert_eq!(r.exit, 60, "the default certificate is not chat's: {r:?}");
    let r = curl(
        &url("default.test", HANDSHAKE),
        Some(("default.test", port)),
        Some(&default.cert),
        &[],
    );
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let r = curl(
        &url("chat.test", HANDSHAKE),
        Some(("chat.test", port)),
        Some(&chat.cert),
        &["--http1.1"],
    );
    assert_eq!((r.status, r.http_version.as_str()), (200, "1.1"), "{r:?}");

    // A whole polling session over HTTP/2: open, CONNECT, its answer, all sticky by sid.
    let open = curl(
        &url("chat.test", HANDSHAKE),
        Some(("chat.test", port)),
        Some(&chat.cert),
        &[],
    );
    let sid = open.body.split('"').nth(3).expect("sid").to_string();
    let session = url("chat.test", &format!("{HANDSHAKE}&sid={sid}"));
    let r = curl(
        &session,
        Some(("chat.test", port)),
        Some(&chat.cert),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "40",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    let r = curl(&session, Some(("chat.test", port)), Some(&chat.cert), &[]);
    assert_eq!(r.http_version, "2");
    assert!(
        r.body.starts_with("40{\"sid\":"),
        "the CONNECT answer: {r:?}"
    );

    // The official client over https + wss (polling then upgrade, and WebSocket only).
    let mut fleet = Fleet::start();
    for (name, transports) in [
        ("up", json!(["polling", "websocket"])),
        ("ws", json!(["websocket"])),
    ] {
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": url("localhost", ""),
            "count": 3, "transports": transports, "ca": chat.pem}),
        );
    }
    for c in ["up#0", "up#2", "ws#0", "ws#2"] {
        assert_eq!(fleet.emit_ack(c, "echo", json!([c]), 5000), json!(c), "{c}");
    }
    wait_for(
        Duration::from_secs(10),
        "6 WebSocket tunnels over TLS",
        || (lb.metric("iogate_lb_websockets{backend=\"t1\"}") == 6.0).then_some(()),
    );
    let expiry = lb.metric(&format!(
        "iogate_lb_tls_certificate_expiry_timestamp_seconds{{certificate=\"chat.test\",listener=\"127.0.0.1:{port}\"}}"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(expiry > now, "certificate expiry {expiry} is in the future");

    // The redirect listener: 308 to the same host and path over https, POSTs included.
    let plain_url = format!("http://127.0.0.1:{plain}{HANDSHAKE}&t=1");
    for method in ["GET", "POST"] {
        let r = curl(
            &plain_url,
            None,
            None,
            &["-X", method, "-H", "Host: chat.test:80"],
        );
        assert_eq!(r.status, 308, "{method}: {r:?}");
        assert_eq!(
            r.header("location"),
            Some(format!("https://chat.test:{port}{HANDSHAKE}&t=1").as_str()),
            "{r:?}"
        );
    }
    // Following it ends on the node, through the TLS listener.
    let r = curl(
        &format!("http://chat.test:{plain}{HANDSHAKE}"),
        Some(("chat.test", plain)),
        Some(&chat.cert),
        &["-L", "--resolve", &format!("chat.test:{port}:127.0.0.1")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("0{\"sid\":\"t1."), "{r:?}");
}

#[test]
fn certificates_reload_in_place_and_a_bad_file_keeps_the_old_ones() {
    let _serial = iogate_testkit::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let live = TestCert::generate(dir.path(), "live", &["localhost"]);
    let first = TestCert::generate(dir.path(), "first", &["localhost"]);
    first.install_as(&live);
    let node = Node::start("r1", &["--redis-url", "none"]);
    let (port, admin) = (free_port(), free_port());
    let cert = live.cert.to_string_lossy().to_string();
    let key = live.key.to_string_lossy().to_string();
    let lb = Lb::start_quick_with(
        port,
        admin,
        &[node.port],
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let url = format!("https://localhost:{port}{HANDSHAKE}");
    let get = |ca: &TestCert| curl(&url, Some(("localhost", port)), Some(&ca.cert), &[]);
    assert_eq!(get(&first).status, 200);
    let mut fleet = Fleet::start();
    fleet.cmd(
        json!({"cmd": "connect", "name": "w", "url": format!("https://localhost:{port}"),
        "count": 4, "transports": ["websocket"], "ca": first.pem}),
    );
    let ok = |lb: &Lb| lb.metric("iogate_lb_config_reloads_total{result=\"ok\"}");
    let failed = |lb: &Lb| lb.metric("iogate_lb_config_reloads_total{result=\"error\"}");
    let ok0 = ok(&lb);

    // A renewed certificate is picked up from the files, without a signal.
    let renewed = TestCert::generate(dir.path(), "renewed", &["localhost"]);
    let t = Instant::now();
    renewed.install_as(&live);
    wait_for(Duration::from_secs(10), "the certificate reload", || {
        (ok(&lb) > ok0).then_some(())
    });
    let took = t.elapsed();
    assert_eq!(
        get(&renewed).status,
        200,
        "new handshakes get the renewed certificate"
    );
    assert_eq!(get(&first).exit, 60, "and no longer the first one");
    // Connections made before the reload are untouched.
    for i in 0..4 {
        let c = format!("w#{i}");
        assert_eq!(
            fleet.emit_ack(&c, "echo", json!([i]), 5000),
            json!(i),
            "{c}"
        );
    }
    let status = fleet.status();
    let disconnects: usize = status
        .values()
        .map(|v| v["disconnects"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        disconnects, 0,
        "live WebSockets across the reload: {status:?}"
    );
    let tunnels = format!(
        "iogate_lb_websockets{{backend=\"127.0.0.1:{}\"}}",
        node.port
    );
    assert_eq!(lb.metric(&tunnels), 4.0, "the 4 tunnels are still counted");

    // A broken certificate file is refused, counted, and the renewed one stays in force.
    let failed0 = failed(&lb);
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    wait_for(Duration::from_secs(10), "the refused reload", || {
        (failed(&lb) > failed0).then_some(())
    });
    assert_eq!(get(&renewed).status, 200, "the certificate in force stays");
    eprintln!("certificate reload picked up {took:?} after the files changed");
}

#[test]
fn upstream_tls_is_verified_against_the_configured_ca_and_name() {
    let _serial = iogate_testkit::heavy();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_cert = TestCert::generate(dir.path(), "backend", &["backend.test"]);
    let other = TestCert::generate(dir.path(), "other", &["backend.test"]);
    let node = Node::start("u1", &["--redis-url", "none"]);
    // A TLS-only backend: an iogate-lb terminating TLS in front of the node.
    let (bport, badmin) = (free_port(), free_port());
    let (crt, key) = (
        backend_cert.cert.to_string_lossy().to_string(),
        backend_cert.key.to_string_lossy().to_string(),
    );
    let _backend = Lb::start_quick_with(
        bport,
        badmin,
        &[node.port],
        &["--tls-cert", &crt, "--tls-key", &key],
    );
    let front = |ca: &TestCert, name: &str| {
        let (port, admin) = (free_port(), free_port());
        let extra = format!(
            "upstream_tls:\n  enabled: true\n  ca_file: {}\n  server_name: {name}\n",
            ca.cert.display()
        );
        let yaml = iogate_testkit::lb_yaml(port, admin, &[("b", bport)], &extra);
        Lb::start(port, admin, &yaml, false)
    };

    // The right CA and name: up, and sessions of both transports work through it.
    let lb = front(&backend_cert, "backend.test");
    lb.wait_all_up(Duration::from_secs(10));
    let r = curl(&format!("{}{HANDSHAKE}", lb.url()), None, None, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("0{\"sid\":\"u1."), "{r:?}");
    let mut fleet = Fleet::start();
    fleet.connect("p", &lb.url(), 2, &["polling", "websocket"]);
    fleet.connect("w", &lb.url(), 2, &["websocket"]);
    for c in ["p#0", "p#1", "w#0", "w#1"] {
        assert_eq!(fleet.emit_ack(c, "echo", json!([c]), 5000), json!(c), "{c}");
    }

    // Another CA, or another name: the checks fail on the certificate and nothing is proxied.
    for (ca, name, why) in [
        (&other, "backend.test", "another CA"),
        (&backend_cert, "elsewhere.test", "another name"),
    ] {
        let bad = front(ca, name);
        let health = wait_for(Duration::from_secs(10), "a failed check", || {
            let b = bad.backend("b");
            (b["state"] != json!("pending")).then_some(b)
        });
        assert_ne!(health["state"], json!("up"), "{why}: {health}");
        assert!(
            health.to_string().contains("TLS"),
            "{why}: the check names the TLS failure: {health}"
        );
        let r = curl(&format!("{}{HANDSHAKE}", bad.url()), None, None, &[]);
        assert_eq!(r.status, 503, "{why}: no ready backend: {r:?}");
    }
}
