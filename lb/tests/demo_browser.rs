//! The chat demo end to end in headless Chromium: Redis, three iogate-node serving the demo,
//! iogate-lb in front; two pages on different nodes exchange a message and the test reads what
//! the pages show (testkit/js/demo-browser.mjs, playwright-core driving Debian's chromium).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iogate_testkit::{Lb, Node, Redis, free_port, js_dir, lb_yaml, run_cmd};
use serde_json::Value;

#[test]
fn two_pages_on_different_nodes_exchange_messages() {
    let _serial = iogate_testkit::heavy();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium (.ci/run does)"
    );
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo");
    assert!(
        demo.join("node_modules/socket.io-client/dist/socket.io.min.js")
            .exists(),
        "run `npm ci --prefix demo` first (.ci/run does)"
    );
    let (port, admin) = (free_port(), free_port());
    let redis = Redis::start();
    let node_yaml = format!(
        "demo:\n  dir: {}\n  lb_admin: 127.0.0.1:{admin}\n",
        demo.display()
    );
    let nodes: Vec<Node> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|id| Node::start_with_config(id, &["--redis-url", &redis.url()], Some(&node_yaml)))
        .collect();
    iogate_testkit::wait_bus_up(&nodes);
    let ups: Vec<(&str, u16)> = nodes.iter().map(|n| (n.id.as_str(), n.port)).collect();
    // As config/local/lb.yaml: the page's backend panel reads /demo/backends through the LB
    // (blocked by default with the nodes' other operational paths).
    let extra = "exposure:\n  blocked_paths: [/metrics, /readyz, /healthz]\n";
    let lb = Lb::start(port, admin, &lb_yaml(port, admin, &ups, extra), true);

    // The page and the client bundle come through the LB.
    let (code, body) = iogate_testkit::http_get(port, "/").expect("GET /");
    assert_eq!(code, 200);
    assert!(body.contains("iogate chat"));

    let mut cmd = Command::new("node");
    cmd.arg("demo-browser.mjs")
        .arg(lb.url())
        .current_dir(js_dir())
        .env("CHROMIUM", &chromium);
    let (status, out, err) = run_cmd(cmd, Duration::from_secs(90));
    assert_eq!(status, 0, "{err}");
    let r: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or(Value::Null);
    assert!(r["error"].is_null(), "browser test failed: {r} {err}");
    let (alice, bob) = (
        r["alice_node"].as_str().unwrap_or(""),
        r["bob_node"].as_str().unwrap_or(""),
    );
    assert!(
        !alice.is_empty() && !bob.is_empty() && alice != bob,
        "pages on {alice} and {bob}"
    );
    let seen = &r["bob_sees"];
    assert_eq!(seen["text"], "hello from alice");
    assert_eq!(seen["from"], alice, "sender's node shown");
    assert_eq!(seen["deliveredBy"], bob, "delivering node shown");
    assert!(
        seen["meta"]
            .as_str()
            .is_some_and(|m| m.contains(alice) && m.contains(bob)),
        "{seen}"
    );
    assert_eq!(r["alice_sees"], "hello from alice");
    let panel = r["panel"].as_array().cloned().unwrap_or_default();
    assert_eq!(panel.len(), 3, "{panel:?}");
    let total: u64 = panel
        .iter()
        .map(|p| p["sessions"].as_u64().unwrap_or(0))
        .sum();
    assert!(total >= 2, "{panel:?}");
}
