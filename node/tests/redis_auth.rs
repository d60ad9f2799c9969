//! Redis with authentication: nodes join the bus with a password (`redis://:PASS@…`, the
//! `default` user) and with an ACL user (`redis://USER:PASS@…`) and deliver across nodes; a node
//! with a wrong password never joins, says so in `/readyz`, and counts what it could not publish.

use std::time::Duration;

use iogate_testkit::{Fleet, Node, Redis, wait_bus_up, wait_for};
use serde_json::{Value, json};

fn bus_state(n: &Node) -> String {
    let (_, body) = n.get("/readyz");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["bus"].as_str().unwrap_or_default().to_string()
}

fn dropped(n: &Node) -> f64 {
    n.metric_sum(
        "iogate_node_bus_dropped_total",
        "reason",
        iogate_node::metrics::BUS_DROP_REASONS,
    )
}

fn texts(fleet: &mut Fleet, client: &str) -> Vec<String> {
    fleet.strings("chat:message", client, "t")
}

#[test]
fn password_and_acl_user_join_the_bus_and_a_wrong_password_does_not() {
    let redis = Redis::start_with(&[
        "--requirepass",
        "s3cret",
        "--user",
        "app",
        "on",
        ">app-pass",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = |auth: &str| format!("redis://{auth}@127.0.0.1:{}", redis.port);
    let n1 = Node::start("a1", &["--redis-url", &url(":s3cret")]);
    let n2 = Node::start("a2", &["--redis-url", &url("app:app-pass")]);
    let n3 = Node::start("a3", &["--redis-url", &url("app:wrong")]);
    wait_bus_up([&n1, &n2]);
    let mut fleet = Fleet::start();
    fleet.connect("a", &n1.url(), 1, &["websocket"]);
    fleet.connect("b", &n2.url(), 1, &["websocket"]);
    fleet.connect("c", &n3.url(), 1, &["websocket"]);
    fleet.emit("a#0", "chat:message", json!([{"t": "from a1"}]));
    fleet.emit("b#0", "chat:message", json!([{"t": "from a2"}]));
    wait_for(Duration::from_secs(10), "delivery both ways", || {
        (texts(&mut fleet, "a#0").len() == 2 && texts(&mut fleet, "b#0").len() == 2).then_some(())
    });
    // The node with the wrong password is not on the bus, and says so.
    assert_eq!(n3.metric("iogate_node_bus_up"), 0.0);
    assert_ne!(bus_state(&n3), "up");
    assert!(texts(&mut fleet, "c#0").is_empty(), "nothing reached a3");
    // What its client sends reaches its own node, and the cross-node copy is counted as dropped.
    let before = dropped(&n3);
    fleet.emit("c#0", "chat:message", json!([{"t": "from a3"}]));
    wait_for(Duration::from_secs(5), "local delivery on a3", || {
        (texts(&mut fleet, "c#0") == ["from a3"]).then_some(())
    });
    wait_for(Duration::from_secs(5), "the drop counted", || {
        (dropped(&n3) == before + 1.0).then_some(())
    });
    assert_eq!(
        texts(&mut fleet, "a#0").len(),
        2,
        "a3's message did not reach a1"
    );
}
