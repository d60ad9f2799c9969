//! iogate-loadtest against a real 2-node iogate cluster (redis-server + iogate-node) and against
//! a plain Node.js socket.io server: every scenario's accounting, a node killed mid-run, and
//! `--assert`.

use std::time::Duration;

use iogate_testkit::{Node, Redis, run_bin};
use serde_json::Value;

fn loadtest(args: &[&str]) -> (i32, Value, String) {
    let json = tempfile::NamedTempFile::new().expect("temp");
    let path = json.path().to_string_lossy().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", &path, "--quiet"]);
    let (code, _out, err) = run_bin("iogate-loadtest", &all, Duration::from_secs(120));
    let text = std::fs::read_to_string(json.path()).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (code, v.get(0).cloned().unwrap_or(Value::Null), err)
}

fn acc(v: &Value, k: &str) -> u64 {
    v["accounting"][k].as_u64().unwrap_or(u64::MAX)
}

struct Cluster {
    _redis: Redis,
    nodes: Vec<Node>,
}

fn cluster() -> Cluster {
    let redis = Redis::start();
    let nodes: Vec<Node> = ["lt1", "lt2"]
        .iter()
        .map(|id| Node::start(id, &["--redis-url", &redis.url()]))
        .collect();
    // Cross-node delivery needs each node's Redis subscriptions in place.
    iogate_testkit::wait_bus_up(&nodes);
    Cluster {
        _redis: redis,
        nodes,
    }
}

fn urls(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .flat_map(|n| ["--url".to_string(), n.url()])
        .collect()
}

#[test]
fn broadcast_accounting_is_exact_on_every_transport() {
    let _serial = iogate_testkit::heavy();
    let c = cluster();
    let u = urls(&c);
    for transport in ["websocket", "polling", "upgrade"] {
        let mut args: Vec<&str> = u.iter().map(String::as_str).collect();
        args.extend([
            "--scenario",
            "broadcast",
            "--clients",
            "40",
            "--duration",
            "2s",
            "--total-rate",
            "20",
            "--transport",
            transport,
        ]);
        let (code, s, err) = loadtest(&args);
        assert_eq!(code, 0, "{err}");
        let sent = acc(&s, "sent");
        assert!(sent >= 30, "{transport}: sent {sent}");
        // Every client connected for the whole run: N × M expected, all received, nothing lost.
        assert_eq!(acc(&s, "expected"), 40 * sent, "{transport}: {err}");
        assert_eq!(acc(&s, "received"), 40 * sent, "{transport}: {err}");
        assert_eq!(acc(&s, "lost"), 0);
        assert_eq!(acc(&s, "duplicated"), 0);
        assert_eq!(acc(&s, "out_of_order"), 0);
        assert_eq!(s["connected_peak"], 40);
        assert!(
            s["accounting"]["latency_ms"]["p99"]
                .as_f64()
                .is_some_and(|p| p > 0.0)
        );
    }
}

#[test]
fn echo_room_idle_churn_and_storm() {
    let _serial = iogate_testkit::heavy();
    let c = cluster();
    let u = urls(&c);
    let base: Vec<&str> = u.iter().map(String::as_str).collect();
    let run = |extra: &[&str]| {
        let mut a = base.clone();
        a.extend_from_slice(extra);
        let (code, s, err) = loadtest(&a);
        assert_eq!(code, 0, "{err}");
        s
    };
    let s = run(&[
        "--scenario",
        "echo",
        "--clients",
        "30",
        "--duration",
        "2s",
        "--rate",
        "5",
    ]);
    assert!(acc(&s, "acks_sent") >= 200);
    assert_eq!(acc(&s, "acks_received"), acc(&s, "acks_sent"));
    assert_eq!(acc(&s, "acks_timed_out"), 0);

    let s = run(&[
        "--scenario",
        "room",
        "--clients",
        "40",
        "--rooms",
        "4",
        "--duration",
        "2s",
        "--rate",
        "1",
    ]);
    // Each message is expected by its room's 10 members only.
    assert_eq!(acc(&s, "expected"), 10 * acc(&s, "sent"));
    assert_eq!(acc(&s, "received"), acc(&s, "expected"));
    assert_eq!(acc(&s, "lost"), 0);

    let s = run(&[
        "--scenario",
        "idle",
        "--clients",
        "50",
        "--duration",
        "1s",
        "--transport",
        "polling",
    ]);
    assert_eq!(s["connected_peak"], 50);
    assert!(
        s["accounting"]["connect_ms"]["p99"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    );

    let s = run(&[
        "--scenario",
        "churn",
        "--clients",
        "30",
        "--duration",
        "2s",
        "--rate",
        "20",
    ]);
    assert!(s["reconnects"].as_u64().unwrap_or(0) >= 20, "{s}");
    assert!(
        s["accounting"]["failures"]
            .as_object()
            .is_some_and(|f| f.is_empty())
    );

    let s = run(&["--scenario", "storm", "--clients", "40", "--duration", "3s"]);
    let storm = s["storm_recovery_ms"].as_f64().unwrap_or(f64::INFINITY);
    assert!(storm.is_finite() && storm > 0.0, "{s}");
    assert_eq!(s["reconnects"], 40);
}

#[test]
fn killed_node_shows_as_loss_and_reconnects_never_a_hang() {
    let _serial = iogate_testkit::heavy();
    let c = cluster();
    let u = urls(&c);
    let mut args: Vec<String> = u.clone();
    for a in [
        "--scenario",
        "broadcast",
        "--clients",
        "40",
        "--duration",
        "6s",
        "--total-rate",
        "40",
        "--reconnect",
        "--quiet",
    ] {
        args.push(a.into());
    }
    let json = tempfile::NamedTempFile::new().expect("temp");
    args.push("--json".into());
    args.push(json.path().to_string_lossy().to_string());
    let bin = iogate_testkit::bin("iogate-loadtest");
    let mut child = std::process::Command::new(bin)
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(2));
    c.nodes[1].signal("KILL");
    let start = std::time::Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "loadtest hung after a node died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap_or_default())
        .unwrap_or(Value::Null);
    let s = &v[0];
    assert!(
        acc(s, "lost") > 0,
        "a dead node's clients lose messages: {s}"
    );
    assert!(s["reconnects"].as_u64().unwrap_or(0) >= 1, "{s}");
    let disconnects = s["accounting"]["disconnects"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        disconnects.keys().any(|k| k.starts_with("transport")),
        "{disconnects:?}"
    );
}

#[test]
fn recovery_flag_gets_a_killed_nodes_clients_every_message_back() {
    // Nodes with connection state recovery behind iogate-lb; `--recovery` makes each client send
    // its session id and last offset when it reconnects, as socket.io-client does.
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let yaml = "recovery:\n  enabled: true\n";
    let a = Node::start_with_config("lr1", &["--redis-url", &redis.url()], Some(yaml));
    let b = Node::start_with_config("lr2", &["--redis-url", &redis.url()], Some(yaml));
    iogate_testkit::wait_bus_up([&a, &b]);
    let (port, admin) = (iogate_testkit::free_port(), iogate_testkit::free_port());
    let ups = [("lr1", a.port), ("lr2", b.port)];
    let lb = iogate_testkit::Lb::start(
        port,
        admin,
        &iogate_testkit::lb_yaml(port, admin, &ups, ""),
        true,
    );
    let url = lb.url();
    let run = iogate_testkit::Loadtest::spawn(&[
        "--url",
        &url,
        "--scenario",
        "broadcast",
        "--clients",
        "40",
        "--duration",
        "8s",
        "--total-rate",
        "20",
        "--reconnect",
        "--recovery",
        "--assert",
        "recovered>=100%,loss=0",
    ]);
    // Kill lr2 once its clients are getting broadcasts.
    iogate_testkit::wait_for(Duration::from_secs(30), "lr2 delivering", || {
        (b.metric("iogate_node_recovery_delivered_total") >= 100.0).then_some(())
    });
    b.signal("KILL");
    let (status, s) = run.finish_with_status(Duration::from_secs(60));
    assert!(
        status.success(),
        "--assert recovered>=100%,loss=0 failed: {s}"
    );
    let reconnects = s["reconnects"].as_u64().unwrap_or(0);
    assert!(reconnects >= 1, "lr2's clients reconnect: {s}");
    assert_eq!(s["recovered"].as_u64(), Some(reconnects), "{s}");
    assert!(iogate_testkit::accounting(&s, "sent") > 0, "{s}");
    for k in ["lost", "duplicated", "out_of_order", "unexpected"] {
        assert_eq!(iogate_testkit::accounting(&s, k), 0, "{k}: {s}");
    }
    assert_eq!(
        a.metric("iogate_node_recovery_attempts_total{result=\"recovered\"}"),
        reconnects as f64,
        "lr1 recovered every session that moved"
    );
}

#[test]
fn failing_assertion_gives_a_nonzero_exit() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("a1", &["--redis-url", "none"]);
    let url = node.url();
    // Five clients echo for a second, judged by `spec`.
    let echo_with = |spec: &str| {
        loadtest(&[
            "--url",
            &url,
            "--scenario",
            "echo",
            "--clients",
            "5",
            "--duration",
            "1s",
            "--assert",
            spec,
        ])
    };
    let (code, _, err) = echo_with("p99<0.0001ms");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("assertion failed: p99<0.0001ms"), "{err}");
    let (code, _, err) = echo_with("loss=0,connected>=100%,ack_timeouts=0");
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = loadtest(&["--url", &url, "--assert", "bogus<1"]);
    assert_eq!(code, 2);
}

#[test]
fn drives_a_nodejs_socketio_server() {
    let _serial = iogate_testkit::heavy();
    let js = Node::start_js("js");
    let url = js.url();
    for transport in ["websocket", "polling", "upgrade"] {
        let (code, s, err) = loadtest(&[
            "--url",
            &url,
            "--scenario",
            "broadcast",
            "--clients",
            "20",
            "--duration",
            "2s",
            "--total-rate",
            "10",
            "--transport",
            transport,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(acc(&s, "lost"), 0, "{transport}");
        assert_eq!(acc(&s, "received"), 20 * acc(&s, "sent"), "{transport}");
    }
    let (code, s, err) = loadtest(&[
        "--url",
        &url,
        "--scenario",
        "echo",
        "--clients",
        "10",
        "--duration",
        "1s",
        "--rate",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(acc(&s, "acks_received"), acc(&s, "acks_sent"));
}

#[test]
fn html_report_is_self_contained() {
    let _serial = iogate_testkit::heavy();
    let node = Node::start("h1", &["--redis-url", "none"]);
    let report = tempfile::Builder::new()
        .suffix(".html")
        .tempfile()
        .expect("temp");
    let path = report.path().to_string_lossy().to_string();
    let (code, _, err) = run_bin(
        "iogate-loadtest",
        &[
            "--url",
            &node.url(),
            "--scenario",
            "broadcast",
            "--clients",
            "10",
            "--duration",
            "2s",
            "--total-rate",
            "10",
            "--report",
            &path,
            "--quiet",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(report.path()).unwrap_or_default();
    assert!(
        html.contains("<svg")
            && html.contains("Latency over time")
            && html.contains("Latency distribution")
    );
    assert!(
        !html.contains("http://") && !html.contains("https://") || !html.contains("<script src"),
        "must not load from the network"
    );
    assert!(!html.contains("<script src") && !html.contains("<link"));
}

#[test]
fn speaks_https_and_wss_through_a_tls_lb_trusting_only_the_given_ca() {
    let _serial = iogate_testkit::heavy();
    let c = cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = iogate_testkit::TestCert::generate(dir.path(), "lb", &["localhost"]);
    let other = iogate_testkit::TestCert::generate(dir.path(), "other", &["localhost"]);
    let (port, admin) = (iogate_testkit::free_port(), iogate_testkit::free_port());
    let (crt, key) = (
        cert.cert.to_string_lossy().to_string(),
        cert.key.to_string_lossy().to_string(),
    );
    let _lb = iogate_testkit::Lb::start_quick_with(
        port,
        admin,
        &[c.nodes[0].port, c.nodes[1].port],
        &["--tls-cert", &crt, "--tls-key", &key],
    );
    let url = format!("https://localhost:{port}");
    for transport in ["websocket", "polling", "upgrade"] {
        let (code, s, err) = loadtest(&[
            "--url",
            &url,
            "--ca",
            &crt,
            "--transport",
            transport,
            "--scenario",
            "broadcast",
            "--clients",
            "20",
            "--duration",
            "2s",
            "--rate",
            "2",
        ]);
        assert_eq!(code, 0, "{transport}: {err}");
        assert_eq!(s["connected_peak"].as_u64(), Some(20), "{transport}: {s}");
        assert!(acc(&s, "expected") >= 20 * 20, "{transport}: {s}");
        assert_eq!(acc(&s, "received"), acc(&s, "expected"), "{transport}: {s}");
    }
    // Another CA: every connect fails on the certificate, none succeeds.
    let wrong = other.cert.to_string_lossy().to_string();
    let (_, s, err) = loadtest(&[
        "--url",
        &url,
        "--ca",
        &wrong,
        "--scenario",
        "idle",
        "--clients",
        "5",
        "--duration",
        "1s",
    ]);
    assert_eq!(s["connected_peak"].as_u64(), Some(0), "{s} {err}");
    assert!(
        s["accounting"]["failures"].as_object().is_some_and(|f| f
            .values()
            .filter_map(|v| v.as_u64())
            .sum::<u64>()
            >= 5),
        "every connect failed: {s}"
    );
    // A --ca that is not a certificate is refused at start, naming the file.
    let (code, _, err) = loadtest(&["--url", &url, "--ca", &key, "--duration", "1s"]);
    assert_ne!(code, 0);
    assert!(err.contains("--ca") && err.contains("lb.key"), "{err}");
}
