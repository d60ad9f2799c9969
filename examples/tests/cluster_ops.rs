//! Cluster-wide operations when a node is slow or dead: the `cluster` example over three nodes
//! on a real Redis, one node paused with SIGSTOP, then resumed, then killed with SIGKILL. A
//! paused node makes every cluster-wide request (fetch, join, disconnect, broadcast with acks,
//! server-side emit with acks) end after `redis.request_timeout` with an error that says how
//! many nodes answered (and a counted metric) — never a silent partial answer; a killed node is
//! simply no longer part of the cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use iogate_testkit::{Fleet, Node, Redis, wait_bus_up, wait_for};
use serde_json::{Value, json};

const EXE: &str = env!("CARGO_BIN_EXE_iogate-example-cluster");

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_paused_node_makes_cluster_requests_fail_loudly_and_a_dead_one_drops_out() {
    let _serial = iogate_testkit::heavy();
    let redis = Redis::start();
    let url = redis.url();
    let yaml = "redis:\n  request_timeout: 2s\n";
    let nodes: Vec<Node> = ["c1", "c2", "c3"]
        .iter()
        .map(|id| Node::start_exe(Path::new(EXE), id, &["--redis-url", &url], Some(yaml)))
        .collect();
    wait_bus_up(&nodes);
    let mut fleet = Fleet::start();
    for (name, node, transport) in [
        ("a", &nodes[0], "websocket"),
        ("b", &nodes[1], "polling"),
        ("c", &nodes[2], "websocket"),
    ] {
        fleet.cmd(
            json!({"cmd": "connect", "name": name, "url": node.url(), "count": 2,
            "transports": [transport], "autoAck": true}),
        );
    }
    assert_eq!(fleet.emit_ack("a#0", "count", json!([]), 10000), json!(6));
    // A server-side event with acks: every other node's application answers.
    assert_eq!(
        fleet.emit_ack("a#0", "census", json!([]), 10000),
        json!({"nodes": {"self": 2, "c2": 2, "c3": 2}, "error": null})
    );

    // c3 paused: it is still subscribed, so it is expected to answer, and does not.
    nodes[2].signal("STOP");
    let t = Instant::now();
    let count = fleet.emit_ack("a#0", "count", json!([]), 10000);
    let took = t.elapsed();
    eprintln!("fetch_sockets with a paused node answered in {took:?}: {count}");
    assert!(
        error_of(&count).contains("fetch_sockets: only 1 of 2 other nodes answered within 2s"),
        "{count}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "bounded by redis.request_timeout: {took:?}"
    );
    let moved = fleet.emit_ack("a#0", "move", json!([{"from": "x", "to": "y"}]), 10000);
    assert!(
        error_of(&moved).contains("join: only 1 of 2 other nodes answered"),
        "{moved}"
    );
    let kicked = fleet.emit_ack("a#0", "kick", json!(["nobody"]), 10000);
    assert!(
        error_of(&kicked).contains("disconnect: only 1 of 2 other nodes answered"),
        "{kicked}"
    );
    // A broadcast with acks: a#1 and b's two answer; the paused node's part is reported
    // as one failure (it never said how many sockets it has), not left out.
    let poll = fleet.emit_ack(
        "a#0",
        "poll",
        json!([{"question": "ready?", "timeoutMs": 500}]),
        15000,
    );
    assert_eq!(poll, json!({"answers": 3, "failed": 1}));
    // A server-side event: the answer that came, and an error naming how many did not.
    let t = Instant::now();
    let census = fleet.emit_ack("a#0", "census", json!([]), 10000);
    eprintln!(
        "server-side emit with a paused node answered in {:?}: {census}",
        t.elapsed()
    );
    assert_eq!(census["nodes"], json!({"self": 2, "c2": 2}), "{census}");
    assert!(
        error_of(&census).contains("server_emit: only 1 of 2 other nodes answered within 2s"),
        "{census}"
    );
    for (request, n) in [
        ("fetch_sockets", 1.0),
        ("join", 1.0),
        ("disconnect", 1.0),
        ("server_emit", 1.0),
    ] {
        assert_eq!(
            nodes[0].metric(&format!(
                "iogate_node_cluster_incomplete_total{{request=\"{request}\"}}"
            )),
            n,
            "{request}"
        );
    }

    // Resumed: complete answers again (its clients are still connected).
    nodes[2].signal("CONT");
    wait_for(Duration::from_secs(10), "c3 answering again", || {
        (fleet.emit_ack("a#0", "count", json!([]), 10000) == json!(6)).then_some(())
    });

    // Killed: Redis drops its subscriptions, so it is no longer expected; the answer is
    // complete without it, and comes without waiting for the timeout.
    nodes[2].signal("KILL");
    wait_for(Duration::from_secs(10), "c3 gone from the cluster", || {
        let t = Instant::now();
        let v = fleet.emit_ack("a#0", "count", json!([]), 10000);
        (v == json!(4) && t.elapsed() < Duration::from_secs(1)).then_some(())
    });
    let poll = fleet.emit_ack(
        "a#0",
        "poll",
        json!([{"question": "ready?", "timeoutMs": 500}]),
        15000,
    );
    assert_eq!(poll, json!({"answers": 3, "failed": 0}));
    assert_eq!(
        fleet.emit_ack("a#0", "census", json!([]), 10000),
        json!({"nodes": {"self": 2, "c2": 2}, "error": null})
    );
    assert!(nodes[1].metric("iogate_node_server_events_total{direction=\"received\"}") >= 3.0);
}
