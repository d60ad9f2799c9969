//! Redis over TLS: nodes reach a real `redis-server --tls-port` with `rediss://` and the CA in
//! `redis.tls.ca_file`, and deliver across nodes through it; a node that speaks plain text to
//! the TLS port, and one that trusts another CA, stay off the bus (and say so).

use std::time::Duration;

use iogate_testkit::{Fleet, Node, Redis, TestCert, free_port, wait_bus_up, wait_for};
use serde_json::json;

fn texts(fleet: &mut Fleet, client: &str) -> Vec<String> {
    fleet.strings("chat:message", client, "t")
}

#[test]
fn nodes_join_the_bus_over_tls_and_a_wrong_ca_or_plain_text_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestCert::generate(dir.path(), "redis", &["localhost"]);
    let other = TestCert::generate(dir.path(), "other", &["localhost"]);
    let tls_port = free_port().to_string();
    let (crt, key) = (
        server.cert.to_string_lossy().to_string(),
        server.key.to_string_lossy().to_string(),
    );
    // The plain port only answers the harness's readiness PING; the nodes use the TLS port.
    let _redis = Redis::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &crt,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &crt,
        "--tls-auth-clients",
        "no",
    ]);
    let yaml = |ca: &TestCert| format!("redis:\n  tls:\n    ca_file: {}\n", ca.cert.display());
    let url = format!("rediss://localhost:{tls_port}");
    let n1 = Node::start_with_config("t1", &["--redis-url", &url], Some(&yaml(&server)));
    let n2 = Node::start_with_config("t2", &["--redis-url", &url], Some(&yaml(&server)));
    let wrong_ca = Node::start_with_config("t3", &["--redis-url", &url], Some(&yaml(&other)));
    let plain = Node::start(
        "t4",
        &["--redis-url", &format!("redis://127.0.0.1:{tls_port}")],
    );
    wait_bus_up([&n1, &n2]);
    let mut fleet = Fleet::start();
    fleet.connect("a", &n1.url(), 1, &["websocket"]);
    fleet.connect("b", &n2.url(), 1, &["websocket"]);
    fleet.emit("a#0", "chat:message", json!([{"t": "over tls"}]));
    wait_for(
        Duration::from_secs(10),
        "delivery across nodes over TLS",
        || (texts(&mut fleet, "b#0") == ["over tls"]).then_some(()),
    );
    // The others had the same time and more to come up; they did not.
    for n in [&wrong_ca, &plain] {
        assert_eq!(n.metric("iogate_node_bus_up"), 0.0, "{}", n.id);
        assert_eq!(n.get("/readyz").0, 200, "{} serves its own clients", n.id);
    }
}

#[test]
fn a_ca_file_that_is_not_a_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = TestCert::generate(dir.path(), "x", &["localhost"]);
    let cfg = dir.path().join("node.yaml");
    std::fs::write(
        &cfg,
        format!(
            "redis:\n  url: rediss://localhost:6380\n  tls:\n    ca_file: {}\n",
            c.key.display()
        ),
    )
    .expect("write");
    let (code, out, err) = iogate_testkit::run_bin(
        "iogate-node",
        &["--config", &cfg.to_string_lossy(), "--check"],
        Duration::from_secs(20),
    );
    assert_ne!(code, 0);
    let text = format!("{out}{err}");
    assert!(
        text.contains("redis.tls.ca_file")
            && text.contains("holds no certificate")
            && text.contains(":4:"),
        "{text}"
    );
}
