//! Observability with a real Prometheus: it scrapes iogate-lb (TLS listener) and two nodes
//! while clients run through the LB, loads the recording and alert rules of
//! deploy/prometheus, and every query of every panel of the Grafana dashboard
//! (deploy/grafana/iogate.json) returns data. Long-lived sessions show while they live. Every
//! target's exposition passes `promtool check metrics` (Prometheus's naming conventions).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use iogate_testkit::{
    Lb, Loadtest, Node, Prometheus, Redis, TestCert, free_port, http_get, wait_bus_up, wait_for,
};
use serde_json::Value;

#[test]
fn prometheus_scrapes_everything_the_dashboard_and_the_rules_need() {
    let _serial = iogate_testkit::heavy();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let redis = Redis::start();
    let nodes: Vec<Node> = ["o1", "o2"]
        .iter()
        .map(|id| Node::start(id, &["--redis-url", &redis.url()]))
        .collect();
    wait_bus_up(&nodes);
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = TestCert::generate(dir.path(), "lb", &["localhost"]);
    let (port, admin) = (free_port(), free_port());
    let (crt, key) = (
        cert.cert.to_string_lossy().to_string(),
        cert.key.to_string_lossy().to_string(),
    );
    let _lb = Lb::start_quick_with(
        port,
        admin,
        &[nodes[0].port, nodes[1].port],
        &["--tls-cert", &crt, "--tls-key", &key],
    );
    let rules = root.join("deploy/prometheus/iogate-rules.yml");
    let node_targets: Vec<String> = nodes
        .iter()
        .map(|n| format!("'127.0.0.1:{}'", n.port))
        .collect();
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: iogate-lb\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n  - job_name: iogate-node\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        node_targets.join(", ")
    ));

    // Clients through the LB over https: polling first, then the upgrade, broadcasting.
    let url = format!("https://localhost:{port}");
    let run = Loadtest::spawn(&[
        "--url",
        &url,
        "--ca",
        &crt,
        "--transport",
        "upgrade",
        "--scenario",
        "broadcast",
        "--clients",
        "40",
        "--duration",
        "25s",
        "--rate",
        "1",
    ]);
    // While the sessions live, the gauges of long-lived requests show them.
    wait_for(
        Duration::from_secs(20),
        "live WebSockets in Prometheus",
        || {
            let r = prom.query("sum(iogate_lb_websockets)");
            let v = r.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
            (v >= 40.0).then_some(())
        },
    );
    // Every target up (each scraped at least once), the rules loaded and healthy.
    wait_for(Duration::from_secs(20), "3 targets up", || {
        let targets = prom.api("targets");
        let active = targets["data"]["activeTargets"].as_array()?.clone();
        (active.len() == 3 && active.iter().all(|t| t["health"] == "up")).then_some(())
    });
    let rules = wait_for(Duration::from_secs(20), "16 rules evaluated", || {
        let groups = prom.api("rules")["data"]["groups"].as_array()?.clone();
        let rules: Vec<Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (rules.len() == 16 && rules.iter().all(|r| r["health"] != "unknown")).then_some(rules)
    });
    assert!(rules.iter().all(|r| r["health"] == "ok"), "{rules:?}");

    // Every panel query of the dashboard returns data (rates need a few scrapes: wait for them).
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/iogate.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    assert_eq!(panels.len(), 21);
    let mut queries = 0;
    for p in &panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            // Fails the test (naming the query) if no data comes within 30 s.
            wait_for(Duration::from_secs(30), &format!("data for {expr}"), || {
                (!prom.query(expr).is_empty()).then_some(())
            });
            queries += 1;
        }
    }
    assert_eq!(queries, 25, "every target of every panel was queried");

    // Names and types follow Prometheus's conventions: promtool's linter finds nothing in any
    // target's exposition, taken under load (every series present).
    for (what, port) in [
        ("iogate-lb", admin),
        ("node o1", nodes[0].port),
        ("node o2", nodes[1].port),
    ] {
        let (status, body) = http_get(port, "/metrics").expect("metrics answered");
        assert_eq!(status, 200, "{what}");
        let series = body.lines().filter(|l| l.starts_with("iogate_")).count();
        assert!(
            series >= 20,
            "{what}: only {series} iogate_ series:\n{body}"
        );
        let (ok, out) = promtool_check_metrics(&body);
        assert!(
            ok && out.trim().is_empty(),
            "{what}: promtool check metrics:\n{out}"
        );
    }
    let acc = run.finish(Duration::from_secs(60));
    assert_eq!(acc["accounting"]["lost"], 0, "{acc}");
    eprintln!(
        "{} dashboard panels, {queries} queries, every one returned data",
        panels.len()
    );
}

/// `promtool check metrics` on an exposition: (exit success, what it printed).
fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
