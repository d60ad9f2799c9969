//! Every example application, built by Cargo, run as a 2-node cluster on a real Redis behind
//! iogate-lb, driven by the official socket.io-client over both transports.

use std::path::Path;
use std::time::Duration;

use iogate_testkit::{Fleet, Lb, Node, Redis, free_port, lb_yaml, wait_bus_up, wait_for};
use serde_json::{Value, json};

struct Cluster {
    _redis: Redis,
    nodes: Vec<Node>,
    lb: Lb,
}

/// Redis, two nodes of the example at `exe` (with `args`), iogate-lb in front.
fn cluster(exe: &str, args: &[&str]) -> Cluster {
    let redis = Redis::start();
    let url = redis.url();
    let mut all = vec!["--redis-url", url.as_str()];
    all.extend_from_slice(args);
    let nodes: Vec<Node> = ["ex1", "ex2"]
        .iter()
        .map(|id| Node::start_exe(Path::new(exe), id, &all, None))
        .collect();
    wait_bus_up(&nodes);
    let (port, admin) = (free_port(), free_port());
    let ups: Vec<(&str, u16)> = nodes.iter().map(|n| (n.id.as_str(), n.port)).collect();
    let lb = Lb::start(port, admin, &lb_yaml(port, admin, &ups, ""), true);
    Cluster {
        _redis: redis,
        nodes,
        lb,
    }
}

#[test]
fn echo_answers_every_message_on_both_transports() {
    let _serial = iogate_testkit::heavy();
    let c = cluster(env!("CARGO_BIN_EXE_iogate-example-echo"), &[]);
    let mut fleet = Fleet::start();
    for transport in ["websocket", "polling"] {
        let name = &transport[..1];
        fleet.connect(name, &c.lb.url(), 10, &[transport]);
        let mut answered = 0;
        for i in 0..10 {
            let client = format!("{name}#{i}");
            for n in 0..20 {
                let body = json!({ "n": n, "client": client });
                let ack = fleet.emit_ack(&client, "echo", json!([body.clone()]), 5000);
                assert_eq!(ack, body, "{transport}: the ack carries the message");
                answered += 1;
            }
            // Without an ack the answer is an `echo` event.
            fleet.emit(&client, "echo", json!([{ "plain": i }]));
        }
        assert_eq!(answered, 200, "{transport}");
        wait_for(Duration::from_secs(10), "echo events", || {
            let got = fleet.events("echo");
            (0..10)
                .all(|i| {
                    got.get(&format!("{name}#{i}"))
                        .is_some_and(|l| l == &json!([[{ "plain": i }]]))
                })
                .then_some(())
        });
    }
    // Counted without the application writing a metric.
    let events: f64 = c
        .nodes
        .iter()
        .map(|n| n.metric("iogate_node_events_total{event=\"echo\"}"))
        .sum();
    assert_eq!(events, 420.0);
}

#[test]
fn rooms_authenticates_and_delivers_across_nodes() {
    let _serial = iogate_testkit::heavy();
    let c = cluster(
        env!("CARGO_BIN_EXE_iogate-example-rooms"),
        &["--user", "alice=a-token", "--user", "bob=b-token"],
    );
    let mut fleet = Fleet::start();
    // A wrong token is refused by the middleware.
    let mut bad = json!({"cmd": "connect", "name": "mallory", "url": c.lb.url(), "count": 1,
        "transports": ["websocket"], "auth": {"token": "nope"}});
    let r = fleet.try_cmd(&mut bad, Duration::from_secs(10));
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("unauthorized")),
        "{r}"
    );
    // Alice on node 1 over WebSocket, Bob on node 2 over long-polling, Bob again through the LB.
    for (name, url, token, transport) in [
        ("alice", c.nodes[0].url(), "a-token", "websocket"),
        ("bob", c.nodes[1].url(), "b-token", "polling"),
        ("bob-lb", c.lb.url(), "b-token", "polling"),
    ] {
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": url, "count": 1,
            "transports": [transport], "auth": {"token": token}}),
        );
    }
    let a = fleet.emit_ack("alice#0", "join", json!(["r"]), 5000);
    assert_eq!(a, json!({"room": "r", "members": 1}));
    let b = fleet.emit_ack("bob#0", "join", json!(["r"]), 5000);
    assert_eq!(
        b,
        json!({"room": "r", "members": 2}),
        "counted on both nodes"
    );
    for i in 0..50 {
        let ok = fleet.emit_ack(
            "alice#0",
            "say",
            json!([{"room": "r", "text": format!("m{i}")}]),
            5000,
        );
        assert_eq!(ok, json!(true));
    }
    let malformed = fleet.emit_ack("alice#0", "say", json!([{"room": "r", "text": 5}]), 5000);
    assert_eq!(
        malformed,
        json!(false),
        "a malformed message is answered, not dropped"
    );
    let not_in = fleet.emit_ack("bob-lb#0", "say", json!([{"room": "r", "text": "x"}]), 5000);
    assert_eq!(not_in, json!(false), "not in the room");
    let ok = fleet.emit_ack(
        "bob-lb#0",
        "dm",
        json!([{"to": "alice", "text": "hi"}]),
        5000,
    );
    assert_eq!(ok, json!(true));
    wait_for(Duration::from_secs(10), "every message delivered", || {
        let said = fleet.events("said");
        let dm = fleet.events("dm");
        let bob_got = said.get("bob#0").and_then(Value::as_array).map(Vec::len);
        let alice_dm = dm.get("alice#0").and_then(Value::as_array).map(Vec::len);
        (bob_got == Some(50) && alice_dm == Some(1)).then_some(())
    });
    let said = fleet.events("said");
    let texts: Vec<Value> = said["bob#0"]
        .as_array()
        .map(|l| l.iter().map(|args| args[0]["text"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts,
        (0..50).map(|i| json!(format!("m{i}"))).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!(said["bob#0"][0][0]["from"], json!("alice"));
    assert!(
        said.get("alice#0")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty),
        "the sender does not get its own message"
    );
    assert_eq!(
        fleet.events("dm")["alice#0"],
        json!([[{"from": "bob", "text": "hi"}]])
    );
}

#[test]
fn cluster_operations_span_every_node() {
    let _serial = iogate_testkit::heavy();
    let c = cluster(env!("CARGO_BIN_EXE_iogate-example-cluster"), &[]);
    let mut fleet = Fleet::start();
    for (name, url, transport) in [
        ("a", c.nodes[0].url(), "websocket"),
        ("b", c.nodes[1].url(), "polling"),
        ("c", c.lb.url(), "websocket"),
    ] {
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": url, "count": 2,
            "transports": [transport], "autoAck": true}),
        );
    }
    assert_eq!(fleet.emit_ack("c#0", "count", json!([]), 10000), json!(6));
    for cl in ["a#0", "a#1", "b#0", "b#1"] {
        assert_eq!(fleet.emit_ack(cl, "join", json!(["x"]), 5000), json!(true));
    }
    let moved = fleet.emit_ack("c#0", "move", json!([{"from": "x", "to": "y"}]), 10000);
    assert_eq!(moved, json!(true));
    // Everyone else answers the poll (autoAck).
    let poll = fleet.emit_ack(
        "c#0",
        "poll",
        json!([{"question": "ready?", "timeoutMs": 2000}]),
        10000,
    );
    assert_eq!(poll, json!({"answers": 5, "failed": 0}));
    // Room `y` holds a's and b's sockets on both nodes, `x` none: kicking `x` changes nothing,
    // kicking `y` disconnects the four.
    assert_eq!(
        fleet.emit_ack("c#0", "kick", json!(["x"]), 10000),
        json!(true)
    );
    assert_eq!(fleet.emit_ack("c#0", "count", json!([]), 10000), json!(6));
    assert_eq!(
        fleet.emit_ack("c#0", "kick", json!(["y"]), 10000),
        json!(true)
    );
    wait_for(Duration::from_secs(10), "a and b disconnected", || {
        let st = fleet.status();
        let gone = ["a#0", "a#1", "b#0", "b#1"]
            .iter()
            .all(|k| st[*k]["connected"] == json!(false));
        let stayed = ["c#0", "c#1"]
            .iter()
            .all(|k| st[*k]["connected"] == json!(true));
        (gone && stayed).then_some(())
    });
    assert_eq!(fleet.emit_ack("c#0", "count", json!([]), 10000), json!(2));
}
